-- Customers moving between published tiers from the previous graded month-end of
-- the history to each graded one: one row per month-end and (from_tier, to_tier)
-- pair with customers; `new` customers were not graded the month before, `gone`
-- ones are not graded now. Incremental by month-end.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
) }}

with

history as (
    select customer_id, as_of_date, tier from {{ ref('customer_tier_history') }}
),

-- each graded month-end and the month-end of the history before it (null for the
-- first)
month_pairs as (
    select
        as_of_date,
        lag(as_of_date) over (order by as_of_date) as from_as_of_date
    from (select distinct as_of_date from history) as months
),

graded_pairs as (
    select as_of_date, from_as_of_date
    from month_pairs
    where {{ is_graded('as_of_date') }}
),

before as (
    select graded_pairs.as_of_date, history.customer_id, history.tier
    from graded_pairs
    inner join history on graded_pairs.from_as_of_date = history.as_of_date
),

after as (
    select history.as_of_date, history.customer_id, history.tier
    from graded_pairs
    inner join history on graded_pairs.as_of_date = history.as_of_date
),

paired as (
    select
        coalesce(after.as_of_date, before.as_of_date) as as_of_date,
        coalesce(before.tier, 'new') as from_tier,
        coalesce(after.tier, 'gone') as to_tier
    from before
    full outer join after
        on before.as_of_date = after.as_of_date
        and before.customer_id = after.customer_id
),

counted as (
    select as_of_date, from_tier, to_tier, count(*) as customers
    from paired
    group by as_of_date, from_tier, to_tier
),

plans as (
    select tier, tier_rank from {{ ref('service_plans') }}
),

final as (
    select
        graded_pairs.from_as_of_date,
        counted.as_of_date,
        counted.from_tier,
        counted.to_tier,
        case
            when counted.from_tier = 'new' then 'new'
            when counted.to_tier = 'gone' then 'gone'
            when to_plan.tier_rank < from_plan.tier_rank then 'up'
            when to_plan.tier_rank > from_plan.tier_rank then 'down'
            else 'same'
        end as movement,
        cast(counted.customers as bigint) as customers
    from counted
    inner join graded_pairs on counted.as_of_date = graded_pairs.as_of_date
    left join plans as from_plan on counted.from_tier = from_plan.tier
    left join plans as to_plan on counted.to_tier = to_plan.tier
)

select * from final
