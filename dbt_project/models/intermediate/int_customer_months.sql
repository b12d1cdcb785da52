-- One row per customer and reporting month of the spine, months without
-- activity included (as zeros), so that a window of N rows over a customer is N
-- calendar months. Keyed by customer_key: the joins of the 24M-row spine (at a
-- million customers) are on integers, and the monthly aggregates are the hashed
-- side (see int_customer_month_spine).
--
-- Incremental: a run recomputes the months from the earliest one its load
-- touched (macros/customer_months.sql; the pre-hook deletes them) and every
-- month of a customer keyed in this load, and keeps the rest: the customer keys
-- are stable from build to build (int_customer_keys).
-- depends_on: {{ ref('load_months') }}, {{ ref('int_customer_keys') }}
-- depends_on: {{ source('broker', 'latest_load') }}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    pre_hook="{{ delete_customer_months_to_rebuild() }}",
) }}

with

customers as (
    select customer_key, customer_id from {{ ref('int_accounts_rolled_up_to_customers') }}
),
{%- if is_incremental() %}

-- after the pre-hook: the table holds the months before rebuilt_from
rebuilt as (
    select {{ customer_months_rebuilt_from() }} as from_month
),

-- every month of: the customers keyed in this load, and those the table holds no
-- month of (a first account opened after the last month-end built before)
new_customers as (
    select customer_key from {{ customers_keyed_in_this_load() }} as keyed
    union
    select customers.customer_key from customers
    where customers.customer_key not in (select built.customer_key from {{ this }} as built)
),
{%- endif %}

first_month as (
    select min(month_start) as month_start from {{ ref('int_reporting_months') }}
),

spine as (
    select * from {{ ref('int_customer_month_spine') }}
    {%- if is_incremental() %}
    where {{ rebuilt_rows() }}
    {%- endif %}
),

-- +1 in the month an account opens, -1 in the month it closes, earlier months
-- folded into the first reporting month
account_changes as (
    select customer_key, month_start, sum(change) as open_account_change
    from (
        select
            customers.customer_key,
            greatest({{ month_start('accounts.open_date') }}, first_month.month_start)::date
                as month_start,
            1 as change
        from {{ ref('stg_broker__accounts') }} as accounts
        inner join customers on accounts.customer_id = customers.customer_id
        cross join first_month
        union all
        select
            customers.customer_key,
            greatest({{ month_start('accounts.close_date') }}, first_month.month_start)::date
                as month_start,
            -1 as change
        from {{ ref('stg_broker__accounts') }} as accounts
        inner join customers on accounts.customer_id = customers.customer_id
        cross join first_month
        where accounts.close_date is not null
    )
    group by all
),

-- the running sum of the changes is the number of accounts open at the end of
-- each month from a change up to the next one (about one period per customer,
-- so joining it to the spine is cheap)
open_account_periods as (
    select
        customer_key,
        month_start as from_month_start,
        lead(month_start, 1, date '9999-12-01') over (
            partition by customer_key order by month_start
        ) as until_month_start,
        (sum(open_account_change) over (
            partition by customer_key order by month_start
            rows between unbounded preceding and current row
        ))::integer as open_account_count
    from account_changes
),

trades as (
    select * from {{ ref('int_trades_aggregated_to_customer_months') }}
    {%- if is_incremental() %}
    where {{ rebuilt_rows() }}
    {%- endif %}
),

fees as (
    select * from {{ ref('int_fees_aggregated_to_customer_months') }}
    {%- if is_incremental() %}
    where {{ rebuilt_rows() }}
    {%- endif %}
),

cash_flows as (
    select * from {{ ref('int_cash_flows_aggregated_to_customer_months') }}
    {%- if is_incremental() %}
    where {{ rebuilt_rows() }}
    {%- endif %}
),

balances as (
    select * from {{ ref('int_balances_aggregated_to_customer_months') }}
    {%- if is_incremental() %}
    where {{ rebuilt_rows() }}
    {%- endif %}
),

joined as (
    select
        -- ids
        spine.customer_key,
        -- dates
        spine.month_start,
        -- trades
        coalesce(trades.trade_count, 0) as trade_count,
        coalesce(trades.trading_volume, 0) as trading_volume,
        coalesce(trades.active_days, 0) as active_days,
        coalesce(trades.asset_class_mask, 0) as asset_class_mask,
        trades.last_trade_date,
        -- fees
        coalesce(fees.fee_count, 0) as fee_count,
        coalesce(fees.commission, 0) as commission,
        coalesce(fees.margin_interest, 0) as margin_interest,
        coalesce(fees.pass_through_fees, 0) as pass_through_fees,
        coalesce(fees.other_fees, 0) as other_fees,
        -- cash flows
        coalesce(cash_flows.flow_count, 0) as flow_count,
        coalesce(cash_flows.inflow, 0) as inflow,
        coalesce(cash_flows.outflow, 0) as outflow,
        -- balances
        coalesce(balances.snapshot_days, 0) as snapshot_days,
        coalesce(balances.cash_sum, 0) as cash_sum,
        coalesce(balances.gross_assets_sum, 0) as gross_assets_sum,
        coalesce(balances.margin_debt_sum, 0) as margin_debt_sum,
        coalesce(balances.net_assets_sum, 0) as net_assets_sum,
        balances.last_snapshot_net_assets,
        -- accounts
        coalesce(open_account_periods.open_account_count, 0) as open_account_count
    from spine
    left join trades
        on spine.customer_key = trades.customer_key and spine.month_start = trades.month_start
    left join fees
        on spine.customer_key = fees.customer_key and spine.month_start = fees.month_start
    left join cash_flows
        on spine.customer_key = cash_flows.customer_key
        and spine.month_start = cash_flows.month_start
    left join balances
        on spine.customer_key = balances.customer_key
        and spine.month_start = balances.month_start
    left join open_account_periods
        on spine.customer_key = open_account_periods.customer_key
        and spine.month_start >= open_account_periods.from_month_start
        and spine.month_start < open_account_periods.until_month_start
)

select * from joined
