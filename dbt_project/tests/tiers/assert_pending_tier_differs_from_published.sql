-- A pending tier differs from the published one and has waited at least a month;
-- nothing pending means no months counted.
{{ config(meta={'dagster': {'asset_key': ['tiers', 'customer_tier_history']}}) }}
select customer_id, as_of_date, hysteresis_tier, pending_tier, pending_months
from {{ ref('customer_tier_history') }}
where {{ is_graded('as_of_date') }}
    and (
        pending_tier = hysteresis_tier
        or (pending_tier is null and pending_months <> 0)
        or (pending_tier is not null and pending_months < 1)
    )
