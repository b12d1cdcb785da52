"""Published tiers: promotions at once, demotions only after N consecutive months below."""

from __future__ import annotations

import pandas as pd
import pytest

from ml import apply_hysteresis


def _month(tiers):
    return pd.DataFrame({"customer_id": list(tiers), "tier": list(tiers.values())})


def _run(model_tiers_by_month, patience):
    published = None
    history = []
    for tiers in model_tiers_by_month:
        published = apply_hysteresis(_month(tiers), published, demotion_patience=patience)
        history.append(published.set_index("customer_id")["tier"].to_dict())
    return history


def test_patience_one_follows_the_model():
    months = [{"a": "vip"}, {"a": "ordinary_b"}, {"a": "vip"}]
    assert [m["a"] for m in _run(months, patience=1)] == ["vip", "ordinary_b", "vip"]


def test_demotion_waits_for_n_consecutive_months_below():
    months = [{"a": "vip"}] + [{"a": "ordinary_a"}] * 3
    assert [m["a"] for m in _run(months, patience=3)] == ["vip", "vip", "vip", "ordinary_a"]


def test_a_month_back_up_resets_the_count():
    months = [{"a": "vip"}, {"a": "free"}, {"a": "vip"}, {"a": "free"}, {"a": "free"}]
    assert [m["a"] for m in _run(months, patience=3)] == ["vip"] * 5


def test_promotion_is_immediate():
    months = [{"a": "free"}, {"a": "vip"}]
    assert [m["a"] for m in _run(months, patience=6)] == ["free", "vip"]


def test_counter_and_columns():
    previous = pd.DataFrame(
        {"customer_id": ["a", "b"], "tier": ["vip", "free"], "months_below": [1, 0]}
    )
    current = _month({"a": "potential", "b": "free", "new": "ordinary_b"})
    out = apply_hysteresis(current, previous, demotion_patience=3)
    assert list(out.columns) == ["customer_id", "model_tier", "tier", "tier_rank", "months_below"]
    row = out.set_index("customer_id")
    assert row.loc["a", "tier"] == "vip" and row.loc["a", "months_below"] == 2
    assert row.loc["b", "months_below"] == 0
    assert row.loc["new", "tier"] == "ordinary_b" and row.loc["new", "months_below"] == 0
    assert row.loc["a", "tier_rank"] == 1 and row.loc["new", "tier_rank"] == 4


def test_invalid_input():
    with pytest.raises(ValueError):
        apply_hysteresis(_month({"a": "vip"}), demotion_patience=0)
    with pytest.raises(ValueError, match="unknown tier"):
        apply_hysteresis(_month({"a": "gold"}))
