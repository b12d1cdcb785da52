-- The marts agree with each other: for every month-end, the trades counted in
-- customer_indicators, summed over customers, are the accepted trades in
-- fct_trades dated in that month-end's window. A month-end whose indicators
-- were kept while the trades under it changed (a corrected or truncated file)
-- fails here. Returns the month-ends that do not add up.
with

windows as (
    select
        as_of_date,
        window_start_date,
        sum(trade_count) as indicator_trades
    from {{ ref('customer_indicators') }}
    group by as_of_date, window_start_date
),

trades_by_month as (
    select
        trade_month,
        count(*) as trades
    from {{ ref('fct_trades') }}
    group by trade_month
),

fact_trades as (
    select
        windows.as_of_date,
        coalesce(sum(trades_by_month.trades), 0) as fact_trades
    from windows
    left join trades_by_month
        on
        windows.window_start_date <= trades_by_month.trade_month
        and windows.as_of_date >= trades_by_month.trade_month
    group by windows.as_of_date
)

select
    windows.as_of_date,
    windows.indicator_trades,
    fact_trades.fact_trades
from windows
inner join fact_trades on windows.as_of_date = fact_trades.as_of_date
where windows.indicator_trades <> fact_trades.fact_trades
