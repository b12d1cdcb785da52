-- customer_tiers is one month-end: the latest of the history.
{{ config(meta={'dagster': {'asset_key': ['tiers', 'customer_tiers']}}) }}
select as_of_date, count(*) as customers
from {{ ref('customer_tiers') }}
group by as_of_date
having as_of_date <> (select max(as_of_date) from {{ ref('customer_tier_history') }})
