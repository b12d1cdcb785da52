{#- The month-ends this run grades: every month-end of marts.customer_indicators
    from the var `grade_from` to the var `grade_to` (YYYY-MM-DD; the
    orchestration passes the range it resolved, tiering.grading_range). The var
    `grading_month` is a one-month range; with none of them set, the latest
    month-end of customer_indicators. -#}
{% macro grade_from() -%}
    {{ _grading_bound('grade_from') }}
{%- endmacro %}

{% macro grade_to() -%}
    {{ _grading_bound('grade_to') }}
{%- endmacro %}

{% macro _grading_bound(name) -%}
    {%- set bound = var(name, none) or var('grading_month', none) -%}
    {%- if bound -%}
        cast('{{ bound }}' as date)
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
