-- Every raw account row, typed, with the rules it breaks (rejection_reason is
-- NULL for a good row). Good rows become stg_broker__accounts; the rest go to
-- audit.quarantine.
{{ config(post_hook="{{ judge_duplicate_keys('accounts', ['account_id']) }}") }}
with

source as (
    select
        _source_file,
        _source_row,
        {{ row_struct(['_source_file', '_source_row']) }} as original
    from {{ source('broker', 'accounts') }}
),

cleaned as (
    select
        *,
        {{ clean_texts([
            'account_id', 'customer_id', 'open_date', 'account_type', 'branch_id',
            'close_date', 'customer_type', 'birth_year', 'gender', 'risk_level',
            'manager_id'
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
        text.customer_id as customer_id,
        text.branch_id as branch_id,
        text.manager_id as manager_id,
        -- dates
        {{ parse_date('text.open_date') }} as open_date,
        {{ parse_date('text.close_date') }} as close_date,
        -- categories
        lower(text.account_type) as account_type,
        lower(text.customer_type) as customer_type,
        upper(text.gender) as gender,
        upper(text.risk_level) as risk_level,
        -- personal attributes
        {{ parse_integer('text.birth_year') }} as birth_year
    from cleaned
),

{%- set rules = [
    rule_missing('account_id'),
    rule_missing('customer_id'),
    rule_missing('open_date'),
    rule_missing('account_type'),
    rule_missing('branch_id'),
    rule_date('open_date'),
    rule_date('close_date'),
    rule_not_future('open_date'),
    rule_not_future('close_date'),
    {
        'code': 'close_before_open',
        'condition': 'close_date < open_date',
        'message': "'close_date ' || close_date || ' is before open_date ' || open_date",
    },
    rule_in('account_type', ['cash', 'margin']),
    rule_in('customer_type', ['individual', 'institution']),
    rule_in('gender', ['M', 'F', 'U']),
    rule_in('risk_level', ['C1', 'C2', 'C3', 'C4', 'C5']),
    rule_number('birth_year', 'a whole number'),
    rule_range('birth_year', 'between 1900 and ' ~ load_year()),
] %}

checked as (
    {{ check_rules('typed', rules) }}
)

{{ without_account_check('checked', ['account_id']) }}
