-- One row per customer and reporting month the customer can appear in: from the
-- first reporting month to the last one or, once every account is closed, to
-- the closing month + window - 1 (after that the customer is in no window).
-- None for a customer whose first account opens after the last month-end.
-- A table of its own so that DuckDB knows its size: joined to the monthly
-- aggregates, it is then the side that streams, and the aggregates are hashed.
{{ config(materialized='table') }}

{%- set window_months = var('window_months') | int %}

with

customers as (
    select customer_key, first_open_date, last_close_date
    from {{ ref('int_accounts_rolled_up_to_customers') }}
),

months as (
    select month_start, as_of_date from {{ ref('int_reporting_months') }}
),

spine as (
    select customers.customer_key, months.month_start
    from customers
    cross join months
    where customers.first_open_date
        <= (select max(as_of_date) from {{ ref('int_reporting_months') }})
        and (
            customers.last_close_date is null
            or months.month_start
            <= {{ month_start('customers.last_close_date') }}
            + interval {{ window_months - 1 }} month
        )
)

select * from spine
