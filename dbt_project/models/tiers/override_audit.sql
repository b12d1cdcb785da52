-- One row per line of the tier overrides file and graded month-end, applied or
-- not, with every reason a line is not applied. customer_tier_history applies
-- the rows `where applied`. Incremental by month-end: a run replaces the rows of
-- the month-ends it reads the file for (all of them, also when the file has no
-- line left): the latest graded one and any not graded before. A month-end
-- re-graded after it was published keeps the rows it was graded with
-- (reads_overrides_file), so today's file is never applied to the past.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    pre_hook="{% if is_incremental() %}delete from {{ this }} where "
        ~ "{{ reads_overrides_file('as_of_date') }}"
        ~ "{% else %}select 'a full build: nothing to replace'{% endif %}",
    **replace_by_key('as_of_date')
) }}

with

grading as (
    select distinct as_of_date
    from {{ ref('customer_indicators') }}
    where {{ reads_overrides_file('as_of_date') }}
),

overrides as (
    select * from {{ ref('stg_crm__tier_overrides') }}
),

graded_customers as (
    select customer_id, as_of_date, model_tier
    from {{ ref('customer_scores') }}
    where {{ is_graded('as_of_date') }}
),

-- In force this month: a customer_id, and not expired (a valid_until that is
-- not a date does not end it, so such a line still counts as in force).
dated as (
    select
        overrides.*,
        grading.as_of_date,
        coalesce(overrides.valid_until_date < grading.as_of_date, false) as is_expired
    from overrides
    cross join grading
),

in_force as (
    select
        *,
        customer_id is not null and not is_expired as is_in_force
    from dated
),

-- customers with more than one line in force: none of them is applied
repeated_customers as (
    select
        customer_id,
        as_of_date,
        {{ ordered_string_agg('cast(source_line as string)', "', '", 'source_line') }}
            as source_lines
    from in_force
    where is_in_force
    group by customer_id, as_of_date
    having count(*) > 1
),

judged as (
    select
        in_force.*,
        graded_customers.model_tier,
        case
            when in_force.is_expired
                then 'expired: valid_until ' || in_force.valid_until
                    || ' is before the graded month-end ' || cast(in_force.as_of_date as string)
        end as expired_reason,
        case
            when in_force.is_in_force and repeated_customers.customer_id is not null
                then 'duplicate_override: lines ' || repeated_customers.source_lines
                    || ' for customer_id ''' || in_force.customer_id
                    || ''' are all in force, none is applied'
        end as duplicate_reason,
        case
            when in_force.is_in_force and graded_customers.customer_id is null
                then 'not_graded: customer_id ''' || in_force.customer_id
                    || ''' is not graded as of ' || cast(in_force.as_of_date as string)
        end as not_graded_reason
    from in_force
    left join repeated_customers
        on in_force.customer_id = repeated_customers.customer_id
        and in_force.as_of_date = repeated_customers.as_of_date
    left join graded_customers
        on in_force.customer_id = graded_customers.customer_id
        and in_force.as_of_date = graded_customers.as_of_date
),

final as (
    select
        -- dates
        cast(as_of_date as date) as as_of_date,
        -- ids
        cast(customer_id as string) as customer_id,
        -- the override
        cast(requested_tier as string) as requested_tier,
        cast(model_tier as string) as model_tier,
        cast(reason as string) as reason,
        cast(valid_until as string) as valid_until,
        cast(valid_until_date as date) as valid_until_date,
        -- the verdict: every problem, the line's own first
        coalesce(rejection_reason, expired_reason, duplicate_reason, not_graded_reason) is null
            as applied,
        cast(nullif(
            concat_ws('; ', rejection_reason, expired_reason, duplicate_reason, not_graded_reason),
            ''
        ) as string) as rejection,
        -- lineage
        cast(source_line as bigint) as source_line
    from judged
)

select * from final
