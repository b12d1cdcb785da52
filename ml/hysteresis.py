"""Hysteresis on published tiers: promotions at once, demotions after N months.

The model grades every month from scratch (carrying segment identity); the
*published* tier can lag behind it on the way down, so a customer who has one
quiet month is not demoted and re-promoted. "Below" and "demotion" compare
``tier_rank`` (1 = vip .. 6 = sleeping).

For each customer, given last month's published tier and counter:

- model tier at or above the published tier: publish the model tier, counter 0;
- model tier below it: counter + 1; once the counter reaches
  ``demotion_patience`` publish the model tier and reset the counter to 0,
  otherwise keep publishing last month's tier.

``demotion_patience = 1`` (the default) switches hysteresis off. New customers
publish their model tier. Customers absent from ``current`` are dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.naming import TIER_RANK, TIERS


def apply_hysteresis(
    current: pd.DataFrame, previous: pd.DataFrame | None = None, demotion_patience: int = 1
) -> pd.DataFrame:
    """Published tiers for this month.

    Parameters
    ----------
    current : DataFrame with columns ``customer_id``, ``tier``
        This month's model tiers.
    previous : DataFrame with columns ``customer_id``, ``tier`` and optionally
        ``months_below`` (int, 0 if absent), or None
        Last month's published tiers.
    demotion_patience : int >= 1
        Consecutive months below the published tier before a demotion.

    Returns
    -------
    DataFrame with one row per customer of ``current``, in its order:
    ``customer_id``, ``model_tier``, ``tier`` (published), ``tier_rank`` (int),
    ``months_below`` (int, consecutive months the model has put the customer
    below the published tier without demoting yet).
    """
    if demotion_patience < 1:
        raise ValueError("demotion_patience must be >= 1")
    unknown = set(current["tier"]) - set(TIERS)
    if unknown:
        raise ValueError(f"unknown tier codes: {sorted(unknown)}")
    out = pd.DataFrame(
        {
            "customer_id": current["customer_id"].to_numpy(),
            "model_tier": current["tier"].to_numpy(dtype=object),
        }
    )
    if previous is None or previous.empty:
        prior_tier = pd.Series(np.full(len(out), None, dtype=object))
        prior_below = np.zeros(len(out), dtype=np.int64)
    else:
        prior = previous.set_index("customer_id")
        prior_tier = prior["tier"].reindex(out["customer_id"]).reset_index(drop=True)
        below = prior["months_below"] if "months_below" in prior else pd.Series(0, prior.index)
        prior_below = (
            below.reindex(out["customer_id"]).fillna(0).to_numpy(dtype=np.int64, copy=True)
        )
    model_rank = out["model_tier"].map(TIER_RANK).to_numpy(dtype=np.int64)
    prior_rank = prior_tier.map(TIER_RANK).to_numpy(dtype=np.float64)  # NaN for new customers
    demoted = model_rank > np.nan_to_num(prior_rank, nan=np.inf)
    months_below = np.where(demoted, prior_below + 1, 0)
    hold = demoted & (months_below < demotion_patience)
    out["tier"] = np.where(hold, prior_tier.to_numpy(dtype=object), out["model_tier"].to_numpy())
    out["tier_rank"] = out["tier"].map(TIER_RANK).astype(np.int64)
    out["months_below"] = np.where(hold, months_below, 0).astype(np.int64)
    return out
