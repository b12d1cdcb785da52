-- Per graded month-end: published tier × investor suitability grade (C1-C5,
-- unknown), every cell, an empty one included. The value grading is kept apart
-- from suitability: a vip in C1 is still offered no product above risk level 1.
-- The cells of a month-end and tier add up to the tier's size in
-- tiers.tier_profiles. Incremental by month-end.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
) }}

with

book as (
    select * from {{ ref('customer_service_book') }}
    where {{ is_graded('as_of_date') }}
),

months as (
    select distinct as_of_date from {{ ref('customer_tier_history') }}
    where {{ is_graded('as_of_date') }}
),

plans as (
    select tier, tier_rank from {{ ref('service_plans') }}
),

grades as (
    select
        listed.grade,
        cast(right(listed.grade, 1) as integer) as max_product_risk_level
    from (values ('C1'), ('C2'), ('C3'), ('C4'), ('C5')) as listed (grade)
    union all
    select 'unknown' as grade, null as max_product_risk_level
),

cells as (
    select
        as_of_date,
        tier,
        suitability_grade,
        count(*) as customers,
        sum(net_assets) as net_assets,
        sum(realised_revenue) as realised_revenue
    from book
    group by as_of_date, tier, suitability_grade
),

tier_sizes as (
    select as_of_date, tier, count(*) as customers
    from book
    group by as_of_date, tier
),

final as (
    select
        months.as_of_date,
        plans.tier,
        cast(plans.tier_rank as bigint) as tier_rank,
        grades.grade as suitability_grade,
        cast(grades.max_product_risk_level as integer) as max_product_risk_level,
        cast(coalesce(cells.customers, 0) as bigint) as customers,
        cast(coalesce(cells.customers, 0) as double)
        / nullif(tier_sizes.customers, 0) as share_of_tier,
        cast(coalesce(cells.net_assets, 0) as double) as net_assets,
        cast(coalesce(cells.realised_revenue, 0) as double) as realised_revenue
    from months
    cross join plans
    cross join grades
    left join cells
        on months.as_of_date = cells.as_of_date
        and plans.tier = cells.tier
        and grades.grade = cells.suitability_grade
    left join tier_sizes
        on months.as_of_date = tier_sizes.as_of_date
        and plans.tier = tier_sizes.tier
)

select * from final
