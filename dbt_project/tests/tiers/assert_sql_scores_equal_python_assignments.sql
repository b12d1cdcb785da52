-- In each graded month whose model Python fitted, its assignment and the SQL
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
    where {{ is_graded('as_of_date') }}
),

used_models as (
    select distinct as_of_date, model_run_id from scores
),

assignments as (
    select python.*
    from {{ source('tiers', 'customer_assignments') }} as python
    inner join used_models
        on python.as_of_date = used_models.as_of_date
        and python.run_id = used_models.model_run_id
),

-- Python assigns the months it fits; a month scored with an earlier month's
-- model has no Python assignment to compare with
python_assigned as (
    select distinct used_models.as_of_date
    from {{ source('tiers', 'model_runs') }} as model_runs
    inner join used_models
        on model_runs.as_of_date = used_models.as_of_date
        and model_runs.run_id = used_models.model_run_id
),

disagreements as (
    select
        coalesce(scores.customer_id, assignments.customer_id) as customer_id,
        scores.segment as sql_segment,
        assignments.segment as python_segment,
        scores.model_tier as sql_model_tier,
        assignments.model_tier as python_model_tier
    from scores
    full outer join assignments
        on scores.customer_id = assignments.customer_id
        and scores.as_of_date = assignments.as_of_date
    inner join python_assigned
        on coalesce(scores.as_of_date, assignments.as_of_date) = python_assigned.as_of_date
    where
        scores.customer_id is null
        or assignments.customer_id is null
        or scores.segment <> assignments.segment
        or scores.model_tier <> assignments.model_tier
),

factor_disagreements as (
    select
        factor_scores.customer_id,
        cast(null as bigint) as sql_segment,
        cast(null as bigint) as python_segment,
        cast(null as string) as sql_model_tier,
        cast(null as string) as python_model_tier
    from {{ ref('customer_factor_scores') }} as factor_scores
    inner join assignments
        on factor_scores.customer_id = assignments.customer_id
        and factor_scores.as_of_date = assignments.as_of_date
    where not coalesce(abs(
            factor_scores.score
            - {% if factor_columns %}case factor_scores.factor
            {%- for column in factor_columns %}
            when {{ column[7:] }} then assignments.{{ column }}
            {%- endfor %}
        end{% else %}cast(null as double){% endif %}
        ) <= 1e-9 * greatest(1, abs(factor_scores.score)), false)
)

select * from disagreements
union all
select * from factor_disagreements
