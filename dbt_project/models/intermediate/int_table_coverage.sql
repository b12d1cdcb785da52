-- One row per fact table (trades, fees, balances, cash_flows): the dates of its
-- accepted rows and the last month-end it covers, its high-water mark. A table
-- covers a month-end when its latest date is at most var('completeness_grace_days')
-- days before it (a trade file of a month that ends on a weekend ends on its
-- last business day). int_reporting_months builds a month-end only when every
-- table with rows covers it; a table with no rows constrains nothing.
{%- set grace_days = var('completeness_grace_days') | int %}
{%- if grace_days < 0 %}
    {{ exceptions.raise_compiler_error(
        "var completeness_grace_days must be a whole number of days >= 0, not "
        ~ var('completeness_grace_days')) }}
{%- endif %}

with

activity_dates as (
    select 'trades' as source_table, min(trade_date) as first_date, max(trade_date) as last_date
    from {{ ref('stg_broker__trades') }}
    union all
    select 'fees' as source_table, min(fee_date) as first_date, max(fee_date) as last_date
    from {{ ref('stg_broker__fees') }}
    union all
    select
        'balances' as source_table,
        min(as_of_date) as first_date,
        max(as_of_date) as last_date
    from {{ ref('stg_broker__balances') }}
    union all
    select
        'cash_flows' as source_table,
        min(flow_date) as first_date,
        max(flow_date) as last_date
    from {{ ref('stg_broker__cash_flows') }}
),

reach as (
    select
        *,
        cast(last_date + interval {{ grace_days }} day as date) as reach_date
    from activity_dates
),

final as (
    select
        cast(source_table as string) as source_table,
        cast(first_date as date) as first_date,
        cast(last_date as date) as last_date,
        -- the latest month-end on or before reach_date
        cast(
            case
                when reach_date = last_day(reach_date) then reach_date
                else {{ month_start('reach_date') }} - interval 1 day
            end as date
        ) as covered_through
    from reach
)

select * from final
