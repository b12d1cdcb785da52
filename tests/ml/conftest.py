"""Shared fixtures: a synthetic book with planted customer types and models fitted on it."""

from __future__ import annotations

import pytest
from synthetic_book import make_indicators, next_month

from ml import TieringModel

N_CUSTOMERS = 12_000


def tiering_model(**params) -> TieringModel:
    """A model with a small silhouette sample: the figure is reported, not tested."""
    return TieringModel(silhouette_sample_size=2_000, **params)


@pytest.fixture(scope="session")
def make_model():
    """Factory for unfitted models with test-friendly settings."""
    return tiering_model


@pytest.fixture(scope="session")
def book():
    """One month of indicators for 12,000 customers, with ``planted_type``."""
    return make_indicators(N_CUSTOMERS, seed=7)


@pytest.fixture(scope="session")
def book_next(book):
    """The same book a month later: drifted, 1 % churned, 3 % new customers."""
    return next_month(book, seed=8)


@pytest.fixture(scope="session")
def model(book):
    return tiering_model().fit(book)


@pytest.fixture(scope="session")
def model_next(book_next, model):
    return tiering_model().fit(book_next, previous=model)
