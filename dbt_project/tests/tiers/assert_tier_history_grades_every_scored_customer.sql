-- Each graded month of the history holds exactly the customers the scorer scored.
{{ config(meta={'dagster': {'asset_key': ['tiers', 'customer_scores']}}) }}
with

history as (
    select customer_id, as_of_date from {{ ref('customer_tier_history') }}
    where {{ is_graded('as_of_date') }}
),

scores as (
    select customer_id, as_of_date from {{ ref('customer_scores') }}
    where {{ is_graded('as_of_date') }}
)

select
    coalesce(history.customer_id, scores.customer_id) as customer_id,
    coalesce(history.as_of_date, scores.as_of_date) as as_of_date
from history
full outer join scores
    on history.customer_id = scores.customer_id
    and history.as_of_date = scores.as_of_date
where history.customer_id is null or scores.customer_id is null
