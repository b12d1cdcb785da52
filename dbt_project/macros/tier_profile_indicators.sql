{#- The indicators tier_profiles averages per tier: ml.ALL_INDICATORS, in its
    order (a test checks the two lists agree). -#}
{% macro tier_profile_indicators() -%}
    {{ return([
        'avg_assets', 'commission_contribution', 'interest_contribution', 'trading_volume',
        'net_inflow', 'return_rate', 'trade_count', 'active_days', 'turnover_rate',
        'recency_days', 'tenure_months', 'active_month_share', 'product_breadth',
        'margin_usage',
    ]) }}
{%- endmacro %}
