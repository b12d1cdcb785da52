-- Fees charged to customers (negative = rebate or refund) that passed every
-- contract rule, typed; one row per fee_id.
with

accepted as (
    select * from {{ ref('base_broker__fees') }}
    where rejection_reason is null
),

renamed as (
    select
        -- ids
        fee_id,
        account_id,
        trade_id,
        -- dates
        fee_date,
        -- categories
        fee_type,
        fee_type in ('commission', 'margin_interest') as is_broker_revenue,
        -- amounts
        amount,
        -- lineage
        _source_file as source_file,
        _source_row as source_row
    from accepted
)

select * from renamed
