-- One row per customer and graded month-end: the SQL scorer's model tier, held
-- back by hysteresis, an applied override winning. Incremental by month-end: a
-- run replaces the rows of the month-ends it grades (tiering.grading_range: always
-- through the latest one graded, so no later month is left on an older grading)
-- and reads the state before them from this table.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
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
    where {{ is_graded('as_of_date') }}
),

-- Python's drivers and reason, for the months it fitted a model on (none in a
-- month scored with an earlier month's model)
assignments as (
    select
        customer_id,
        as_of_date,
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
    where {{ is_graded('as_of_date') }}
),

overrides as (
    select customer_id, as_of_date, requested_tier, reason, valid_until_date
    from {{ ref('override_audit') }}
    where {{ is_graded('as_of_date') }} and applied
),

plans as (
    select tier, tier_rank, display_name from {{ ref('service_plans') }}
),

-- each customer's published state (before overrides) before the graded
-- month-ends: their latest row of the history before the first of them
anchors as (
    {%- if is_incremental() %}
    select customer_id, anchor_date, anchor_tier, anchor_pending_tier, anchor_pending_months
    from (
        select
            customer_id,
            as_of_date as anchor_date,
            hysteresis_tier as anchor_tier,
            pending_tier as anchor_pending_tier,
            pending_months as anchor_pending_months,
            row_number() over (partition by customer_id order by as_of_date desc) as recency
        from {{ this }}
        where as_of_date < {{ grade_from() }}
    ) as latest
    where recency = 1
{%- else %}
    select
        cast(null as string) as customer_id,
        cast(null as date) as anchor_date,
        cast(null as string) as anchor_tier,
        cast(null as string) as anchor_pending_tier,
        cast(null as bigint) as anchor_pending_months
    where false
    {%- endif %}
),

-- ml.hysteresis.apply_hysteresis applied month after month, in closed form
-- (tests check the two agree). A customer's rows form chains: a row more than
-- three months after the customer's previous row (or with no previous row)
-- starts one and publishes its model tier, as a new customer does; so a
-- customer missing from a month-end or two keeps their tier's protection. The
-- first rows continue the anchor's chain when it is at most three months
-- before them. Within a chain, a row's count is the months the model has put
-- the customer in its model tier in a row (plus the anchor's pending months
-- when the first of them continue the anchor's pending tier); a row whose count
-- reaches the patience publishes its model tier, and every row publishes the
-- model tier of the latest row that did (the anchor's tier before any did).
sequenced as (
    select
        scores.*,
        {{ month_number('scores.as_of_date') }} as month_number,
        lag({{ month_number('scores.as_of_date') }}) over (
            partition by scores.customer_id order by scores.as_of_date
        ) as previous_month_number,
        lag(scores.model_tier) over (
            partition by scores.customer_id order by scores.as_of_date
        ) as previous_model_tier
    from scores
),

chained as (
    select
        sequenced.*,
        anchors.anchor_tier,
        anchors.anchor_pending_tier,
        anchors.anchor_pending_months,
        case
            when sequenced.previous_month_number is null
                then (
                    anchors.anchor_date is null
                    or sequenced.month_number - {{ month_number('anchors.anchor_date') }} > 3
                )
            else sequenced.month_number - sequenced.previous_month_number > 3
        end as starts_chain
    from sequenced
    left join anchors on sequenced.customer_id = anchors.customer_id
),

runs as (
    select
        *,
        sum(case when starts_chain then 1 else 0 end) over (
            partition by customer_id order by as_of_date rows unbounded preceding
        ) as chain_number,
        sum(
            case
                when
                    starts_chain
                    or previous_month_number is null
                    or model_tier <> previous_model_tier
                    then 1
                else 0
            end
        ) over (
            partition by customer_id order by as_of_date rows unbounded preceding
        ) as run_number
    from chained
),

counted as (
    select
        *,
        row_number() over (partition by customer_id, run_number order by as_of_date)
        + case
            when chain_number = 0 and run_number = 1 and model_tier = anchor_pending_tier
                then coalesce(anchor_pending_months, 0)
            else 0
        end as months_in_model_tier
    from runs
),

qualified as (
    select
        *,
        sum(
            case when starts_chain or months_in_model_tier >= {{ patience }} then 1 else 0 end
        ) over (
            partition by customer_id order by as_of_date rows unbounded preceding
        ) as published_number
    from counted
),

held as (
    select
        *,
        case
            when published_number = 0 then anchor_tier
            else
                first_value(model_tier) over (
                    partition by customer_id, published_number order by as_of_date
                )
        end as hysteresis_tier
    from qualified
),

published as (
    select
        customer_id,
        as_of_date,
        model_tier,
        segment,
        model_run_id,
        hysteresis_tier,
        case when model_tier <> hysteresis_tier then model_tier end as pending_tier,
        case when model_tier <> hysteresis_tier then months_in_model_tier else 0 end
            as pending_months
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
                    || '|pending_months=' || cast(published.pending_months as string)
            when assignments.reason is not null then assignments.reason
            when published.segment = 0 then 'dormant_rule'
            else 'segment=' || cast(published.segment as string)
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
    left join overrides
        on published.customer_id = overrides.customer_id
        and published.as_of_date = overrides.as_of_date
    left join assignments
        on published.customer_id = assignments.customer_id
        and published.as_of_date = assignments.as_of_date
        and published.model_run_id = assignments.run_id
    left join plans
        on coalesce(overrides.requested_tier, published.hysteresis_tier) = plans.tier
)

select * from final
