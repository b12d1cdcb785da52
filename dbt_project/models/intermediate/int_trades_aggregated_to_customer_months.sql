-- Trades summed per customer (all accounts) and calendar month.
with

trades as (
    select * from {{ ref('stg_broker__trades') }}
),

accounts as (
    {{ accounts_with_customer_key() }}
),

aggregated as (
    select
        accounts.customer_key,
        {{ month_start('trades.trade_date') }}::date as month_start,
        count(*) as trade_count,
        sum(trades.amount::double) as trading_volume,
        -- distinct trade days, as the bits set in a mask of days of the month
        -- (count(distinct) costs several times more at millions of customers)
        bit_count(bit_or(1::bigint << (day(trades.trade_date) - 1)))::bigint as active_days,
        max(trades.trade_date) as last_trade_date,
        -- one bit per asset class, so a trailing bit_or counts distinct classes
        bit_or(
            case trades.asset_class
                when 'stock' then 1 when 'fund' then 2 when 'bond' then 4
                when 'option' then 8 else 16
            end
        )::integer as asset_class_mask
    from trades
    inner join accounts on trades.account_id = accounts.account_id
    group by all
)

select * from aggregated
