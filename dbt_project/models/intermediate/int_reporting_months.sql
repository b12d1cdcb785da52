-- The month-ends the data covers, one row per month: from the first month with
-- any accepted trade, fee, balance snapshot or cash flow to the last complete
-- month: its last day is before the day of the load, and every fact table with
-- rows covers it (int_table_coverage). Each with its trailing window. See
-- docs/indicators.md, "Which month-ends".
{{ config(materialized='table') }}

{%- set window_months = var('window_months') | int %}

with

coverage as (
    select
        {{ month_start('min(first_date)') }}::date as first_month_start,
        max(last_date) as last_date,
        min(covered_through) as covered_through
    from {{ ref('int_table_coverage') }}
),

bounds as (
    select
        first_month_start,
        least(
            case
                when last_day(last_date) < {{ load_date() }} then {{ month_start('last_date') }}
                else {{ month_start('last_date') }} - interval 1 month
            end,
            {{ month_start('covered_through') }}
        )::date as last_month_start
    from coverage
),

months as (
    select
        {{ month_starts_between('first_month_start', 'last_month_start', 'month_start') }},
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
