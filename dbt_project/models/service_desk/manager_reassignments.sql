-- Per graded month-end: the moves of customers between managers that the
-- reassignment rule proposes, and the ones it cannot place. The rule, within
-- each branch (the current manager's):
-- 1. Who moves. A customer whose manager's level is below the level their
--    tier's service plan asks for (reason below_plan_level). Then, from each
--    manager over capacity, customers with contact hours, those whose plans ask
--    the least seniority first (then the fewest hours, then customer_id), until
--    the hours shed cover what the below-level moves leave of the excess
--    (reason over_capacity).
-- 2. Who takes them. Listed managers of the branch within capacity, each
--    offering its spare hours less the largest hours one customer asks for (so
--    that no placement can push it over capacity), the highest level first.
-- 3. Placing. Movers, the highest level asked first, and receivers' offered
--    hours are laid end to end; a mover goes to the receiver on whose stretch its
--    own starts. It is proposed when that manager's level is at least the level
--    its plan asks for, and not_possible otherwise, or when the branch's offered
--    hours run out; the note says which.
-- A greedy rule, not an optimum: it never pushes a receiver over capacity, and
-- brings a manager within capacity unless one of its moves is not_possible.
-- Hours are sums of fractions (contacts a year × hours / 12), which the engines
-- add up in different orders: a comparison of such sums treats hours within
-- `tolerance` (a few microseconds) as equal, so that a customer exactly at a
-- boundary is placed the same way whatever the last digits of the sums.
{%- set tolerance = 1e-9 %}
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
) }}

with

book as (
    select * from {{ ref('customer_service_book') }}
    where {{ is_graded('as_of_date') }}
),

books as (
    select * from {{ ref('manager_books') }}
    where {{ is_graded('as_of_date') }} and is_listed
),

-- the largest monthly hours one customer can ask for
largest_ask as (
    select max(contact_hours_per_customer_month) as hours from {{ ref('service_plans') }}
),

-- every customer of a listed manager, with the manager's branch and load
served as (
    select
        book.as_of_date,
        book.customer_id,
        book.tier,
        book.required_manager_level,
        book.required_level_rank,
        book.contact_hours_per_month,
        book.is_served_below_plan,
        books.manager_id as from_manager_id,
        books.manager_level as from_manager_level,
        books.branch_id,
        books.load_status,
        books.hours_over_capacity
    from book
    inner join books
        on book.as_of_date = books.as_of_date
        and book.manager_id = books.manager_id
),

below_level as (
    select
        *,
        'below_plan_level' as move_reason
    from served
    where is_served_below_plan
),

-- what the below-level moves leave of each over-capacity manager's excess
excess as (
    select
        served.as_of_date,
        served.from_manager_id,
        max(served.hours_over_capacity) - coalesce(
            sum(served.contact_hours_per_month) filter (where served.is_served_below_plan), 0
        ) as hours_to_shed
    from served
    where served.load_status = 'over'
    group by served.as_of_date, served.from_manager_id
),

shed_order as (
    select
        served.*,
        excess.hours_to_shed,
        sum(served.contact_hours_per_month) over (
            partition by served.as_of_date, served.from_manager_id
            order by
                served.required_level_rank desc,
                served.contact_hours_per_month asc,
                served.customer_id asc
            rows between unbounded preceding and 1 preceding
        ) as hours_shed_before
    from served
    inner join excess
        on served.as_of_date = excess.as_of_date
        and served.from_manager_id = excess.from_manager_id
    where not served.is_served_below_plan and served.contact_hours_per_month > 0
),

over_capacity as (
    select
        {{ all_but(['hours_to_shed', 'hours_shed_before']) }},
        'over_capacity' as move_reason
    from shed_order
    where coalesce(hours_shed_before, 0) < hours_to_shed - {{ tolerance }}
),

movers as (
    select
        *,
        sum(contact_hours_per_month) over (
            partition by as_of_date, branch_id
            order by required_level_rank, customer_id
            rows between unbounded preceding and current row
        ) - contact_hours_per_month as starts_at
    from (
        select * from below_level
        union all
        select * from over_capacity
    ) as moving
),

receivers as (
    select
        books.as_of_date,
        books.branch_id,
        books.manager_id,
        books.manager_level,
        books.manager_level_rank,
        books.capacity_hours_per_month - books.required_hours_per_month - largest_ask.hours
            as offered_hours
    from books
    cross join largest_ask
    where books.load_status in ('within', 'under')
),

cumulated as (
    select
        *,
        sum(offered_hours) over (
            partition by as_of_date, branch_id
            order by manager_level_rank, manager_id
            rows between unbounded preceding and current row
        ) as ends_at
    from receivers
    where offered_hours > 0
),

-- each receiver's stretch starts exactly where the one before ends
stretches as (
    select
        *,
        coalesce(
            lag(ends_at) over (
                partition by as_of_date, branch_id order by manager_level_rank, manager_id
            ),
            0
        ) as starts_at
    from cumulated
),

placed as (
    select
        movers.*,
        stretches.manager_id as receiver_id,
        stretches.manager_level as receiver_level,
        stretches.manager_level_rank as receiver_level_rank
    from movers
    left join stretches
        on movers.as_of_date = stretches.as_of_date
        and movers.branch_id = stretches.branch_id
        and movers.starts_at >= stretches.starts_at - {{ tolerance }}
        and movers.starts_at < stretches.ends_at - {{ tolerance }}
),

final as (
    select
        -- ids
        as_of_date,
        customer_id,
        branch_id,
        -- the move
        tier,
        cast(contact_hours_per_month as double) as contact_hours_per_month,
        required_manager_level,
        from_manager_id,
        from_manager_level,
        case when receiver_level_rank <= required_level_rank then receiver_id end
            as to_manager_id,
        case when receiver_level_rank <= required_level_rank then receiver_level end
            as to_manager_level,
        move_reason,
        case
            when receiver_level_rank <= required_level_rank then 'proposed'
            else 'not_possible'
        end as status,
        case
            when receiver_id is null
                then 'no manager of branch ' || branch_id || ' has spare hours left'
            when receiver_level_rank > required_level_rank
                then
                    'no manager of level ' || required_manager_level
                    || ' or higher has spare hours left in branch ' || branch_id
        end as note
    from placed
)

select * from final
