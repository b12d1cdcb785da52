-- Deposits and withdrawals summed per customer (all accounts) and calendar month.
with

cash_flows as (
    select * from {{ ref('stg_broker__cash_flows') }}
),

accounts as (
    {{ accounts_with_customer_key() }}
),

aggregated as (
    select
        accounts.customer_key,
        {{ month_start('cash_flows.flow_date') }}::date as month_start,
        count(*) as flow_count,
        coalesce(sum(cash_flows.amount::double) filter (where cash_flows.direction = 'in'), 0)
            as inflow,
        coalesce(sum(cash_flows.amount::double) filter (where cash_flows.direction = 'out'), 0)
            as outflow
    from cash_flows
    inner join accounts on cash_flows.account_id = accounts.account_id
    group by all
)

select * from aggregated
