{#- Macros of the SQL scorer (customer_factor_scores, customer_scores; tier_profiles
    averages the same indicators), which
    replays ml.TieringModel.assign from the model tables Python writes. -#}

{#- The indicator columns of customer_indicators a model may use: every one of
    ml.preprocessing.ALL_INDICATORS (tests/test_sql_scoring.py checks the two
    lists agree). -#}
{% macro scoring_indicator_columns() -%}
    {{ return([
        'avg_assets', 'commission_contribution', 'interest_contribution',
        'trading_volume', 'net_inflow', 'return_rate', 'trade_count',
        'active_days', 'turnover_rate', 'recency_days', 'tenure_months',
        'active_month_share', 'product_breadth', 'margin_usage',
    ]) }}
{%- endmacro %}

{#- The value, as a double, of the indicator named by `indicator` in the row
    `row`: one wide row read as a long one without UNPIVOT. Null for a name
    that is not in scoring_indicator_columns(). -#}
{% macro indicator_value(row, indicator) -%}
    case {{ indicator }}
        {%- for column in scoring_indicator_columns() %}
        when '{{ column }}' then cast({{ row }}.{{ column }} as double)
        {%- endfor %}
    end
{%- endmacro %}

{#- Whether `indicator` names a column indicator_value() can read. -#}
{% macro is_scoring_indicator(indicator) -%}
    {{ indicator }} in (
        {%- for column in scoring_indicator_columns() -%}
        '{{ column }}'{{ ', ' if not loop.last }}
        {%- endfor -%}
    )
{%- endmacro %}

{#- `expression` where finite, else null: ml.preprocessing.select_indicators
    reads NaN and ±infinity as missing. x - x is 0 for every finite x and NaN
    for NaN and ±infinity (NaN = 0 is false in DuckDB and Spark alike). -#}
{% macro finite_or_null(expression) -%}
    case when {{ expression }} - {{ expression }} = 0 then {{ expression }} end
{%- endmacro %}

{#- The model that scores each graded month-end: the fit with the latest
    as_of_date on or before it (one row per graded month-end: as_of_date,
    model_run_id, model_as_of_date). The writer keeps one fit per month-end;
    should a month-end hold two, the greater run_id wins so the choice is at
    least deterministic. -#}
{% macro scoring_models() -%}
    select as_of_date, model_run_id, model_as_of_date
    from (
        select
            graded.as_of_date,
            fits.run_id as model_run_id,
            fits.as_of_date as model_as_of_date,
            row_number() over (
                partition by graded.as_of_date
                order by fits.as_of_date desc, fits.run_id desc
            ) as recency_order
        from (
            select distinct as_of_date
            from {{ ref('customer_indicators') }}
            where {{ is_graded('as_of_date') }}
        ) as graded
        inner join (
            select distinct run_id, as_of_date
            from {{ source('tiers', 'model_params') }}
        ) as fits
            on fits.as_of_date <= graded.as_of_date
    ) as ranked
    where recency_order = 1
{%- endmacro %}

{#- `from` one model table, restricted to the rows of the models that score the
    graded month-ends, one copy per month-end it scores (`scoring_model.as_of_date`
    is the graded month-end); the query must have the CTE `scoring_model`
    ({{ scoring_models() }}). -#}
{% macro from_scoring_model(table) -%}
    from {{ source('tiers', table) }} as {{ table }}
    inner join scoring_model
        on {{ table }}.run_id = scoring_model.model_run_id
        and {{ table }}.as_of_date = scoring_model.model_as_of_date
{%- endmacro %}

{#- Per graded month-end, the dormant rule's thresholds of the model that scores
    it (model_params holds them as JSON text, 'null' when the rule is off):
    min_recency_days and min_tenure_months, null when off. Needs the
    scoring_model CTE. -#}
{% macro dormant_rule_thresholds() -%}
    select
        scoring_model.as_of_date,
        cast(max(
            case
                when
                    model_params.name = 'dormant_min_recency_days'
                    and model_params.value <> 'null'
                    then model_params.value
            end
        ) as double) as min_recency_days,
        cast(max(
            case
                when
                    model_params.name = 'dormant_min_tenure_months'
                    and model_params.value <> 'null'
                    then model_params.value
            end
        ) as double) as min_tenure_months
    {{ from_scoring_model('model_params') }}
    group by scoring_model.as_of_date
{%- endmacro %}
