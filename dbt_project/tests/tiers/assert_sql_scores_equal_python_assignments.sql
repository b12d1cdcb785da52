-- When Python fitted the graded month's model, its assignment and the SQL
-- scorer's agree for every customer: same customers, segments and model tiers,
-- factor scores within 1e-9 (relative to their size). A month scored with an
-- earlier month's model has no Python assignment to compare with.
{{ config(meta={'dagster': {'asset_key': ['tiers', 'customer_scores']}}) }}
{#- the factor_<n> columns Python wrote (as many as the widest model had factors) -#}
{%- set factor_columns = [] %}
{%- if execute %}
    {%- for column in adapter.get_columns_in_relation(source('tiers', 'customer_assignments')) %}
        {%- if modules.re.fullmatch('factor_[0-9]+', column.name) %}
            {%- do factor_columns.append(column.name) %}
        {%- endif %}
    {%- endfor %}
{%- endif %}

with

scores as (
    select * from {{ ref('customer_scores') }}
),

assignments as (
    select assignments.*
    from {{ source('tiers', 'customer_assignments') }} as assignments
    inner join (select distinct model_run_id from scores) as used
        on assignments.run_id = used.model_run_id
    where assignments.as_of_date = {{ grading_month() }}
),

disagreements as (
    select
        coalesce(scores.customer_id, assignments.customer_id) as customer_id,
        scores.segment as sql_segment,
        assignments.segment as python_segment,
        scores.model_tier as sql_model_tier,
        assignments.model_tier as python_model_tier
    from scores
    full outer join assignments on scores.customer_id = assignments.customer_id
    where (select count(*) from assignments) > 0
        and (
            scores.customer_id is null
            or assignments.customer_id is null
            or scores.segment <> assignments.segment
            or scores.model_tier <> assignments.model_tier
        )
),

factor_disagreements as (
    select
        factor_scores.customer_id,
        cast(null as bigint),
        cast(null as bigint),
        cast(null as varchar),
        cast(null as varchar)
    from {{ ref('customer_factor_scores') }} as factor_scores
    inner join assignments on factor_scores.customer_id = assignments.customer_id
    where not coalesce(abs(
        factor_scores.score
        - case factor_scores.factor
            {%- for column in factor_columns %}
            when {{ column[7:] }} then assignments.{{ column }}
            {%- endfor %}
            else null
        end
    ) <= 1e-9 * greatest(1, abs(factor_scores.score)), false)
)

select * from disagreements
union all
select * from factor_disagreements
