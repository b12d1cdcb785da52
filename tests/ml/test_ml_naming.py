"""Archetype naming on hand-made segment scores: assignment, VIP eligibility, margins, config."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml import TIER_RANK, TIERS, NamingRules, name_segments, segment_scores
from ml.naming import SCORES, naming_frame


def _scores(**segments):
    """Segments as {name: (value, revenue, activity, growth, tenure)}."""
    return pd.DataFrame(segments, index=list(SCORES)).T.astype(float)


def _name(scores, shares=None, rules=None, fixed=None, **kwargs):
    shares = pd.Series(shares or {s: 1 / len(scores) for s in scores.index})
    return name_segments(scores, shares, rules or NamingRules(), fixed, **kwargs)


# one segment per business type, scores in standard deviations from the average
BOOK = _scores(
    rich_and_paying=(2.2, 2.0, 1.2, 0.3, 0.6),
    new_money=(1.2, -0.8, -0.7, 1.4, -1.3),
    busy_small_trader=(-0.3, 1.1, 1.6, 0.0, 0.0),
    middle=(0.3, 0.1, 0.0, 0.0, 0.1),
    little_of_anything=(-1.1, -1.0, -0.8, 0.0, 0.0),
    long_asleep=(-0.4, -1.6, -2.4, -0.4, 0.5),
)
EXPECTED = {
    "rich_and_paying": "vip",
    "new_money": "potential",
    "busy_small_trader": "ordinary_a",
    "middle": "ordinary_b",
    "little_of_anything": "free",
    "long_asleep": "sleeping",
}
SMALL_VIP = {**dict.fromkeys(BOOK.index, 0.19), "rich_and_paying": 0.05}


def test_each_type_takes_its_tier_and_each_name_is_used_once():
    named = _name(BOOK, SMALL_VIP)
    assert named["tier"].to_dict() == EXPECTED
    assert set(named["rule"]) == {"archetype"}


def test_tier_codes_and_ranks():
    assert TIERS == ("vip", "potential", "ordinary_a", "ordinary_b", "free", "sleeping")
    assert [TIER_RANK[t] for t in TIERS] == [1, 2, 3, 4, 5, 6]


def test_a_richer_book_changes_no_name():
    """Closeness, not thresholds: shifting every segment by the same amount names alike."""
    shifted = BOOK + np.array([0.8, 0.5, -0.3, 0.2, 0.4])
    assert _name(shifted, SMALL_VIP)["tier"].to_dict() == EXPECTED


def test_a_type_is_named_wherever_it_sits():
    """A modest 'potential' segment still takes the name: no other segment is closer."""
    modest = BOOK.copy()
    modest.loc["new_money"] = (0.4, -0.4, -0.3, 0.6, -0.5)  # below any fixed threshold
    assert _name(modest, SMALL_VIP).loc["new_money", "tier"] == "potential"


def test_vip_is_never_a_large_segment_nor_money_that_has_not_traded():
    too_big = {**SMALL_VIP, "rich_and_paying": 0.25}
    named = _name(BOOK, too_big)
    assert "vip" not in set(named["tier"])  # no VIP rather than the best of the rest
    assert named.loc["new_money", "tier"] == "potential"
    rich_idle = BOOK.copy()
    rich_idle.loc["rich_and_paying"] = (2.5, 0.2, -0.5, 0.3, 0.6)  # rich, barely pays
    assert _name(rich_idle, SMALL_VIP).loc["rich_and_paying", "tier"] != "vip"
    capped = NamingRules(vip_max_share=0.30)
    assert _name(BOOK, too_big, capped).loc["rich_and_paying", "tier"] == "vip"


def test_fixed_tiers_stay_and_are_not_given_twice():
    named = _name(BOOK, SMALL_VIP, fixed={"long_asleep": "sleeping", "middle": "free"})
    assert named.loc["long_asleep", ["tier", "rule"]].tolist() == ["sleeping", "fixed"]
    assert named.loc["middle", "tier"] == "free"
    assert (named["tier"] == "free").sum() == 1
    assert named.loc["little_of_anything", "tier"] != "free"


def test_extra_segments_take_their_nearest_archetype():
    extra = pd.concat([BOOK, _scores(another_middle=(0.2, 0.0, 0.1, 0.0, 0.0))])
    named = _name(extra, {**SMALL_VIP, "another_middle": 0.1})
    middles = ["middle", "another_middle"]
    assert named["tier"].drop(middles).to_dict() == {
        k: v for k, v in EXPECTED.items() if k not in middles
    }
    assert named.loc[middles, "tier"].tolist() == ["ordinary_b", "ordinary_b"]
    assert sorted(named.loc[middles, "rule"]) == ["archetype", "archetype_nearest"]


def test_fewer_segments_leave_names_unused():
    named = _name(BOOK.loc[["middle", "long_asleep", "little_of_anything"]])
    assert named["tier"].to_dict() == {
        "middle": "ordinary_b",
        "long_asleep": "sleeping",
        "little_of_anything": "free",
    }


def test_margin_is_the_extra_distance_of_the_runner_up():
    named = _name(BOOK, SMALL_VIP)
    assert (named["naming_margin"] >= 0).all()
    assert named["runner_up_tier"].ne(named["tier"]).all()
    # two segments alike: swapping their names costs almost nothing
    close = BOOK.copy()
    close.loc["middle"] = (0.0, 0.4, 0.6, 0.0, 0.0)
    close.loc["busy_small_trader"] = (0.0, 0.5, 0.7, 0.0, 0.0)
    tight = _name(close, SMALL_VIP)
    assert tight.loc["middle", "naming_margin"] < 0.1 * named.loc["middle", "naming_margin"]
    assert tight.loc["middle", "runner_up_tier"] == "ordinary_a"
    # the distance reported is to the archetype of the tier given
    point = NamingRules().archetype_matrix().loc["vip"].to_numpy()
    expected = np.sqrt(((BOOK.loc["rich_and_paying"].to_numpy() - point) ** 2).sum())
    assert named.loc["rich_and_paying", "archetype_distance"] == pytest.approx(expected)


def test_archetypes_and_caps_are_configurable_and_round_trip():
    rules = NamingRules(vip_max_share=0.05, vip_min_value=1.5, vip_min_revenue=0.2)
    again = NamingRules.from_dict(json.loads(json.dumps(rules.to_dict())))
    assert again == rules
    moved = {**rules.to_dict()["archetypes"], "free": {"value": 0.3, "activity": 0.0}}
    custom = NamingRules.from_dict({**rules.to_dict(), "archetypes": moved})
    assert _name(BOOK, SMALL_VIP, NamingRules())["tier"]["middle"] == "ordinary_b"
    assert _name(BOOK, SMALL_VIP, custom)["tier"]["middle"] == "free"
    with pytest.raises(ValueError, match="each tier once"):
        NamingRules(archetypes=(("vip", (("value", 1.0),)),))
    with pytest.raises(ValueError, match="unknown scores"):
        NamingRules.from_dict({"archetypes": {**moved, "vip": {"wealth": 2.0}}})


def test_scores_are_standardised_on_the_reference_rows():
    X = pd.DataFrame(
        {
            "avg_assets": [1e3, 1e4, 1e5, 1e6],
            "commission_contribution": [0.0, 10.0, 100.0, 1000.0],
            "interest_contribution": [0.0, 0.0, 0.0, 50.0],
            "net_inflow": [0.0, -10.0, 10.0, 1e5],
            "trade_count": [0, 1, 10, 100],
            "active_days": [0, 1, 8, 60],
            "active_month_share": [0.0, 0.1, 0.5, 1.0],
            "recency_days": [366, 200, 20, 1],
            "tenure_months": [12, 24, 36, 48],
        }
    )
    prepared = naming_frame(X)
    # realised revenue is commission plus margin interest when the mart column is absent
    assert prepared["realised_revenue"].iloc[3] == pytest.approx(np.log1p(1050.0))
    scores = segment_scores(prepared, np.array([1, 1, 2, 2]), np.array([True] * 4))
    assert (scores.loc[2] > scores.loc[1]).all()  # the second segment is above on every score
    assert scores.loc[[1, 2]].sum().abs().max() == pytest.approx(0.0)  # z averages to 0
    with pytest.raises(KeyError, match="recency_days"):
        naming_frame(X.drop(columns="recency_days"))


def _brute_force_total(scores, not_vip):
    """The least summed squared distance over every naming with one name per segment
    where names suffice, the segments beyond them at their nearest archetype."""
    from itertools import permutations

    points = NamingRules().archetype_matrix()
    cost = pd.DataFrame(
        {t: ((scores - points.loc[t]) ** 2).sum(axis=1) for t in TIERS}, index=scores.index
    )
    cost.loc[not_vip, "vip"] = np.inf
    tiers = [t for t in TIERS if np.isfinite(cost[t]).any()]
    best = np.inf
    for extra in scores.index:  # one segment more than usable names
        rest = [s for s in scores.index if s != extra]
        for order in permutations(tiers, len(rest)):
            total = sum(cost.loc[s, t] for s, t in zip(rest, order, strict=True))
            best = min(best, total + cost.loc[extra].min())
    return best


def test_a_segment_beyond_the_names_is_chosen_by_the_same_optimum():
    too_big = {**SMALL_VIP, "rich_and_paying": 0.25}  # no segment may be VIP
    named = _name(BOOK, too_big)
    points = NamingRules().archetype_matrix()
    chosen = sum(((BOOK.loc[s] - points.loc[t]) ** 2).sum() for s, t in named["tier"].items())
    assert chosen == pytest.approx(_brute_force_total(BOOK, ["rich_and_paying"]))
    assert named["tier"].value_counts().max() == 2  # one name twice, the others once
    assert (named["naming_margin"] > 0).all()


def test_excluded_tiers_are_never_given():
    named = _name(BOOK, SMALL_VIP, exclude=("sleeping",))
    assert "sleeping" not in set(named["tier"])
    assert named.loc["long_asleep", "tier"] == "free"  # its nearest other archetype


def test_carried_names_stay_on_small_drifts_and_obey_the_guards():
    drifted = BOOK.copy()
    drifted.loc["middle"] = (0.0, 0.45, 0.65, 0.0, 0.0)  # between the two middles
    drifted.loc["busy_small_trader"] = (-0.1, 0.6, 0.8, 0.0, 0.0)
    fresh = _name(drifted, SMALL_VIP)
    swapped = {
        "middle": fresh.loc["busy_small_trader", "tier"],
        "busy_small_trader": fresh.loc["middle", "tier"],
    }
    kept = _name(drifted, SMALL_VIP, preferred=swapped)
    assert kept.loc[list(swapped), "tier"].to_dict() == swapped  # last month's names hold
    assert set(kept.loc[list(swapped), "rule"]) == {"carried"}
    # a large drift moves the name, and a carried VIP grown past the cap loses it
    far = _name(BOOK, SMALL_VIP, preferred={"middle": "free", "little_of_anything": "ordinary_b"})
    assert far["tier"].to_dict() == EXPECTED
    grown = _name(BOOK, {**SMALL_VIP, "rich_and_paying": 0.3}, preferred={"rich_and_paying": "vip"})
    assert "vip" not in set(grown["tier"])
