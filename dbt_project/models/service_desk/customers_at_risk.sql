-- Per graded month-end: the customers, not yet sleeping, who look on their way to
-- dormancy, with the trend that flagged them and the months left before the
-- dormant rule would put them in sleeping. Two signals:
-- * gone_quiet: no trade for at least at_risk_min_idle_days, and for at least
--   at_risk_idle_gap_factor times the customer's usual gap between trades in the
--   window (a monthly trader quiet for a quarter, a yearly one not yet);
-- * falling: trailing-window trades and net assets both fell at every one of
--   the last at_risk_falling_months month-ends, the trades by at least
--   at_risk_min_fall_share over them.
-- months_until_dormant is at the current pace: for a customer with no trade in
-- the last month, the months until the dormant rule's recency (the scoring
-- model's dormant_min_recency_days) if they stay idle; for one still trading
-- while falling, the months until the trailing trades reach none at their
-- average fall, and not less than the idle figure. Incremental by month-end.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
) }}

{%- set falling_months = var('at_risk_falling_months') | int %}
{%- set days_per_month = 30.4375 %}

with

scoring_model as (
    {{ scoring_models() }}
),

dormant_rule as (
    {{ dormant_rule_thresholds() }}
),

tiers as (
    select customer_id, as_of_date, tier
    from {{ ref('customer_tier_history') }}
    where {{ is_graded('as_of_date') }}
),

-- the graded month-ends and the ones the trend looks back over
indicators as (
    select
        customer_id,
        as_of_date,
        trade_count,
        end_net_assets,
        recency_days,
        last_trade_date,
        -- the cross-database macro renders longer than the line
        {{ dbt.datediff('window_start_date', 'as_of_date', 'day') }} + 1 as window_days  -- noqa: LT05
    from {{ ref('customer_indicators') }}
    where
        as_of_date <= {{ grade_to() }}
        and as_of_date > {{ dbt.dateadd('month', -(falling_months + 1), grade_from()) }}
),

steps as (
    select
        *,
        coalesce(
            trade_count < lag(trade_count) over by_customer
            and end_net_assets < lag(end_net_assets) over by_customer,
            false
        ) as fell,
        lag(trade_count, {{ falling_months }}) over by_customer as trade_count_before,
        lag(end_net_assets, {{ falling_months }}) over by_customer as net_assets_before
    from indicators
    window by_customer as (partition by customer_id order by as_of_date)
),

trends as (
    select
        *,
        sum(case when fell then 1 else 0 end) over (
            partition by customer_id
            order by as_of_date
            rows between {{ falling_months - 1 }} preceding and current row
        ) as falling_in_a_row,
        -- the mean gap between trades while the customer traded in the window
        case
            when trade_count > 0 then cast(window_days - recency_days as double) / trade_count
        end as usual_gap_days
    from steps
),

flagged as (
    select
        trends.*,
        tiers.tier,
        dormant_rule.min_recency_days,
        trends.trade_count > 0
        and trends.recency_days >= {{ var('at_risk_min_idle_days') }}
        and trends.recency_days >= {{ var('at_risk_idle_gap_factor') }} * trends.usual_gap_days
            as is_gone_quiet,
        trends.falling_in_a_row = {{ falling_months }}
        and trends.trade_count_before - trends.trade_count
        >= {{ var('at_risk_min_fall_share') }} * trends.trade_count_before as is_falling
    from trends
    inner join tiers
        on trends.customer_id = tiers.customer_id
        and trends.as_of_date = tiers.as_of_date
    left join dormant_rule on trends.as_of_date = dormant_rule.as_of_date
    where tiers.tier <> 'sleeping'
),

paced as (
    select
        *,
        greatest(ceil((min_recency_days - recency_days) / {{ days_per_month }}), 0)
            as months_if_idle,
        case
            when trade_count_before > trade_count
                then ceil(
                        trade_count
                        * {{ falling_months }}::double
                        / (trade_count_before - trade_count)
                    )
        end as months_at_falling_pace
    from flagged
    where is_gone_quiet or is_falling
),

final as (
    select
        -- ids
        customer_id,
        as_of_date,
        tier,
        -- why
        case
            when is_gone_quiet and is_falling then 'gone_quiet,falling'
            when is_gone_quiet then 'gone_quiet'
            else 'falling'
        end as signals,
        is_gone_quiet,
        is_falling,
        -- the trend
        cast(recency_days as integer) as recency_days,
        last_trade_date,
        cast(usual_gap_days as double) as usual_gap_days,
        cast(trade_count as bigint) as trade_count,
        cast(trade_count_before as bigint) as trade_count_before,
        cast(end_net_assets as double) as net_assets,
        cast(net_assets_before as double) as net_assets_before,
        cast(end_net_assets - net_assets_before as double)
        / nullif(abs(net_assets_before), 0) as net_assets_change_share,
        -- when
        cast(
            case
                when recency_days > {{ days_per_month }} or months_at_falling_pace is null
                    then months_if_idle
                else greatest(months_if_idle, months_at_falling_pace)
            end as integer
        ) as months_until_dormant
    from paced
)

select * from final
