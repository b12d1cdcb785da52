-- Per month-end, the hours manager_books asks for, summed over every row
-- (unassigned and unlisted books included), are the service plans' monthly hours
-- × the tier sizes. Returns the month-ends that differ.
{{ config(meta={'dagster': {'asset_key': ['marts', 'manager_books']}}) }}
with

books as (
    select as_of_date, sum(required_hours_per_month) as hours
    from {{ ref('manager_books') }}
    group by as_of_date
),

planned as (
    select
        profiles.as_of_date,
        sum(profiles.customers * plans.contact_hours_per_customer_month) as hours
    from {{ ref('tier_profiles') }} as profiles
    inner join {{ ref('service_plans') }} as plans on profiles.tier = plans.tier
    group by profiles.as_of_date
)

select
    planned.as_of_date,
    planned.hours as planned_hours,
    books.hours as book_hours
from planned
full outer join books on planned.as_of_date = books.as_of_date
where abs(coalesce(books.hours, -1) - coalesce(planned.hours, -2)) > 1e-6
