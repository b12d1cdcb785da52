"""How well the grading finds the customer types planted in synthetic books.

The raw-data generator (``seeds/generate.py``) draws every customer from one of six
latent types and writes the tier a broker would give each one to ``_truth.csv``.
This module generates books of several sizes, seeds and type mixes, computes their
indicators with the hand-written reference query (``benchmarks/reference.py``,
checked customer by customer against the dbt marts in the tests), grades the
latest month-end with :class:`ml.TieringModel` and compares:

- ``segments_ari`` / ``tiers_ari``: adjusted Rand index of the segments and of the
  tiers against the planted types;
- per tier: precision and recall of the tier against the customers planted for it;
- ``names_used``: how many of the six tier codes the grading used;
- ``vip_share``: the share of the book graded VIP.

``python -m benchmarks.planted_types`` prints the table for the books below; the
tests run the same functions on seeds that no default was tuned on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from benchmarks.reference import indicators_duckdb
from ml import TIERS, TieringModel
from seeds.generate import generate

END_DATE = dt.date(2026, 10, 31)
LOAD_DATE = dt.date(2026, 11, 2)

#: Type mixes of the books: the generator's default shares and four other brokers.
MIXES: dict[str, dict[str, float] | None] = {
    "default": None,
    # a quarter dormant, a tenth fresh money (the book of the issue that found the bugs)
    "dormant_quarter": {
        "vip": 0.04,
        "potential": 0.10,
        "active_trader": 0.12,
        "ordinary": 0.22,
        "low_activity": 0.27,
        "dormant": 0.25,
    },
    # a mass-market broker: few VIPs, a large middle
    "mass_market": {
        "vip": 0.02,
        "potential": 0.06,
        "active_trader": 0.08,
        "ordinary": 0.40,
        "low_activity": 0.30,
        "dormant": 0.14,
    },
    # a private-banking style book: many VIPs and much new money
    "wealthy": {
        "vip": 0.08,
        "potential": 0.15,
        "active_trader": 0.15,
        "ordinary": 0.25,
        "low_activity": 0.20,
        "dormant": 0.17,
    },
    # a trading-app broker: many small active traders, few dormant
    "trading_app": {
        "vip": 0.03,
        "potential": 0.08,
        "active_trader": 0.25,
        "ordinary": 0.25,
        "low_activity": 0.30,
        "dormant": 0.09,
    },
}


@dataclass(frozen=True)
class Book:
    """One synthetic book: ``customers`` customers of type mix ``mix`` drawn with ``seed``."""

    mix: str
    seed: int
    customers: int = 6000
    months: int = 24

    @property
    def name(self) -> str:
        return f"{self.mix}-s{self.seed}-n{self.customers}"


@dataclass
class Graded:
    """A book's latest month-end: indicators, planted truth and the fitted model's output."""

    book: Book
    indicators: pd.DataFrame
    truth: pd.DataFrame  # customer_id, latent_type, expected_tier (rows of ``indicators``)
    model: TieringModel
    scores: dict[str, float] = field(default_factory=dict)


def book_indicators(
    book: Book, folder: Path, as_of_dates: Iterable[dt.date] = (END_DATE,)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate ``book`` into ``folder``; the indicators of ``as_of_dates`` (by
    month-end, then customer) and the planted truth of each of their rows."""
    generate(folder, book.customers, book.months, END_DATE, book.seed, mix=MIXES[book.mix])
    indicators = indicators_duckdb(folder, LOAD_DATE, as_of_dates=list(as_of_dates))
    indicators = indicators.sort_values(["as_of_date", "customer_id"], ignore_index=True)
    truth = pd.read_csv(folder / "_truth.csv", dtype=str)
    truth = indicators[["customer_id"]].merge(truth, on="customer_id", how="left")
    if truth["expected_tier"].isna().any():
        raise ValueError(f"{book.name}: customers without a planted type")
    return indicators, truth


def score(truth: pd.DataFrame, segments: np.ndarray, tiers: np.ndarray) -> dict[str, float]:
    """Agreement of ``segments`` and ``tiers`` (one per row of ``truth``) with the planted types."""
    expected = truth["expected_tier"].to_numpy()
    tiers = np.asarray(tiers, dtype=object)
    out = {
        "segments_ari": adjusted_rand_score(expected, segments),
        "tiers_ari": adjusted_rand_score(expected, tiers),
        "names_used": float(len(set(tiers))),
        "vip_share": float(np.mean(tiers == "vip")),
    }
    for tier in TIERS:
        graded, planted = tiers == tier, expected == tier
        hits = float(np.sum(graded & planted))
        out[f"{tier}_precision"] = hits / graded.sum() if graded.any() else float("nan")
        out[f"{tier}_recall"] = hits / planted.sum() if planted.any() else float("nan")
    return out


def grade_book(book: Book, model: TieringModel | None = None, folder: Path | None = None) -> Graded:
    """Generate, compute indicators, fit ``model`` (default: the library's defaults), score."""
    with tempfile.TemporaryDirectory(prefix="planted-") as scratch:
        indicators, truth = book_indicators(book, Path(folder or scratch))
    model = (model or TieringModel()).fit(indicators)
    graded = Graded(book, indicators, truth, model)
    graded.scores = score(truth, model.labels_, model.tiers_)
    return graded


DEFAULT_BOOKS = tuple(
    Book(mix, seed, customers)
    for mix in MIXES
    for seed, customers in ((101, 6000), (102, 3000), (103, 20000))
)


def report(books: Iterable[Book], params: Mapping[str, object] | None = None) -> pd.DataFrame:
    rows = []
    for book in books:
        graded = grade_book(book, TieringModel(**(params or {})))
        rows.append({"book": book.name, **graded.scores})
    return pd.DataFrame(rows).set_index("book")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.planted_types",
        description="Grade synthetic books with planted customer types and print how well "
        "the segments and tiers find them.",
    )
    parser.add_argument("--seeds", type=int, nargs="*", help="seeds (default 101 102 103)")
    parser.add_argument(
        "--customers", type=int, help="customers per book (default 6000/3000/20000)"
    )
    args = parser.parse_args(argv)
    books = DEFAULT_BOOKS
    if args.seeds or args.customers:
        books = tuple(
            Book(mix, seed, args.customers or 6000)
            for mix in MIXES
            for seed in (args.seeds or (101, 102, 103))
        )
    table = report(books)
    columns = [
        "segments_ari",
        "tiers_ari",
        "names_used",
        "vip_share",
        "vip_precision",
        "vip_recall",
        "potential_recall",
        "sleeping_recall",
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table[columns].round(3).to_string())
        print(table[columns].agg(["min", "mean"]).round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
