{#- Models land in the schema they name (staging, audit, marts, ...), not
    "<target schema>_<name>": the schema names are part of the output contract. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name | trim if custom_schema_name is not none else target.schema }}
{%- endmacro %}
