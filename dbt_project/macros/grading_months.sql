{#- The month-ends this run grades: every month-end of marts.customer_indicators
    from the var `grade_from` to the var `grade_to` (YYYY-MM-DD). The var
    `grading_month` is a one-month range. The orchestration passes neither: it
    records the range it resolved (tiering.grading_range) in tiers.grading_runs
    under the var `orchestrator_run_id`, which every dbt call of the run passes,
    so the calls share their --vars and the later ones reuse the first one's
    parse. With none of them set, the latest month-end of customer_indicators. -#}
{% macro grade_from() -%}
    {{ _grading_bound('grade_from') }}
{%- endmacro %}

{% macro grade_to() -%}
    {{ _grading_bound('grade_to') }}
{%- endmacro %}

{% macro _grading_bound(name) -%}
    {%- set bound = var(name, none) or var('grading_month', none) -%}
    {%- set run_id = var('orchestrator_run_id', none) -%}
    {%- if bound -%}
        cast('{{ bound }}' as date)
    {%- elif run_id -%}
        {#- read when the node runs and written as a literal, as the vars were: a
            filter on a literal date skips the other month-ends' row groups, so a
            sum over the graded months adds its rows in the same order every run -#}
        {%- if execute -%}
            {%- set runs = api.Relation.create(
                database=target.database if target.database is defined else none,
                schema=generate_schema_name('tiers', none),
                identifier='grading_runs') -%}
            {%- set found = run_query(
                'select cast(' ~ ('min' if name == 'grade_from' else 'max')
                ~ '(as_of_date) as string) from ' ~ runs
                ~ " where orchestrator_run_id = '" ~ (run_id | replace("'", "''")) ~ "'"
            ).columns[0].values()[0] -%}
            {%- if found is none -%}
                {{ exceptions.raise_compiler_error(
                    'tiers.grading_runs records no month-end for run ' ~ run_id) }}
            {%- endif -%}
            cast('{{ found }}' as date)
        {%- else -%}
            cast(null as date)
        {%- endif -%}
    {%- else -%}
        (select max(as_of_date) from {{ ref('customer_indicators') }})
    {%- endif -%}
{%- endmacro %}

{#- A SQL condition: the date expression `column` is a graded month-end. -#}
{% macro is_graded(column) -%}
    {{ column }} between {{ grade_from() }} and {{ grade_to() }}
{%- endmacro %}

{#- The calendar month of the date expression `column` as a whole number
    (year * 12 + month), so that month-ends three months apart differ by 3. -#}
{% macro month_number(column) -%}
    (extract(year from {{ column }}) * 12 + extract(month from {{ column }}))
{%- endmacro %}

{#- A SQL condition: the graded month-end `column` reads the overrides file as it
    is now. The latest graded month-end does, and so does one the tier history
    does not hold yet; a month-end published before keeps the override rows it
    was graded with, so re-grading it does not apply today's file to the past.
    The history is looked up, not ref'd: it is built from override_audit. -#}
{% macro reads_overrides_file(column) -%}
    {%- set history = adapter.get_relation(
        database=target.database if target.database is defined else none,
        schema=generate_schema_name('tiers', none),
        identifier='customer_tier_history') if execute else none -%}
    {{ is_graded(column) }}
    {%- if history is not none %}
    and (
        {{ column }} = {{ grade_to() }}
        or {{ column }} not in (select distinct history.as_of_date from {{ history }} as history)
    )
    {%- endif %}
{%- endmacro %}
