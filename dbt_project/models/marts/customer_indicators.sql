-- One row per customer and month-end: the tiering indicators over the trailing
-- window of var('window_months') calendar months, across all the customer's
-- accounts. Formulas and edge cases: _marts__models.yml and docs/indicators.md.
--
-- Incremental: a run adds the month-ends after the latest one built, and
-- rebuilds every month-end from the earliest month whose customer-months this
-- load changed (audit.load_months: late or corrected rows). The window
-- functions read just the months those windows need (plus the month before, for
-- the start assets); the latest trade and snapshot from before them come from
-- one aggregate per customer of the older months.
-- depends_on: {{ ref('load_months') }}
{{
    config(
        materialized='incremental',
        on_schema_change='append_new_columns',
        **replace_by_key('as_of_date')
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
    {#- month-ends built before realised_revenue have the imputed cash spread in
        interest_contribution and no present_months: appending would mix the two #}
    {%- set built_columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list %}
    {%- if 'realised_revenue' not in built_columns %}
        {{ exceptions.raise_compiler_error(
            this ~ ' holds month-ends whose interest_contribution includes the imputed cash spread'
            ~ ': rebuild with --full-refresh (python -m orchestration run --full-refresh)'
        ) }}
    {%- endif %}
{%- endif %}

with

months_to_build as (
    select * from {{ ref('int_reporting_months') }}
    {% if is_incremental() -%}
    where as_of_date > (select coalesce(max(as_of_date), date '0001-01-01') from {{ this }})
        or as_of_date >= (
            select min(changed.as_of_date)
            from {{ ref('load_months') }} as changed
            inner join {{ source('broker', 'latest_load') }} as load
                on changed.load_id = load.load_id
            where changed.is_changed
        )
    {%- endif %}
),

customers as (
    select customer_key, customer_id, first_open_date, last_close_date
    from {{ ref('int_accounts_rolled_up_to_customers') }}
),

-- the months the new windows reach back to, plus one for the start assets: in
-- a full build every month, read without a filter. (DuckDB cannot estimate a
-- filter on the month bounds: it took the window's 24M rows, at a million
-- customers, for a few thousand and hashed them in the joins below, which cost
-- half as much again as the windows.)
customer_months as (
    select * from {{ ref('int_customer_months') }}
    {% if is_incremental() -%}
    semi join (
        select month_start from {{ ref('int_reporting_months') }}
        where month_start
            >= (select min(month_start) from months_to_build) - interval {{ window_months }} month
            and month_start <= (select max(month_start) from months_to_build)
    ) using (month_start)
    {%- endif %}
),

-- the older months (none in a full build), one row per customer: the latest
-- trade and the net assets on the latest snapshot before the months read above
earlier_months as (
    select
        customer_key,
        max(last_trade_date) as latest_trade_date,
        {{ max_by('last_snapshot_net_assets', 'month_start') }} filter (
            where last_snapshot_net_assets is not null
        ) as latest_net_assets
    from {{ ref('int_customer_months') }}
    {% if is_incremental() -%}
    where month_start
        < (select min(month_start) from months_to_build) - interval {{ window_months }} month
    {%- else -%}
    where false
    {%- endif %}
    group by customer_key
),

-- one sort per customer serves every window below
rolled as (
    select
        customer_key,
        month_start,
        open_account_count,
        sum(trade_count) over trailing_window as trade_count,
        sum(trading_volume) over trailing_window as trading_volume,
        sum(active_days) over trailing_window as active_days,
        sum(case when trade_count > 0 then 1 else 0 end) over trailing_window as active_months,
        bit_count(bit_or(asset_class_mask) over trailing_window) as product_breadth,
        sum(commission) over trailing_window as commission_contribution,
        sum(margin_interest) over trailing_window as margin_interest,
        sum(inflow - outflow) over trailing_window as net_inflow,
        sum(snapshot_days) over trailing_window as snapshot_days,
        -- the months whose snapshots avg_cash averages: the customer was present
        sum(case when snapshot_days > 0 then 1 else 0 end) over trailing_window
            as present_months,
        sum(cash_sum) over trailing_window as cash_sum,
        sum(gross_assets_sum) over trailing_window as gross_assets_sum,
        sum(margin_debt_sum) over trailing_window as margin_debt_sum,
        sum(net_assets_sum) over trailing_window as net_assets_sum,
        max(last_trade_date) over up_to_month as latest_trade_date,
        -- net assets on the latest snapshot date in the window, and before it
        {{ last_non_null("last_snapshot_net_assets") }} over trailing_window
            as net_assets_at_window_end,
        {{ last_non_null("last_snapshot_net_assets") }} over before_window
            as net_assets_before_window
    from customer_months
    window
        up_to_month as (
            partition by customer_key order by month_start
            rows between unbounded preceding and current row
        ),
        before_window as (
            partition by customer_key order by month_start
            rows between unbounded preceding and {{ window_months }} preceding
        ),
        trailing_window as (
            partition by customer_key order by month_start
            rows between {{ window_months - 1 }} preceding and current row
        )
),

windowed as (
    select
        {{ all_but(['latest_trade_date', 'net_assets_before_window'], 'rolled') }},
        months.as_of_date,
        months.window_start_date,
        months.window_months,
        months.is_full_window,
        customers.customer_id,
        customers.first_open_date,
        -- the months read are later than the earlier ones: their values win
        coalesce(rolled.latest_trade_date, earlier_months.latest_trade_date)
            as latest_trade_date,
        -- the latest trade up to the as-of date is in the window when it is on or
        -- after the window's first day (in the months read, never earlier)
        case
            when rolled.latest_trade_date >= months.window_start_date
                then rolled.latest_trade_date
        end as last_trade_date_in_window,
        case
            when rolled.snapshot_days > 0 then rolled.net_assets_sum / rolled.snapshot_days
            else 0
        end as avg_assets,
        case
            when rolled.snapshot_days > 0 then rolled.cash_sum / rolled.snapshot_days
            else 0
        end as avg_cash,
        coalesce(
            rolled.net_assets_before_window, earlier_months.latest_net_assets, 0
        ) as start_net_assets,
        rolled.net_assets_at_window_end as end_net_assets
    from rolled
    inner join months_to_build as months on rolled.month_start = months.month_start
    inner join customers on rolled.customer_key = customers.customer_key
    left join earlier_months on rolled.customer_key = earlier_months.customer_key
    -- the first account opened by the month-end, and an account open at some
    -- point in the window (as_of_date and window_start_date written in terms of
    -- month_start: a filter on the customers and the months together would have
    -- DuckDB pair every customer with every month before the window rows)
    where customers.first_open_date <= last_day(rolled.month_start)
        and (
            customers.last_close_date is null
            or customers.last_close_date
            >= rolled.month_start - interval {{ window_months - 1 }} month
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
        -- revenue earned: the margin interest charged, nothing imputed
        margin_interest as interest_contribution,
        commission_contribution + margin_interest as realised_revenue,
        -- notional, not revenue: the spread idle cash would earn, pro-rated by the
        -- months present so a customer who joined late is not credited a full window
        present_months::integer as present_months,
        avg_cash * {{ var('cash_spread_rate') }} * present_months / 12.0
            as imputed_cash_spread,
        trading_volume,
        net_inflow,
        start_net_assets,
        end_net_assets,
        case
            when end_net_assets is not null and start_net_assets + net_inflow / 2 > 0
                then (end_net_assets - start_net_assets - net_inflow)
                    / (start_net_assets + net_inflow / 2)
        end as return_rate,
        -- activity
        trade_count::bigint as trade_count,
        active_days::bigint as active_days,
        case when avg_assets > 0 then trading_volume / avg_assets end as turnover_rate,
        coalesce(
            {{ days_between('last_trade_date_in_window', 'as_of_date') }},
            {{ days_between('window_start_date', 'as_of_date') }} + 2
        )::integer as recency_days,
        latest_trade_date as last_trade_date,
        -- loyalty
        {{ months_between_starts('first_open_date', 'as_of_date') }}::integer as tenure_months,
        active_months / {{ window_months }}::double as active_month_share,
        product_breadth::integer as product_breadth,
        -- risk
        case when gross_assets_sum > 0 then margin_debt_sum / gross_assets_sum end
            as margin_usage
    from windowed
)

select * from final
