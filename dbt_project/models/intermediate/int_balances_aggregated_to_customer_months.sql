-- Balance snapshots per customer and calendar month. Accounts are summed per
-- snapshot date first (a customer's net assets on a date = the sum over the
-- accounts with a snapshot that day), then the dates are summed per month, so
-- a trailing window can average over snapshot dates. A customer with a single
-- account has one snapshot per date already: only the snapshots of customers
-- with several accounts are grouped by date (at a million customers that
-- grouping is the costliest step of the monthly models).
with

balances as (
    select * from {{ ref('stg_broker__balances') }}
),

accounts as (
    {{ accounts_with_customer_key(['account_count']) }}
),

account_snapshots as (
    select
        accounts.customer_key,
        accounts.account_count,
        balances.as_of_date as snapshot_date,
        balances.cash::double as cash,
        (balances.cash + balances.market_value)::double as gross_assets,
        balances.margin_debt::double as margin_debt,
        (balances.cash + balances.market_value - balances.margin_debt)::double as net_assets
    from balances
    inner join accounts on balances.account_id = accounts.account_id
),

customer_dates as (
    select {{ all_but(['account_count']) }}
    from account_snapshots
    where account_count = 1
    union all
    select
        customer_key,
        snapshot_date,
        sum(cash) as cash,
        sum(gross_assets) as gross_assets,
        sum(margin_debt) as margin_debt,
        sum(net_assets) as net_assets
    from account_snapshots
    where account_count is distinct from 1
    group by customer_key, snapshot_date
),

aggregated as (
    select
        customer_key,
        {{ month_start('snapshot_date') }}::date as month_start,
        count(*) as snapshot_days,
        sum(cash) as cash_sum,
        sum(gross_assets) as gross_assets_sum,
        sum(margin_debt) as margin_debt_sum,
        sum(net_assets) as net_assets_sum,
        max(snapshot_date) as last_snapshot_date,
        {{ max_by('net_assets', 'snapshot_date') }} as last_snapshot_net_assets
    from customer_dates
    group by all
)

select * from aggregated
