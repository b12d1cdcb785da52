-- Executed trades that passed every contract rule, typed; one row per trade_id.
with

accepted as (
    select * from {{ ref('base_broker__trades') }}
    where rejection_reason is null
),

renamed as (
    select
        -- ids
        trade_id,
        account_id,
        symbol,
        -- dates
        trade_date,
        -- categories
        asset_class,
        side,
        -- amounts
        quantity,
        price,
        amount,
        -- lineage
        _source_file as source_file,
        _source_row as source_row
    from accepted
)

select * from renamed
