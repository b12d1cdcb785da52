-- One row per customer and graded month-end: the SQL scorer's model tier, held
-- back by hysteresis, an applied override winning. Incremental by month-end: a
-- run replaces the rows of the month it grades and reads the published state of
-- the months before it from this table.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='as_of_date',
    on_schema_change='fail',
) }}

{%- set patience = var('hysteresis_patience') | int %}
{%- if patience < 1 %}
    {{ exceptions.raise_compiler_error(
        "var hysteresis_patience must be a whole number of months >= 1 (1 = off), not "
        ~ var('hysteresis_patience')) }}
{%- endif %}

with

scores as (
    select * from {{ ref('customer_scores') }}
),

-- Python's drivers and reason, for the months it fitted a model on (none in a
-- month scored with an earlier month's model)
assignments as (
    select
        customer_id,
        driver_1,
        driver_1_z,
        driver_2,
        driver_2_z,
        driver_3,
        driver_3_z,
        nearest_other_tier,
        distance_to_other_tier,
        reason,
        run_id
    from {{ source('tiers', 'customer_assignments') }}
    where as_of_date = {{ grading_month() }}
),

overrides as (
    select customer_id, requested_tier, reason, valid_until_date
    from {{ ref('override_audit') }}
    where as_of_date = {{ grading_month() }} and applied
),

plans as (
    select tier, tier_rank, display_name from {{ ref('service_plans') }}
),

-- each customer's published state before overrides: their latest row of the
-- history in the three months before the graded one, so a customer missing from
-- one month-end keeps their tier's protection
previous as (
    {%- if is_incremental() %}
    select customer_id, tier, pending_tier, pending_months
    from (
        select
            customer_id,
            hysteresis_tier as tier,
            pending_tier,
            pending_months,
            row_number() over (partition by customer_id order by as_of_date desc) as recency
        from {{ this }}
        where as_of_date < {{ grading_month() }}
            and as_of_date >= {{ dbt.dateadd('month', -3, grading_month()) }}
    ) as latest
    where recency = 1
{%- else %}
    select
        cast(null as varchar) as customer_id,
        cast(null as varchar) as tier,
        cast(null as varchar) as pending_tier,
        cast(null as bigint) as pending_months
    where false
    {%- endif %}
),

-- ml.hysteresis.apply_hysteresis, in SQL (tests check the two agree)
counted as (
    select
        scores.*,
        previous.tier as previous_tier,
        previous.tier is not null and scores.model_tier <> previous.tier as differs,
        case
            when previous.tier is null or scores.model_tier = previous.tier then 0
            when scores.model_tier = previous.pending_tier
                then coalesce(previous.pending_months, 0) + 1
            else 1
        end as months_in_model_tier
    from scores
    left join previous on scores.customer_id = previous.customer_id
),

held as (
    select
        *,
        differs and months_in_model_tier < {{ patience }} as is_held
    from counted
),

published as (
    select
        held.customer_id,
        held.as_of_date,
        held.model_tier,
        held.segment,
        held.model_run_id,
        case when held.is_held then held.previous_tier else held.model_tier end
            as hysteresis_tier,
        case when held.is_held then held.model_tier end as pending_tier,
        case when held.is_held then held.months_in_model_tier else 0 end as pending_months
    from held
),

final as (
    select
        published.customer_id,
        published.as_of_date,
        coalesce(overrides.requested_tier, published.hysteresis_tier) as tier,
        cast(plans.tier_rank as bigint) as tier_rank,
        plans.display_name as tier_name,
        published.model_tier,
        published.hysteresis_tier,
        published.pending_tier,
        cast(published.pending_months as bigint) as pending_months,
        cast(published.segment as bigint) as segment,
        overrides.customer_id is not null as is_override,
        overrides.reason as override_reason,
        overrides.valid_until_date as override_valid_until,
        case
            when overrides.customer_id is not null then 'override:' || overrides.reason
            when published.pending_tier is not null
                then 'hysteresis:pending_tier=' || published.pending_tier
                    || '|pending_months=' || cast(published.pending_months as varchar)
            when assignments.reason is not null then assignments.reason
            when published.segment = 0 then 'dormant_rule'
            else 'segment=' || cast(published.segment as varchar)
        end as reason,
        assignments.driver_1,
        assignments.driver_1_z,
        assignments.driver_2,
        assignments.driver_2_z,
        assignments.driver_3,
        assignments.driver_3_z,
        assignments.nearest_other_tier,
        assignments.distance_to_other_tier,
        published.model_run_id as run_id
    from published
    left join overrides on published.customer_id = overrides.customer_id
    left join assignments
        on published.customer_id = assignments.customer_id
        and published.model_run_id = assignments.run_id
    left join plans
        on coalesce(overrides.requested_tier, published.hysteresis_tier) = plans.tier
)

select * from final
