{#-
    Typing and row rules for the raw landing tables (all text).

    Parsers return NULL for a value they cannot read; the check macros return a
    rule as {code, condition, message}, where the condition is true when the row
    breaks the rule and the message is SQL text saying how, with the value.
    `rejection_reason` / `rejection_rules` fold a list of rules into one column
    each (NULL when the row breaks none). Rule codes:

    missing_value, invalid_date, invalid_number, invalid_value, out_of_range,
    close_before_open, future_date, orphan_account, duplicate_key, malformed_line
-#}

{#- trim spaces, tabs and line breaks -#}
{% macro _trimmed(column) -%}
    trim({{ column }}, ' ' || chr(9) || chr(10) || chr(13))
{%- endmacro %}

{% macro clean_text(column) -%}
    nullif({{ _trimmed(column) }}, '')
{%- endmacro %}

{#- strictly YYYY-MM-DD, a real calendar day -#}
{% macro parse_date(column) -%}
    case
        when regexp_full_match({{ _trimmed(column) }}, '[0-9]{4}-[0-9]{2}-[0-9]{2}')
            then try_strptime({{ _trimmed(column) }}, '%Y-%m-%d')::date
    end
{%- endmacro %}

{#- plain decimal notation (optional sign, `.` as decimal point, optional
    exponent); 10 decimal places and 28 integer digits are kept exactly -#}
{% macro parse_decimal(column) -%}
    case
        when regexp_full_match(
            {{ _trimmed(column) }}, '[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?'
        )
            then try_cast({{ _trimmed(column) }} as decimal(38, 10))
    end
{%- endmacro %}

{#- a whole number; `1979.0` (as exported from a float column) counts as 1979 -#}
{% macro parse_integer(column) -%}
    case
        when regexp_full_match({{ _trimmed(column) }}, '[+-]?[0-9]{1,9}([.]0*)?')
            then cast(cast({{ _trimmed(column) }} as decimal(18, 4)) as integer)
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

{#- `original` is the struct of a row's raw text values, `column` its typed value. -#}
{% macro _quoted(column) -%}
    '''' || original.{{ column }} || ''''
{%- endmacro %}

{% macro rule_missing(column) -%}
    {% do return({
        'code': 'missing_value',
        'condition': clean_text('original.' ~ column) ~ ' is null',
        'message': "'" ~ column ~ " is empty'",
    }) %}
{%- endmacro %}

{% macro rule_date(column) -%}
    {% do return({
        'code': 'invalid_date',
        'condition': clean_text('original.' ~ column) ~ ' is not null and ' ~ column ~ ' is null',
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
        'condition': clean_text('original.' ~ column) ~ ' is not null and ' ~ column ~ ' is null',
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

{#- reason: "code: message; code: message" in rule order, NULL when no rule is broken -#}
{% macro rejection_reason(rules) -%}
    nullif(concat_ws('; '
    {%- for rule in rules %},
        case when {{ rule.condition }} then '{{ rule.code }}: ' || {{ rule.message }} end
    {%- endfor %}
    ), '')
{%- endmacro %}

{% macro rejection_rules(rules) -%}
    nullif(concat_ws(','
    {%- for rule in rules %},
        case when {{ rule.condition }} then '{{ rule.code }}' end
    {%- endfor %}
    ), '')
{%- endmacro %}

{#-
    Orphans and duplicates, judged after the row rules, in one macro for all
    tables. `checked` is a CTE with rejection_reason / rejection_rules from the
    row rules. A row whose account_id is not an accepted account is an orphan; of
    the rows with the same key that break no other rule, the first by source file
    and row is kept and the rest are duplicates. Adds `record` (the row's original
    values as JSON) to rejected rows.
-#}
{% macro judge_keys_and_accounts(checked, key_columns, check_account=true) -%}
    {%- set key = key_columns | join(', ') -%}
    {%- set key_text = key_columns | join(" || '/' || ") -%}
    {%- if check_account %}
    , accounts as (
        select
            account_id,
            bool_or(rejection_reason is null) as is_accepted
        from {{ ref('base_broker__accounts') }}
        where account_id is not null
        group by account_id
    ),

    account_checked as (
        select
            {{ checked }}.*,
            case
                when {{ checked }}.account_id is null then null
                when accounts.account_id is null
                    then 'orphan_account: account_id ''' || {{ checked }}.account_id
                        || ''' is not in accounts'
                when not accounts.is_accepted
                    then 'orphan_account: account_id ''' || {{ checked }}.account_id
                        || ''' belongs to an account row that was quarantined'
            end as orphan_reason
        from {{ checked }}
        left join accounts on {{ checked }}.account_id = accounts.account_id
    )
    {%- else %}
    , account_checked as (
        select *, null::varchar as orphan_reason from {{ checked }}
    )
    {%- endif %},


    -- keys held by more than one otherwise good row, and the row kept for each:
    -- an aggregate rather than a window, so only the few repeated keys join back
    repeated_keys as (
        select
            {{ key }},
            min({'file': _source_file, 'row': _source_row}) as kept
        from account_checked
        where rejection_reason is null and orphan_reason is null
        group by {{ key }}
        having count(*) > 1
    ),

    flagged as (
        select
            account_checked.*,
            repeated_keys.kept,
            account_checked.rejection_reason is null
            and account_checked.orphan_reason is null
            and repeated_keys.kept is not null
            and repeated_keys.kept
            <> {'file': account_checked._source_file, 'row': account_checked._source_row}
                as is_duplicate
        from account_checked
        left join repeated_keys using ({{ key }})
    ),

    judged as (
        select
            * exclude (rejection_reason, rejection_rules, orphan_reason, kept, is_duplicate),
            nullif(concat_ws('; ',
                rejection_reason,
                orphan_reason,
                case when is_duplicate
                    then 'duplicate_key: {{ key_columns | join("/") }} '''
                        || {{ key_text }} || ''' already seen in '
                        || kept.file || ' row ' || kept.row || ', which is kept'
                end
            ), '') as rejection_reason,
            nullif(concat_ws(',',
                rejection_rules,
                case when orphan_reason is not null then 'orphan_account' end,
                case when is_duplicate then 'duplicate_key' end
            ), '') as rejection_rules
        from flagged
    )

    select
        * exclude (original),
        case when rejection_reason is not null then to_json(original) end as record
    from judged
{%- endmacro %}
