-- Each month's profiles add up to the customers graded that month.
{{ config(meta={'dagster': {'asset_key': ['tiers', 'tier_profiles']}}) }}
with

profiles as (
    select as_of_date, sum(customers) as customers
    from {{ ref('tier_profiles') }}
    group by as_of_date
),

history as (
    select as_of_date, count(*) as customers
    from {{ ref('customer_tier_history') }}
    group by as_of_date
)

select
    coalesce(profiles.as_of_date, history.as_of_date) as as_of_date,
    profiles.customers as in_profiles,
    history.customers as in_history
from profiles
full outer join history on profiles.as_of_date = history.as_of_date
where profiles.customers is null
    or history.customers is null
    or profiles.customers <> history.customers
