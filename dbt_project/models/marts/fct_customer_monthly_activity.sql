-- One row per customer and calendar month of the data (no trailing window):
-- what the customer did that month, for branch and month-on-month reporting.
-- Months in which the customer held no account and did nothing are left out.
-- A view over int_customer_months: a second copy of its tens of millions of
-- rows (at a million customers) would cost more per run than reading it does.
{{ config(materialized='view') }}

with

customer_months as (
    select * from {{ ref('int_customer_months') }}
),

customers as (
    select customer_key, customer_id, branch_id
    from {{ ref('int_accounts_rolled_up_to_customers') }}
),

final as (
    select
        -- ids
        customers.customer_id,
        customers.branch_id,
        -- dates
        customer_months.month_start,
        last_day(customer_months.month_start) as month_end_date,
        '{{ var("reporting_currency") }}' as currency,
        customer_months.open_account_count,
        -- trades
        customer_months.trade_count,
        customer_months.trading_volume,
        customer_months.active_days,
        customer_months.trade_count > 0 as is_active,
        -- fees
        customer_months.commission,
        customer_months.margin_interest,
        customer_months.commission + customer_months.margin_interest as revenue,
        customer_months.pass_through_fees,
        customer_months.other_fees,
        -- cash flows
        customer_months.inflow,
        customer_months.outflow,
        customer_months.inflow - customer_months.outflow as net_inflow,
        -- balances
        customer_months.snapshot_days,
        case
            when customer_months.snapshot_days > 0
                then customer_months.net_assets_sum / customer_months.snapshot_days
        end as avg_net_assets,
        customer_months.last_snapshot_net_assets
    from customer_months
    inner join customers on customer_months.customer_key = customers.customer_key
    where customer_months.open_account_count > 0
        or customer_months.trade_count + customer_months.fee_count
        + customer_months.flow_count + customer_months.snapshot_days > 0
)

select * from final
