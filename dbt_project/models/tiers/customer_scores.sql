-- Every customer's segment and model tier for the grading month, from the
-- model tables of the latest fit on or before it: the SQL replay of
-- ml.TieringModel.assign (dormant rule, then the nearest centroid, then the
-- naming map). Agrees with Python for every customer (tests/test_sql_scoring.py).

with

scoring_model as (
    {{ scoring_model() }}
),

customers as (
    select customer_id, as_of_date, recency_days, tenure_months
    from {{ ref('customer_indicators') }}
    where as_of_date = {{ grading_month() }}
),

factor_scores as (
    select * from {{ ref('customer_factor_scores') }}
),

-- the dormant rule's thresholds, JSON text ('null' turns the rule off)
dormant_rule as (
    select
        cast(max(
            case
                when
                    model_params.name = 'dormant_min_recency_days'
                    and model_params.value <> 'null'
                    then model_params.value
            end
        ) as double) as min_recency_days,
        cast(max(
            case
                when
                    model_params.name = 'dormant_min_tenure_months'
                    and model_params.value <> 'null'
                    then model_params.value
            end
        ) as double) as min_tenure_months
    {{ from_scoring_model('model_params') }}
),

model_factors as (
    select model_factors.factor, model_factors.cluster_weight
    {{ from_scoring_model('model_factors') }}
),

model_centroids as (
    select model_centroids.segment, model_centroids.factor, model_centroids.centroid
    {{ from_scoring_model('model_centroids') }}
),

model_segments as (
    select model_segments.segment, model_segments.tier, model_segments.tier_rank
    {{ from_scoring_model('model_segments') }}
),

-- ml's _dormant_mask: recency at or above the threshold (a missing recency is
-- not dormant) and tenure at or above its own (a missing tenure counts as
-- infinite); NaN and infinity count as missing, as everywhere in the scoring
dormant as (
    select
        customers.customer_id,
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
    cross join dormant_rule
),

-- squared distance in the space K-means fitted in: each factor scaled by the
-- square root of its cluster_weight, as ml does (the same as
-- sum of cluster_weight * (score - centroid)^2, rounded as Python rounds it)
centroid_differences as (
    select
        factor_scores.customer_id,
        model_centroids.segment,
        factor_scores.score * sqrt(model_factors.cluster_weight)
        - model_centroids.centroid * sqrt(model_factors.cluster_weight) as difference
    from factor_scores
    inner join model_factors
        on factor_scores.factor = model_factors.factor
    inner join model_centroids
        on factor_scores.factor = model_centroids.factor
),

centroid_distances as (
    select
        customer_id,
        segment,
        sum(difference * difference) as squared_distance
    from centroid_differences
    group by customer_id, segment
),

-- the nearest centroid; on a tie the lowest segment id, as numpy's argmin over
-- the segments of a model loaded from its tables (ordered by id)
nearest_centroids as (
    select customer_id, segment, squared_distance
    from (
        select
            customer_id,
            segment,
            squared_distance,
            row_number() over (
                partition by customer_id order by squared_distance, segment
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
    left join nearest_centroids
        on customers.customer_id = nearest_centroids.customer_id
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
    cross join scoring_model
    left join model_segments
        on segments.segment = model_segments.segment
)

select * from final
