"""The SQL scorer (dbt customer_factor_scores, customer_scores) agrees with Python.

Each book is generated with a seed and a type mix no default was tuned on
(benchmarks.planted_types.MIXES; the defaults were chosen on seeds 1 and 2),
built into a warehouse, and fitted with :class:`ml.TieringModel` on some of its
month-ends; the fits' ``to_tables()`` go to ``tiers.model_*``, and dbt scores a
grading month with the latest fit on or before it. For every customer the
segment, model tier and tier rank must equal ``model.assign`` on that month's
indicators, and the factor scores and centroid distance must match to 1e-9.

The gradings cover a month the model was fitted on, months scored with an
earlier fit (score only), a warm-started fit, the dormant rule switched off, a
model fitted without dormant customers (its dormant-rule customers are
sleeping), and missing, NaN and infinite indicator values (imputed).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from benchmarks.planted_types import MIXES
from ml import TieringModel
from ml.preprocessing import ALL_INDICATORS
from ml.segmentation import nearest_centroid
from seeds.generate import generate
from tests.conftest import END, LOAD_DATE, build, worker_target_path

DBT_PROJECT_DIR = Path(__file__).parents[1] / "dbt_project"
MACROS = DBT_PROJECT_DIR / "macros" / "scoring.sql"
#: every model but the tier models, which need the model tables first
WAREHOUSE_MODELS = "staging audit intermediate marts"
TOLERANCE = 1e-9


def month_end(year: int, month: int) -> dt.date:
    return (pd.Timestamp(year, month, 1) + pd.offsets.MonthEnd(0)).date()


@dataclass(frozen=True)
class Fit:
    """A model fitted on one month-end; ``previous`` warm-starts it from an earlier fit."""

    as_of_date: dt.date
    params: tuple[tuple[str, object], ...] = ()
    previous: dt.date | None = None
    without_dormant: bool = False  # fit on the customers the dormant rule leaves


@dataclass(frozen=True)
class Book:
    """A generated book, the fits written for it and the month-ends dbt grades."""

    name: str
    mix: str
    seed: int
    customers: int
    fits: tuple[Fit, ...]
    gradings: tuple[dt.date, ...]
    #: customers given missing, NaN and infinite indicators in every month-end
    damaged: bool = False


BOOKS = (
    Book(
        "dormant_quarter",
        "dormant_quarter",
        seed=311,
        customers=900,
        fits=(
            Fit(month_end(2026, 5)),
            Fit(month_end(2026, 8), params=(("dormant_min_recency_days", None),)),
            Fit(END, previous=month_end(2026, 5)),
        ),
        # May scores itself; July with May's fit; August without the dormant
        # rule; September with August's fit; October warm-started from May
        gradings=(
            month_end(2026, 5),
            month_end(2026, 7),
            month_end(2026, 8),
            month_end(2026, 9),
            END,
        ),
    ),
    Book(
        "trading_app",
        "trading_app",
        seed=312,
        customers=700,
        fits=(Fit(month_end(2026, 7), without_dormant=True), Fit(END)),
        gradings=(month_end(2026, 9), END),
        damaged=True,
    ),
)


def indicators_of(warehouse: Path, as_of_date: dt.date) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(
            "select * from marts.customer_indicators where as_of_date = ? order by customer_id",
            [as_of_date],
        ).df()


def damage(warehouse: Path) -> None:
    """Missing, NaN and infinite values for a few customers (ml reads all as missing).

    The marts' contract forbids them, so they are written straight into the
    table; the scorer must still impute them as Python does, and apply the
    dormant rule to a missing recency (never dormant) and tenure (infinite).
    """
    with duckdb.connect(str(warehouse)) as con:
        ids = [
            row[0]
            for row in con.execute(
                "select distinct customer_id from marts.customer_indicators "
                "order by customer_id limit 40"
            ).fetchall()
        ]
        changes = {
            "avg_assets = null": ids[0:5],
            "turnover_rate = null": ids[5:10],
            "trading_volume = 'inf'::double": ids[10:13],
            "net_inflow = '-inf'::double": ids[13:16],
            "active_month_share = 'nan'::double": ids[16:19],
            "recency_days = null": ids[19:23],
            "tenure_months = null": ids[23:27],
            "recency_days = 400, tenure_months = null": ids[27:31],
        }
        for assignment, customers in changes.items():
            con.execute(
                f"update marts.customer_indicators set {assignment} where customer_id in "
                f"(select unnest(?))",
                [customers],
            )


def write_model(warehouse: Path, model: TieringModel, run_id: str, as_of_date: dt.date) -> None:
    """``model.to_tables()`` into ``tiers.model_*``, led by run_id and as_of_date."""
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema if not exists tiers")
        for name, table in model.to_tables().items():
            con.register("frame", table)
            rows = "select ?::varchar as run_id, ?::date as as_of_date, * from frame"
            exists = con.execute(
                "select count(*) from information_schema.tables "
                "where table_schema = 'tiers' and table_name = ?",
                [name],
            ).fetchone()[0]
            if exists:
                con.execute(f"insert into tiers.{name} by name {rows}", [run_id, as_of_date])
            else:
                con.execute(f"create table tiers.{name} as {rows}", [run_id, as_of_date])
            con.unregister("frame")


@dataclass
class Warehouse:
    path: Path
    models: dict[dt.date, tuple[str, TieringModel]]  # by fitted month-end: run id, model

    def model_for(self, grading_month: dt.date) -> tuple[str, dt.date, TieringModel]:
        """The fit that scores ``grading_month``: run id, fitted month-end, model."""
        fitted = max(d for d in self.models if d <= grading_month)
        run_id, model = self.models[fitted]
        return run_id, fitted, model


def build_book(book: Book, tmp_path_factory) -> Warehouse:
    """``book`` generated and built, damaged if it says so, and its fits written."""
    landing = tmp_path_factory.mktemp(f"landing_{book.name}")
    generate(landing, book.customers, 14, END, book.seed, mix=MIXES[book.mix])
    path = build(
        landing,
        tmp_path_factory.mktemp(f"wh_{book.name}") / "warehouse.duckdb",
        "marts",
    )
    if book.damaged:
        damage(path)
    models: dict[dt.date, tuple[str, TieringModel]] = {}
    for i, fit in enumerate(book.fits):
        X = indicators_of(path, fit.as_of_date)
        model = TieringModel(**dict(fit.params))
        if fit.without_dormant:
            X = X[
                ~(
                    (X["recency_days"] >= model.dormant_min_recency_days)
                    & (X["tenure_months"] >= model.dormant_min_tenure_months)
                )
            ]
        previous = models[fit.previous][1] if fit.previous else None
        model.fit(X, previous=previous)
        run_id = f"fit-{i}-{fit.as_of_date:%Y%m}"
        write_model(path, model, run_id, fit.as_of_date)
        models[fit.as_of_date] = (run_id, model)
    return Warehouse(path, models)


@pytest.fixture(scope="module")
def warehouse_of(tmp_path_factory):
    """Each book's warehouse, built on first use and shared by the tests of the module."""
    built: dict[Book, Warehouse] = {}

    def get(book: Book) -> Warehouse:
        if book not in built:
            built[book] = build_book(book, tmp_path_factory)
        return built[book]

    return get


def score_in_sql(warehouse: Path, grading_month: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """dbt build the scorer for ``grading_month``; (customer_scores, factor scores wide).

    dbt is called here rather than through conftest's ``dbt``, whose own --vars
    (given last, so they win) would drop grading_month. The scorer's own data
    tests run with it (not_null, unique, accepted tier codes, ...).
    """
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dbt")),
            "build",
            "--select",
            "customer_factor_scores customer_scores",
            # the singular tests on the tier models read tables this test does
            # not write (customer_assignments, the tier history)
            "--exclude",
            "test_type:singular",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(worker_target_path()),
            "--vars",
            json.dumps({"load_date": LOAD_DATE.isoformat(), "grading_month": str(grading_month)}),
        ],
        cwd=warehouse.parent,
        env={**os.environ, "TIERS_WAREHOUSE": warehouse.name, "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    # the scorer's tables keep every month-end scored before: this one's rows
    with duckdb.connect(str(warehouse), read_only=True) as con:
        scores = con.execute(
            "select * from tiers.customer_scores where as_of_date = ? order by customer_id",
            [grading_month],
        ).df()
        factors = con.execute(
            "select * from tiers.customer_factor_scores where as_of_date = ?", [grading_month]
        ).df()
    wide = factors.pivot(index="customer_id", columns="factor", values="score")
    return scores.set_index("customer_id"), wide


GRADINGS = [
    pytest.param(book, month, id=f"{book.name}-{month:%Y-%m}")
    for book in BOOKS
    for month in book.gradings
]


@pytest.mark.parametrize(("book", "grading_month"), GRADINGS)
def test_sql_scores_every_customer_as_python_assigns(warehouse_of, book, grading_month):
    wh = warehouse_of(book)
    run_id, fitted, model = wh.model_for(grading_month)
    indicators = indicators_of(wh.path, grading_month)
    expected = model.assign(indicators, explain=False).set_index("customer_id")
    scores, factors = score_in_sql(wh.path, grading_month)

    assert len(scores) == len(expected) > 0
    assert set(scores.index) == set(expected.index)
    scores = scores.loc[expected.index]
    assert (scores["as_of_date"].dt.date == grading_month).all()
    assert (scores["model_run_id"] == run_id).all()
    assert (scores["model_as_of_date"].dt.date == fitted).all()
    np.testing.assert_array_equal(scores["segment"].to_numpy(), expected["segment"].to_numpy())
    np.testing.assert_array_equal(scores["model_tier"].to_numpy(), expected["tier"].to_numpy())
    np.testing.assert_array_equal(scores["tier_rank"].to_numpy(), expected["tier_rank"].to_numpy())

    m = model.factor_model_.n_factors_
    assert list(factors.columns) == list(range(1, m + 1))
    assert set(factors.index) == set(expected.index)
    np.testing.assert_allclose(
        factors.loc[expected.index].to_numpy(),
        expected[[f"factor_{j}" for j in range(1, m + 1)]].to_numpy(),
        rtol=TOLERANCE,
        atol=TOLERANCE,
    )

    F = expected[[f"factor_{j}" for j in range(1, m + 1)]].to_numpy()
    _, sq = nearest_centroid(F * np.sqrt(model.cluster_weights_), model.segmenter_.cluster_centers_)
    dormant = expected["segment"].to_numpy() == 0
    distance = np.where(dormant, np.nan, np.sqrt(sq.min(axis=1)))
    np.testing.assert_allclose(
        scores["centroid_distance"].to_numpy(dtype=float),
        distance,
        rtol=TOLERANCE,
        atol=TOLERANCE,
    )


@pytest.mark.parametrize("book", BOOKS, ids=lambda book: book.name)
def test_the_gradings_cover_the_cases(warehouse_of, book):
    """The books reach the cases the scorer must handle (else the comparison proves less)."""
    wh = warehouse_of(book)
    seen = set()
    for month in book.gradings:
        _, fitted, model = wh.model_for(month)
        X = indicators_of(wh.path, month)
        segments = model.predict_segments(X)
        if fitted < month:
            seen.add("score_only")
        if model.dormant_min_recency_days is None:
            seen.add("rule_off")
            assert (X["recency_days"] >= 365).any()  # customers the rule would have taken
        elif (segments == 0).any():
            seen.add("dormant_rule")
            if 0 not in model.segments_["segment"].to_numpy():
                seen.add("sleeping_without_segment_0")
        if model.segmenter_.segment_ids_.tolist() != sorted(model.segmenter_.segment_ids_):
            seen.add("segments_out_of_order")
        values = X[list(model.columns_)].to_numpy(dtype=float, na_value=np.nan)
        if not np.isfinite(values).all():
            seen.add("missing_values")
    expected = {
        "dormant_quarter": {"score_only", "rule_off", "dormant_rule"},
        "trading_app": {
            "score_only",
            "dormant_rule",
            "sleeping_without_segment_0",
            "missing_values",
        },
    }[book.name]
    assert expected <= seen


def test_the_scorer_reads_every_indicator_ml_knows():
    text = MACROS.read_text()
    listed = re.search(r"macro scoring_indicator_columns\(\).*?\[(.*?)\]", text, re.S)
    assert listed is not None
    assert re.findall(r"'(\w+)'", listed.group(1)) == list(ALL_INDICATORS)
