-- One row per customer: their accounts rolled up. Attributes come from the
-- primary account (the first opened; ties by account_id), the manager from the
-- latest opened account that names one. Holds personal data (birth_year, gender).
-- customer_key: the customer's integer key (int_customer_keys), stable from
-- build to build.
{{ config(materialized='table') }}

with

accounts as (
    select * from {{ ref('stg_broker__accounts') }}
),

rolled_up as (
    select
        customer_id,
        {{ min_by('account_id', ['open_date', 'account_id']) }} as primary_account_id,
        min(open_date) as first_open_date,
        -- null while any account is open: the relationship has not ended
        case when count(*) = count(close_date) then max(close_date) end as last_close_date,
        count(*) as account_count,
        count(*) filter (where is_margin_account) as margin_account_count,
        count(distinct branch_id) as branch_count,
        -- the manager of the latest-opened account that has one
        {{ max_by('manager_id', ['open_date', 'account_id']) }} filter (
            where manager_id is not null
        ) as manager_id
    from accounts
    group by customer_id
),

final as (
    select
        rolled_up.customer_id,
        keys.customer_key,
        rolled_up.primary_account_id,
        primary_account.branch_id,
        rolled_up.manager_id,
        primary_account.customer_type,
        primary_account.risk_level,
        primary_account.birth_year,
        primary_account.gender,
        rolled_up.first_open_date,
        rolled_up.last_close_date,
        rolled_up.account_count,
        rolled_up.margin_account_count,
        rolled_up.branch_count
    from rolled_up
    inner join {{ ref('int_customer_keys') }} as keys on rolled_up.customer_id = keys.customer_id
    inner join accounts as primary_account
        on rolled_up.primary_account_id = primary_account.account_id
)

select * from final
