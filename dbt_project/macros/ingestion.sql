{#-
    Typing and row rules for the raw landing tables (all text).

    Parsers return NULL for a value they cannot read; the check macros return a
    rule as {code, condition, message}, where the condition is true when the row
    breaks the rule and the message is SQL text saying how, with the value.
    `check_rules` folds a list of rules into two columns, rejection_reason and
    rejection_rules (NULL when the row breaks none). Rule codes:

    missing_value, invalid_date, invalid_number, invalid_value, out_of_range,
    close_before_open, future_date, orphan_account, duplicate_key, malformed_line
-#}

{#- trim spaces, tabs and line breaks; '' is NULL. Most values need no
    trimming: their first and last characters are checked first, which is
    several times cheaper than trim() on every value (and `[-1]` is cheaper
    than right(..., 1)). -#}
{% macro clean_text(column) -%}
    nullif(
        case
            when ascii({{ column }}) <= 32 or ascii({{ last_character(column) }}) <= 32
                then trim({{ column }}, ' ' || chr(9) || chr(10) || chr(13))
            else {{ column }}
        end,
        ''
    )
{%- endmacro %}

{#- `text`: the struct of the row's values trimmed (NULL when empty), computed
    once per value; the parsers and the rules read it. -#}
{% macro clean_texts(columns) -%}
    {%- set fields = [] %}
    {%- for column in columns %}
        {%- do fields.append((column, clean_text('original.' ~ column))) %}
    {%- endfor %}
    {{ struct_of(fields) }}
{%- endmacro %}

{#- The parsers take trimmed text. -#}

{#- strictly YYYY-MM-DD, a real calendar day -#}
{% macro parse_date(text) -%}
    case
        when {{ date_shaped(text) }} then try_cast({{ text }} as date)
    end
{%- endmacro %}

{#- text of the shape YYYY-MM-DD (on DuckDB, GLOB matches the whole value, as a
    full regular-expression match would, in about half the time) -#}
{% macro date_shaped(text) -%}
    {{ return(adapter.dispatch('date_shaped')(text)) }}
{%- endmacro %}

{% macro default__date_shaped(text) -%}
    {{ text }} glob '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'
{%- endmacro %}

{% macro spark__date_shaped(text) -%}
    {{ full_match(text, '[0-9]{4}-[0-9]{2}-[0-9]{2}') }}
{%- endmacro %}

{#- plain decimal notation (optional sign, `.` as decimal point, optional
    exponent); 10 decimal places and 28 integer digits are kept exactly -#}
{% macro parse_decimal(text) -%}
    case
        when {{ full_match(text, '[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?') }}
            then try_cast({{ text }} as decimal(38, 10))
    end
{%- endmacro %}

{#- a whole number; `1979.0` (as exported from a float column) counts as 1979 -#}
{% macro parse_integer(text) -%}
    case
        when {{ full_match(text, '[+-]?[0-9]{1,9}([.]0*)?') }}
            then try_cast(try_cast({{ text }} as decimal(18, 4)) as integer)
    end
{%- endmacro %}

{#- The day of the load: rows dated after it are in the future. -#}
{% macro load_date() -%}
    {%- if var('load_date') -%}
        date '{{ var("load_date") }}'
    {%- else -%}
        date '{{ run_started_at.strftime("%Y-%m-%d") }}'
    {%- endif -%}
{%- endmacro %}

{% macro load_year() -%}
    {{ (var('load_date') | string)[:4] if var('load_date') else run_started_at.year }}
{%- endmacro %}

{#- `original` is the struct of a row's raw text values, `text` of the trimmed ones,
    `column` its typed value. -#}
{% macro _quoted(column) -%}
    '''' || original.{{ column }} || ''''
{%- endmacro %}

{% macro rule_missing(column) -%}
    {% do return({
        'code': 'missing_value',
        'condition': 'text.' ~ column ~ ' is null',
        'message': "'" ~ column ~ " is empty'",
    }) %}
{%- endmacro %}

{% macro rule_date(column) -%}
    {% do return({
        'code': 'invalid_date',
        'condition': 'text.' ~ column ~ ' is not null and ' ~ column ~ ' is null',
        'message': "'" ~ column ~ " ' || " ~ _quoted(column) ~ " || ' is not a date (YYYY-MM-DD)'",
    }) %}
{%- endmacro %}

{% macro rule_not_future(column) -%}
    {% do return({
        'code': 'future_date',
        'condition': column ~ ' > ' ~ load_date(),
        'message': "'" ~ column ~ " ' || " ~ column ~ " || ' is after the load date ' || "
            ~ load_date(),
    }) %}
{%- endmacro %}

{% macro rule_number(column, expected='a number (digits, optional sign, . as decimal point)') -%}
    {% do return({
        'code': 'invalid_number',
        'condition': 'text.' ~ column ~ ' is not null and ' ~ column ~ ' is null',
        'message': "'" ~ column ~ " ' || " ~ _quoted(column) ~ " || ' is not " ~ expected ~ "'",
    }) %}
{%- endmacro %}

{#- bound: SQL comparison the value must satisfy, e.g. '> 0' or 'between 1900 and 2026' -#}
{% macro rule_range(column, bound) -%}
    {% do return({
        'code': 'out_of_range',
        'condition': column ~ ' is not null and not (' ~ column ~ ' ' ~ bound ~ ')',
        'message': "'" ~ column ~ " ' || " ~ _quoted(column) ~ " || ' must be "
            ~ bound | replace("'", "''") ~ "'",
    }) %}
{%- endmacro %}

{% macro rule_in(column, values) -%}
    {% set listed = "'" ~ values | join("', '") ~ "'" %}
    {% do return({
        'code': 'invalid_value',
        'condition': column ~ ' is not null and ' ~ column ~ ' not in (' ~ listed ~ ')',
        'message': "'" ~ column ~ " ' || " ~ _quoted(column) ~ " || ' is not one of "
            ~ values | join(', ') ~ "'",
    }) %}
{%- endmacro %}

{#- true when the row breaks any of the rules -#}
{% macro breaks_any(rules) -%}
    ({% for rule in rules %}coalesce({{ rule.condition }}, false){% if not loop.last %}
        or {% endif %}{% endfor %})
{%- endmacro %}

{#- `relation`'s rows with two columns more: rejection_reason, "code: message;
    code: message" in rule order, and rejection_rules, the codes ("code,code");
    both NULL when the row breaks no rule. Whether a row breaks any rule is
    computed once (the messages are built only for the rows that do). -#}
{% macro check_rules(relation, rules) -%}
    select
        {{ all_but(['breaks_a_rule']) }},
        case when breaks_a_rule then concat_ws('; '
        {%- for rule in rules %},
            case when {{ rule.condition }} then '{{ rule.code }}: ' || {{ rule.message }} end
        {%- endfor %}
        ) end as rejection_reason,
        case when breaks_a_rule then concat_ws(','
        {%- for rule in rules %},
            case when {{ rule.condition }} then '{{ rule.code }}' end
        {%- endfor %}
        ) end as rejection_rules
    from (select *, {{ breaks_any(rules) }} as breaks_a_rule from {{ relation }})
{%- endmacro %}

{#-
    Orphan account_ids, judged after the row rules: a row whose account_id is
    not an accepted account. `checked` is a CTE with rejection_reason /
    rejection_rules from the row rules and `original`, the struct of the row's
    text values. Adds `record` (the original values as JSON) to rejected rows.
    The accounts are looked up with IN, so the hash tables are built on the
    accounts, never on the (much larger) rows being judged; DuckDB looks every
    row up in both, so the second holds only the few quarantined accounts' ids.
-#}
{% macro judge_accounts(checked, key_columns) -%}
    , account_checked as (
        select
            *,
            case
                when account_id is null then null
                when account_id in (
                    select account_id from {{ ref('base_broker__accounts') }}
                    where rejection_reason is null
                )
                    then null
                when account_id in (
                    select account_id from {{ ref('base_broker__accounts') }}
                    where rejection_reason is not null and account_id is not null
                )
                    then 'orphan_account: account_id ''' || account_id
                        || ''' belongs to an account row that was quarantined'
                else 'orphan_account: account_id ''' || account_id || ''' is not in accounts'
            end as orphan_reason
        from {{ checked }}
    ),

    row_judged as (
        select
            {{ all_but(['rejection_reason', 'rejection_rules', 'orphan_reason']) }},
            case when orphan_reason is null then rejection_reason
                else concat_ws('; ', rejection_reason, orphan_reason) end as rejection_reason,
            case when orphan_reason is null then rejection_rules
                else concat_ws(',', rejection_rules, 'orphan_account') end as rejection_rules
        from account_checked
    )

    {{ judged_rows('row_judged', key_columns) }}
{%- endmacro %}

{#- the same, for accounts themselves -#}
{% macro without_account_check(checked, key_columns) -%}
    {{ judged_rows(checked, key_columns) }}
{%- endmacro %}

{#- The rows of `checked` as the base model keeps them: without `original` and
    `text`, with `record` (the original values as JSON) on rejected rows. On
    DuckDB duplicate keys are judged afterwards, in a post-hook
    (`judge_duplicate_keys`); a Spark build is a full build, and judges them here. -#}
{% macro judged_rows(checked, key_columns) -%}
    {{ return(adapter.dispatch('judged_rows')(checked, key_columns)) }}
{%- endmacro %}

{% macro default__judged_rows(checked, key_columns) -%}
    select
        {{ all_but(['original', 'text']) }},
        case when rejection_reason is not null then {{ json_text('original') }} end as record
    from {{ checked }}
{%- endmacro %}

{#- Of the rows with the same key that break no other rule, the first by source
    file and row is kept; the others are quarantined as duplicate_key, with the
    message the DuckDB post-hook writes. -#}
{% macro spark__judged_rows(checked, key_columns) -%}
    , first_of_key as (
        select
            *,
            case when rejection_reason is null then first_value(
                named_struct('file', _source_file, 'row', _source_row)
            ) over (
                partition by rejection_reason is null, {{ key_columns | join(', ') }}
                order by _source_file, _source_row
            ) end as kept
        from {{ checked }}
    ),

    duplicate_judged as (
        select
            *,
            coalesce(kept <> named_struct('file', _source_file, 'row', _source_row), false)
                as is_duplicate
        from first_of_key
    )

    select
        {{ all_but(['original', 'text', 'rejection_reason', 'rejection_rules', 'kept',
            'is_duplicate']) }},
        case when is_duplicate then 'duplicate_key: {{ key_columns | join("/") }} '''
            || {{ key_columns | join(" || '/' || ") }} || ''' already seen in '
            || kept.file || ' row ' || kept.row || ', which is kept'
            else rejection_reason end as rejection_reason,
        case when is_duplicate then 'duplicate_key' else rejection_rules end as rejection_rules,
        case when rejection_reason is not null or is_duplicate
            then {{ json_text('original') }} end as record
    from duplicate_judged
{%- endmacro %}

{#- a struct's JSON text, NULL fields included -#}
{% macro json_text(value) -%}
    {{ return(adapter.dispatch('json_text')(value)) }}
{%- endmacro %}

{% macro default__json_text(value) -%}
    to_json({{ value }})::string
{%- endmacro %}

{% macro spark__json_text(value) -%}
    to_json({{ value }}, map('ignoreNullFields', 'false'))
{%- endmacro %}

{#-
    Duplicate keys, judged last, in a post-hook of the base model: of the rows
    with the same key that break no other rule, the first one seen is kept and
    the others are quarantined as duplicate_key. First seen: rows of earlier
    loads before this load's, then by source file and row. Only rows of this
    load (the files raw.<table> reads) can become duplicates; their original
    values are read again from raw.<table>, and only when there are any.
-#}
{% macro judge_duplicate_keys(table, key_columns) -%}
    {{ return(adapter.dispatch('judge_duplicate_keys')(table, key_columns)) }}
{%- endmacro %}

{#- Spark judges duplicate keys in the base model itself (spark__judged_rows) -#}
{% macro spark__judge_duplicate_keys(table, key_columns) -%}
    select 'duplicate keys are judged in the model' as judged
{%- endmacro %}

{% macro default__judge_duplicate_keys(table, key_columns) -%}
    {%- if execute -%}
    {%- set key = key_columns | join(', ') -%}
    {%- set found = this.identifier ~ '__duplicates' -%}
    {%- set earlier_loads -%}
        select count(*) from {{ source('broker', 'landed_files') }}
        where source_table = '{{ table }}'
            and load_id <> (select load_id from {{ source('broker', 'latest_load') }})
    {%- endset -%}
    {%- set only_this_load = run_query(earlier_loads).columns[0].values()[0] == 0 -%}
    {%- set find_sql -%}
        create or replace temp table {{ found }} as
        with

        this_load as (
            select source_file as _source_file
            from {{ source('broker', 'landed_files') }}
            where source_table = '{{ table }}'
                and load_id = (select load_id from {{ source('broker', 'latest_load') }})
        ),

        good as {{ not_materialized() }} (
            select
                {{ key }},
                _source_file,
                _source_row,
                _source_file in (select _source_file from this_load) as is_new
            from {{ this }}
            where rejection_reason is null
        ),

        -- Repeats are found among the keys' 64-bit hashes first, which is much
        -- cheaper than grouping the text; only the rows whose key hash repeats
        -- are grouped by the key itself (a hash shared by two different keys is
        -- no duplicate).
        {% if only_this_load -%}
        -- every row is new: every key may repeat
        candidates as (
            select * from good
            where {{ hash64(key) }} in ({{ repeated_hashes(key, 'good') }})
        ),
        {%- else -%}
        -- only keys of this load's rows can repeat anew: look up the earlier
        -- rows holding them rather than grouping every key of every load
        candidates as (
            select * from good
            where {{ hash64(key) }} in (select {{ hash64(key) }} from good where is_new)
        ),
        {%- endif %}

        repeated as (
            select {{ key }} from candidates group by {{ key }} having count(*) > 1
        ),

        ranked as (
            select
                *,
                first_value({'file': _source_file, 'row': _source_row}) over (
                    partition by {{ key }} order by is_new, _source_file, _source_row
                ) as kept
            from good
            semi join repeated using ({{ key }})
        )

        select
            ranked._source_file,
            ranked._source_row,
            'duplicate_key: {{ key_columns | join("/") }} '''
                || {{ key_columns | join(" || '/' || ") }} || ''' already seen in '
                || kept.file || ' row ' || kept.row || ', which is kept' as rejection_reason
        from ranked
        where {'file': _source_file, 'row': _source_row} <> kept
    {%- endset -%}
    {%- do run_query(find_sql) -%}
    {%- set count = run_query('select count(*) from ' ~ found).columns[0].values()[0] -%}
    {%- if count > 0 %}
    update {{ this }} as judged
    set
        rejection_reason = duplicates.rejection_reason,
        rejection_rules = 'duplicate_key',
        record = duplicates.record
    from (
        select
            found._source_file,
            found._source_row,
            found.rejection_reason,
            {{ json_text(row_struct(['_source_file', '_source_row'], 'raw_row')) }}
                as record
        from {{ found }} as found
        inner join {{ source('broker', table) }} as raw_row
            on found._source_file = raw_row._source_file
            and found._source_row = raw_row._source_row
    ) as duplicates
    where judged._source_file = duplicates._source_file
        and judged._source_row = duplicates._source_row
    {%- else %}
    select 'no duplicate keys in this load' as judged
    {%- endif %}
    {%- endif -%}
{%- endmacro %}

{#-
    Pre-hook of the incremental base models: drop the rows of files that are no
    longer landed (changed or vanished since their load) and of the files this
    load lands again.
-#}
{% macro drop_rows_of_replaced_files(table) -%}
    {%- if is_incremental() and target.type == 'spark' -%}
    {{ exceptions.raise_compiler_error(
        'a Spark build is a full build (Spark tables take no DELETE): run dbt with --full-refresh'
    ) }}
    {%- elif is_incremental() -%}
    delete from {{ this }}
    where _source_file not in (
        select source_file from {{ source('broker', 'landed_files') }}
        where source_table = '{{ table }}'
    )
    or _source_file in (
        select source_file from {{ source('broker', 'landed_files') }}
        where source_table = '{{ table }}'
            and load_id = (select load_id from {{ source('broker', 'latest_load') }})
    )
    {%- else -%}
    select 'a full load: nothing to drop' as dropped
    {%- endif -%}
{%- endmacro %}
