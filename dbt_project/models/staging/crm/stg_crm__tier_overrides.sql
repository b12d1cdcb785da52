-- Every line of the CRM team's tier overrides file, typed, with the rules it
-- breaks on its own (rejection_reason is NULL for a good line). Whether a good
-- line applies depends on the month graded too: tiers.override_audit judges that.
with

source as (
    select
        source_line,
        field_count,
        header_field_count,
        record,
        {{ struct_of([
            ('customer_id', 'customer_id'),
            ('tier', 'tier'),
            ('reason', 'reason'),
            ('valid_until', 'valid_until'),
        ]) }} as original
    from {{ source('crm', 'tier_overrides') }}
),

cleaned as (
    select
        *,
        {{ clean_texts(['customer_id', 'tier', 'reason', 'valid_until']) }} as text
    from source
),

-- named as in the file, so the rule macros find the typed value and the text
typed as (
    select
        source_line,
        field_count,
        header_field_count,
        record,
        original,
        text,
        -- ids
        text.customer_id as customer_id,
        -- categories
        lower(text.tier) as tier,
        -- dates
        {{ parse_date('text.valid_until') }} as valid_until
    from cleaned
),

{#- The tier codes are ml.naming.TIERS, which the service plans file must list
    exactly (checked when it lands): read them there rather than repeat them. #}
{%- set plans = ref('stg_crm__service_plans') %}
{%- set line_rules = [
    rule_missing('customer_id'),
    rule_missing('tier'),
    {
        'code': 'invalid_value',
        'condition': 'tier is not null and tier not in (select tier from ' ~ plans ~ ')',
        'message': "'tier ' || " ~ _quoted('tier') ~ " || ' is not a tier code (' || "
            ~ "(select " ~ ordered_string_agg('tier', "', '", 'tier_rank') ~ " from " ~ plans
            ~ ") || ')'",
    },
    rule_missing('reason'),
    rule_date('valid_until'),
] %}
{#- a line split into the wrong number of fields has no values to judge -#}
{%- set rules = [{
    'code': 'malformed_line',
    'condition': 'field_count <> header_field_count',
    'message': "cast(field_count as string) || ' fields where the header has ' || "
        ~ "cast(header_field_count as string) || ' (a comma in an unquoted reason?)'",
}] %}
{%- for rule in line_rules %}
    {%- do rules.append({
        'code': rule.code,
        'condition': 'field_count = header_field_count and (' ~ rule.condition ~ ')',
        'message': rule.message,
    }) %}
{%- endfor %}

checked as (
    {{ check_rules('typed', rules) }}
),

renamed as (
    select
        -- ids
        source_line,
        customer_id,
        -- override
        tier as requested_tier,
        text.reason as reason,
        -- dates
        text.valid_until as valid_until,
        valid_until as valid_until_date,
        -- judgement
        rejection_reason,
        rejection_rules,
        record
    from checked
)

select * from renamed
