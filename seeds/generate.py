"""Synthetic broker data: a landing folder in the input contract of ``shared/SPEC.md``.

Customers are drawn from six latent behaviour types (see ``CUSTOMER_TYPES``); the
type drives assets, deposits, trading frequency, trade size, products, margin use
and commission rate. Each chunk of customers is simulated month by month with
numpy (loops over months, never over rows), staged in a scratch DuckDB file and
exported with ``COPY``, so 1,000,000 customers x 24 months fit in bounded memory.

Written into the output folder:

- ``accounts``, ``trades``, ``fees``, ``balances`` (month-end), ``cash_flows``:
  one file each, or a folder of ``--parts`` part files, CSV or Parquet; with
  ``--monthly-files`` the four dated tables are folders of one file per calendar
  month, ``<table>/YYYY-MM.<ext>``, as a broker's monthly extracts land;
- ``managers.csv``: the investment managers, one per ``CUSTOMERS_PER_MANAGER``
  customers of a branch, with a level of ``config/service_plans.yml`` and a
  monthly capacity drawn around the book each one holds (some over, some under);
- ``_truth.csv``: each customer's latent type, the tier a broker would expect and,
  with ``--drift-share``, the month from which the customer drifts to sleep;
- with ``--dirty``: planted bad rows (every rule of the contract broken at least
  once, see ``dirty.py``) and ``_dirty_manifest.csv`` listing each of them.

Files starting with ``_`` are not contract tables; the ingestion ignores them.
The same arguments always give byte-identical files.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

TABLES = ("accounts", "trades", "fees", "balances", "cash_flows", "managers")
CHUNK_CUSTOMERS = 50_000  # fixed: the random streams are seeded per chunk
# The date that puts a row of a fact table into a month's file (--monthly-files).
MONTH_COLUMNS = {
    "trades": "trade_date",
    "fees": "fee_date",
    "balances": "as_of_date",
    "cash_flows": "flow_date",
}
ASSET_CLASSES = ("stock", "fund", "bond", "option", "other")


@dataclass(frozen=True)
class CustomerType:
    """Behaviour of one latent customer type. Money in the reporting currency."""

    name: str
    expected_tier: str
    share: float
    assets_median: float  # target net assets
    assets_sigma: float  # log-normal spread of target assets
    tenure_years: tuple[float, float]  # first account opened this long before the end
    margin_share: float  # probability of holding a margin account
    trades_per_month: float
    trade_size: float  # typical trade amount as a fraction of assets
    commission_rate: float
    deposit_prob: float  # monthly probability of a deposit (and, halved, a withdrawal)
    class_weights: tuple[float, float, float, float, float]  # stock, fund, bond, option, other


# fmt: off
CUSTOMER_TYPES = (
    CustomerType("vip", "vip", 0.04, 4.0e6, 0.5, (3, 15), 0.60, 8, 0.04, 0.00012, 0.35,
                 (0.60, 0.20, 0.10, 0.08, 0.02)),
    CustomerType("potential", "potential", 0.08, 8.0e5, 0.5, (0.1, 0.9), 0.10, 0.5, 0.05,
                 0.00020, 0.50, (0.50, 0.40, 0.10, 0.00, 0.00)),
    CustomerType("active_trader", "ordinary_a", 0.10, 6.0e4, 0.5, (1, 10), 0.35, 12, 0.30,
                 0.00015, 0.25, (0.85, 0.05, 0.00, 0.10, 0.00)),
    CustomerType("ordinary", "ordinary_b", 0.33, 2.5e5, 0.5, (1, 15), 0.05, 1.2, 0.10,
                 0.00025, 0.20, (0.80, 0.15, 0.05, 0.00, 0.00)),
    CustomerType("low_activity", "free", 0.30, 2.0e4, 0.6, (1, 15), 0.02, 0.4, 0.20,
                 0.00030, 0.08, (0.70, 0.30, 0.00, 0.00, 0.00)),
    CustomerType("dormant", "sleeping", 0.15, 3.0e4, 1.1, (4, 15), 0.05, 0.0, 0.10,
                 0.00030, 0.02, (0.90, 0.10, 0.00, 0.00, 0.00)),
)
# fmt: on

MIN_COMMISSION = 5.0
STAMP_DUTY_RATE = 0.0005  # on stock sells
TRANSFER_FEE_RATE = 0.00001  # on Shanghai stock trades
OPTION_EXCHANGE_FEE = 1.3  # per contract
MARGIN_INTEREST_RATE = 0.068  # per year, charged monthly on margin debt
VIP_REBATE_SHARE = 0.10  # monthly commission rebate for VIP customers
N_BRANCHES = 40
MANAGERS_PER_BRANCH = 12
# The level of a branch's n-th manager (levels as named in config/service_plans.yml):
# one senior adviser, four advisers, four on the service desk, three online.
MANAGER_LEVELS = (
    ("senior investment adviser",) * 1
    + ("investment adviser",) * 4
    + ("service desk",) * 4
    + ("online only",) * 3
)
CUSTOMERS_PER_MANAGER = 120
# Customers who drift to sleep (--drift-share): their trades fade out over these
# months; a book needs this many months for them to go dormant within it.
DRIFT_FADE_MONTHS = 4
DRIFT_MIN_MONTHS = 18
# Capacity, hours a month per customer held: drawn so that some books are over
# capacity and some under (a customer needs about 0.4 h a month under the plans).
CAPACITY_HOURS_PER_CUSTOMER = (0.3, 0.9)


def month_ends(end: dt.date, months: int) -> np.ndarray:
    """The ``months`` month-end dates ending with the month of ``end``, as datetime64[D]."""
    ends = []
    year, month = end.year, end.month
    for _ in range(months):
        ends.append(dt.date(year, month, calendar.monthrange(year, month)[1]))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return np.array(ends[::-1], dtype="datetime64[D]")


@dataclass
class Chunk:
    """One chunk of simulated customers, as DataFrames with numeric ids."""

    accounts: pd.DataFrame
    trades: pd.DataFrame
    fees: pd.DataFrame
    balances: pd.DataFrame
    cash_flows: pd.DataFrame
    truth: pd.DataFrame


def type_shares(mix: dict[str, float] | None = None) -> np.ndarray:
    """The probability of each of ``CUSTOMER_TYPES``: their ``share``, or ``mix`` by type name.

    ``mix`` gives a weight per type name (a type left out gets 0); weights are
    normalised to sum to 1. This is how books of other mixes are planted.
    """
    if mix is None:
        return np.array([t.share for t in CUSTOMER_TYPES])
    names = [t.name for t in CUSTOMER_TYPES]
    unknown = sorted(set(mix) - set(names))
    if unknown:
        raise ValueError(f"unknown customer types {unknown} in the mix (known: {names})")
    weights = np.array([float(mix.get(name, 0.0)) for name in names])
    if (weights < 0).any() or not weights.sum() > 0:
        raise ValueError("mix weights must be >= 0 and not all 0")
    return weights / weights.sum()


def parse_mix(text: str) -> dict[str, float]:
    """``vip=0.03,potential=0.1,...`` -> {name: weight} (for ``--mix``)."""
    mix = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, weight = item.partition("=")
        try:
            if not sep:
                raise ValueError
            mix[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"--mix item {item!r} is not name=weight") from None
    return mix


def simulate_chunk(
    seed: int,
    chunk: int,
    first: int,
    n: int,
    ends: np.ndarray,
    end: np.datetime64,
    mix: dict[str, float] | None = None,
    drift_share: float = 0.0,
) -> Chunk:
    """Simulate customers ``first .. first + n - 1``; deterministic in (seed, chunk, mix,
    drift_share).

    ``drift_share`` of the customers who trade (not vip, not dormant) drift to sleep:
    from a month drawn for each, their trades thin out over ``DRIFT_FADE_MONTHS`` and
    stop, and their assets are withdrawn a fifth a month down to a quarter. The draws
    come from a stream of their own, so the other customers' rows are the same as
    without drift.
    """
    rng = np.random.default_rng([seed, chunk])
    n_months = len(ends)
    starts = ends.astype("datetime64[M]").astype("datetime64[D]")
    days_in_month = (ends - starts).astype(int) + 1
    market = rng.normal(0.004, 0.045, n_months)  # common monthly market return

    kind = rng.choice(len(CUSTOMER_TYPES), size=n, p=type_shares(mix))
    param = {
        f: np.array([getattr(t, f) for t in CUSTOMER_TYPES])[kind]
        for f in (
            "assets_median",
            "assets_sigma",
            "margin_share",
            "trades_per_month",
            "trade_size",
            "commission_rate",
            "deposit_prob",
        )
    }
    is_type = {t.name: kind == i for i, t in enumerate(CUSTOMER_TYPES)}
    target = np.exp(np.log(param["assets_median"]) + param["assets_sigma"] * rng.standard_normal(n))
    whale = is_type["vip"] & (rng.random(n) < 0.02)
    target = np.where(whale, target * 25, target)

    # --- accounts: a cash account for everyone, a margin account for some
    lo = np.array([t.tenure_years[0] for t in CUSTOMER_TYPES])[kind]
    hi = np.array([t.tenure_years[1] for t in CUSTOMER_TYPES])[kind]
    tenure_days = (rng.uniform(lo, hi) * 365.25).astype(int)
    cash_open = end - tenure_days
    margin_open = cash_open + rng.integers(0, 3 * 365, n)
    has_margin = (rng.random(n) < param["margin_share"]) & (margin_open <= end - 30)
    margin_close_day = margin_open + rng.integers(60, 4 * 365, n)
    margin_closed = has_margin & (rng.random(n) < 0.08) & (margin_close_day < end)
    all_closed = is_type["dormant"] & (rng.random(n) < 0.05)
    close_all_month = rng.integers(max(n_months - 12, 1), n_months, n)
    cash_close = np.where(all_closed, starts[close_all_month] + 3, np.datetime64("NaT"))
    margin_close = np.where(margin_closed, margin_close_day, np.datetime64("NaT"))
    margin_close = np.where(
        has_margin & all_closed,
        np.minimum(np.where(margin_closed, margin_close_day, end), cash_close),
        margin_close,
    )
    margin_closed = has_margin & ~np.isnat(margin_close)
    # a margin account cannot open after its customer has left
    has_margin &= ~(all_closed & (margin_open >= cash_close))

    # month index from which each account holds a month-end balance
    cash_first = np.searchsorted(ends, cash_open)  # first month-end on/after opening
    cash_last = np.where(all_closed, close_all_month - 1, n_months - 1)
    margin_first = np.searchsorted(ends, margin_open)
    margin_last = np.where(margin_closed, np.searchsorted(ends, margin_close) - 1, n_months - 1)
    margin_last = np.where(has_margin, margin_last, -1)

    # --- monthly net assets, deposits and withdrawals (loop over months, vectorised)
    net = np.zeros((n, n_months))
    deposits = np.zeros((n, n_months))
    withdrawals = np.zeros((n, n_months))
    prev = np.where(cash_first == 0, target * rng.uniform(0.6, 1.0, n), 0.0)
    idio = np.where(is_type["active_trader"], 0.09, 0.05)
    for m in range(n_months):
        open_now = (cash_first <= m) & (m <= cash_last)
        funding = np.where((cash_first == m) & (m > 0), target * rng.uniform(0.5, 0.9, n), 0.0)
        new_money_prob = np.where(
            is_type["potential"] & (m - cash_first < 6), 0.6, param["deposit_prob"]
        )
        deposit = (
            open_now * (rng.random(n) < new_money_prob) * target * np.exp(rng.normal(-2.0, 0.7, n))
        )
        growth = prev * np.clip(market[m] + idio * rng.standard_normal(n), -0.5, 0.8)
        withdraw = (
            open_now
            * (rng.random(n) < param["deposit_prob"] / 2)
            * np.minimum(target * np.exp(rng.normal(-2.3, 0.7, n)), 0.5 * (prev + growth))
        )
        closing = all_closed & (m == close_all_month)
        withdraw = np.where(closing, prev + growth + funding + deposit, withdraw)
        net[:, m] = np.where(
            open_now | closing, np.maximum(prev + growth + funding + deposit - withdraw, 0.0), 0.0
        )
        net[closing, m] = 0.0
        deposits[:, m] = funding + deposit
        withdrawals[:, m] = withdraw
        prev = net[:, m]

    # --- customers who drift to sleep (their own random stream)
    drift_rng = np.random.default_rng([seed, chunk, 2])
    can_drift = ~(is_type["vip"] | is_type["dormant"]) & (n_months >= DRIFT_MIN_MONTHS)
    drifts = can_drift & (drift_rng.random(n) < drift_share)
    # late enough to have a history, early enough to go dormant within the data
    drift_start = drift_rng.integers(2, max(n_months - DRIFT_FADE_MONTHS - 12, 3), n)
    since = np.arange(n_months)[None, :] - drift_start[:, None]  # months into the drift
    keep_trades = np.where(
        drifts[:, None] & (since >= 0),
        np.where(since < DRIFT_FADE_MONTHS, 0.6 ** (since + 1), 0.0),
        1.0,
    )
    kept_assets = np.where(drifts[:, None] & (since >= 0), np.maximum(0.8 ** (since + 1), 0.25), 1)
    removed = net * (1 - kept_assets)
    drift_withdrawals = np.maximum(np.diff(removed, axis=1, prepend=0.0), 0.0)
    net = net - removed

    # --- month-end balances per account
    margin_on = (
        has_margin[:, None]
        & (np.arange(n_months) >= margin_first[:, None])
        & (np.arange(n_months) <= margin_last[:, None])
    )
    margin_part = rng.uniform(0.3, 0.8, n)[:, None] * margin_on
    debt_ratio = np.where(
        is_type["active_trader"], rng.uniform(0.2, 0.7, n), rng.uniform(0.05, 0.5, n)
    )[:, None]
    cash_share = np.where(
        is_type["dormant"] | is_type["potential"], rng.beta(5, 3, n), rng.beta(2, 6, n)
    )[:, None]
    cash_net = net * (1 - margin_part)
    margin_net = net * margin_part
    cash_on = (np.arange(n_months) >= cash_first[:, None]) & (
        np.arange(n_months) <= cash_last[:, None]
    )
    margin_debt = margin_net * debt_ratio
    balances = _stack_balances(
        first,
        ends,
        [
            (0, cash_on, cash_net * cash_share, cash_net * (1 - cash_share), None),
            (1, margin_on, margin_net * 0.05, margin_net * 0.95 + margin_debt, margin_debt),
        ],
    )

    # --- trades: Poisson counts per customer-month, then one row per trade
    # customers of a type differ in how much they trade, but a type's floor holds: a
    # low-activity customer still trades a few times a year, unlike a dormant one
    activity = np.exp(np.clip(rng.normal(0, 0.35, n), -0.5, None))
    rate = param["trades_per_month"] * activity
    dormant_stop = np.where(rng.random(n) < 0.5, 0, rng.integers(1, max(n_months - 13, 2), n))
    months_idx = np.arange(n_months)[None, :]
    can_trade = cash_on & np.where(
        is_type["dormant"][:, None], months_idx < dormant_stop[:, None], True
    )
    rate_m = np.where(is_type["dormant"][:, None], 0.8, rate[:, None]) * can_trade
    counts = rng.poisson(rate_m)
    t_cust = np.repeat(np.repeat(np.arange(n), n_months), counts.ravel())
    t_month = np.repeat(np.tile(np.arange(n_months), n), counts.ravel())
    n_trades = len(t_cust)
    day = starts[t_month] + (rng.random(n_trades) * days_in_month[t_month]).astype(int)
    weekday = (day.astype(int) + 3) % 7  # 0 = Monday
    day = day - np.where(weekday == 5, 1, 0) + np.where(weekday == 6, 1, 0)
    day = np.clip(
        day, np.maximum(starts[t_month], cash_open[t_cust]), np.minimum(ends[t_month], end)
    )
    use_margin = (
        margin_on[t_cust, t_month] & (rng.random(n_trades) < 0.5) & (day >= margin_open[t_cust])
    )
    weights = np.array([t.class_weights for t in CUSTOMER_TYPES])[kind]
    weights = weights * (rng.random((n, 5)) < 0.7)
    weights[:, 0] += 1e-3  # everybody can trade stocks
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    asset_class = (rng.random(n_trades)[:, None] > cum[t_cust]).sum(axis=1).clip(0, 4)
    symbol_no = (rng.pareto(1.1, n_trades) * 40).astype(np.int64) % 4000
    base_price = np.where(
        asset_class == 3, 0.05 + (symbol_no % 97) / 100, 5 + (symbol_no * 7919 % 1000) / 20
    )
    price = np.round(base_price * np.exp(rng.normal(0, 0.08, n_trades)), 3)
    price = np.maximum(price, 0.001)
    month_assets = np.maximum(net[t_cust, t_month], target[t_cust] * 0.05)
    wanted = month_assets * param["trade_size"][t_cust] * np.exp(rng.normal(0, 0.6, n_trades))
    wanted = np.maximum(wanted, 2000.0)
    lot = np.select([asset_class == 3, asset_class == 2], [1, 10], 100)
    multiplier = np.where(asset_class == 3, 10_000, 1)
    quantity = np.maximum(np.round(wanted / (price * multiplier) / lot), 1) * lot
    amount = np.round(quantity * price * multiplier, 2)
    side = rng.random(n_trades) < 0.5  # True = sell
    # a drifting customer's trades thin out (drawn after every other trade draw)
    kept = drift_rng.random(n_trades) < keep_trades[t_cust, t_month]
    trades = pd.DataFrame(
        {
            "trade_no": np.arange(n_trades, dtype=np.int64),
            "customer": first + t_cust,
            "account_kind": use_margin.astype(np.int8),
            "trade_date": day,
            "symbol_no": symbol_no,
            "asset_class": asset_class.astype(np.int8),
            "sell": side,
            "quantity": quantity,
            "price": price,
            "amount": amount,
        }
    )

    # --- fees: per trade, monthly margin interest, VIP rebates
    commission = np.maximum(
        np.round(amount * param["commission_rate"][t_cust] * rng.uniform(0.8, 1.2, n_trades), 2),
        MIN_COMMISSION,
    )
    stock = asset_class == 0
    shanghai = symbol_no % 2 == 0
    per_trade = [
        ("commission", np.ones(n_trades, bool), commission),
        ("stamp_duty", stock & side, np.round(amount * STAMP_DUTY_RATE, 2)),
        (
            "transfer_fee",
            stock & shanghai,
            np.maximum(np.round(amount * TRANSFER_FEE_RATE, 2), 0.01),
        ),
        ("exchange_fee", asset_class == 3, np.round(quantity * OPTION_EXCHANGE_FEE, 2)),
    ]
    fee_parts = [
        pd.DataFrame(
            {
                "customer": first + t_cust[mask],
                "account_kind": use_margin[mask],
                "fee_date": day[mask],
                "fee_type": name,
                "amount": value[mask],
                "trade_no": trades["trade_no"].to_numpy()[mask],
            }
        )
        for name, mask, value in ((name, mask & kept, value) for name, mask, value in per_trade)
    ]
    ci, mi = np.nonzero(margin_debt > 1.0)
    fee_parts.append(
        pd.DataFrame(
            {
                "customer": first + ci,
                "account_kind": 1,
                "fee_date": ends[mi],
                "fee_type": "margin_interest",
                "amount": np.round(margin_debt[ci, mi] * MARGIN_INTEREST_RATE / 12, 2),
                "trade_no": -1,
            }
        )
    )
    monthly_commission = np.zeros((n, n_months))
    np.add.at(monthly_commission, (t_cust, t_month), commission)
    rebate = is_type["vip"][:, None] & (monthly_commission > 0) & cash_on
    ri, rm = np.nonzero(rebate)
    fee_parts.append(
        pd.DataFrame(
            {
                "customer": first + ri,
                "account_kind": 0,
                "fee_date": np.minimum(ends[rm], end),
                "fee_type": "commission",
                "amount": -np.round(monthly_commission[ri, rm] * VIP_REBATE_SHARE, 2),
                "trade_no": -1,
            }
        )
    )
    fees = pd.concat(fee_parts, ignore_index=True)
    fees["account_kind"] = fees["account_kind"].astype(np.int8)
    # drop the thinned-out trades, numbering the rest without gaps
    renumbered = np.cumsum(kept) - 1
    trades = trades[kept].reset_index(drop=True)
    trades["trade_no"] = np.arange(len(trades), dtype=np.int64)
    of_trade = fees["trade_no"].to_numpy() >= 0
    fees.loc[of_trade, "trade_no"] = renumbered[fees["trade_no"].to_numpy()[of_trade]]

    # --- cash flows: the month's deposit and withdrawal, each on a day in the month
    flow_parts = []
    for direction, values in (("in", deposits), ("out", withdrawals)):
        fi, fm = np.nonzero(np.round(values, 2) > 0)
        fday = starts[fm] + (rng.random(len(fi)) * days_in_month[fm]).astype(int)
        fday = np.clip(fday, np.maximum(starts[fm], cash_open[fi]), np.minimum(ends[fm], end))
        if direction == "out":  # an account closes after its last withdrawal
            fday = np.where(
                all_closed[fi] & (fm == close_all_month[fi]),
                np.minimum(fday, cash_close[fi] - 1),
                fday,
            )
        flow_parts.append(
            pd.DataFrame(
                {
                    "customer": first + fi,
                    "account_kind": np.int8(0),
                    "flow_date": fday,
                    "direction": direction,
                    "amount": np.round(values[fi, fm], 2),
                }
            )
        )
    # the drifting customers' withdrawals, a flow of their own each month
    di, dm = np.nonzero(np.round(drift_withdrawals, 2) > 0)
    flow_parts.append(
        pd.DataFrame(
            {
                "customer": first + di,
                "account_kind": np.int8(0),
                "flow_date": starts[dm]
                + (drift_rng.random(len(di)) * days_in_month[dm]).astype(int),
                "direction": "out",
                "amount": np.round(drift_withdrawals[di, dm], 2),
            }
        )
    )
    cash_flows = pd.concat(flow_parts, ignore_index=True).sort_values(
        ["customer", "flow_date", "direction"], kind="stable", ignore_index=True
    )

    # --- account attributes
    customers = first + np.arange(n)
    institution = whale | (rng.random(n) < 0.01)
    branch = np.minimum((rng.pareto(1.5, n) * 6).astype(int), N_BRANCHES - 1)
    manager = np.where(
        rng.random(n) < 0.8,
        branch * MANAGERS_PER_BRANCH + rng.integers(0, MANAGERS_PER_BRANCH, n),
        -1,
    )
    attrs = pd.DataFrame(
        {
            "customer": customers,
            "branch": branch,
            "customer_type": np.where(institution, "institution", "individual"),
            # ages 18 and up; the contract's floor (1900) is kept even in the gamma's far tail
            "birth_year": np.where(
                institution, -1, np.maximum(2026 - 18 - rng.gamma(6, 5, n).astype(int), 1920)
            ),
            "gender": np.where(
                institution, "U", rng.choice(["M", "F", "U"], n, p=[0.52, 0.46, 0.02])
            ),
            "risk_level": np.where(
                rng.random(n) < 0.9,
                np.array(["C1", "C2", "C3", "C4", "C5"])[
                    rng.choice(5, n, p=[0.1, 0.25, 0.35, 0.2, 0.1])
                ],
                "",
            ),
            "manager": manager,
        }
    )
    cash_acc = attrs.assign(account_kind=np.int8(0), open_date=cash_open, close_date=cash_close)
    margin_acc = attrs[has_margin].assign(
        account_kind=np.int8(1),
        open_date=margin_open[has_margin],
        close_date=margin_close[has_margin],
    )
    accounts = pd.concat([cash_acc, margin_acc], ignore_index=True).sort_values(
        ["customer", "account_kind"], kind="stable", ignore_index=True
    )

    names = np.array([t.name for t in CUSTOMER_TYPES])
    tiers = np.array([t.expected_tier for t in CUSTOMER_TYPES])
    truth = pd.DataFrame(
        {
            "customer": customers,
            "latent_type": names[kind],
            "expected_tier": tiers[kind],
            "is_whale": whale,
            # the month (0 = the first) from which the customer drifts to sleep; -1: never
            "drift_start_month": np.where(drifts, drift_start, -1),
        }
    )
    return Chunk(accounts, trades, fees, balances, cash_flows, truth)


def _stack_balances(first: int, ends: np.ndarray, accounts: list) -> pd.DataFrame:
    frames = []
    for kind, on, cash, market_value, debt in accounts:
        ci, mi = np.nonzero(on)
        frames.append(
            pd.DataFrame(
                {
                    "customer": first + ci,
                    "account_kind": np.int8(kind),
                    "as_of_date": ends[mi],
                    "cash": np.round(cash[ci, mi], 2),
                    "market_value": np.round(market_value[ci, mi], 2),
                    "margin_debt": np.round(debt[ci, mi], 2) if debt is not None else np.nan,
                }
            )
        )
    return pd.concat(frames, ignore_index=True).sort_values(
        ["customer", "account_kind", "as_of_date"], kind="stable", ignore_index=True
    )


# Export: numeric scratch tables -> contract columns. Ids are formatted here, once.
CUSTOMER_ID = "'C' || lpad(customer::varchar, 8, '0')"
ACCOUNT_ID = "'A' || lpad((customer * 2 + account_kind)::varchar, 9, '0')"
MANAGER_ID = "'M' || lpad((manager + 1)::varchar, 4, '0')"
EXPORT_SQL = {
    "accounts": f"""
        select {ACCOUNT_ID} as account_id, {CUSTOMER_ID} as customer_id,
               open_date::date as open_date, close_date::date as close_date,
               case account_kind when 0 then 'cash' else 'margin' end as account_type,
               'B' || lpad((branch + 1)::varchar, 3, '0') as branch_id,
               customer_type, nullif(birth_year, -1) as birth_year, gender,
               nullif(risk_level, '') as risk_level,
               case when manager >= 0 then {MANAGER_ID} end as manager_id
        from accounts where part = $part""",
    "trades": f"""
        select 'T' || lpad(trade_id::varchar, 10, '0') as trade_id, {ACCOUNT_ID} as account_id,
               trade_date::date as trade_date,
               case asset_class
                   when 0 then case when symbol_no % 2 = 0 then '60' else '00' end
                       || lpad((symbol_no // 2)::varchar, 4, '0')
                   when 1 then '51' || lpad((symbol_no % 10000)::varchar, 4, '0')
                   when 2 then '11' || lpad((symbol_no % 10000)::varchar, 4, '0')
                   when 3 then '1000' || lpad((symbol_no % 10000)::varchar, 4, '0')
                   else 'OTC' || lpad((symbol_no % 10000)::varchar, 4, '0') end as symbol,
               ['stock', 'fund', 'bond', 'option', 'other'][asset_class + 1] as asset_class,
               case when sell then 'S' else 'B' end as side,
               quantity::decimal(18, 2) as quantity, price::decimal(18, 3) as price,
               amount::decimal(18, 2) as amount
        from trades where part = $part""",
    "fees": f"""
        select 'F' || lpad(fee_id::varchar, 10, '0') as fee_id, {ACCOUNT_ID} as account_id,
               fee_date::date as fee_date, fee_type, amount::decimal(18, 2) as amount,
               case when trade_id >= 0 then 'T' || lpad(trade_id::varchar, 10, '0') end
                   as trade_id
        from fees where part = $part""",
    "balances": f"""
        select {ACCOUNT_ID} as account_id, as_of_date::date as as_of_date,
               cash::decimal(18, 2) as cash, market_value::decimal(18, 2) as market_value,
               margin_debt::decimal(18, 2) as margin_debt
        from balances where part = $part""",
    "cash_flows": f"""
        select 'CF' || lpad(flow_id::varchar, 10, '0') as flow_id, {ACCOUNT_ID} as account_id,
               flow_date::date as flow_date, direction, amount::decimal(18, 2) as amount
        from cash_flows where part = $part""",
    "managers": f"""
        select {MANAGER_ID} as manager_id, 'B' || lpad((branch + 1)::varchar, 3, '0') as branch_id,
               level, capacity::decimal(8, 1) as capacity_hours_per_month
        from managers where part = $part""",
}


def generate(
    out: Path,
    customers: int,
    months: int,
    end_date: dt.date,
    seed: int,
    fmt: str = "csv",
    parts: int = 1,
    dirty: bool = False,
    monthly_files: bool = False,
    mix: dict[str, float] | None = None,
    drift_share: float = 0.0,
) -> dict[str, int]:
    """Write a landing folder to ``out``; return the row count written per table.

    ``monthly_files`` splits the dated tables into one file per calendar month;
    ``mix`` replaces the types' default shares (see :func:`type_shares`);
    ``drift_share`` of the trading customers drift to sleep (:func:`simulate_chunk`).
    """
    type_shares(mix)  # a bad mix fails before anything is written
    if not 0 <= drift_share <= 1:
        raise ValueError(f"--drift-share must be between 0 and 1, not {drift_share}")
    if customers < 1 or months < 2 or parts < 1:
        raise ValueError("need customers >= 1, months >= 2 and parts >= 1")
    if monthly_files and parts > 1:
        raise ValueError("--monthly-files writes one file per month: leave --parts at 1")
    end = np.datetime64(
        dt.date(
            end_date.year, end_date.month, calendar.monthrange(end_date.year, end_date.month)[1]
        )
    )
    ends = month_ends(end.astype(dt.date), months)
    out.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        for stale in (out / f"{table}.csv", out / f"{table}.parquet"):
            stale.unlink(missing_ok=True)
        shutil.rmtree(out / table, ignore_errors=True)
    (out / "_dirty_manifest.csv").unlink(missing_ok=True)

    scratch_dir = Path(tempfile.mkdtemp(prefix=".generate-", dir=out))
    try:
        con = duckdb.connect(str(scratch_dir / "scratch.duckdb"))
        con.execute(f"set temp_directory = '{scratch_dir / 'tmp'}'")
        con.execute("set preserve_insertion_order = true")
        counters = dict.fromkeys(("trade", "fee", "flow"), 0)
        n_chunks = -(-customers // CHUNK_CUSTOMERS)
        for chunk in range(n_chunks):
            first = chunk * CHUNK_CUSTOMERS
            size = min(CHUNK_CUSTOMERS, customers - first)
            data = simulate_chunk(seed, chunk, first, size, ends, end, mix, drift_share)
            _stage(con, data, counters, customers, parts, first == 0)
            del data
        _stage_managers(con, seed, parts)
        written = {}
        for table in TABLES:
            if monthly_files and table in MONTH_COLUMNS:
                written[table] = _export_by_month(con, table, out, fmt)
            else:
                written[table] = _export(con, table, out, fmt, parts)
        con.execute(
            f"copy (select {CUSTOMER_ID} as customer_id, latent_type, expected_tier, "
            f"is_whale, drift_start_month from truth) to '{out / '_truth.csv'}' (header)"
        )
        con.close()
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    if dirty:
        from seeds.dirty import plant

        planted = plant(out, fmt, end.astype(dt.date))
        for table, rows in planted.items():
            written[table] += rows
    return written


def _stage(
    con: duckdb.DuckDBPyConnection,
    data: Chunk,
    counters: dict,
    customers: int,
    parts: int,
    create: bool,
) -> None:
    """Append a chunk to the scratch tables, numbering trades, fees and flows globally.

    Each row gets the part file it goes to: parts split the customers into equal ranges.
    """
    trades = data.trades.assign(trade_id=data.trades["trade_no"] + counters["trade"])
    fees = data.fees.assign(
        trade_id=np.where(data.fees["trade_no"] >= 0, data.fees["trade_no"] + counters["trade"], -1)
    )
    fees = fees.sort_values(["customer", "fee_date", "trade_id"], kind="stable", ignore_index=True)
    fees["fee_id"] = np.arange(len(fees)) + counters["fee"]
    flows = data.cash_flows.assign(flow_id=np.arange(len(data.cash_flows)) + counters["flow"])
    counters["trade"] += len(trades)
    counters["fee"] += len(fees)
    counters["flow"] += len(flows)
    frames = {
        "accounts": data.accounts,
        "trades": trades.drop(columns="trade_no"),
        "fees": fees.drop(columns="trade_no"),
        "balances": data.balances,
        "cash_flows": flows,
        "truth": data.truth,
    }
    for name, frame in frames.items():
        frame["part"] = frame["customer"].to_numpy() * parts // customers
        con.register("frame", frame)
        verb = f"create table {name} as" if create else f"insert into {name}"
        con.execute(f"{verb} select * from frame")
        con.unregister("frame")


def _stage_managers(con: duckdb.DuckDBPyConnection, seed: int, parts: int) -> None:
    """The scratch table ``managers``, and each account's manager among them.

    A branch has one manager per ``CUSTOMERS_PER_MANAGER`` customers (at least one,
    at most ``MANAGERS_PER_BRANCH``); a customer simulated with the branch's j-th
    manager is served by manager j modulo that number. Deterministic in ``seed``,
    from a stream of its own (the customers' are untouched); the managers are split
    over the ``parts`` in equal ranges.
    """
    con.execute(f"""
        create or replace temp table branch_staff as
        select branch, least(greatest(ceil(count(distinct customer)
                   / {CUSTOMERS_PER_MANAGER}), 1), {MANAGERS_PER_BRANCH})::integer as staff
        from accounts group by branch""")
    con.execute(f"""
        update accounts set manager = accounts.branch * {MANAGERS_PER_BRANCH}
            + (manager % {MANAGERS_PER_BRANCH}) % branch_staff.staff
        from branch_staff
        where accounts.branch = branch_staff.branch and accounts.manager >= 0""")
    staff = con.execute(f"""
        select branch_staff.branch * {MANAGERS_PER_BRANCH} + k.k as manager,
               (select count(distinct customer) from accounts
                where accounts.manager = branch_staff.branch * {MANAGERS_PER_BRANCH} + k.k) as held
        from branch_staff, range({MANAGERS_PER_BRANCH}) as k (k)
        where k.k < branch_staff.staff
        order by manager""").fetchnumpy()
    ids, held = staff["manager"].astype(np.int64), staff["held"].astype(float)
    rng = np.random.default_rng([seed, 1_000_003])
    capacity = np.maximum(held * rng.uniform(*CAPACITY_HOURS_PER_CUSTOMER, len(ids)), 4.0)
    frame = pd.DataFrame(
        {
            "manager": ids,
            "branch": ids // MANAGERS_PER_BRANCH,
            "level": np.array(MANAGER_LEVELS)[ids % MANAGERS_PER_BRANCH],
            "capacity": np.round(capacity),
            "part": np.arange(len(ids)) * parts // len(ids),
        }
    )
    con.register("frame", frame)
    con.execute("create or replace table managers as select * from frame")
    con.unregister("frame")


def _copy_options(fmt: str) -> str:
    return "(format parquet, compression zstd)" if fmt == "parquet" else "(header)"


def _export(con: duckdb.DuckDBPyConnection, table: str, out: Path, fmt: str, parts: int) -> int:
    options = _copy_options(fmt)
    if parts == 1:
        targets = [(out / f"{table}.{fmt}", 0)]
    else:
        (out / table).mkdir()
        targets = [(out / table / f"part-{p:05d}.{fmt}", p) for p in range(parts)]
    for path, part in targets:
        con.execute(f"copy ({EXPORT_SQL[table].replace('$part', str(part))}) to '{path}' {options}")
    return con.execute(f"select count(*) from {table}").fetchone()[0]


def _export_by_month(con: duckdb.DuckDBPyConnection, table: str, out: Path, fmt: str) -> int:
    """Write ``<table>/YYYY-MM.<fmt>`` for every month holding rows, in the one-file row order."""
    column = MONTH_COLUMNS[table]
    months = con.execute(
        f"select distinct strftime({column}, '%Y-%m') as month from {table} order by month"
    ).fetchall()
    (out / table).mkdir()
    rows = EXPORT_SQL[table].replace("$part", "0")
    for (month,) in months:
        in_month = f"select * from ({rows}) where strftime({column}, '%Y-%m') = '{month}'"
        con.execute(f"copy ({in_month}) to '{out / table / f'{month}.{fmt}'}' {_copy_options(fmt)}")
    return con.execute(f"select count(*) from {table}").fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seeds.generate",
        description="Write a synthetic brokerage landing folder (accounts, trades, fees, "
        "balances, cash_flows, managers) in the project's input contract.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/landing"),
        help="output folder (default: data/landing); contract files in it are replaced",
    )
    parser.add_argument("--customers", type=int, default=3000, help="number of customers")
    parser.add_argument("--months", type=int, default=24, help="months of history (>= 2)")
    parser.add_argument(
        "--end-date",
        type=dt.date.fromisoformat,
        default=dt.date(2026, 10, 31),
        help="last day of the data, YYYY-MM-DD; snapped to its month-end (default 2026-10-31)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument(
        "--parts",
        type=int,
        default=1,
        help="1 = one file per table; N > 1 = a folder <table>/ of N part files",
    )
    parser.add_argument(
        "--monthly-files",
        action="store_true",
        help="write trades, fees, balances and cash_flows as folders <table>/ of one "
        "file per calendar month, <table>/YYYY-MM.<ext> (monthly extracts); accounts "
        "stays one file",
    )
    parser.add_argument(
        "--dirty",
        action="store_true",
        help="plant bad rows breaking every contract rule and write "
        "_dirty_manifest.csv listing them",
    )
    parser.add_argument(
        "--mix",
        default=None,
        help="shares of the customer types as name=weight pairs, e.g. "
        "vip=0.03,potential=0.1,active_trader=0.12,ordinary=0.2,low_activity=0.3,dormant=0.25 "
        "(types: " + ", ".join(t.name for t in CUSTOMER_TYPES) + "; default: their shares)",
    )
    parser.add_argument(
        "--drift-share",
        type=float,
        default=0.0,
        help="share of the trading customers (not vip, not dormant) who drift to sleep: "
        f"trades fading out over {DRIFT_FADE_MONTHS} months, assets withdrawn; needs "
        f"--months >= {DRIFT_MIN_MONTHS} (default 0; _truth.csv's drift_start_month)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        mix = parse_mix(args.mix) if args.mix else None
        written = generate(
            args.out,
            args.customers,
            args.months,
            args.end_date,
            args.seed,
            args.format,
            args.parts,
            args.dirty,
            args.monthly_files,
            mix,
            args.drift_share,
        )
    except ValueError as error:
        parser.error(str(error))
    took = time.perf_counter() - started
    rows = ", ".join(f"{table} {count:,}" for table, count in written.items())
    layout = "monthly files" if args.monthly_files else f"{args.parts} part(s)"
    print(f"wrote {args.out} ({args.format}, {layout}) in {took:.1f} s: {rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
