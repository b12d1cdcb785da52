-- Per customer and graded month-end: the published tier next to the investor
-- suitability grade, the manager who serves the customer and what the tier's
-- service plan asks of them. The front office's book, and what
-- tier_suitability_matrix and manager_books add up. No personal data: the
-- suitability grade is a regulatory class, not a personal attribute.
-- The manager and the grade are today's (the accounts file is a snapshot), for
-- every month-end. Incremental by month-end, with the tier history.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
) }}

with

tiers as (
    select customer_id, as_of_date, tier, tier_rank
    from {{ ref('customer_tier_history') }}
    where {{ is_graded('as_of_date') }}
),

indicators as (
    select customer_id, as_of_date, end_net_assets, realised_revenue
    from {{ ref('customer_indicators') }}
    where {{ is_graded('as_of_date') }}
),

customers as (
    select customer_id, branch_id, manager_id, risk_level
    from {{ ref('int_accounts_rolled_up_to_customers') }}
),

plans as (
    select tier, manager_level, contact_hours_per_customer_month
    from {{ ref('service_plans') }}
),

levels as (
    select manager_level, level_rank from {{ ref('stg_crm__manager_levels') }}
),

managers as (
    select manager_id, manager_level, manager_level_rank
    from {{ ref('stg_broker__managers') }}
),

final as (
    select
        -- ids
        tiers.customer_id,
        tiers.as_of_date,
        customers.branch_id,
        customers.manager_id,
        -- tier and suitability
        tiers.tier,
        cast(tiers.tier_rank as bigint) as tier_rank,
        coalesce(customers.risk_level, 'unknown') as suitability_grade,
        cast(right(customers.risk_level, 1) as integer) as max_product_risk_level,
        -- service
        lower(plans.manager_level) as required_manager_level,
        cast(levels.level_rank as bigint) as required_level_rank,
        managers.manager_level,
        cast(managers.manager_level_rank as bigint) as manager_level_rank,
        customers.manager_id is null as is_unassigned,
        coalesce(managers.manager_level_rank > levels.level_rank, false) as is_served_below_plan,
        cast(plans.contact_hours_per_customer_month as double) as contact_hours_per_month,
        -- amounts
        cast(coalesce(indicators.end_net_assets, 0) as double) as net_assets,
        cast(coalesce(indicators.realised_revenue, 0) as double) as realised_revenue
    from tiers
    inner join customers on tiers.customer_id = customers.customer_id
    inner join plans on tiers.tier = plans.tier
    inner join levels on lower(plans.manager_level) = levels.manager_level
    left join indicators
        on tiers.customer_id = indicators.customer_id
        and tiers.as_of_date = indicators.as_of_date
    left join managers on customers.manager_id = managers.manager_id
)

select * from final
