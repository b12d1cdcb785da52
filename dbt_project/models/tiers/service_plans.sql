-- How the brokerage serves each tier, one row per tier, from the business-edited
-- service plans file (config/service_plans.yml).
select
    tier,
    tier_rank,
    display_name,
    manager_level,
    contact_frequency,
    contacts_per_year,
    hours_per_contact,
    contacts_per_year * hours_per_contact / 12 as contact_hours_per_customer_month,
    service_time_share,
    plan_version,
    description
from {{ ref('stg_crm__service_plans') }}
