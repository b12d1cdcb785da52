-- Each month-end's cells of a tier add up to the tier's size in tier_profiles.
-- Returns the (month-end, tier) pairs that do not.
{{ config(meta={'dagster': {'asset_key': ['marts', 'tier_suitability_matrix']}}) }}
with

matrix as (
    select as_of_date, tier, sum(customers) as customers
    from {{ ref('tier_suitability_matrix') }}
    group by as_of_date, tier
),

profiles as (
    select as_of_date, tier, customers from {{ ref('tier_profiles') }}
)

select
    profiles.as_of_date,
    profiles.tier,
    profiles.customers as tier_size,
    matrix.customers as matrix_customers
from profiles
full outer join matrix
    on profiles.as_of_date = matrix.as_of_date
    and profiles.tier = matrix.tier
where matrix.customers is distinct from profiles.customers
