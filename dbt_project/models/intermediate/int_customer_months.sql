-- One row per customer and reporting month, months without activity included
-- (as zeros), so that a window of N rows over a customer is N calendar months.
-- Rows start at the first reporting month and stop once a customer whose
-- accounts are all closed can no longer appear in customer_indicators (closing
-- month + window - 1). Running values (open accounts, latest trade, latest
-- snapshot) are carried from the first reporting month onwards.
{{ config(materialized='table') }}

{%- set window_months = var('window_months') | int %}

with

customers as (
    select customer_id, first_open_date, last_close_date
    from {{ ref('int_accounts_rolled_up_to_customers') }}
),

months as (
    select month_start, as_of_date from {{ ref('int_reporting_months') }}
),

first_month as (
    select min(month_start) as month_start from months
),

spine as (
    select customers.customer_id, months.month_start, months.as_of_date
    from customers
    cross join months
    where customers.first_open_date <= (select max(as_of_date) from months)
        and (
            customers.last_close_date is null
            or months.month_start
            <= date_trunc('month', customers.last_close_date)
            + interval {{ window_months - 1 }} month
        )
),

-- +1 in the month an account opens, -1 in the month it closes, earlier months
-- folded into the first reporting month; the running sum is the number of
-- accounts open at each month's end (only months with a change have a row)
account_changes as (
    select customer_id, month_start, sum(change) as open_account_change
    from (
        select
            accounts.customer_id,
            greatest(date_trunc('month', accounts.open_date), first_month.month_start)
                as month_start,
            1 as change
        from {{ ref('stg_broker__accounts') }} as accounts
        cross join first_month
        union all
        select
            accounts.customer_id,
            greatest(date_trunc('month', accounts.close_date), first_month.month_start),
            -1
        from {{ ref('stg_broker__accounts') }} as accounts
        cross join first_month
        where accounts.close_date is not null
    )
    group by all
),

open_accounts as (
    select
        customer_id,
        month_start,
        (sum(open_account_change) over (
            partition by customer_id order by month_start
            rows between unbounded preceding and current row
        ))::integer as open_account_count
    from account_changes
),

balances as (
    select * from {{ ref('int_balances_aggregated_to_customer_months') }}
),

trades as (
    select * from {{ ref('int_trades_aggregated_to_customer_months') }}
),

joined as (
    select
        -- ids
        spine.customer_id,
        -- dates
        spine.month_start,
        spine.as_of_date,
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
        balances.last_snapshot_date,
        balances.last_snapshot_net_assets,
        -- running values
        coalesce(open_accounts.open_account_count, 0) as open_account_count,
        latest_trade.last_trade_date as latest_trade_date,
        latest_balance.last_snapshot_date as latest_snapshot_date,
        latest_balance.last_snapshot_net_assets as latest_net_assets
    from spine
    left join trades
        on spine.customer_id = trades.customer_id and spine.month_start = trades.month_start
    left join {{ ref('int_fees_aggregated_to_customer_months') }} as fees
        on spine.customer_id = fees.customer_id and spine.month_start = fees.month_start
    left join {{ ref('int_cash_flows_aggregated_to_customer_months') }} as cash_flows
        on spine.customer_id = cash_flows.customer_id
        and spine.month_start = cash_flows.month_start
    left join balances
        on spine.customer_id = balances.customer_id
        and spine.month_start = balances.month_start
    -- running values: the latest row at or before the month (as-of joins, no
    -- window over the whole spine)
    asof left join open_accounts
        on spine.customer_id = open_accounts.customer_id
        and spine.month_start >= open_accounts.month_start
    asof left join trades as latest_trade
        on spine.customer_id = latest_trade.customer_id
        and spine.month_start >= latest_trade.month_start
    asof left join balances as latest_balance
        on spine.customer_id = latest_balance.customer_id
        and spine.month_start >= latest_balance.month_start
)

select * from joined
