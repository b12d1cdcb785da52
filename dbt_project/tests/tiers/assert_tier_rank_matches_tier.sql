-- tier_rank and tier_name are those of tier in the service plans.
{{ config(meta={'dagster': {'asset_key': ['tiers', 'customer_tier_history']}}) }}
select history.customer_id, history.as_of_date, history.tier, history.tier_rank
from {{ ref('customer_tier_history') }} as history
left join {{ ref('service_plans') }} as plans on history.tier = plans.tier
where {{ is_graded('history.as_of_date') }}
    and (
        plans.tier is null
        or history.tier_rank <> plans.tier_rank
        or history.tier_name <> plans.display_name
    )
