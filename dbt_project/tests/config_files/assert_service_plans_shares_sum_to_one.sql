-- The six tiers' service_time_share add up to 1 (within 1e-9, as the file is checked).
select sum(service_time_share) as total_share
from {{ ref('service_plans') }}
having abs(sum(service_time_share) - 1) > 1e-9
