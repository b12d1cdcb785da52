-- One row per load and calendar month: a fingerprint of the accepted rows dated
-- in that month (trades, fees, balance snapshots and cash flows by their date;
-- accounts by the months they open and close in, earlier ones counted in the first
-- month of data), and whether it differs from the previous load's. A load that
-- brings rows dated in month-ends already built (a late fee file, a corrected
-- trade extract, an account opened or closed in an old month) changes those
-- months' fingerprints: customer_indicators rebuilds every month-end from the
-- earliest changed one, and the grading re-grades from there
-- (orchestration.tiering.grading_range). Staging values are exact (decimals,
-- dates, text), so the same rows give the same fingerprint in any load; lineage
-- columns and the account attributes the indicators do not read are left out, so
-- a file re-delivered with the same rows, or a manager reassigned, changes nothing.
-- Built with the warehouse models, in the audit schema BI reads.
{{ config(
    schema='audit',
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('load_id')
) }}

with

load as (
    select load_id from {{ source('broker', 'latest_load') }}
),

first_month as (
    select min(month_start) as month_start from {{ ref('int_reporting_months') }}
),

accounts as (
    select
        open_date,
        close_date,
        {{ hash64(hash64('account_id, customer_id, open_date, close_date')) }} as account_hash
    from {{ ref('stg_broker__accounts') }}
),

-- one hash per accepted row, with the month it is dated in (row_hash: one that
-- sees which value sits in which column, so a bit_xor of them is not blind to
-- values swapped between two rows, or to two rows changed alike)
dated_rows as (
    select
        {{ month_start('trades.trade_date') }} as month_start,
        {{ row_hash('trades') }} as row_hash
    from (
        select {{ all_but(['source_file', 'source_row']) }} from {{ ref('stg_broker__trades') }}
    ) as trades
    union all
    select
        {{ month_start('fees.fee_date') }} as month_start,
        {{ row_hash('fees') }} as row_hash
    from (
        select {{ all_but(['source_file', 'source_row']) }} from {{ ref('stg_broker__fees') }}
    ) as fees
    union all
    select
        {{ month_start('balances.as_of_date') }} as month_start,
        {{ row_hash('balances') }} as row_hash
    from (
        select {{ all_but(['source_file', 'source_row']) }} from {{ ref('stg_broker__balances') }}
    ) as balances
    union all
    select
        {{ month_start('flows.flow_date') }} as month_start,
        {{ row_hash('flows') }} as row_hash
    from (
        select {{ all_but(['source_file', 'source_row']) }} from {{ ref('stg_broker__cash_flows') }}
    ) as flows
    union all
    select
        greatest({{ month_start('accounts.open_date') }}, first_month.month_start) as month_start,
        {{ hash64(hash64("'opened', accounts.account_hash")) }} as row_hash
    from accounts
    cross join first_month
    union all
    select
        greatest({{ month_start('accounts.close_date') }}, first_month.month_start) as month_start,
        {{ hash64(hash64("'closed', accounts.account_hash")) }} as row_hash
    from accounts
    cross join first_month
    where accounts.close_date is not null
),

-- bit_xor of the rows' hashes: the same rows in any order, the same fingerprint
fingerprints as (
    select
        month_start,
        count(*) as source_rows,
        bit_xor(row_hash) as fingerprint
    from dated_rows
    group by month_start
),

previous as (
    {%- if is_incremental() %}
    select month_start, fingerprint
    from (
        select
            month_start,
            fingerprint,
            row_number() over (partition by month_start order by loaded_at desc) as recency
        from {{ this }}
        where load_id <> (select load_id from load)
    ) as ranked
    where recency = 1
    {%- else %}
    select cast(null as date) as month_start, cast(null as {{ hash_type() }}) as fingerprint
    where false
    {%- endif %}
),

final as (
    select
        cast(load.load_id as string) as load_id,
        cast(current_timestamp as timestamp) as loaded_at,
        cast(fingerprints.month_start as date) as month_start,
        cast(last_day(fingerprints.month_start) as date) as as_of_date,
        cast(fingerprints.source_rows as bigint) as source_rows,
        cast(fingerprints.fingerprint as {{ hash_type() }}) as fingerprint,
        previous.month_start is null as is_new,
        coalesce(previous.fingerprint <> fingerprints.fingerprint, true) as is_changed
    from fingerprints
    cross join load
    left join previous on fingerprints.month_start = previous.month_start
)

select * from final
