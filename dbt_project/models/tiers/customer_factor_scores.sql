-- Every customer's factor scores for each graded month-end, from the model
-- tables of the latest fit on or before that month-end: the SQL replay of
-- ml.TieringModel.transform (IndicatorPreprocessor, then FactorAnalyzer). One
-- row per customer and factor, dormant-rule customers included.
-- Incremental by month-end: a run replaces the month-ends it grades and keeps
-- the others, so the table holds every graded month-end whatever the run order.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
) }}

with

scoring_model as (
    {{ scoring_models() }}
),

customers as (
    select *
    from {{ ref('customer_indicators') }}
    where {{ is_graded('as_of_date') }}
),

model_indicators as (
    select
        scoring_model.as_of_date,
        model_indicators.indicator,
        model_indicators.transform,
        model_indicators.impute_value,
        model_indicators.clip_lower,
        model_indicators.clip_upper,
        model_indicators.mean,
        model_indicators.std
    {{ from_scoring_model('model_indicators') }}
),

model_loadings as (
    select
        scoring_model.as_of_date,
        model_loadings.indicator,
        model_loadings.factor,
        model_loadings.score_coefficient
    {{ from_scoring_model('model_loadings') }}
),

-- one row per customer and model indicator; NaN and infinity count as missing
customer_indicator_values as (
    select
        customers.customer_id,
        customers.as_of_date,
        model_indicators.indicator,
        model_indicators.transform,
        model_indicators.impute_value,
        model_indicators.clip_lower,
        model_indicators.clip_upper,
        model_indicators.mean,
        model_indicators.std,
        {{ is_scoring_indicator('model_indicators.indicator') }} as is_readable,
        {{ finite_or_null(indicator_value('customers', 'model_indicators.indicator')) }}
            as raw_value
    from customers
    inner join model_indicators
        on customers.as_of_date = model_indicators.as_of_date
),

-- a missing value is the training median; an indicator this SQL cannot read
-- stays null, so its customers' scores are null and the not_null test fails
imputed as (
    select
        *,
        case when is_readable then coalesce(raw_value, impute_value) end as imputed_value
    from customer_indicator_values
),

transformed as (
    select
        *,
        case
            when transform = 'signed_log1p'
                then sign(imputed_value) * ln(1 + abs(imputed_value))
            else imputed_value
        end as transformed_value
    from imputed
),

prepared as (
    select
        customer_id,
        as_of_date,
        indicator,
        -- greatest and least skip a null (DuckDB, Spark): keep it null
        case
            when transformed_value is not null
                then (least(greatest(transformed_value, clip_lower), clip_upper) - mean) / std
        end as z
    from transformed
),

final as (
    select
        prepared.customer_id,
        prepared.as_of_date,
        cast(model_loadings.factor as bigint) as factor,
        -- null if any z is (sum would skip it)
        cast(
            case
                when count(prepared.z) = count(*)
                    then sum(prepared.z * model_loadings.score_coefficient)
            end as double
        ) as score
    from prepared
    inner join model_loadings
        on prepared.as_of_date = model_loadings.as_of_date
        and prepared.indicator = model_loadings.indicator
    group by prepared.customer_id, prepared.as_of_date, model_loadings.factor
)

select * from final
