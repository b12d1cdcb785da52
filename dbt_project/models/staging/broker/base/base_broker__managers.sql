-- Every raw investment manager row, typed, with the rules it breaks (rejection_reason
-- is NULL for a good row). Good rows become stg_broker__managers; the rest go to
-- audit.quarantine. A manager's level must be one the service plans name.
{{ config(post_hook="{{ judge_duplicate_keys('managers', ['manager_id']) }}") }}
with

source as (
    select
        _source_file,
        _source_row,
        {{ row_struct(['_source_file', '_source_row']) }} as original
    from {{ source('broker', 'managers') }}
),

cleaned as (
    select
        *,
        {{ clean_texts([
            'manager_id', 'branch_id', 'level', 'capacity_hours_per_month'
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
        text.manager_id as manager_id,
        text.branch_id as branch_id,
        -- categories
        lower(text.level) as level,
        -- amounts
        {{ parse_decimal('text.capacity_hours_per_month') }} as capacity_hours_per_month
    from cleaned
),

{#- The levels are the service plans' (config/service_plans.yml), read there
    rather than repeated. #}
{%- set levels = ref('stg_crm__manager_levels') %}
{%- set rules = [
    rule_missing('manager_id'),
    rule_missing('branch_id'),
    rule_missing('level'),
    rule_missing('capacity_hours_per_month'),
    {
        'code': 'invalid_value',
        'condition': 'level is not null and level not in (select manager_level from '
            ~ levels ~ ')',
        'message': "'level ' || " ~ _quoted('level') ~ " || ' is not a manager level of "
            ~ "the service plans (' || (select "
            ~ ordered_string_agg('manager_level', "', '", 'level_rank') ~ " from " ~ levels
            ~ ") || ')'",
    },
    rule_number('capacity_hours_per_month'),
    rule_range('capacity_hours_per_month', '>= 0'),
] %}

checked as (
    {{ check_rules('typed', rules) }}
)

{{ without_account_check('checked', ['manager_id']) }}
