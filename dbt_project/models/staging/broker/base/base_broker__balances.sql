-- Every raw balance snapshot row, typed, with the rules it breaks
-- (rejection_reason is NULL for a good row). Good rows become
-- stg_broker__balances; the rest go to audit.quarantine.
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ drop_rows_of_replaced_files('balances') }}",
        post_hook="{{ judge_duplicate_keys('balances', ['account_id', 'as_of_date']) }}",
    )
}}
with

source as (
    select
        _source_file,
        _source_row,
        {{ row_struct(['_source_file', '_source_row']) }} as original
    from {{ source('broker', 'balances') }}
),

cleaned as (
    select
        *,
        {{ clean_texts([
            'account_id', 'as_of_date', 'cash', 'market_value', 'margin_debt'
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
        text.account_id as account_id,
        -- dates
        {{ parse_date('text.as_of_date') }} as as_of_date,
        -- amounts
        {{ parse_decimal('text.cash') }} as cash,
        {{ parse_decimal('text.market_value') }} as market_value,
        {{ parse_decimal('text.margin_debt') }} as margin_debt
    from cleaned
),

{%- set rules = [
    rule_missing('account_id'),
    rule_missing('as_of_date'),
    rule_missing('cash'),
    rule_missing('market_value'),
    rule_date('as_of_date'),
    rule_not_future('as_of_date'),
    rule_number('cash'),
    rule_number('market_value'),
    rule_number('margin_debt'),
    rule_range('cash', '>= 0'),
    rule_range('market_value', '>= 0'),
    rule_range('margin_debt', '>= 0'),
] %}

checked as (
    {{ check_rules('typed', rules) }}
)

{{ judge_accounts('checked', ['account_id', 'as_of_date']) }}
