-- tiers.service_plans has exactly six tiers, ranked 1 to 6, and one plan version.
select
    count(*) as tiers,
    min(tier_rank) as first_rank,
    max(tier_rank) as last_rank,
    count(distinct plan_version) as plan_versions
from {{ ref('service_plans') }}
having count(*) <> 6 or min(tier_rank) <> 1 or max(tier_rank) <> 6
    or count(distinct plan_version) <> 1
