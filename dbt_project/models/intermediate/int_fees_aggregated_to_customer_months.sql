-- Fees summed per customer (all accounts) and calendar month, split into the
-- broker's revenue (commission, margin interest) and pass-through charges.
with

fees as (
    select * from {{ ref('stg_broker__fees') }}
),

accounts as (
    {{ accounts_with_customer_key() }}
),

aggregated as (
    select
        accounts.customer_key,
        {{ month_start('fees.fee_date') }}::date as month_start,
        count(*) as fee_count,
        coalesce(sum(fees.amount::double) filter (where fees.fee_type = 'commission'), 0)
            as commission,
        coalesce(sum(fees.amount::double) filter (where fees.fee_type = 'margin_interest'), 0)
            as margin_interest,
        coalesce(sum(fees.amount::double) filter (
            where fees.fee_type in ('stamp_duty', 'transfer_fee', 'exchange_fee')
        ), 0) as pass_through_fees,
        coalesce(sum(fees.amount::double) filter (where fees.fee_type = 'other'), 0)
            as other_fees
    from fees
    inner join accounts on fees.account_id = accounts.account_id
    group by all
)

select * from aggregated
