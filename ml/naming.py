"""Naming segments as business tiers: each segment takes the tier whose archetype it is closest to.

Tier codes, best first (``tier_rank`` 1..6): ``vip``, ``potential``,
``ordinary_a``, ``ordinary_b``, ``free``, ``sleeping``.

**Scores.** Each segment is described by five scores, the mean over its
members of a standardised indicator (signed log for money and counts, then
minus the mean and divided by the standard deviation of the clustered
customers), so a score says how many standard deviations the segment sits
above or below the average customer, whatever the currency or market size:

=========  ===============================================================
score      indicators (mean of their z)
=========  ===============================================================
value      ``avg_assets``
revenue    ``realised_revenue``: commission net of rebates plus margin
           interest charged, revenue actually earned (never the imputed
           spread on idle cash)
activity   ``trade_count``, ``active_days``, ``active_month_share`` and
           minus ``recency_days``
growth     ``net_inflow``
tenure     ``tenure_months``
=========  ===============================================================

**Archetypes.** Each tier is a point in that score space
(:data:`DEFAULT_ARCHETYPES`, configurable):

- ``vip``: a small elite of high value and revenue, active;
- ``potential``: money and inflows without matching trading or revenue yet,
  usually new;
- ``ordinary_a``: the paying middle, revenue from trading rather than assets;
- ``ordinary_b``: the quieter middle (the origin: the average customer);
- ``free``: the low-value end, little money, little revenue, little trading;
- ``sleeping``: no trading.

**Assignment.** The names are given by an optimal assignment (the Hungarian
algorithm) that minimises the summed squared distance between each segment's
scores and its tier's archetype, each name given at most once while there are
names enough. A type the book holds gets its name wherever it sits: what
counts is which segment is *closest* to the archetype, not whether it clears a
fixed threshold. (With every tier used once, minimising the summed squared
distances is the same as maximising the summed dot products of scores and
archetypes, so adding a constant to every segment's score, as a richer book
does, changes no name.) With fewer segments than tiers some names go unused.
With more segments than usable names (k > 6, or no segment may be VIP), the
assignment has one extra column per segment left over, costing that segment
its nearest archetype, so which segments share a name is decided by the same
optimum.

A segment holding more than ``vip_max_share`` of the book, or whose value
score is below ``vip_min_value``, or whose revenue score is below
``vip_min_revenue``, is never named ``vip``: without such a segment no
customer is VIP, rather than the best of the rest (a segment of wealthy
newcomers who have not traded yet is potential, however close the others
are). ``sleeping`` is fixed for the dormant rule's segment and, while the rule
is on, given to no other. Month to month, a carried segment keeping last
month's name costs ``carry_bonus`` less: names hold on small drifts, move when
another assignment is clearly better, and the VIP guards bind carried names
too.

**Margin.** ``naming_margin`` is how much closer the segment's name was than
the runner-up: the increase in the summed squared distance of the best
assignment in which this segment has another name (``runner_up_tier``). Zero
means a tie; a small margin flags a segment a person should look at. For a
carried segment the distances include its ``carry_bonus``, so the margin says
how firmly the name holds this month.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from ml.preprocessing import signed_log1p

TIERS: tuple[str, ...] = ("vip", "potential", "ordinary_a", "ordinary_b", "free", "sleeping")
TIER_RANK: dict[str, int] = {tier: rank for rank, tier in enumerate(TIERS, start=1)}
SCORES: tuple[str, ...] = ("value", "revenue", "activity", "growth", "tenure")

#: Archetype of each tier, in standard deviations from the average customer, by score.
DEFAULT_ARCHETYPES: dict[str, dict[str, float]] = {
    "vip": {"value": 2.0, "revenue": 2.0, "activity": 1.0, "growth": 0.5, "tenure": 0.5},
    "potential": {"value": 1.0, "revenue": -0.5, "activity": -0.5, "growth": 1.5, "tenure": -1.0},
    "ordinary_a": {"value": -0.25, "revenue": 1.0, "activity": 1.5, "growth": 0.0, "tenure": 0.0},
    "ordinary_b": {"value": 0.25, "revenue": 0.0, "activity": 0.0, "growth": 0.0, "tenure": 0.0},
    "free": {"value": -1.0, "revenue": -1.0, "activity": -0.75, "growth": 0.0, "tenure": 0.0},
    "sleeping": {"value": -0.5, "revenue": -1.5, "activity": -2.5, "growth": -0.5, "tenure": 0.5},
}

#: Money and count indicators get the signed log before they are standardised.
SKEWED_INDICATORS = (
    "avg_assets",
    "realised_revenue",
    "commission_contribution",
    "interest_contribution",
    "net_inflow",
    "trade_count",
)


def _default_archetypes() -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    return tuple((tier, tuple(point.items())) for tier, point in DEFAULT_ARCHETYPES.items())


@dataclass(frozen=True)
class NamingRules:
    """The score definitions, the archetypes and the VIP cap of the naming."""

    value_indicators: tuple[str, ...] = ("avg_assets",)
    revenue_indicators: tuple[str, ...] = ("realised_revenue",)
    activity_indicators: tuple[str, ...] = ("trade_count", "active_days", "active_month_share")
    recency_indicator: str = "recency_days"
    growth_indicators: tuple[str, ...] = ("net_inflow",)
    tenure_indicators: tuple[str, ...] = ("tenure_months",)
    #: (tier, ((score, z), ...)) per tier: a tuple so the rules stay hashable and frozen
    archetypes: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = field(
        default_factory=_default_archetypes
    )
    #: a segment holding more of the book than this is never named vip
    vip_max_share: float = 0.10
    #: nor one whose value score is below this (VIP is an elite of high value)
    vip_min_value: float = 1.0
    #: nor one whose revenue score is below this: money that has not traded yet
    #: is potential, not VIP
    vip_min_revenue: float = 0.5
    #: a carried segment keeping last month's name costs this much less (squared
    #: distance), so names do not flip on small drifts
    carry_bonus: float = 1.0

    def __post_init__(self):
        tiers = [tier for tier, _ in self.archetypes]
        if sorted(tiers) != sorted(TIERS):
            raise ValueError(f"archetypes must name each tier once: {TIERS}, got {tiers}")
        for tier, point in self.archetypes:
            unknown = sorted({score for score, _ in point} - set(SCORES))
            if unknown:
                raise ValueError(f"archetype {tier}: unknown scores {unknown} (known: {SCORES})")

    def archetype_matrix(self) -> pd.DataFrame:
        """Tiers x scores (TIERS order); a score an archetype does not give is 0."""
        points = {tier: dict(point) for tier, point in self.archetypes}
        return pd.DataFrame(
            [[points[tier].get(score, 0.0) for score in SCORES] for tier in TIERS],
            index=pd.Index(TIERS, name="tier"),
            columns=list(SCORES),
            dtype=np.float64,
        )

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists, archetypes a mapping)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        out["archetypes"] = {tier: dict(point) for tier, point in self.archetypes}
        return out

    @classmethod
    def from_dict(cls, values: dict) -> NamingRules:
        values = dict(values)
        if "archetypes" in values:
            values["archetypes"] = tuple(
                (tier, tuple((str(s), float(z)) for s, z in dict(point).items()))
                for tier, point in values["archetypes"].items()
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def indicators(self) -> list[str]:
        """Every indicator the scores read."""
        names = [
            *self.value_indicators,
            *self.revenue_indicators,
            *self.activity_indicators,
            self.recency_indicator,
            *self.growth_indicators,
            *self.tenure_indicators,
        ]
        return list(dict.fromkeys(names))


DEFAULT_RULES = NamingRules()


def naming_frame(X: pd.DataFrame, rules: NamingRules = DEFAULT_RULES) -> pd.DataFrame:
    """The indicators the scores read, as float64, from a ``customer_indicators`` frame.

    ``realised_revenue`` is taken from the column when there is one, else
    computed as ``commission_contribution + interest_contribution`` (both
    realised revenue in the marts). Missing values become 0.
    """
    columns = {}
    for name in rules.indicators():
        if name in X.columns:
            values = X[name]
        elif name == "realised_revenue":
            values = X["commission_contribution"] + X["interest_contribution"]
        else:
            raise KeyError(f"naming needs the indicator {name!r}, which the input lacks")
        columns[name] = pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    out = pd.DataFrame(columns, index=X.index)
    out = out.where(np.isfinite(out), np.nan).fillna(0.0)
    skewed = [c for c in out.columns if c in SKEWED_INDICATORS]
    out[skewed] = signed_log1p(out[skewed].to_numpy())
    return out


def segment_scores(
    prepared: pd.DataFrame,
    labels: np.ndarray,
    reference: np.ndarray,
    rules: NamingRules = DEFAULT_RULES,
) -> pd.DataFrame:
    """The five scores per segment (rows indexed by segment id, columns :data:`SCORES`).

    ``prepared`` is :func:`naming_frame` output, ``labels`` the segment of each
    row and ``reference`` a boolean mask of the rows the z are standardised on
    (the clustered customers).
    """
    reference_rows = prepared[reference]
    mean = reference_rows.mean()
    std = reference_rows.std(ddof=0).replace(0.0, 1.0)
    z = (prepared - mean) / std
    z[rules.recency_indicator] = -z[rules.recency_indicator]
    groups = {
        "value": list(rules.value_indicators),
        "revenue": list(rules.revenue_indicators),
        "activity": [*rules.activity_indicators, rules.recency_indicator],
        "growth": list(rules.growth_indicators),
        "tenure": list(rules.tenure_indicators),
    }
    scores = pd.DataFrame({score: z[columns].mean(axis=1) for score, columns in groups.items()})
    return scores.groupby(np.asarray(labels)).mean()[list(SCORES)].rename_axis("segment")


def name_segments(
    scores: pd.DataFrame,
    shares: pd.Series,
    rules: NamingRules = DEFAULT_RULES,
    fixed: dict[int, str] | None = None,
    preferred: dict[int, str] | None = None,
    exclude: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Name every segment by the optimal assignment to archetypes.

    Parameters
    ----------
    scores : DataFrame (segments x :data:`SCORES`)
        :func:`segment_scores` output.
    shares : Series (segments,)
        Share of the book in each segment (for the VIP cap).
    fixed : {segment: tier}, optional
        Segments whose tier is decided already (the dormant rule's ``sleeping``);
        their tiers are not given to any other segment.
    preferred : {segment: tier}, optional
        Last month's names of carried segments: keeping one costs
        ``rules.carry_bonus`` less, so a name moves only when another assignment
        is clearly better. The VIP guards apply to them as to any segment.
    exclude : tuple of tier codes
        Tiers no segment is assigned (``sleeping`` while the dormant rule gives it).

    Returns
    -------
    DataFrame indexed like ``scores`` with the scores, ``tier``, ``rule``
    (``archetype``; ``archetype_nearest`` for a segment beyond the one-to-one
    assignment; ``carried`` for a preferred name kept; ``fixed``),
    ``archetype_distance`` (Euclidean distance to its tier's archetype),
    ``naming_margin`` and ``runner_up_tier``.
    """
    fixed = dict(fixed or {})
    preferred = dict(preferred or {})
    archetypes = rules.archetype_matrix()
    segments = list(scores.index)
    free_segments = [s for s in segments if s not in fixed]
    allowed = [t for t in TIERS if t not in exclude]
    if not set(allowed) - {"vip"}:
        raise ValueError(f"exclude={exclude!r} leaves no tier a segment can always take")
    open_tiers = [t for t in allowed if t not in set(fixed.values())]
    S = scores.loc[free_segments, list(SCORES)].to_numpy(np.float64)
    # squared distance of each free segment to every allowed archetype
    distance = ((S[:, None, :] - archetypes.loc[allowed].to_numpy()[None, :, :]) ** 2).sum(axis=2)
    if "vip" in allowed:
        not_vip = np.array(
            [
                float(shares.get(s, 0.0)) > rules.vip_max_share
                or scores.loc[s, "value"] < rules.vip_min_value
                or scores.loc[s, "revenue"] < rules.vip_min_revenue
                for s in free_segments
            ],
            dtype=bool,
        )
        distance[not_vip, allowed.index("vip")] = np.inf
    for row, segment in enumerate(free_segments):
        if preferred.get(segment) in allowed:
            distance[row, allowed.index(preferred[segment])] -= rules.carry_bonus

    tiers, rules_used = dict(fixed), dict.fromkeys(fixed, "fixed")
    margins: dict[int, float] = dict.fromkeys(segments, np.nan)
    runner_up: dict[int, str | None] = dict.fromkeys(segments)
    if free_segments and allowed:
        # one column per open tier, plus a column per segment the open tiers cannot
        # take, costing a segment its nearest archetype: the segments beyond the
        # one-to-one assignment are chosen by the same optimum
        real = distance[:, [allowed.index(t) for t in open_tiers]]
        nearest = np.argmin(distance, axis=1)
        rows, cols, total = _assign(_with_extras(real, distance, nearest))

        def tier_of(row: int, column: int, nearest: np.ndarray = nearest) -> str:
            return open_tiers[column] if column < len(open_tiers) else allowed[nearest[row]]

        for r, c in zip(rows, cols, strict=True):
            segment, tier = free_segments[r], tier_of(r, c)
            tiers[segment] = tier
            rules_used[segment] = (
                "carried"
                if preferred.get(segment) == tier
                else ("archetype" if c < len(open_tiers) else "archetype_nearest")
            )
            # the best assignment in which this segment has another name
            other_real, other_distance = real.copy(), distance.copy()
            other_real[r, [j for j, t in enumerate(open_tiers) if t == tier]] = np.inf
            other_distance[r, allowed.index(tier)] = np.inf
            if not np.isfinite(other_distance[r]).any():
                continue  # no other name is possible for this segment
            other_nearest = np.argmin(other_distance, axis=1)
            alt_rows, alt_cols, alt_total = _assign(
                _with_extras(other_real, other_distance, other_nearest)
            )
            if len(alt_rows) == len(rows):
                margins[segment] = alt_total - total
                column = int(alt_cols[list(alt_rows).index(r)])
                runner_up[segment] = tier_of(r, column, other_nearest)

    out = scores.copy()
    out["tier"] = [tiers[s] for s in segments]
    out["rule"] = [rules_used[s] for s in segments]
    points = archetypes.loc[out["tier"]].to_numpy(np.float64)
    out["archetype_distance"] = np.sqrt(((out[list(SCORES)].to_numpy() - points) ** 2).sum(axis=1))
    out["naming_margin"] = [margins[s] for s in segments]
    out["runner_up_tier"] = [runner_up[s] for s in segments]
    return out


def _with_extras(real: np.ndarray, distance: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """``real`` (segments x open tiers) with a column per segment the open tiers
    cannot take, each costing a row its ``nearest`` archetype's ``distance``."""
    usable = int(np.isfinite(real).any(axis=0).sum())
    extra = max(real.shape[0] - usable, 0)
    nearest_cost = distance[np.arange(real.shape[0]), nearest]
    return np.hstack([real, np.repeat(nearest_cost[:, None], extra, axis=1)])


def _assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Minimum-cost one-to-one assignment over finite costs: (rows, cols, total).

    Pairs with an infinite cost are never chosen; a row that can only be paired
    at infinite cost is left out (returned rows are a subset).
    """
    finite = np.isfinite(cost)
    big = (np.abs(cost[finite]).sum() + 1.0) * 1e3 if finite.any() else 1.0
    rows, cols = linear_sum_assignment(np.where(finite, cost, big))
    keep = finite[rows, cols]
    rows, cols = rows[keep], cols[keep]
    return rows, cols, float(cost[rows, cols].sum())
