-- The service plans, one row per tier, typed. The file was checked whole when it
-- landed (orchestration.config_files.load_service_plans): every row is good.
with

source as (
    select * from {{ source('crm', 'service_plans') }}
),

renamed as (
    select
        -- ids
        cast(tier as string) as tier,
        cast(tier_rank as bigint) as tier_rank,
        -- plan
        cast(display_name as string) as display_name,
        cast(manager_level as string) as manager_level,
        cast(contact_frequency as string) as contact_frequency,
        cast(contacts_per_year as double) as contacts_per_year,
        cast(hours_per_contact as double) as hours_per_contact,
        cast(service_time_share as double) as service_time_share,
        cast(plan_version as string) as plan_version,
        cast(description as string) as description
    from source
)

select * from renamed
