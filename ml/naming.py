"""Naming segments as business tiers from their profiles, by documented rules.

Tier codes, best first (``tier_rank`` 1..6): ``vip``, ``potential``,
``ordinary_a``, ``ordinary_b``, ``free``, ``sleeping``.

Each segment is described by two profiles of its members:

- ``median``: the median of every indicator in original units (days, currency,
  counts), used where a rule speaks in business units (recency in days);
- ``mean_z``: the mean of every prepared indicator (signed log, winsorised,
  standardised against the clustered customers), i.e. how many standard
  deviations the segment sits above or below the average customer. Relative
  rules use it, so they work whatever the currency or market size.

From ``mean_z`` four scores (means of the listed indicators' z; recency enters
activity with a minus sign, as fewer days since the last trade is more active):

- ``value``: assets and revenue (``avg_assets``, ``commission_contribution``,
  ``interest_contribution``);
- ``revenue``: ``commission_contribution``, ``interest_contribution``;
- ``activity``: ``active_days``, ``trade_count``, ``active_month_share``,
  minus ``recency_days``;
- ``growth``: the larger of ``avg_assets`` and ``net_inflow``.

Rules, tried in this order; the first that holds names the segment:

1. ``sleeping``: median ``recency_days`` >= ``sleeping_min_recency_days``
   (no recent trading) and median ``tenure_months`` >=
   ``sleeping_min_tenure_months`` (a new account that has not traded yet is
   not asleep);
2. ``vip``: value >= ``vip_min_value`` and revenue >= ``vip_min_revenue``
   (rich *and* paying);
3. ``potential``: growth >= ``potential_min_growth`` and either activity <=
   ``potential_max_activity`` or revenue at least ``potential_min_revenue_gap``
   below growth (the money is there, the trading and revenue are not yet);
4. ``free``: value <= ``free_max_value`` and activity <= ``free_max_activity``
   (little money, little trading);
5. ``ordinary_a``: value >= ``ordinary_a_min_value`` or activity >=
   ``ordinary_a_min_activity`` (the better-paying or very active middle, such
   as small hyper-active traders);
6. ``ordinary_b``: everything else (the middling middle).

The defaults sit in the gaps between where segments fell on the synthetic
books we tried (middling segments within about +-0.3, distinct ones beyond
+-0.7), so that a segment does not flip tier on a small shift; a segment that
mixes customer types can still sit near a threshold. Several segments may get the same
tier and a tier may be empty, so any k names sensibly. With ``ensure_vip``
(default on), if no segment passes rule 2, the non-sleeping segment with the
highest value score becomes ``vip`` provided its value is at least
``vip_fallback_min_value`` and it holds at most ``vip_max_share`` of the
clustered customers: with a small k a rich minority merged with its nearest
neighbours still counts as VIP, a third of the book does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

TIERS: tuple[str, ...] = ("vip", "potential", "ordinary_a", "ordinary_b", "free", "sleeping")
TIER_RANK: dict[str, int] = {tier: rank for rank, tier in enumerate(TIERS, start=1)}


@dataclass(frozen=True)
class NamingRules:
    """Thresholds of the naming rules; z thresholds are in standard deviations."""

    value_indicators: tuple[str, ...] = (
        "avg_assets",
        "commission_contribution",
        "interest_contribution",
    )
    revenue_indicators: tuple[str, ...] = ("commission_contribution", "interest_contribution")
    activity_indicators: tuple[str, ...] = ("active_days", "trade_count", "active_month_share")
    recency_indicator: str = "recency_days"
    growth_indicators: tuple[str, ...] = ("avg_assets", "net_inflow")
    tenure_indicator: str = "tenure_months"
    sleeping_min_recency_days: float = 270.0
    sleeping_min_tenure_months: float = 12.0
    vip_min_value: float = 1.0
    vip_min_revenue: float = 0.75
    potential_min_growth: float = 0.75
    potential_max_activity: float = -0.25
    potential_min_revenue_gap: float = 0.4
    free_max_value: float = -0.5
    free_max_activity: float = 0.0
    ordinary_a_min_value: float = 0.5
    ordinary_a_min_activity: float = 0.75
    ensure_vip: bool = True
    vip_fallback_min_value: float = 0.5
    vip_max_share: float = 0.15

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> NamingRules:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def indicators(self) -> list[str]:
        """Every indicator the rules read."""
        names = [
            *self.value_indicators,
            *self.revenue_indicators,
            *self.activity_indicators,
            self.recency_indicator,
            *self.growth_indicators,
            self.tenure_indicator,
        ]
        return list(dict.fromkeys(names))


DEFAULT_RULES = NamingRules()


def segment_scores(mean_z: pd.DataFrame, rules: NamingRules = DEFAULT_RULES) -> pd.DataFrame:
    """Value, revenue, activity and growth scores per segment (rows of ``mean_z``)."""
    activity = pd.concat(
        [mean_z[list(rules.activity_indicators)], -mean_z[[rules.recency_indicator]]], axis=1
    )
    return pd.DataFrame(
        {
            "value_score": mean_z[list(rules.value_indicators)].mean(axis=1),
            "revenue_score": mean_z[list(rules.revenue_indicators)].mean(axis=1),
            "activity_score": activity.mean(axis=1),
            "growth_score": mean_z[list(rules.growth_indicators)].max(axis=1),
        },
        index=mean_z.index,
    )


def name_segments(
    mean_z: pd.DataFrame,
    median: pd.DataFrame,
    sizes: pd.Series,
    rules: NamingRules = DEFAULT_RULES,
) -> pd.DataFrame:
    """Name every segment by the rules.

    Parameters
    ----------
    mean_z : DataFrame (segments x indicators)
        Mean prepared (standardised) indicator per segment.
    median : DataFrame (segments x indicators)
        Median indicator per segment in original units.
    sizes : Series (segments,)
        Customers per segment.

    Returns
    -------
    DataFrame indexed like ``mean_z`` with the four scores, ``tier`` (str) and
    ``rule`` (str: which rule named it).
    """
    missing = sorted(set(rules.indicators()) - set(mean_z.columns))
    if missing:
        raise KeyError(f"naming rules need indicators that were not modelled: {missing}")
    scores = segment_scores(mean_z, rules)
    recency = median[rules.recency_indicator]
    tenure = median[rules.tenure_indicator]
    tiers, reasons = [], []
    for segment, s in scores.iterrows():
        if (
            recency[segment] >= rules.sleeping_min_recency_days
            and tenure[segment] >= rules.sleeping_min_tenure_months
        ):
            tier, rule = "sleeping", "recency"
        elif s.value_score >= rules.vip_min_value and s.revenue_score >= rules.vip_min_revenue:
            tier, rule = "vip", "value"
        elif s.growth_score >= rules.potential_min_growth and (
            s.activity_score <= rules.potential_max_activity
            or s.revenue_score <= s.growth_score - rules.potential_min_revenue_gap
        ):
            tier, rule = "potential", "growth_without_revenue"
        elif s.value_score <= rules.free_max_value and s.activity_score <= rules.free_max_activity:
            tier, rule = "free", "low_value_low_activity"
        elif (
            s.value_score >= rules.ordinary_a_min_value
            or s.activity_score >= rules.ordinary_a_min_activity
        ):
            tier, rule = "ordinary_a", "value_or_activity"
        else:
            tier, rule = "ordinary_b", "rest"
        tiers.append(tier)
        reasons.append(rule)
    out = scores.assign(tier=tiers, rule=reasons)
    awake = out[out["tier"] != "sleeping"]
    if rules.ensure_vip and len(awake) and not (out["tier"] == "vip").any():
        best = awake["value_score"].idxmax()
        share = sizes.get(best, 0) / max(float(sizes.sum()), 1.0)
        if awake.loc[best, "value_score"] >= rules.vip_fallback_min_value and (
            share <= rules.vip_max_share
        ):
            out.loc[best, ["tier", "rule"]] = ["vip", "highest_value"]
    return out
