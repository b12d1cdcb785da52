-- Brokerage accounts that passed every contract rule, typed; one row per account_id.
with

accepted as (
    select * from {{ ref('base_broker__accounts') }}
    where rejection_reason is null
),

renamed as (
    select
        -- ids
        account_id,
        customer_id,
        branch_id,
        manager_id,
        -- dates
        open_date,
        close_date,
        -- categories
        account_type,
        customer_type,
        -- personal attributes (kept out of tier tables)
        birth_year,
        gender,
        risk_level,
        -- flags
        account_type = 'margin' as is_margin_account,
        -- lineage
        _source_file as source_file,
        _source_row as source_row
    from accepted
)

select * from renamed
