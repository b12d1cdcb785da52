"""The fitted model as plain tables: export, load, predict identically, and score in SQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml import TieringModel

COLUMNS = {
    "model_params": ["name", "value"],
    "model_indicators": [
        "position",
        "indicator",
        "transform",
        "impute_value",
        "clip_lower",
        "clip_upper",
        "mean",
        "std",
        "n_missing",
        "kmo",
        "communality",
    ],
    "model_components": [
        "component",
        "eigenvalue",
        "variance_share",
        "cumulative_variance_share",
        "retained",
    ],
    "model_factors": [
        "factor",
        "ss_loadings",
        "variance_explained",
        "cumulative_variance_explained",
        "cluster_weight",
    ],
    "model_loadings": [
        "indicator",
        "factor",
        "unrotated_loading",
        "rotated_loading",
        "score_coefficient",
    ],
    "model_centroids": ["segment", "factor", "centroid"],
    "model_segments": [
        "segment",
        "tier",
        "tier_rank",
        "source",
        "rule",
        "n_customers",
        "share",
        "value_score",
        "revenue_score",
        "activity_score",
        "growth_score",
        "tenure_score",
        "archetype_distance",
        "naming_margin",
        "runner_up_tier",
    ],
    "model_segment_profiles": ["segment", "indicator", "median", "mean_z"],
    "model_quality": ["metric", "value"],
}


@pytest.fixture(scope="module")
def tables(model):
    return model.to_tables()


def test_tables_and_columns(tables):
    assert {name: list(t.columns) for name, t in tables.items()} == COLUMNS


def test_tables_hold_plain_types(tables):
    for name, table in tables.items():
        for column in table.columns:
            values = table[column]
            plain = (
                values.dtype in (np.int64, np.float64, np.bool_)
                or pd.api.types.is_string_dtype(values)
                and values.map(type).eq(str).all()
            )
            assert plain, f"{name}.{column} has dtype {values.dtype}"


def test_export_load_predict_is_identical(model, tables, book, book_next):
    loaded = TieringModel.from_tables(tables)
    for frame in (book, book_next):
        np.testing.assert_array_equal(loaded.transform(frame), model.transform(frame))
        np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
        pd.testing.assert_frame_equal(loaded.assign(frame), model.assign(frame), check_exact=True)
    for name, table in loaded.to_tables().items():
        pd.testing.assert_frame_equal(table, tables[name], check_exact=True, obj=name)


def test_loading_checks_the_tables(tables):
    with pytest.raises(KeyError, match="model_centroids"):
        TieringModel.from_tables({k: v for k, v in tables.items() if k != "model_centroids"})
    params = tables["model_params"].copy()
    params.loc[params["name"] == "format_version", "value"] = "99"
    with pytest.raises(ValueError, match="format"):
        TieringModel.from_tables({**tables, "model_params": params})


def test_tables_survive_a_duckdb_round_trip(model, tables, book):
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    for name, table in tables.items():
        con.register("frame", table)
        con.execute(f"create table {name} as select * from frame")
        con.unregister("frame")
    read_back = {name: con.execute(f"select * from {name}").df() for name in tables}
    loaded = TieringModel.from_tables(read_back)
    np.testing.assert_array_equal(loaded.predict(book), model.predict(book))


# How a SQL user scores customers with the model tables (also in docs/tiering.md).
SCORING_SQL = """
with params as (
    select
        (select value::double from model_params
         where name = 'dormant_min_recency_days') as min_recency,
        (select value::double from model_params
         where name = 'dormant_min_tenure_months') as min_tenure
),
raw as (
    unpivot customers on columns(* exclude (customer_id)) into name indicator value x
),
prepared as (
    select
        raw.customer_id,
        i.indicator,
        (least(greatest(
            case when i.transform = 'signed_log1p'
                then sign(coalesce(raw.x, i.impute_value))
                    * ln(1 + abs(coalesce(raw.x, i.impute_value)))
                else coalesce(raw.x, i.impute_value) end,
            i.clip_lower), i.clip_upper) - i.mean) / i.std as z
    from raw
    join model_indicators as i on raw.indicator = i.indicator
),
scores as (
    select p.customer_id, l.factor, sum(p.z * l.score_coefficient) as score
    from prepared as p
    join model_loadings as l on p.indicator = l.indicator
    group by p.customer_id, l.factor
),
distances as (
    -- each factor weighted by the variance it explains, as K-means fitted
    select s.customer_id, c.segment, sum(f.cluster_weight * (s.score - c.centroid) ^ 2) as d2
    from scores as s
    join model_centroids as c on s.factor = c.factor
    join model_factors as f on s.factor = f.factor
    group by s.customer_id, c.segment
),
nearest as (
    select customer_id, arg_min(segment, d2) as segment
    from distances
    group by customer_id
)
select
    b.customer_id,
    case when b.recency_days >= params.min_recency and b.tenure_months >= params.min_tenure
        then 0 else nearest.segment end as segment
from book as b
cross join params
join nearest on nearest.customer_id = b.customer_id
"""


def test_a_sql_user_can_score_with_the_tables(model, tables, book):
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    columns = model.preprocessor_.columns_
    con.register("book", book.reset_index())
    con.register("customers", book.reset_index()[["customer_id", *columns]])
    scored = con.execute(SCORING_SQL).df().set_index("customer_id").loc[book.index]
    tiers = scored["segment"].map(model.segments_.set_index("segment")["tier"])
    np.testing.assert_array_equal(scored["segment"].to_numpy(), model.labels_)
    np.testing.assert_array_equal(tiers.to_numpy(), model.tiers_)
