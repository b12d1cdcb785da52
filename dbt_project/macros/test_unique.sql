{#-
    dbt's built-in `unique` test, for DuckDB (dbt dispatches to it): the same
    failing rows (each repeated value with its count), found in two passes.
    The first finds the 64-bit hashes that repeat (`repeated_hashes`), which is
    much cheaper than grouping text keys (tens of millions of trade and fee
    ids); the second groups the values themselves, only where a hash repeats,
    so a hash shared by two different values is never reported.
-#}
{% macro duckdb__test_unique(model, column_name) %}

with

repeated_hashes as (
    {{ repeated_hashes(
        column_name,
        '(select * from ' ~ model ~ ' where ' ~ column_name ~ ' is not null)'
    ) }}
)

select
    {{ column_name }} as unique_field,
    count(*) as n_records
from {{ model }}
where {{ column_name }} is not null
    and hash({{ column_name }}) in (select key_hash from repeated_hashes)
group by {{ column_name }}
having count(*) > 1

{% endmacro %}
