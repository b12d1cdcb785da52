"""Published tiers move only after N consecutive months in the same new model tier.

Every expectation is worked out by hand from the rule in ml/hysteresis.py.
"""

from __future__ import annotations

import pandas as pd
import pytest

from ml import apply_hysteresis
from ml.hysteresis import HYSTERESIS_COLUMNS


def _month(tiers):
    return pd.DataFrame({"customer_id": list(tiers), "tier": list(tiers.values())})


def _published(model_tiers, patience):
    """Customer "a"'s published tier, month by month, for a sequence of model tiers."""
    published = None
    out = []
    for tier in model_tiers:
        published = apply_hysteresis(_month({"a": tier}), published, patience)
        out.append(published["tier"].iloc[0])
    return out


def test_a_vip_with_one_quiet_month_stays_vip():
    assert _published(["vip", "ordinary_b", "vip"], patience=2) == ["vip", "vip", "vip"]


def test_two_months_in_a_lower_tier_demote():
    model = ["vip", "ordinary_b", "ordinary_b", "ordinary_b"]
    assert _published(model, patience=2) == ["vip", "vip", "ordinary_b", "ordinary_b"]


def test_promotion_waits_too():
    model = ["free", "vip", "vip"]
    assert _published(model, patience=2) == ["free", "free", "vip"]


def test_alternating_tiers_never_move():
    model = ["ordinary_a", "ordinary_b", "ordinary_a", "ordinary_b", "ordinary_a", "ordinary_b"]
    assert _published(model, patience=2) == ["ordinary_a"] * 6


def test_a_third_tier_restarts_the_count():
    # vip, then potential (1 month), then free (1 month: a different pending tier), then free
    model = ["vip", "potential", "free", "free"]
    assert _published(model, patience=2) == ["vip", "vip", "vip", "free"]


def test_patience_three():
    model = ["vip", "free", "free", "vip", "free", "free", "free"]
    expected = ["vip", "vip", "vip", "vip", "vip", "vip", "free"]
    assert _published(model, patience=3) == expected


def test_patience_one_publishes_the_model_tier():
    model = ["vip", "ordinary_b", "vip", "sleeping", "free"]
    assert _published(model, patience=1) == model


def test_a_new_customer_publishes_the_model_tier_at_once():
    previous = apply_hysteresis(_month({"a": "free"}), None, 6)
    out = apply_hysteresis(_month({"a": "free", "new": "vip"}), previous, 6)
    row = out.set_index("customer_id").loc["new"]
    assert row["tier"] == "vip" and pd.isna(row["pending_tier"]) and row["pending_months"] == 0


def test_pending_state_and_columns():
    previous = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "tier": ["vip", "free", "ordinary_a", "potential"],
            "pending_tier": ["ordinary_b", None, "free", None],
            "pending_months": [1, 0, 2, 0],
        }
    )
    current = _month(
        {"a": "ordinary_b", "b": "free", "c": "sleeping", "d": "vip", "new": "ordinary_b"}
    )
    out = apply_hysteresis(current, previous, patience=3)
    assert tuple(out.columns) == HYSTERESIS_COLUMNS
    assert out["customer_id"].tolist() == ["a", "b", "c", "d", "new"]  # current's order
    rows = out.set_index("customer_id")
    # a: second month in ordinary_b, patience 3: held, 2 months pending
    assert rows.loc["a", ["tier", "pending_tier", "pending_months"]].tolist() == [
        "vip",
        "ordinary_b",
        2,
    ]
    # b: the model agrees with the published tier: nothing pending
    assert rows.loc["b", "tier"] == "free" and pd.isna(rows.loc["b", "pending_tier"])
    assert rows.loc["b", "pending_months"] == 0
    # c: pending free for 2 months, now sleeping: a new pending tier, count 1
    assert rows.loc["c", ["tier", "pending_tier", "pending_months"]].tolist() == [
        "ordinary_a",
        "sleeping",
        1,
    ]
    # d: first month in vip
    assert rows.loc["d", ["tier", "pending_tier", "pending_months"]].tolist() == [
        "potential",
        "vip",
        1,
    ]
    assert (rows["model_tier"] == current.set_index("customer_id")["tier"]).all()
    assert rows.loc["a", "tier_rank"] == 1 and rows.loc["new", "tier_rank"] == 4


def test_the_third_month_publishes_and_clears_the_pending_tier():
    previous = pd.DataFrame(
        {"customer_id": ["a"], "tier": ["vip"], "pending_tier": ["free"], "pending_months": [2]}
    )
    out = apply_hysteresis(_month({"a": "free"}), previous, patience=3).iloc[0]
    assert out["tier"] == "free" and out["tier_rank"] == 5
    assert pd.isna(out["pending_tier"]) and out["pending_months"] == 0


def test_previous_without_pending_columns_counts_from_zero():
    previous = pd.DataFrame({"customer_id": ["a"], "tier": ["vip"]})
    out = apply_hysteresis(_month({"a": "free"}), previous, patience=2).iloc[0]
    assert out["tier"] == "vip" and out["pending_tier"] == "free" and out["pending_months"] == 1


def test_same_inputs_same_output():
    previous = apply_hysteresis(_month({"a": "vip", "b": "free"}), None, 2)
    current = _month({"a": "free", "b": "free"})
    pd.testing.assert_frame_equal(
        apply_hysteresis(current, previous, 2), apply_hysteresis(current, previous, 2)
    )


@pytest.mark.parametrize("patience", [0, -1, 1.5, True])
def test_patience_must_be_a_positive_integer(patience):
    with pytest.raises(ValueError, match="patience"):
        apply_hysteresis(_month({"a": "vip"}), patience=patience)


def test_unknown_tier_codes_are_refused():
    with pytest.raises(ValueError, match="unknown tier"):
        apply_hysteresis(_month({"a": "gold"}))
    previous = pd.DataFrame({"customer_id": ["a"], "tier": ["gold"]})
    with pytest.raises(ValueError, match="unknown tier"):
        apply_hysteresis(_month({"a": "vip"}), previous)
