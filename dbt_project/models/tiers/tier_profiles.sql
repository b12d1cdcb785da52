-- Per graded month-end and tier: size, share, mean indicators and realised revenue
-- of the published tier (after overrides). Every tier of the service plans has a
-- row, one without customers included. Incremental by month-end.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
) }}

{%- set indicators = scoring_indicator_columns() %}

with

tiers as (
    select customer_id, as_of_date, tier
    from {{ ref('customer_tier_history') }}
    where {{ is_graded('as_of_date') }}
),

indicators as (
    select *
    from {{ ref('customer_indicators') }}
    where {{ is_graded('as_of_date') }}
),

plans as (
    select tier, tier_rank from {{ ref('service_plans') }}
),

graded as (
    select
        tiers.as_of_date,
        tiers.tier,
        {%- for column in indicators %}
        indicators.{{ column }},
        {%- endfor %}
        -- realised revenue: commission net of rebates plus margin interest charged,
        -- never the imputed spread on idle cash
        coalesce(indicators.commission_contribution, 0)
        + coalesce(indicators.interest_contribution, 0) as revenue
    from tiers
    inner join indicators
        on tiers.customer_id = indicators.customer_id
        and tiers.as_of_date = indicators.as_of_date
),

by_tier as (
    select
        as_of_date,
        tier,
        count(*) as customers,
        {%- for column in indicators %}
        avg({{ column }}) as mean_{{ column }},
        {%- endfor %}
        sum(revenue) as revenue,
        sum(avg_assets) as total_avg_assets
    from graded
    group by as_of_date, tier
),

-- every graded month-end, one without a graded customer included
months as (
    select distinct as_of_date from indicators
),

totals as (
    select months.as_of_date, count(graded.as_of_date) as customers, sum(graded.revenue) as revenue
    from months
    left join graded on months.as_of_date = graded.as_of_date
    group by months.as_of_date
),

final as (
    select
        totals.as_of_date,
        plans.tier,
        cast(plans.tier_rank as bigint) as tier_rank,
        cast(coalesce(by_tier.customers, 0) as bigint) as customers,
        cast(coalesce(by_tier.customers, 0) as double)
        / nullif(totals.customers, 0) as share,
        {%- for column in indicators %}
        cast(by_tier.mean_{{ column }} as double) as mean_{{ column }},
        {%- endfor %}
        cast(coalesce(by_tier.revenue, 0) as double) as revenue,
        cast(coalesce(by_tier.revenue, 0) as double) / nullif(totals.revenue, 0) as revenue_share,
        cast(coalesce(by_tier.total_avg_assets, 0) as double) as total_avg_assets
    from plans
    cross join totals
    left join by_tier
        on totals.as_of_date = by_tier.as_of_date
        and plans.tier = by_tier.tier
)

select * from final
