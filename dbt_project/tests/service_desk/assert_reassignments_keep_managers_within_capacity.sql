-- The proposed moves never push a receiving manager over capacity, and bring a
-- manager over capacity within it unless one of its moves is not_possible.
-- Returns the managers for which either fails.
{{ config(meta={'dagster': {'asset_key': ['marts', 'manager_reassignments']}}) }}
with

moves as (
    select * from {{ ref('manager_reassignments') }}
),

incoming as (
    select as_of_date, to_manager_id as manager_id, sum(contact_hours_per_month) as hours
    from moves
    where status = 'proposed'
    group by as_of_date, to_manager_id
),

outgoing as (
    select
        as_of_date,
        from_manager_id as manager_id,
        sum(case when status = 'proposed' then contact_hours_per_month else 0 end) as hours,
        count(case when status = 'not_possible' then 1 end) as not_possible
    from moves
    group by as_of_date, from_manager_id
),

after_moves as (
    select
        books.as_of_date,
        books.manager_id,
        books.load_status,
        books.capacity_hours_per_month,
        books.required_hours_per_month
        + coalesce(incoming.hours, 0)
        - coalesce(outgoing.hours, 0) as hours_after,
        coalesce(incoming.hours, 0) as hours_in,
        coalesce(outgoing.not_possible, 0) as not_possible
    from {{ ref('manager_books') }} as books
    left join incoming
        on books.as_of_date = incoming.as_of_date
        and books.manager_id = incoming.manager_id
    left join outgoing
        on books.as_of_date = outgoing.as_of_date
        and books.manager_id = outgoing.manager_id
    where books.is_listed
)

select *
from after_moves
where
    (hours_in > 0 and hours_after > capacity_hours_per_month + 1e-9)
    or (load_status = 'over' and not_possible = 0 and hours_after > capacity_hours_per_month + 1e-9)
