-- The month-ends the data covers, one row per month: from the first month with
-- any accepted trade, fee, balance snapshot or cash flow to the last complete
-- month (its last day is before the day of the load), each with its trailing
-- window. See docs/indicators.md, "Which month-ends".
{{ config(materialized='table') }}

{%- set window_months = var('window_months') | int %}

with

activity_dates as (
    select min(trade_date) as first_date, max(trade_date) as last_date
    from {{ ref('stg_broker__trades') }}
    union all
    select min(fee_date) as first_date, max(fee_date) as last_date
    from {{ ref('stg_broker__fees') }}
    union all
    select min(as_of_date) as first_date, max(as_of_date) as last_date
    from {{ ref('stg_broker__balances') }}
    union all
    select min(flow_date) as first_date, max(flow_date) as last_date
    from {{ ref('stg_broker__cash_flows') }}
),

coverage as (
    select
        date_trunc('month', min(first_date))::date as first_month_start,
        max(last_date) as last_date
    from activity_dates
),

bounds as (
    select
        first_month_start,
        case
            when last_day(last_date) < {{ load_date() }} then date_trunc('month', last_date)
            else date_trunc('month', last_date) - interval 1 month
        end::date as last_month_start
    from coverage
),

months as (
    select
        unnest(generate_series(first_month_start, last_month_start, interval 1 month))::date
            as month_start,
        first_month_start
    from bounds
),

final as (
    select
        month_start,
        last_day(month_start) as as_of_date,
        (month_start - interval {{ window_months - 1 }} month)::date as window_start_date,
        {{ window_months }} as window_months,
        month_start - interval {{ window_months - 1 }} month >= first_month_start
            as is_full_window
    from months
)

select * from final
