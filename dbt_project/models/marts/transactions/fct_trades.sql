-- One row per accepted trade, with the customer and branch it belongs to.
-- A view: a copy of tens of millions of rows would cost minutes per run for
-- nothing a query on the staging rows cannot give.
{{ config(materialized='view') }}

with

trades as (
    select * from {{ ref('stg_broker__trades') }}
),

accounts as (
    select account_id, customer_id, branch_id from {{ ref('stg_broker__accounts') }}
),

final as (
    select
        -- ids
        trades.trade_id,
        trades.account_id,
        accounts.customer_id,
        accounts.branch_id,
        trades.symbol,
        -- dates
        trades.trade_date,
        {{ month_start('trades.trade_date') }}::date as trade_month,
        -- categories
        trades.asset_class,
        trades.side,
        -- amounts
        trades.quantity,
        trades.price,
        trades.amount,
        '{{ var("reporting_currency") }}' as currency,
        -- lineage
        trades.source_file,
        trades.source_row
    from trades
    inner join accounts on trades.account_id = accounts.account_id
)

select * from final
