-- One row per load and calendar month of int_customer_months: a fingerprint of
-- every customer's monthly aggregates and account dates that month, and whether
-- it differs from the previous load's. A load whose rows reach a month-end
-- already built (a late fee file, a corrected trade extract, a new customer
-- with an old open date) changes that month's fingerprint: customer_indicators
-- rebuilds every month-end from the earliest changed one, and the grading
-- re-grades from there (orchestration.tiering.grading_range). Keyed by
-- customer_id: customer_key is numbered afresh each load.
-- Built with the warehouse models, in the audit schema BI reads.
{{ config(
    schema='audit',
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='load_id',
    on_schema_change='fail',
) }}

with

load as (
    select load_id from {{ source('broker', 'latest_load') }}
),

customers as (
    select customer_key, customer_id, first_open_date, last_close_date
    from {{ ref('int_accounts_rolled_up_to_customers') }}
),

customer_months as (
    select
        customers.customer_id,
        customers.first_open_date,
        customers.last_close_date,
        months.* exclude (months.customer_key)
    from {{ ref('int_customer_months') }} as months
    inner join customers on months.customer_key = customers.customer_key
),

-- bit_xor of the rows' hashes: the same rows in any order, the same fingerprint
fingerprints as (
    select
        month_start,
        count(*) as customer_months,
        bit_xor(hash(customer_months)) as fingerprint
    from customer_months
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
    select cast(null as date) as month_start, cast(null as ubigint) as fingerprint
    where false
    {%- endif %}
),

final as (
    select
        cast(load.load_id as varchar) as load_id,
        cast(current_timestamp as timestamp) as loaded_at,
        cast(fingerprints.month_start as date) as month_start,
        cast(last_day(fingerprints.month_start) as date) as as_of_date,
        cast(fingerprints.customer_months as bigint) as customer_months,
        cast(fingerprints.fingerprint as ubigint) as fingerprint,
        previous.month_start is null as is_new,
        coalesce(previous.fingerprint <> fingerprints.fingerprint, true) as is_changed
    from fingerprints
    cross join load
    left join previous on fingerprints.month_start = previous.month_start
)

select * from final
