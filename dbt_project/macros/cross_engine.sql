{#-
    The SQL that differs between DuckDB (target `local`) and Spark (target
    `spark`), one macro per construct, dispatched on the adapter. Everything
    else in the models is SQL both engines read alike (`group by all`, `semi
    join`, `::` casts to string/date/bigint/double, `filter (where ...)`).
-#}

{#- every column but `columns`: `* exclude (...)` on DuckDB, `* except (...)` on Spark;
    `qualifier` is the relation's alias -#}
{% macro all_but(columns, qualifier=none) -%}
    {{ return(adapter.dispatch('all_but')(columns, qualifier)) }}
{%- endmacro %}

{% macro default__all_but(columns, qualifier) -%}
    {{ qualifier ~ '.' if qualifier }}* exclude ({{ columns | join(', ') }})
{%- endmacro %}

{% macro spark__all_but(columns, qualifier) -%}
    {{ qualifier ~ '.' if qualifier }}* except ({{ columns | join(', ') }})
{%- endmacro %}

{#- a struct of the row's columns but `columns` -#}
{% macro row_struct(columns, qualifier=none) -%}
    {{ return(adapter.dispatch('row_struct')(columns, qualifier)) }}
{%- endmacro %}

{% macro default__row_struct(columns, qualifier) -%}
    struct_pack(*columns({{ all_but(columns, qualifier) }}))
{%- endmacro %}

{% macro spark__row_struct(columns, qualifier) -%}
    struct({{ all_but(columns, qualifier) }})
{%- endmacro %}

{#- a struct of named values: fields is a list of (name, SQL expression) -#}
{% macro struct_of(fields) -%}
    {{ return(adapter.dispatch('struct_of')(fields)) }}
{%- endmacro %}

{% macro default__struct_of(fields) -%}
    struct_pack({% for name, value in fields %}{{ name }} := {{ value }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}

{% macro spark__struct_of(fields) -%}
    named_struct({% for name, value in fields %}'{{ name }}', {{ value }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}

{#- true when the whole of `text` matches the regular expression `pattern` -#}
{% macro full_match(text, pattern) -%}
    {{ return(adapter.dispatch('full_match')(text, pattern)) }}
{%- endmacro %}

{% macro default__full_match(text, pattern) -%}
    regexp_full_match({{ text }}, '{{ pattern }}')
{%- endmacro %}

{% macro spark__full_match(text, pattern) -%}
    ({{ text }} rlike '^(?:{{ pattern }})$')
{%- endmacro %}

{#- the last character of `text` -#}
{% macro last_character(text) -%}
    {{ return(adapter.dispatch('last_character')(text)) }}
{%- endmacro %}

{% macro default__last_character(text) -%}
    {{ text }}[-1]
{%- endmacro %}

{% macro spark__last_character(text) -%}
    substr({{ text }}, -1)
{%- endmacro %}

{#- a 64-bit hash of the values (a key, or a row's fields) -#}
{% macro hash64(values) -%}
    {{ return(adapter.dispatch('hash64')(values)) }}
{%- endmacro %}

{% macro default__hash64(values) -%}
    hash({{ values }})
{%- endmacro %}

{% macro spark__hash64(values) -%}
    xxhash64({{ values }})
{%- endmacro %}

{#- A hash of a whole row (`alias`, a relation in the FROM clause) that sees which
    value sits in which column. DuckDB's hash of a row xors its fields' hashes, so
    swapping two values would go unseen: each row's hash is hashed again (a bit_xor
    of such hashes is a fingerprint of the rows in any order). Spark's xxhash64
    folds the fields in order. -#}
{% macro row_hash(alias) -%}
    {{ return(adapter.dispatch('row_hash')(alias)) }}
{%- endmacro %}

{% macro default__row_hash(alias) -%}
    hash(hash({{ alias }}))
{%- endmacro %}

{% macro spark__row_hash(alias) -%}
    xxhash64({{ alias }}.*)
{%- endmacro %}

{#- the value of `value` on the row with the greatest (least) `key`; a key of
    several columns is a list of them -#}
{% macro max_by(value, key) -%}
    {{ return(adapter.dispatch('max_by')(value, key, 'max')) }}
{%- endmacro %}

{% macro min_by(value, key) -%}
    {{ return(adapter.dispatch('max_by')(value, key, 'min')) }}
{%- endmacro %}

{% macro default__max_by(value, key, which) -%}
    {%- set key_sql = '(' ~ key | join(', ') ~ ')' if key is not string else key -%}
    arg_{{ which }}({{ value }}, {{ key_sql }})
{%- endmacro %}

{% macro spark__max_by(value, key, which) -%}
    {%- set key_sql = 'struct(' ~ key | join(', ') ~ ')' if key is not string else key -%}
    {{ which }}_by({{ value }}, {{ key_sql }})
{%- endmacro %}

{#- `values` joined by `separator` in the order of `order_by` -#}
{% macro ordered_string_agg(values, separator, order_by) -%}
    {{ return(adapter.dispatch('ordered_string_agg')(values, separator, order_by)) }}
{%- endmacro %}

{% macro default__ordered_string_agg(values, separator, order_by) -%}
    string_agg({{ values }}, {{ separator }} order by {{ order_by }})
{%- endmacro %}

{% macro spark__ordered_string_agg(values, separator, order_by) -%}
    listagg({{ values }}, {{ separator }}) within group (order by {{ order_by }})
{%- endmacro %}

{#- one row per first day of a month from `first_start` to `last_start`, as `name` -#}
{% macro month_starts_between(first_start, last_start, name) -%}
    {{ return(adapter.dispatch('month_starts_between')(first_start, last_start, name)) }}
{%- endmacro %}

{% macro default__month_starts_between(first_start, last_start, name) -%}
    unnest(generate_series({{ first_start }}, {{ last_start }}, interval 1 month))::date as {{ name }}
{%- endmacro %}

{% macro spark__month_starts_between(first_start, last_start, name) -%}
    explode(sequence({{ first_start }}, {{ last_start }}, interval 1 month)) as {{ name }}
{%- endmacro %}

{#- the first day of the month of a date, as a date -#}
{% macro month_start(day) -%}
    {{ return(adapter.dispatch('month_start')(day)) }}
{%- endmacro %}

{% macro default__month_start(day) -%}
    date_trunc('month', {{ day }})
{%- endmacro %}

{% macro spark__month_start(day) -%}
    trunc({{ day }}, 'MM')
{%- endmacro %}

{#- a CTE DuckDB inlines where it is read rather than materialising it (Spark has no such hint) -#}
{% macro not_materialized() -%}
    {{ return(adapter.dispatch('not_materialized')()) }}
{%- endmacro %}

{% macro default__not_materialized() -%}not materialized{%- endmacro %}

{% macro spark__not_materialized() -%}{%- endmacro %}

{#- whole days from `first` to `second` (dates) -#}
{% macro days_between(first, second) -%}
    {{ return(adapter.dispatch('days_between')(first, second)) }}
{%- endmacro %}

{% macro default__days_between(first, second) -%}
    ({{ second }} - {{ first }})
{%- endmacro %}

{% macro spark__days_between(first, second) -%}
    datediff({{ second }}, {{ first }})
{%- endmacro %}

{#- calendar months from the month of `first` to the month of `second` (DuckDB's
    date_diff('month', ...)), the same SQL on both engines -#}
{% macro months_between_starts(first, second) -%}
    ((year({{ second }}) - year({{ first }})) * 12 + month({{ second }}) - month({{ first }}))
{%- endmacro %}

{#- The config of an incremental model whose run replaces every row of the `key`
    values it selects (a load, a month-end): delete+insert on DuckDB; on Spark,
    whose Parquet tables take no DELETE, insert_overwrite of the table
    partitioned by `key` (dynamic partition overwrite). -#}
{% macro replace_by_key(key) -%}
    {{ return(adapter.dispatch('replace_by_key')(key)) }}
{%- endmacro %}

{% macro default__replace_by_key(key) -%}
    {{ return({'incremental_strategy': 'delete+insert', 'unique_key': key}) }}
{%- endmacro %}

{% macro spark__replace_by_key(key) -%}
    {{ return({'incremental_strategy': 'insert_overwrite', 'partition_by': [key],
        'file_format': 'parquet'}) }}
{%- endmacro %}

{#- the type of hash64's values -#}
{% macro hash_type() -%}
    {{ return(adapter.dispatch('hash_type')()) }}
{%- endmacro %}

{% macro default__hash_type() -%}ubigint{%- endmacro %}

{% macro spark__hash_type() -%}bigint{%- endmacro %}

{#- the last non-NULL value of `value` in a window (write `over ...` after it) -#}
{% macro last_non_null(value) -%}
    {{ return(adapter.dispatch('last_non_null')(value)) }}
{%- endmacro %}

{% macro default__last_non_null(value) -%}
    last_value({{ value }} ignore nulls)
{%- endmacro %}

{% macro spark__last_non_null(value) -%}
    last_value({{ value }}, true)
{%- endmacro %}

{#- true for a number that is neither NaN nor infinite -#}
{% macro is_finite(value) -%}
    {{ return(adapter.dispatch('is_finite')(value)) }}
{%- endmacro %}

{% macro default__is_finite(value) -%}
    isfinite({{ value }})
{%- endmacro %}

{% macro spark__is_finite(value) -%}
    (not isnan({{ value }}) and abs({{ value }}) < double('infinity'))
{%- endmacro %}
