-- The graded month of the history holds exactly the customers the scorer scored.
{{ config(meta={'dagster': {'asset_key': ['tiers', 'customer_scores']}}) }}
with

history as (
    select customer_id from {{ ref('customer_tier_history') }}
    where as_of_date = {{ grading_month() }}
),

scores as (
    select customer_id from {{ ref('customer_scores') }}
)

select coalesce(history.customer_id, scores.customer_id) as customer_id
from history
full outer join scores on history.customer_id = scores.customer_id
where history.customer_id is null or scores.customer_id is null
