-- One row per accepted fee, with its customer and whether it is the broker's
-- revenue (commission, margin interest) or passed through (stamp duty,
-- transfer and exchange fees).
-- A view: a copy of tens of millions of rows would cost minutes per run for
-- nothing a query on the staging rows cannot give.
{{ config(materialized='view') }}

with

fees as (
    select * from {{ ref('stg_broker__fees') }}
),

accounts as (
    select account_id, customer_id, branch_id from {{ ref('stg_broker__accounts') }}
),

final as (
    select
        -- ids
        fees.fee_id,
        fees.account_id,
        accounts.customer_id,
        accounts.branch_id,
        fees.trade_id,
        -- dates
        fees.fee_date,
        {{ month_start('fees.fee_date') }}::date as fee_month,
        -- categories
        fees.fee_type,
        case
            when fees.fee_type in ('commission', 'margin_interest') then 'revenue'
            when fees.fee_type in ('stamp_duty', 'transfer_fee', 'exchange_fee')
                then 'pass_through'
            else 'other'
        end as fee_category,
        fees.is_broker_revenue,
        -- amounts
        fees.amount,
        case when fees.is_broker_revenue then fees.amount else 0 end as revenue_amount,
        '{{ var("reporting_currency") }}' as currency,
        -- lineage
        fees.source_file,
        fees.source_row
    from fees
    inner join accounts on fees.account_id = accounts.account_id
)

select * from final
