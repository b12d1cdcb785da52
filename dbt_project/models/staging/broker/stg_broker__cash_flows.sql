-- Deposits and withdrawals that passed every contract rule, typed; one row per
-- flow_id.
with

accepted as (
    select * from {{ ref('base_broker__cash_flows') }}
    where rejection_reason is null
),

renamed as (
    select
        -- ids
        flow_id,
        account_id,
        -- dates
        flow_date,
        -- categories
        direction,
        -- amounts
        amount,
        case direction when 'in' then amount else -amount end as signed_amount,
        -- lineage
        _source_file as source_file,
        _source_row as source_row
    from accepted
)

select * from renamed
