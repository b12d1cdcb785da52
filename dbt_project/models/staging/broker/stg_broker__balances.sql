-- Account balance snapshots that passed every contract rule, typed; one row per
-- account_id and as_of_date.
with

accepted as (
    select * from {{ ref('base_broker__balances') }}
    where rejection_reason is null
),

renamed as (
    select
        -- ids
        account_id,
        -- dates
        as_of_date,
        -- amounts
        cash,
        market_value,
        coalesce(margin_debt, 0) as margin_debt,  -- the contract: null means none
        -- lineage
        _source_file as source_file,
        _source_row as source_row
    from accepted
)

select * from renamed
