-- Customers moving between published tiers from the previous graded month-end of
-- the history to the graded one: one row per (from_tier, to_tier) pair with
-- customers; `new` customers were not graded the month before, `gone` ones are not
-- graded now. Incremental by month-end.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='as_of_date',
    on_schema_change='fail',
) }}

with

history as (
    select customer_id, as_of_date, tier from {{ ref('customer_tier_history') }}
),

previous_month as (
    select max(as_of_date) as as_of_date
    from history
    where as_of_date < {{ grading_month() }}
),

before as (
    select history.customer_id, history.tier
    from history
    inner join previous_month on history.as_of_date = previous_month.as_of_date
),

after as (
    select customer_id, tier from history
    where as_of_date = {{ grading_month() }}
),

paired as (
    select
        coalesce(before.tier, 'new') as from_tier,
        coalesce(after.tier, 'gone') as to_tier
    from before
    full outer join after on before.customer_id = after.customer_id
),

counted as (
    select from_tier, to_tier, count(*) as customers
    from paired
    group by from_tier, to_tier
),

plans as (
    select tier, tier_rank from {{ ref('service_plans') }}
),

final as (
    select
        (select as_of_date from previous_month) as from_as_of_date,
        {{ grading_month() }} as as_of_date,
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
    left join plans as from_plan on counted.from_tier = from_plan.tier
    left join plans as to_plan on counted.to_tier = to_plan.tier
)

select * from final
