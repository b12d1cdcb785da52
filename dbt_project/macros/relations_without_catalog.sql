{#-
    Relations are rendered without the catalog: DuckDB names a file's catalog
    after the file name, so a view that says "warehouse"."staging"."x" breaks
    when the warehouse is published, copied or opened under another file name
    (TIERS_WAREHOUSE is any path). Unqualified by catalog, the views resolve in
    whichever file they are read from.
-#}
{% macro ref() %}
    {%- set relation = builtins.ref(*varargs, **kwargs) -%}
    {%- if relation is not none and relation.include is defined -%}
        {%- do return(relation.include(database=false)) -%}
    {%- endif -%}
    {%- do return(relation) -%}
{% endmacro %}

{% macro source() %}
    {%- set relation = builtins.source(*varargs, **kwargs) -%}
    {%- if relation is not none and relation.include is defined -%}
        {%- do return(relation.include(database=false)) -%}
    {%- endif -%}
    {%- do return(relation) -%}
{% endmacro %}
