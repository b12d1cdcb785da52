-- Every raw trade row, typed, with the rules it breaks (rejection_reason is NULL
-- for a good row). Good rows become stg_broker__trades; the rest go to
-- audit.quarantine.
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ drop_rows_of_replaced_files('trades') }}",
        post_hook="{{ judge_duplicate_keys('trades', ['trade_id']) }}",
    )
}}
with

source as (
    select
        _source_file,
        _source_row,
        {{ row_struct(['_source_file', '_source_row']) }} as original
    from {{ source('broker', 'trades') }}
),

cleaned as (
    select
        *,
        {{ clean_texts([
            'trade_id', 'account_id', 'trade_date', 'symbol', 'asset_class', 'side',
            'quantity', 'price', 'amount'
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
        text.trade_id as trade_id,
        text.account_id as account_id,
        text.symbol as symbol,
        -- dates
        {{ parse_date('text.trade_date') }} as trade_date,
        -- categories
        lower(text.asset_class) as asset_class,
        upper(text.side) as side,
        -- amounts
        {{ parse_decimal('text.quantity') }} as quantity,
        {{ parse_decimal('text.price') }} as price,
        {{ parse_decimal('text.amount') }} as amount
    from cleaned
),

{%- set rules = [
    rule_missing('trade_id'),
    rule_missing('account_id'),
    rule_missing('trade_date'),
    rule_missing('symbol'),
    rule_missing('asset_class'),
    rule_missing('side'),
    rule_missing('quantity'),
    rule_missing('price'),
    rule_missing('amount'),
    rule_date('trade_date'),
    rule_not_future('trade_date'),
    rule_in('asset_class', ['stock', 'fund', 'bond', 'option', 'other']),
    rule_in('side', ['B', 'S']),
    rule_number('quantity'),
    rule_number('price'),
    rule_number('amount'),
    rule_range('quantity', '> 0'),
    rule_range('price', '> 0'),
    rule_range('amount', '> 0'),
] %}

checked as (
    {{ check_rules('typed', rules) }}
)

{{ judge_accounts('checked', ['trade_id']) }}
