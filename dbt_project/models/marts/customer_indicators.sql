-- One row per customer and month-end: the tiering indicators over the trailing
-- window of var('window_months') calendar months, across all the customer's
-- accounts. Formulas and edge cases: _marts__models.yml and docs/indicators.md.
--
-- Incremental: a run adds only the month-ends after the latest one built; the
-- window functions then read just the months those windows need.
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
    )
}}

{%- set window_months = var('window_months') | int %}

{%- if is_incremental() and execute %}
    {%- set built = run_query('select distinct window_months from ' ~ this) %}
    {%- for row in built.rows if row[0] != window_months %}
        {{ exceptions.raise_compiler_error(
            this ~ ' holds month-ends built with window_months=' ~ row[0]
            ~ ', the run asks for ' ~ window_months ~ ': rebuild with --full-refresh (python -m orchestration run --full-refresh)'
        ) }}
    {%- endfor %}
{%- endif %}

with

months_to_build as (
    select * from {{ ref('int_reporting_months') }}
    {% if is_incremental() -%}
    where as_of_date > (select coalesce(max(as_of_date), date '0001-01-01') from {{ this }})
    {%- endif %}
),

customers as (
    select customer_id, first_open_date, last_close_date
    from {{ ref('int_accounts_rolled_up_to_customers') }}
),

-- the months the new windows reach back to, plus one for the start assets
customer_months as (
    select * from {{ ref('int_customer_months') }}
    where month_start
        >= (select min(month_start) from months_to_build) - interval {{ window_months }} month
),

rolled as (
    select
        customer_id,
        month_start,
        open_account_count,
        latest_trade_date,
        latest_snapshot_date,
        latest_net_assets,
        sum(trade_count) over trailing_window as trade_count,
        sum(trading_volume) over trailing_window as trading_volume,
        sum(active_days) over trailing_window as active_days,
        sum(case when trade_count > 0 then 1 else 0 end) over trailing_window as active_months,
        bit_count(bit_or(asset_class_mask) over trailing_window) as product_breadth,
        max(last_trade_date) over trailing_window as last_trade_date_in_window,
        sum(commission) over trailing_window as commission_contribution,
        sum(margin_interest) over trailing_window as margin_interest,
        sum(inflow - outflow) over trailing_window as net_inflow,
        sum(snapshot_days) over trailing_window as snapshot_days,
        sum(cash_sum) over trailing_window as cash_sum,
        sum(gross_assets_sum) over trailing_window as gross_assets_sum,
        sum(margin_debt_sum) over trailing_window as margin_debt_sum,
        sum(net_assets_sum) over trailing_window as net_assets_sum,
        -- carried to the month before the window: the latest snapshot before it
        lag(latest_net_assets, {{ window_months }}) over by_month as net_assets_before_window
    from customer_months
    window
        by_month as (partition by customer_id order by month_start),
        trailing_window as (
            partition by customer_id order by month_start
            rows between {{ window_months - 1 }} preceding and current row
        )
),

windowed as (
    select
        rolled.*,
        months.as_of_date,
        months.window_start_date,
        months.window_months,
        months.is_full_window,
        customers.first_open_date,
        case when rolled.snapshot_days > 0
            then rolled.net_assets_sum / rolled.snapshot_days else 0 end as avg_assets,
        case when rolled.snapshot_days > 0
            then rolled.cash_sum / rolled.snapshot_days else 0 end as avg_cash,
        coalesce(rolled.net_assets_before_window, 0) as start_net_assets,
        case when rolled.latest_snapshot_date >= months.window_start_date
            then rolled.latest_net_assets end as end_net_assets
    from rolled
    inner join months_to_build as months on rolled.month_start = months.month_start
    inner join customers on rolled.customer_id = customers.customer_id
    where customers.first_open_date <= months.as_of_date
        and (
            customers.last_close_date is null
            or customers.last_close_date >= months.window_start_date
        )
),

final as (
    select
        -- ids
        customer_id,
        -- dates and window
        as_of_date,
        window_start_date,
        window_months,
        is_full_window,
        '{{ var("reporting_currency") }}' as currency,
        open_account_count,
        -- value
        avg_assets,
        avg_cash,
        commission_contribution,
        margin_interest,
        margin_interest
            + avg_cash * {{ var('cash_spread_rate') }} * {{ window_months }} / 12.0
            as interest_contribution,
        trading_volume,
        net_inflow,
        start_net_assets,
        end_net_assets,
        case when end_net_assets is not null and start_net_assets + net_inflow / 2 > 0
            then (end_net_assets - start_net_assets - net_inflow)
                / (start_net_assets + net_inflow / 2)
        end as return_rate,
        -- activity
        trade_count::bigint as trade_count,
        active_days::bigint as active_days,
        case when avg_assets > 0 then trading_volume / avg_assets end as turnover_rate,
        coalesce(
            as_of_date - last_trade_date_in_window,
            as_of_date - window_start_date + 2
        )::integer as recency_days,
        latest_trade_date as last_trade_date,
        -- loyalty
        date_diff('month', first_open_date, as_of_date)::integer as tenure_months,
        active_months / {{ window_months }}.0 as active_month_share,
        product_breadth::integer as product_breadth,
        -- risk
        case when gross_assets_sum > 0 then margin_debt_sum / gross_assets_sum end
            as margin_usage
    from windowed
)

select * from final
