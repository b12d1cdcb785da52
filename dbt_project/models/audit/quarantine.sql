-- Every raw row that did not reach staging, with the reason in words and its
-- original values: rows breaking a contract rule, and CSV lines that could not
-- be read as rows at all.
{%- set tables = ['accounts', 'trades', 'fees', 'balances', 'cash_flows'] %}
with

rejected_rows as (
    {%- for table in tables %}
    select
        '{{ table }}' as source_table,
        _source_file as source_file,
        _source_row as source_row,
        null::bigint as source_line,
        split_part(rejection_rules, ',', 1) as rule,
        rejection_rules as rules,
        rejection_reason as reason,
        record
    from {{ ref('base_broker__' ~ table) }}
    where rejection_reason is not null
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
),

malformed_lines as (
    select
        source_table,
        source_file,
        null::bigint as source_row,
        line as source_line,
        'malformed_line' as rule,
        'malformed_line' as rules,
        'malformed_line: line ' || line || ' cannot be read as a CSV row ('
        || error || ')' as reason,
        to_json({'line': raw_line}) as record
    from {{ source('broker', 'malformed_rows') }}
),

load as (
    select
        any_value(load_id) as load_id,
        max(landed_at) as landed_at
    from {{ source('broker', 'landed_files') }}
)

select
    quarantined.source_table,
    quarantined.source_file,
    quarantined.source_row,
    quarantined.source_line,
    quarantined.rule,
    quarantined.rules,
    quarantined.reason,
    quarantined.record::varchar as record,
    load.load_id,
    load.landed_at
from (
    select * from rejected_rows
    union all
    select * from malformed_lines
) as quarantined
cross join load
order by quarantined.source_table, quarantined.source_file,
    coalesce(quarantined.source_row, quarantined.source_line)
