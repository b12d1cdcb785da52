-- Investment managers that passed every contract rule, typed; one row per
-- manager_id. Empty when the landing folder has no managers table.
with

accepted as (
    select * from {{ ref('base_broker__managers') }}
    where rejection_reason is null
),

levels as (
    select * from {{ ref('stg_crm__manager_levels') }}
),

renamed as (
    select
        -- ids
        accepted.manager_id,
        accepted.branch_id,
        -- categories
        accepted.level as manager_level,
        levels.level_rank as manager_level_rank,
        -- amounts
        accepted.capacity_hours_per_month::double as capacity_hours_per_month,
        -- lineage
        accepted._source_file as source_file,
        accepted._source_row as source_row
    from accepted
    inner join levels on accepted.level = levels.manager_level
)

select * from renamed
