-- Monthly activity by branch and tier: each graded month-end's customers, with
-- what they did that month, grouped by their branch and their tier that month.

with

tiers as (
    select customer_id, as_of_date, tier, tier_rank
    from {{ ref('customer_tier_history') }}
),

activity as (
    select * from {{ ref('fct_customer_monthly_activity') }}
),

customers as (
    select customer_id, branch_id from {{ ref('dim_customers') }}
),

final as (
    select
        tiers.as_of_date,
        customers.branch_id,
        tiers.tier,
        tiers.tier_rank,
        '{{ var("reporting_currency") }}' as currency,
        cast(count(*) as bigint) as customers,
        cast(sum(case when activity.is_active then 1 else 0 end) as bigint) as active_customers,
        cast(coalesce(sum(activity.trade_count), 0) as bigint) as trade_count,
        coalesce(sum(activity.trading_volume), 0) as trading_volume,
        coalesce(sum(activity.revenue), 0) as revenue,
        coalesce(sum(activity.net_inflow), 0) as net_inflow
    from tiers
    inner join customers on tiers.customer_id = customers.customer_id
    left join activity
        on tiers.customer_id = activity.customer_id
        and tiers.as_of_date = activity.month_end_date
    group by tiers.as_of_date, customers.branch_id, tiers.tier, tiers.tier_rank
)

select * from final
