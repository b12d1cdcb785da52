"""Fitting on a sample: the stratified draw, and the tiers it gives against a full fit.

A month-end with more than ``fit_sample_size`` customers starts K-means on a
stratified sample drawn by SQL in the engine (``tiering.fit_sample_query``); the
preprocessing, the factor model and the final K-means run use every customer, and
dbt's SQL scorer grades them all. On books of type mixes and seeds nothing was
tuned on, a sample of a fifth or a sixth of the book must give at least 99 % of the
customers the model tier a full fit gives them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from benchmarks.planted_types import MIXES
from benchmarks.reference import indicators_duckdb
from ml import TieringModel
from orchestration.tiering import (
    FIT_SAMPLE_ASSET_GROUPS,
    fit_month,
    fit_sample_query,
    read_indicators,
)
from seeds.generate import generate
from tests.conftest import END, LOAD_DATE
from tests.test_sql_scoring import score_in_sql

#: (type mix, seed, customers, sample size). The first is the book that showed K-means
#: stopping at scikit-learn's tolerance (two full fits with other seeds differed on 2 %
#: of the tiers); the other two were not looked at before this test.
UNSEEN_BOOKS = (
    ("mass_market", 5151, 30_000, 5_000),
    ("dormant_quarter", 5252, 24_000, 4_000),
    ("wealthy", 5353, 20_000, 3_000),
)


def indicator_frame(customers: int, seed: int) -> pd.DataFrame:
    """One month-end of indicators with a skewed ``avg_assets`` and a share of non-traders."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:07d}" for i in range(customers)],
            "as_of_date": END,
            "avg_assets": rng.lognormal(10, 2, customers),
            "trade_count": np.where(rng.random(customers) < 0.3, 0, rng.poisson(20, customers)),
        }
    )


def draw(frame: pd.DataFrame, size: int, seed: int = 0) -> list[str]:
    with duckdb.connect() as con:
        con.execute("create schema marts")
        con.register("frame", frame)
        con.execute("create view marts.customer_indicators as select * from frame")
        query = fit_sample_query(END, size, seed=seed)
        return [row[0] for row in con.execute(query).fetchall()]


def strata(frame: pd.DataFrame) -> pd.Series:
    """Each customer's stratum, computed apart from the SQL: asset decile x traded."""
    ordered = frame.sort_values(["avg_assets", "customer_id"])
    n = len(ordered)
    # ntile(g): the first n % g groups hold one more row
    g = FIT_SAMPLE_ASSET_GROUPS
    sizes = [n // g + (1 if i < n % g else 0) for i in range(g)]
    group = np.repeat(np.arange(g), sizes)
    traded = ordered["trade_count"].to_numpy() > 0
    return pd.Series(
        [f"{a}-{t}" for a, t in zip(group, traded, strict=True)], index=ordered["customer_id"]
    )


def test_the_sample_takes_each_stratum_in_proportion():
    frame = indicator_frame(20_000, seed=1)
    sample = draw(frame, 3_000)
    of = strata(frame)
    population = of.value_counts()
    drawn = of.loc[sample].value_counts().reindex(population.index, fill_value=0)
    assert len(set(sample)) == len(sample)
    # each stratum gives its share of the size, rounded to a whole customer
    np.testing.assert_allclose(drawn, population * 3_000 / len(frame), atol=0.5 + 1e-9)
    assert abs(len(sample) - 3_000) <= len(population) / 2


def test_the_sample_depends_on_the_customers_not_the_row_order():
    frame = indicator_frame(5_000, seed=2)
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert draw(frame, 800) == draw(shuffled, 800)
    assert draw(frame, 800, seed=1) != draw(frame, 800)


def test_a_sample_as_large_as_the_book_is_the_book():
    frame = indicator_frame(1_000, seed=4)
    assert draw(frame, 1_000) == sorted(frame["customer_id"])


@pytest.fixture(scope="module", params=UNSEEN_BOOKS, ids=lambda book: f"{book[0]}-s{book[1]}")
def unseen_book(request, tmp_path_factory) -> tuple[Path, int]:
    """A generated book's month-end indicators (the reference query, which the tests of
    the marts check against dbt's) as ``marts.customer_indicators`` of a warehouse."""
    mix, seed, customers, size = request.param
    landing = tmp_path_factory.mktemp(f"landing_{mix}")
    generate(landing, customers, 14, END, seed, mix=MIXES[mix])
    indicators = indicators_duckdb(landing, LOAD_DATE, as_of_dates=[END])
    indicators["as_of_date"] = indicators["as_of_date"].dt.date
    indicators["window_months"] = 12
    warehouse = tmp_path_factory.mktemp(f"wh_{mix}") / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema marts")
        con.execute("create table marts.customer_indicators as select * from indicators")
    return warehouse, size


def graded_copy(warehouse: Path, folder: Path, fit_sample_size: int | None):
    """A copy of ``warehouse`` fitted by the product's ``fit_month`` and scored by dbt."""
    folder.mkdir()
    copy = folder / warehouse.name
    shutil.copy(warehouse, copy)
    with duckdb.connect(str(copy)) as con:
        fit = fit_month(con, END, TieringModel(), diagnose=False, fit_sample_size=fit_sample_size)
    scores, _ = score_in_sql(copy, END)
    return fit, scores


def test_a_sample_fit_scored_in_sql_gives_the_full_fit_tier(unseen_book, tmp_path):
    warehouse, size = unseen_book
    full, full_scores = graded_copy(warehouse, tmp_path / "full", None)
    sampled, sample_scores = graded_copy(warehouse, tmp_path / "sample", size)

    quality = sampled.model.quality_
    assert quality["n_kmeans_sample"] < 0.3 * quality["n_clustered"]
    assert full.model.quality_["n_kmeans_sample"] == full.model.quality_["n_clustered"]
    assert sampled.run_id != full.run_id
    # the preprocessing and the factor model saw every customer, so they are the same
    np.testing.assert_allclose(
        sampled.model.factor_model_.rotated_loadings_, full.model.factor_model_.rotated_loadings_
    )

    assert sample_scores.index.equals(full_scores.index)
    agreement = (sample_scores["model_tier"] == full_scores["model_tier"]).mean()
    assert agreement >= 0.99, f"{agreement:.4f} of the customers keep the full fit's tier"


def test_another_kmeans_seed_gives_the_same_tiers(unseen_book):
    warehouse, _ = unseen_book
    with duckdb.connect(str(warehouse), read_only=True) as con:
        indicators = read_indicators(con, END)
    first = TieringModel().fit(indicators)
    other = TieringModel(random_state=11).fit(indicators)
    assert (other.tiers_ == first.tiers_).mean() >= 0.995
