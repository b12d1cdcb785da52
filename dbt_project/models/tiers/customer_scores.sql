-- Every customer's segment and model tier for each graded month-end, from the
-- model tables of the latest fit on or before that month-end: the SQL replay of
-- ml.TieringModel.assign (dormant rule, then the nearest centroid, then the
-- naming map). Agrees with Python for every customer (tests/test_sql_scoring.py).
-- Incremental by month-end: a run replaces the month-ends it grades and keeps
-- the others, so the table holds every graded month-end whatever the run order.
{{ config(
    materialized='incremental',
    on_schema_change='fail',
    **replace_by_key('as_of_date')
) }}

with

scoring_model as (
    {{ scoring_models() }}
),

customers as (
    select customer_id, as_of_date, recency_days, tenure_months
    from {{ ref('customer_indicators') }}
    where {{ is_graded('as_of_date') }}
),

factor_scores as (
    select * from {{ ref('customer_factor_scores') }}
    where {{ is_graded('as_of_date') }}
),

dormant_rule as (
    {{ dormant_rule_thresholds() }}
),

model_factors as (
    select scoring_model.as_of_date, model_factors.factor, model_factors.cluster_weight
    {{ from_scoring_model('model_factors') }}
),

model_centroids as (
    select
        scoring_model.as_of_date,
        model_centroids.segment,
        model_centroids.factor,
        model_centroids.centroid
    {{ from_scoring_model('model_centroids') }}
),

model_segments as (
    select
        scoring_model.as_of_date,
        model_segments.segment,
        model_segments.tier,
        model_segments.tier_rank
    {{ from_scoring_model('model_segments') }}
),

-- ml's _dormant_mask: recency at or above the threshold (a missing recency is
-- not dormant) and tenure at or above its own (a missing tenure counts as
-- infinite); NaN and infinity count as missing, as everywhere in the scoring
dormant as (
    select
        customers.customer_id,
        customers.as_of_date,
        coalesce(
            dormant_rule.min_recency_days is not null
            and {{ finite_or_null('cast(customers.recency_days as double)') }}
            >= dormant_rule.min_recency_days
            and coalesce(
                {{ finite_or_null('cast(customers.tenure_months as double)') }}
                >= dormant_rule.min_tenure_months,
                true
            ),
            false
        ) as is_dormant
    from customers
    inner join dormant_rule on customers.as_of_date = dormant_rule.as_of_date
),

-- squared distance in the space K-means fitted in: each factor scaled by the
-- square root of its cluster_weight, as ml does (the same as
-- sum of cluster_weight * (score - centroid)^2, rounded as Python rounds it)
centroid_differences as (
    select
        factor_scores.customer_id,
        factor_scores.as_of_date,
        model_centroids.segment,
        factor_scores.score * sqrt(model_factors.cluster_weight)
        - model_centroids.centroid * sqrt(model_factors.cluster_weight) as difference
    from factor_scores
    inner join model_factors
        on factor_scores.as_of_date = model_factors.as_of_date
        and factor_scores.factor = model_factors.factor
    inner join model_centroids
        on factor_scores.as_of_date = model_centroids.as_of_date
        and factor_scores.factor = model_centroids.factor
),

centroid_distances as (
    select
        customer_id,
        as_of_date,
        segment,
        sum(difference * difference) as squared_distance
    from centroid_differences
    group by customer_id, as_of_date, segment
),

-- the nearest centroid; on a tie the lowest segment id, as numpy's argmin over
-- the segments of a model loaded from its tables (ordered by id)
nearest_centroids as (
    select customer_id, as_of_date, segment, squared_distance
    from (
        select
            customer_id,
            as_of_date,
            segment,
            squared_distance,
            row_number() over (
                partition by customer_id, as_of_date order by squared_distance, segment
            ) as distance_order
        from centroid_distances
    ) as ranked
    where distance_order = 1
),

segments as (
    select
        customers.customer_id,
        customers.as_of_date,
        case when dormant.is_dormant then 0 else nearest_centroids.segment end as segment,
        case
            when not dormant.is_dormant then sqrt(nearest_centroids.squared_distance)
        end as centroid_distance
    from customers
    inner join dormant
        on customers.customer_id = dormant.customer_id
        and customers.as_of_date = dormant.as_of_date
    left join nearest_centroids
        on customers.customer_id = nearest_centroids.customer_id
        and customers.as_of_date = nearest_centroids.as_of_date
),

final as (
    select
        segments.customer_id,
        segments.as_of_date,
        scoring_model.model_run_id,
        scoring_model.model_as_of_date,
        cast(segments.segment as bigint) as segment,
        -- a model fitted without dormant customers has no segment 0: its
        -- dormant-rule customers are sleeping (rank 6, ml.naming.TIER_RANK)
        coalesce(
            model_segments.tier, case when segments.segment = 0 then 'sleeping' end
        ) as model_tier,
        cast(
            coalesce(model_segments.tier_rank, case when segments.segment = 0 then 6 end)
            as bigint
        ) as tier_rank,
        cast(segments.centroid_distance as double) as centroid_distance
    from segments
    inner join scoring_model
        on segments.as_of_date = scoring_model.as_of_date
    left join model_segments
        on segments.as_of_date = model_segments.as_of_date
        and segments.segment = model_segments.segment
)

select * from final
