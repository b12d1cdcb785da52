{#- The rows a generic test reads (dbt calls this for every generic test; see
    dbt's default__get_where_subquery). The tiers and service desk tests are
    configured with `where: __graded_month_ends__` (dbt_project.yml): on a table
    with an as_of_date, they read the month-ends this run graded (is_graded), the
    only ones the run wrote; the others stay as the run before tested them. A
    table without an as_of_date is read whole. Any other `where` is dbt's. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where == '__graded_month_ends__' -%}
        {%- set columns = adapter.get_columns_in_relation(relation)
            | map(attribute='name') | map('lower') | list if execute else [] -%}
        {%- if 'as_of_date' in columns -%}
            {%- do return('(select * from ' ~ relation ~ ' where '
                ~ is_graded('as_of_date') ~ ') as dbt_subquery') -%}
        {%- endif -%}
        {%- do return(relation) -%}
    {%- endif -%}
    {%- do return(dbt.default__get_where_subquery(relation)) -%}
{%- endmacro %}
