-- Every raw row that did not reach staging, with the reason in words and its
-- original values: rows breaking a contract rule, and CSV lines that could not
-- be read as rows at all.
{%- set tables = ['accounts', 'trades', 'fees', 'balances', 'cash_flows', 'managers'] %}
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
        to_json({{ struct_of([('line', 'raw_line')]) }}) as record
    from {{ source('broker', 'malformed_rows') }}
),

landed_files as (
    select source_table, source_file, load_id, landed_at
    from {{ source('broker', 'landed_files') }}
)

-- ordered for its reader, so not the `select * from final` passthrough
select  -- noqa: CV13
    quarantined.source_table,
    quarantined.source_file,
    quarantined.source_row,
    quarantined.source_line,
    quarantined.rule,
    quarantined.rules,
    quarantined.reason,
    quarantined.record::string as record,
    landed_files.load_id,
    landed_files.landed_at
from (
    select * from rejected_rows
    union all
    select * from malformed_lines
) as quarantined
left join landed_files
    on quarantined.source_table = landed_files.source_table
    and quarantined.source_file = landed_files.source_file
order by
    quarantined.source_table,
    quarantined.source_file,
    coalesce(quarantined.source_row, quarantined.source_line)
