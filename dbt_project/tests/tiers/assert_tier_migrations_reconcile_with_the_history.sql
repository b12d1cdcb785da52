-- Each graded month's migrations count every customer of that month (all but
-- `gone`) and every customer of the month before (all but `new`).
{{ config(meta={'dagster': {'asset_key': ['tiers', 'tier_migrations']}}) }}
with

migrations as (
    select
        as_of_date,
        from_as_of_date,
        sum(case when to_tier <> 'gone' then customers else 0 end) as to_customers,
        sum(case when from_tier <> 'new' then customers else 0 end) as from_customers
    from {{ ref('tier_migrations') }}
    where {{ is_graded('as_of_date') }}
    group by as_of_date, from_as_of_date
),

history as (
    select as_of_date, count(*) as customers
    from {{ ref('customer_tier_history') }}
    group by as_of_date
)

select migrations.*
from migrations
left join history as now on migrations.as_of_date = now.as_of_date
left join history as before on migrations.from_as_of_date = before.as_of_date
where migrations.to_customers <> coalesce(now.customers, 0)
    or migrations.from_customers <> coalesce(before.customers, 0)
