-- One row per customer: attributes, first open date, accounts, branch, manager.
-- birth_year and gender are personal data: they stay here and never reach tiers.
with

customers as (
    select * from {{ ref('int_accounts_rolled_up_to_customers') }}
),

open_accounts as (
    select customer_id, count(*) as open_account_count
    from {{ ref('stg_broker__accounts') }}
    where close_date is null or close_date > {{ load_date() }}
    group by customer_id
),

final as (
    select
        -- ids
        customers.customer_id,
        customers.primary_account_id,
        customers.branch_id,
        customers.manager_id,
        -- attributes
        customers.customer_type,
        customers.risk_level,
        -- personal data
        customers.birth_year,
        customers.gender,
        -- dates
        customers.first_open_date,
        customers.last_close_date,
        -- accounts
        customers.account_count,
        coalesce(open_accounts.open_account_count, 0) as open_account_count,
        customers.margin_account_count,
        customers.branch_count,
        customers.last_close_date is not null as is_closed
    from customers
    left join open_accounts on customers.customer_id = open_accounts.customer_id
)

select * from final
