-- The latest graded month-end of the history: one row per customer, the table BI reads.
with

history as (
    select * from {{ ref('customer_tier_history') }}
),

final as (
    select *
    from history
    where as_of_date = (select max(latest.as_of_date) from history as latest)
)

select * from final
