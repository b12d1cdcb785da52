"""Naming rules on hand-made segment profiles: each rule, its order and its configuration."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ml import TIER_RANK, TIERS, NamingRules, name_segments

INDICATORS = (
    "avg_assets",
    "commission_contribution",
    "interest_contribution",
    "net_inflow",
    "trade_count",
    "active_days",
    "active_month_share",
    "recency_days",
    "tenure_months",
)


def _segment(level=0.0, activity=0.0, recency_days=30.0, tenure_months=60.0, **z):
    """A profile: every z at ``level``, activity indicators at ``activity``, overrides in ``z``."""
    mean_z = {c: level for c in INDICATORS}
    mean_z.update(trade_count=activity, active_days=activity, active_month_share=activity)
    mean_z["recency_days"] = -activity
    mean_z.update(z)
    median = {"recency_days": recency_days, "tenure_months": tenure_months}
    return mean_z, median


def _name(segments, rules=None, sizes=None):
    mean_z = pd.DataFrame({k: v[0] for k, v in segments.items()}).T
    median = pd.DataFrame({k: v[1] for k, v in segments.items()}).T
    sizes = pd.Series(sizes or {k: 100 for k in segments})
    return name_segments(mean_z, median, sizes, rules or NamingRules())["tier"].to_dict()


BOOK = {
    "rich_and_paying": _segment(level=1.8, activity=0.5),
    "long_asleep": _segment(level=-0.5, activity=-2.0, recency_days=366, tenure_months=60),
    "new_money": _segment(
        level=-0.5,
        activity=-2.0,
        recency_days=366,
        tenure_months=3,
        avg_assets=1.5,
        net_inflow=1.5,
        interest_contribution=0.5,
    ),
    "little_of_anything": _segment(level=-1.0, activity=-0.8),
    "busy_small_trader": _segment(level=-0.2, activity=2.0, commission_contribution=1.5),
    "middle": _segment(level=0.1, activity=0.1),
    "another_middle": _segment(level=-0.1, activity=0.2),
}


def test_each_rule_names_its_segment():
    assert _name(BOOK) == {
        "rich_and_paying": "vip",
        "long_asleep": "sleeping",
        "new_money": "potential",  # no trade yet, but too new to be asleep
        "little_of_anything": "free",
        "busy_small_trader": "ordinary_a",
        "middle": "ordinary_b",
        "another_middle": "ordinary_b",  # several segments, one tier
    }


def test_tier_codes_and_ranks():
    assert TIERS == ("vip", "potential", "ordinary_a", "ordinary_b", "free", "sleeping")
    assert [TIER_RANK[t] for t in TIERS] == [1, 2, 3, 4, 5, 6]


def test_sleeping_comes_first_even_for_rich_customers():
    rich_but_asleep = _segment(level=2.0, activity=-2.0, recency_days=366, tenure_months=40)
    assert _name({"s": rich_but_asleep})["s"] == "sleeping"


def test_vip_needs_revenue_not_only_assets():
    # Assets and inflow without revenue is potential, not vip.
    hoard = _segment(level=-0.2, activity=-0.5, avg_assets=2.5, net_inflow=1.0)
    assert _name({"hoard": hoard, "m": BOOK["middle"]})["hoard"] == "potential"


def test_ordinary_a_by_value_alone():
    better_middle = _segment(level=0.7, activity=0.0)
    assert _name({"b": better_middle, "rich": BOOK["rich_and_paying"]})["b"] == "ordinary_a"


def test_thresholds_are_configurable():
    strict = NamingRules(vip_min_value=5.0, ensure_vip=False)
    assert _name(BOOK, strict)["rich_and_paying"] == "ordinary_a"
    lenient_free = NamingRules(free_max_value=0.5, free_max_activity=0.5)
    assert _name(BOOK, lenient_free)["middle"] == "free"


def test_fallback_vip_is_the_richest_small_segment():
    rules = NamingRules(vip_min_value=5.0)  # nobody passes the main vip rule
    segments = {"rich": _segment(level=0.9, activity=0.3), "m": BOOK["middle"]}
    assert _name(segments, rules, sizes={"rich": 10, "m": 90})["rich"] == "vip"
    # ... but not when the richest segment is a large part of the book.
    assert _name(segments, rules, sizes={"rich": 50, "m": 50})["rich"] == "ordinary_a"
    # ... nor when it is not rich enough.
    poor = {"a": BOOK["middle"], "b": BOOK["another_middle"]}
    assert "vip" not in _name(poor, rules).values()


def test_rules_travel_as_json():
    rules = NamingRules(vip_min_value=1.3, activity_indicators=("active_days",))
    assert NamingRules.from_dict(json.loads(json.dumps(rules.to_dict()))) == rules


def test_rules_need_their_indicators():
    mean_z = pd.DataFrame({"avg_assets": [1.0]})
    median = pd.DataFrame({"recency_days": [10.0], "tenure_months": [20.0]})
    with pytest.raises(KeyError, match="commission_contribution"):
        name_segments(mean_z, median, pd.Series([1]))
