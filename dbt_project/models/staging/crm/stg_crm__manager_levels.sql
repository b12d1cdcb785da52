-- The manager levels the service plans name, ranked by the best tier that calls
-- for them: level_rank 1 is the level of the vip plan, the highest. A manager can
-- serve a tier whose plan asks for their level_rank or a larger one.
with

plans as (
    select * from {{ ref('stg_crm__service_plans') }}
),

levels as (
    select
        lower(manager_level) as manager_level,
        min(tier_rank) as best_tier_rank
    from plans
    group by lower(manager_level)
),

ranked as (
    select
        manager_level,
        best_tier_rank,
        dense_rank() over (order by best_tier_rank) as level_rank
    from levels
)

select * from ranked
