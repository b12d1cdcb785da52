-- Every raw fee row, typed, with the rules it breaks (rejection_reason is NULL
-- for a good row). Good rows become stg_broker__fees; the rest go to
-- audit.quarantine.
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ drop_rows_of_replaced_files('fees') }}",
        post_hook="{{ judge_duplicate_keys('fees', ['fee_id']) }}",
    )
}}
with

source as (
    select
        _source_file,
        _source_row,
        {{ row_struct(['_source_file', '_source_row']) }} as original
    from {{ source('broker', 'fees') }}
),

cleaned as (
    select
        *,
        {{ clean_texts([
            'fee_id', 'account_id', 'fee_date', 'fee_type', 'amount', 'trade_id'
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
        text.fee_id as fee_id,
        text.account_id as account_id,
        text.trade_id as trade_id,
        -- dates
        {{ parse_date('text.fee_date') }} as fee_date,
        -- categories
        lower(text.fee_type) as fee_type,
        -- amounts
        {{ parse_decimal('text.amount') }} as amount
    from cleaned
),

{%- set rules = [
    rule_missing('fee_id'),
    rule_missing('account_id'),
    rule_missing('fee_date'),
    rule_missing('fee_type'),
    rule_missing('amount'),
    rule_date('fee_date'),
    rule_not_future('fee_date'),
    rule_in('fee_type', [
        'commission', 'margin_interest', 'stamp_duty', 'transfer_fee', 'exchange_fee', 'other'
    ]),
    rule_number('amount'),
] %}

checked as (
    {{ check_rules('typed', rules) }}
)

{{ judge_accounts('checked', ['fee_id']) }}
