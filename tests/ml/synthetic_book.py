"""A small deterministic generator of ``marts.customer_indicators`` rows with planted types.

Independent of the project's raw-data generator: it draws indicators directly,
with the skew and overlap of a real book (log-normal money with wide spreads,
Poisson trade counts, a few whales), so the planted types overlap and are not
separable blobs.

Planted types and the tier a broker would give them:

==============  ====================================================  ==============
planted_type    behaviour                                             expected tier
==============  ====================================================  ==============
vip             high assets, high commission, active, often margin    vip
potential       opened 1-6 months ago, large inflow, little trading   potential
hyperactive     small assets, very many trades, high turnover         ordinary_a
ordinary        middling everything                                   ordinary_a/b
low_value       small assets, trades a few times a year               free
dormant         no trade in the 12-month window, recency 366          sleeping
==============  ====================================================  ==============
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TYPES = ("vip", "potential", "hyperactive", "ordinary", "low_value", "dormant")
DEFAULT_MIX = {
    "vip": 0.03,
    "potential": 0.05,
    "hyperactive": 0.07,
    "ordinary": 0.38,
    "low_value": 0.27,
    "dormant": 0.20,
}
WINDOW_MONTHS = 12
NO_TRADE_RECENCY = 366

# Per type: median assets, sigma; median trades per year, sigma; trade size as a
# share of assets; commission rate; share of customers using margin; tenure range.
_PROFILE = {
    "vip": (2.5e6, 0.7, 120, 0.6, 0.05, 1.2e-4, 0.45, (24, 240)),
    "potential": (8e5, 0.8, 4, 0.8, 0.05, 2.5e-4, 0.05, (1, 6)),
    "hyperactive": (6e4, 0.8, 1200, 0.5, 0.15, 1.8e-4, 0.25, (6, 180)),
    "ordinary": (1.5e5, 1.0, 30, 0.7, 0.06, 2.5e-4, 0.08, (6, 240)),
    "low_value": (1.5e4, 1.0, 4, 0.7, 0.06, 2.5e-4, 0.02, (6, 240)),
    "dormant": (2e4, 1.5, 0, 0.0, 0.06, 2.5e-4, 0.0, (18, 240)),
}
_BREADTH = {  # (low, high) inclusive for customers who traded
    "vip": (2, 4),
    "potential": (1, 2),
    "hyperactive": (1, 3),
    "ordinary": (1, 3),
    "low_value": (1, 2),
    "dormant": (0, 0),
}


def make_indicators(
    n: int,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    first_id: int = 0,
    tenure_range: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Indicator rows for ``n`` customers plus their ``planted_type``.

    Returns a DataFrame indexed by ``customer_id`` (str) with the 14 indicator
    columns of the contract and ``planted_type``. ``tenure_range`` overrides
    every type's tenure (used for brand-new customers).
    """
    rng = np.random.default_rng(seed)
    mix = mix or DEFAULT_MIX
    names = list(mix)
    probabilities = np.array([mix[t] for t in names], dtype=float)
    types = np.array(names, dtype=object)[
        rng.choice(len(names), size=n, p=probabilities / probabilities.sum())
    ]
    columns = {c: np.zeros(n) for c in _COLUMNS}
    for name in names:
        rows = np.flatnonzero(types == name)
        for column, values in _draw_type(name, rows.size, rng, tenure_range).items():
            columns[column][rows] = values
    frame = pd.DataFrame(columns, index=pd.Index(_ids(first_id, n), name="customer_id"))
    frame["planted_type"] = types
    return frame


_COLUMNS = (
    "avg_assets",
    "commission_contribution",
    "interest_contribution",
    "trading_volume",
    "net_inflow",
    "return_rate",
    "trade_count",
    "active_days",
    "turnover_rate",
    "recency_days",
    "tenure_months",
    "active_month_share",
    "product_breadth",
    "margin_usage",
)


def _ids(first: int, n: int) -> list[str]:
    return [f"C{i:08d}" for i in range(first, first + n)]


def _draw_type(
    name: str, n: int, rng: np.random.Generator, tenure_range: tuple[int, int] | None
) -> dict[str, np.ndarray]:
    assets_median, assets_sigma, trades_median, trades_sigma, size_share, rate, p_margin, tenure = (
        _PROFILE[name]
    )
    low, high = tenure_range or tenure
    tenure_months = rng.integers(low, high + 1, size=n).astype(float)
    months = np.minimum(tenure_months, WINDOW_MONTHS)
    assets = assets_median * rng.lognormal(0.0, assets_sigma, n)
    if name == "dormant":
        assets[rng.random(n) < 0.1] = 0.0  # emptied accounts
    yearly = trades_median * rng.lognormal(0.0, trades_sigma, n) if trades_median else np.zeros(n)
    trade_count = rng.poisson(yearly * months / WINDOW_MONTHS).astype(float)
    traded = trade_count > 0

    days_available = 21.0 * months
    active_days = rng.binomial(
        days_available.astype(int), 1 - np.exp(-trade_count / days_available)
    )
    active_days = np.clip(active_days, traded.astype(int), trade_count).astype(float)
    trading_months = rng.binomial(months.astype(int), 1 - np.exp(-trade_count / months))
    active_month_share = np.clip(trading_months, traded.astype(int), None) / WINDOW_MONTHS
    span_days = months * 30.4
    recency_days = np.where(
        traded,
        np.floor(span_days * rng.beta(1.0, np.maximum(trade_count, 1.0))),
        NO_TRADE_RECENCY,
    )

    trading_volume = trade_count * assets * size_share * rng.lognormal(0.0, 0.4, n)
    trading_volume[traded & (assets == 0)] = 0.0
    turnover_rate = np.divide(trading_volume, assets, out=np.zeros(n), where=assets > 0)
    commission = trading_volume * rate * rng.lognormal(0.0, 0.2, n)
    rebate = rng.random(n) < 0.03
    commission[rebate] -= rng.uniform(0, 50, rebate.sum())

    margin_usage = np.where(rng.random(n) < p_margin, rng.uniform(0.05, 0.45, n), 0.0)
    gross = assets / (1 - margin_usage)
    # margin interest charged, as the mart's interest_contribution (nothing imputed on cash)
    interest = margin_usage * gross * 0.06

    if name == "potential":
        net_inflow = assets * rng.uniform(0.5, 1.0, n)
    elif name == "dormant":
        net_inflow = np.where(rng.random(n) < 0.1, -assets * rng.uniform(0, 0.3, n), 0.0)
    else:
        spread = {"vip": 0.15, "ordinary": 0.2, "hyperactive": 0.3, "low_value": 0.3}[name]
        net_inflow = assets * rng.normal(0.02, spread, n)

    return_rate = rng.normal(-0.05, 0.35, n) if name == "hyperactive" else rng.normal(0.04, 0.15, n)
    return_rate[(rng.random(n) < 0.01) | (assets == 0)] = np.nan

    b_low, b_high = _BREADTH[name]
    product_breadth = np.where(traded, rng.integers(max(b_low, 1), max(b_high, 1) + 1, n), 0)
    product_breadth = np.minimum(product_breadth, trade_count)
    return {
        "avg_assets": assets,
        "commission_contribution": commission,
        "interest_contribution": interest,
        "trading_volume": trading_volume,
        "net_inflow": net_inflow,
        "return_rate": return_rate,
        "trade_count": trade_count,
        "active_days": active_days,
        "turnover_rate": turnover_rate,
        "recency_days": recency_days,
        "tenure_months": tenure_months,
        "active_month_share": active_month_share,
        "product_breadth": product_breadth.astype(float),
        "margin_usage": margin_usage,
    }


def next_month(
    frame: pd.DataFrame, seed: int = 1, churn_share: float = 0.01, new_share: float = 0.03
) -> pd.DataFrame:
    """The same book one month later: the trailing window moved by a month.

    Money and counts drift by a few percent, recency moves on by a month for
    customers who did not trade in the new month, tenure grows by one, about
    ``churn_share`` of customers leave and ``new_share`` new ones (tenure 1-2
    months, types in the default mix without dormant) join.
    """
    rng = np.random.default_rng(seed)
    out = frame.loc[rng.random(len(frame)) >= churn_share].copy()
    n = len(out)
    for column in (
        "avg_assets",
        "commission_contribution",
        "interest_contribution",
        "trading_volume",
        "net_inflow",
    ):
        out[column] *= rng.lognormal(0.0, 0.05, n)
    traded = out["trade_count"].to_numpy() > 0
    out["trade_count"] = np.where(
        traded, np.maximum(1, np.round(out["trade_count"] * rng.lognormal(0, 0.05, n))), 0.0
    )
    out["active_days"] = np.minimum(out["active_days"], out["trade_count"])
    traded_this_month = traded & (rng.random(n) < out["active_month_share"].to_numpy())
    out["recency_days"] = np.where(
        traded_this_month,
        rng.integers(0, 31, n),
        np.where(traded, np.minimum(out["recency_days"] + 30, 365), NO_TRADE_RECENCY),
    ).astype(float)
    out["turnover_rate"] = np.divide(
        out["trading_volume"].to_numpy(),
        out["avg_assets"].to_numpy(),
        out=np.zeros(n),
        where=out["avg_assets"].to_numpy() > 0,
    )
    out["tenure_months"] += 1
    mix = {t: s for t, s in DEFAULT_MIX.items() if t != "dormant"}
    first_id = int(frame.index.str[1:].astype(int).max()) + 1
    new = make_indicators(
        int(new_share * len(frame)),
        seed=seed + 10_000,
        mix=mix,
        first_id=first_id,
        tenure_range=(1, 2),
    )
    return pd.concat([out, new])
