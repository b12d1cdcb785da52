-- Per graded month-end and manager: the customers in the manager's book by
-- published tier, the contact hours their service plans ask for against the
-- manager's capacity (managers file), and the customers whose tier asks for a
-- higher manager level than the manager's. Customers without a manager are one
-- row per branch (manager_id NULL, load_status 'unassigned'), and a manager the
-- accounts name but the managers file does not list is 'not_listed', so that
-- required hours summed over the rows of a month-end are the service plans'
-- hours × the tier sizes. Incremental by month-end.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
) }}

{%- set tiers = ['vip', 'potential', 'ordinary_a', 'ordinary_b', 'free', 'sleeping'] %}

with

book as (
    select * from {{ ref('customer_service_book') }}
    where {{ is_graded('as_of_date') }}
),

months as (
    select distinct as_of_date from book
),

managers as (
    select * from {{ ref('stg_broker__managers') }}
),

-- one book per manager, and one per branch for the customers without one
books as (
    select
        as_of_date,
        manager_id,
        -- a manager's book can span branches: the manager's own branch wins below
        case when manager_id is null then branch_id end as unassigned_branch_id,
        min(branch_id) as customer_branch_id,
        count(*) as customers,
        {%- for tier in tiers %}
        count(*) filter (where tier = '{{ tier }}') as {{ tier }}_customers,
        {%- endfor %}
        sum(contact_hours_per_month) as required_hours_per_month,
        count(*) filter (where is_served_below_plan) as customers_below_plan_level
    from book
    group by as_of_date, manager_id, case when manager_id is null then branch_id end
),

-- every listed manager every month-end, an empty book included
listed as (
    select
        months.as_of_date,
        managers.manager_id
    from months
    cross join managers
),

joined as (
    select
        coalesce(books.as_of_date, listed.as_of_date) as as_of_date,
        coalesce(books.manager_id, listed.manager_id) as manager_id,
        coalesce(managers.branch_id, books.unassigned_branch_id, books.customer_branch_id)
            as branch_id,
        managers.manager_level,
        managers.manager_level_rank,
        managers.capacity_hours_per_month,
        managers.manager_id is not null as is_listed,
        books.manager_id is null and books.as_of_date is not null as is_unassigned,
        coalesce(books.customers, 0) as customers,
        {%- for tier in tiers %}
        coalesce(books.{{ tier }}_customers, 0) as {{ tier }}_customers,
        {%- endfor %}
        coalesce(books.required_hours_per_month, 0) as required_hours_per_month,
        coalesce(books.customers_below_plan_level, 0) as customers_below_plan_level
    from books
    full outer join listed
        on books.as_of_date = listed.as_of_date
        and books.manager_id = listed.manager_id
    left join managers on coalesce(books.manager_id, listed.manager_id) = managers.manager_id
),

final as (
    select
        -- ids
        as_of_date,
        manager_id,
        branch_id,
        -- the manager
        manager_level,
        cast(manager_level_rank as bigint) as manager_level_rank,
        cast(capacity_hours_per_month as double) as capacity_hours_per_month,
        is_listed,
        is_unassigned,
        -- the book
        cast(customers as bigint) as customers,
        {%- for tier in tiers %}
        cast({{ tier }}_customers as bigint) as {{ tier }}_customers,
        {%- endfor %}
        cast(customers_below_plan_level as bigint) as customers_below_plan_level,
        -- hours
        cast(required_hours_per_month as double) as required_hours_per_month,
        cast(required_hours_per_month - capacity_hours_per_month as double)
            as hours_over_capacity,
        cast(required_hours_per_month / nullif(capacity_hours_per_month, 0) as double)
            as capacity_used_share,
        case
            when is_unassigned then 'unassigned'
            when not is_listed then 'not_listed'
            -- hours are sums of fractions: a book at capacity to a few microseconds is not over
            when required_hours_per_month > capacity_hours_per_month + 1e-9 then 'over'
            when required_hours_per_month
                < {{ var('manager_underload_share') }} * capacity_hours_per_month then 'under'
            else 'within'
        end as load_status
    from joined
)

select * from final
