"""Hysteresis on published tiers: a tier changes only after N months in the new one.

The model grades every month from scratch (carrying segment identity); the
*published* tier lags behind it, so a customer with one quiet month is not
demoted and re-promoted, and one lucky month does not promote. Up or down,
the rule is the same.

For each customer, given last month's published tier and pending state:

- model tier equal to the published tier: keep it, nothing pending;
- model tier different: it becomes (or stays) the pending tier, and
  ``pending_months`` counts the consecutive months the model has put the
  customer there (1 when the pending tier is new, last month's count + 1 when
  the model says the same as last month). Once the count reaches
  ``patience``, publish the pending tier and clear it; until then keep
  publishing last month's tier.

A customer the model moves to a third tier starts counting again, so a
customer whose model tier alternates never moves. ``patience = 1`` switches
hysteresis off (the model tier is published at once). New customers (absent
from ``previous``) publish their model tier at once. Customers absent from
``current`` are dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.naming import TIER_RANK, TIERS

#: The columns :func:`apply_hysteresis` returns, in order.
HYSTERESIS_COLUMNS = (
    "customer_id",
    "model_tier",
    "tier",
    "tier_rank",
    "pending_tier",
    "pending_months",
)


def apply_hysteresis(
    current: pd.DataFrame, previous: pd.DataFrame | None = None, patience: int = 2
) -> pd.DataFrame:
    """Published tiers for this month.

    Parameters
    ----------
    current : DataFrame with columns ``customer_id``, ``tier``
        This month's model tiers.
    previous : DataFrame with columns ``customer_id``, ``tier`` and optionally
        ``pending_tier`` (code or missing) and ``pending_months`` (int,
        missing = 0), or None
        Last month's published tiers and pending state (the output of this
        function for last month, or rows of the tier history).
    patience : int >= 1
        Consecutive months in a new model tier before the published tier moves.

    Returns
    -------
    DataFrame with one row per customer of ``current``, in its order:
    ``customer_id``, ``model_tier``, ``tier`` (published), ``tier_rank`` (int),
    ``pending_tier`` (the model tier waiting to be published, different from
    ``tier``; NaN when nothing waits), ``pending_months`` (int, consecutive
    months the model has put the customer in ``pending_tier``; 0 when nothing
    waits).
    """
    if isinstance(patience, bool) or not isinstance(patience, int | np.integer) or patience < 1:
        raise ValueError(f"patience must be an integer >= 1, not {patience!r}")
    model = current["tier"].to_numpy(dtype=object)
    unknown = set(model) - set(TIERS)
    if unknown:
        raise ValueError(f"unknown tier codes: {sorted(map(str, unknown))}")
    ids = current["customer_id"].to_numpy()
    n = len(ids)
    if previous is None or previous.empty:
        prior_tier = np.full(n, None, dtype=object)
        prior_pending = np.full(n, None, dtype=object)
        prior_months = np.zeros(n, dtype=np.int64)
    else:
        prior = previous.set_index("customer_id")
        if not prior.index.is_unique:
            raise ValueError("previous has more than one row for a customer")
        unknown = set(prior["tier"].dropna()) - set(TIERS)
        if unknown:
            raise ValueError(f"unknown tier codes in previous: {sorted(map(str, unknown))}")
        prior_tier = _column(prior, "tier", ids)
        prior_pending = _column(prior, "pending_tier", ids)
        months = (
            prior["pending_months"].reindex(ids).fillna(0).to_numpy(dtype=np.int64)
            if "pending_months" in prior
            else np.zeros(n, dtype=np.int64)
        )
        prior_months = np.where(pd.isna(prior_pending), 0, months)

    is_new = pd.isna(prior_tier)
    differs = ~is_new & (model != prior_tier)
    same_pending = differs & (model == prior_pending)
    pending_months = np.where(same_pending, prior_months + 1, np.where(differs, 1, 0))
    moves = differs & (pending_months >= patience)
    held = differs & ~moves

    tier = np.where(held, prior_tier, model)
    out = pd.DataFrame(
        {
            "customer_id": ids,
            "model_tier": pd.Series(model, dtype="str"),
            "tier": pd.Series(tier, dtype="str"),
        }
    )
    out["tier_rank"] = out["tier"].map(TIER_RANK).astype(np.int64)
    out["pending_tier"] = pd.Series(np.where(held, model, None), dtype="str")
    out["pending_months"] = np.where(held, pending_months, 0).astype(np.int64)
    return out


def _column(prior: pd.DataFrame, column: str, ids: np.ndarray) -> np.ndarray:
    """``prior[column]`` for ``ids`` as objects, None where missing or absent."""
    if column not in prior:
        return np.full(len(ids), None, dtype=object)
    values = prior[column].reindex(ids).astype(object).to_numpy()
    return np.where(pd.isna(values), None, values)
