"""The grading on raw-data books with planted customer types, of seeds nothing was tuned on.

The defaults (archetypes, VIP caps, cluster weighting, factor count rule) were
chosen on seeds 1 and 2 of ``benchmarks.planted_types.MIXES`` (6,000 customers).
These books use other seeds, sizes and mixes; their indicators come from the
reference query that tests/test_reference.py checks against the dbt marts.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from benchmarks.planted_types import END_DATE, Book, book_indicators, score
from ml import TIERS, TieringModel, apply_hysteresis

#: six month-ends, so that the hysteresis reaches its steady state
MONTH_ENDS = (
    dt.date(2026, 5, 31),
    dt.date(2026, 6, 30),
    dt.date(2026, 7, 31),
    dt.date(2026, 8, 31),
    dt.date(2026, 9, 30),
    END_DATE,
)
#: the job's default hysteresis (dbt var hysteresis_patience in dbt_project.yml)
PATIENCE = 2
BOOKS = (Book("default", 201, 4000), Book("dormant_quarter", 202, 7000))


@pytest.fixture(scope="module", params=BOOKS, ids=lambda book: book.name)
def graded(request, tmp_path_factory):
    """Six month-ends of one book, each graded warm-started from the one before."""
    book = request.param
    indicators, truth = book_indicators(book, tmp_path_factory.mktemp(book.name), MONTH_ENDS)
    month_ends = pd.to_datetime(indicators["as_of_date"]).dt.date
    months, models, previous = [], [], None
    for as_of in MONTH_ENDS:
        month = indicators[month_ends == as_of].reset_index(drop=True)
        previous = TieringModel().fit(month, previous=previous)
        months.append(month)
        models.append(previous)
    latest = months[-1]
    fresh = TieringModel().fit(latest)
    return {
        "book": book,
        "months": months,
        "models": models,
        "latest": latest,
        "fresh": fresh,
        "truth": truth[(month_ends == END_DATE).to_numpy()].reset_index(drop=True),
    }


def test_each_planted_type_lands_in_its_tier(graded):
    model, truth = graded["fresh"], graded["truth"]
    scores = score(truth, model.labels_, model.tiers_)
    assert scores["vip_precision"] >= 0.9 and scores["vip_recall"] >= 0.9
    assert scores["potential_recall"] >= 0.9
    assert scores["sleeping_recall"] >= 0.95
    assert scores["ordinary_a_recall"] >= 0.9
    assert scores["free_recall"] >= 0.9
    # The quieter middle overlaps the low-value end (log-normal assets and trade
    # rates): measured 0.86-0.91 on unseen seeds, short of the 0.9 of the others.
    assert scores["ordinary_b_recall"] >= 0.85
    assert scores["tiers_ari"] >= 0.8


def test_six_names_each_used_once(graded):
    segments = graded["fresh"].segments_
    assert sorted(segments["tier"]) == sorted(TIERS)
    assert (segments.loc[segments["source"] == "kmeans", "naming_margin"] > 0).all()
    assert segments.loc[segments["tier"] == "vip", "share"].item() <= 0.10


def test_a_rerun_is_identical(graded):
    again = TieringModel().fit(graded["latest"])
    np.testing.assert_array_equal(again.tiers_, graded["fresh"].tiers_)
    np.testing.assert_array_equal(again.labels_, graded["fresh"].labels_)


def test_warm_started_months_keep_the_types_in_their_tiers(graded):
    model, truth = graded["models"][-1], graded["truth"]
    scores = score(truth, model.labels_, model.tiers_)
    assert scores["vip_recall"] >= 0.9 and scores["potential_recall"] >= 0.9
    assert scores["names_used"] == len(TIERS)


def test_published_tiers_do_not_wander_from_the_customers_type(graded):
    """A customer's planted type is the same every month, though their indicators
    move (new money ages, a trader stops): with the job's hysteresis (patience 2),
    at most 2 % of the customers present in two consecutive month-ends move away
    from their planted tier, and at most 1 % move between two wrong tiers."""
    truth = graded["truth"].set_index("customer_id")["expected_tier"]
    published = None
    for month, model in zip(graded["months"], graded["models"], strict=True):
        current = pd.DataFrame({"customer_id": month["customer_id"], "tier": model.tiers_})
        now = apply_hysteresis(current, published, patience=PATIENCE)
        if published is not None:
            before = published.set_index("customer_id")["tier"]
            after = now.set_index("customer_id")["tier"]
            common = before.index.intersection(after.index).intersection(truth.index)
            moved = before[common] != after[common]
            planted = truth[common]
            away = moved & (before[common] == planted)
            wandering = moved & (before[common] != planted) & (after[common] != planted)
            assert away.mean() <= 0.02
            assert wandering.mean() <= 0.01
        published = now
