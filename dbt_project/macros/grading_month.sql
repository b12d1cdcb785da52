{#- The month-end this run grades: the var `grading_month` (YYYY-MM-DD, the
    orchestration passes the month it resolved), else the latest month-end of
    marts.customer_indicators. A SQL date expression. -#}
{% macro grading_month() -%}
    {%- if var('grading_month', none) -%}
        cast('{{ var("grading_month") }}' as date)
    {%- else -%}
        (select max(as_of_date) from {{ ref('customer_indicators') }})
    {%- endif -%}
{%- endmacro %}
