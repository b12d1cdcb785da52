-- Every raw cash flow row, typed, with the rules it breaks (rejection_reason is
-- NULL for a good row). Good rows become stg_broker__cash_flows; the rest go to
-- audit.quarantine.
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ drop_rows_of_replaced_files('cash_flows') }}",
        post_hook="{{ judge_duplicate_keys('cash_flows', ['flow_id']) }}",
    )
}}
with

source as (
    select
        _source_file,
        _source_row,
        {{ row_struct(['_source_file', '_source_row']) }} as original
    from {{ source('broker', 'cash_flows') }}
),

cleaned as (
    select
        *,
        {{ clean_texts([
            'flow_id', 'account_id', 'flow_date', 'direction', 'amount'
        ]) }} as text
    from source
),

typed as (
    select
        _source_file,
        _source_row,
        original,
        text,
        -- ids
        text.flow_id as flow_id,
        text.account_id as account_id,
        -- dates
        {{ parse_date('text.flow_date') }} as flow_date,
        -- categories
        lower(text.direction) as direction,
        -- amounts
        {{ parse_decimal('text.amount') }} as amount
    from cleaned
),

{%- set rules = [
    rule_missing('flow_id'),
    rule_missing('account_id'),
    rule_missing('flow_date'),
    rule_missing('direction'),
    rule_missing('amount'),
    rule_date('flow_date'),
    rule_not_future('flow_date'),
    rule_in('direction', ['in', 'out']),
    rule_number('amount'),
    rule_range('amount', '> 0'),
] %}

checked as (
    {{ check_rules('typed', rules) }}
)

{{ judge_accounts('checked', ['flow_id']) }}
