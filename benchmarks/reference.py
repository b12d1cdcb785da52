"""Two hand-written reference implementations of ``docs/indicators.md``.

Both compute ``marts.customer_indicators`` straight from a clean raw landing folder
(the input contract of the spec), without dbt:

- ``indicators_duckdb``: one SQL statement run by DuckDB on the raw files. It
  aggregates every table to customer x month once, fills a dense customer x month
  grid and rolls the trailing window over it with window functions.
- ``indicators_pandas``: plain pandas, as an analyst would write it. It loops over
  the month-ends and filters the raw rows of each window, so it shares no
  algorithm with the DuckDB version.

They serve as independent cross-checks of the dbt marts (customer by customer) and
as the "one query" and "plain pandas" contenders of the benchmark. Input is assumed
clean (no quarantine): every row of the landing folder counts.

Both return the columns of ``INDICATOR_COLUMNS``, one row per customer and
month-end, sorted by customer_id and as_of_date. Money in the reporting currency
(float64), ratios float64, null as NaN, counts int64, dates datetime64[ns].
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

# The columns the references read from each contract table, with their types.
RAW_COLUMNS = {
    "accounts": {
        "account_id": "VARCHAR",
        "customer_id": "VARCHAR",
        "open_date": "DATE",
        "close_date": "DATE",
    },
    "trades": {
        "account_id": "VARCHAR",
        "trade_date": "DATE",
        "asset_class": "VARCHAR",
        "amount": "DOUBLE",
    },
    "fees": {
        "account_id": "VARCHAR",
        "fee_date": "DATE",
        "fee_type": "VARCHAR",
        "amount": "DOUBLE",
    },
    "balances": {
        "account_id": "VARCHAR",
        "as_of_date": "DATE",
        "cash": "DOUBLE",
        "market_value": "DOUBLE",
        "margin_debt": "DOUBLE",
    },
    "cash_flows": {
        "account_id": "VARCHAR",
        "flow_date": "DATE",
        "direction": "VARCHAR",
        "amount": "DOUBLE",
    },
}
OPTIONAL_TABLES = frozenset({"cash_flows"})

INDICATOR_COLUMNS = (
    "customer_id",
    "as_of_date",
    "window_start_date",
    "is_full_window",
    "avg_assets",
    "avg_cash",
    "commission_contribution",
    "margin_interest",
    "interest_contribution",
    "realised_revenue",
    "present_months",
    "imputed_cash_spread",
    "trading_volume",
    "net_inflow",
    "trade_count",
    "active_days",
    "turnover_rate",
    "recency_days",
    "tenure_months",
    "active_month_share",
    "product_breadth",
    "margin_usage",
    "start_net_assets",
    "end_net_assets",
    "return_rate",
)
COUNT_COLUMNS = (
    "trade_count",
    "active_days",
    "present_months",
    "recency_days",
    "tenure_months",
    "product_breadth",
)
DATE_COLUMNS = ("as_of_date", "window_start_date")


def table_files(raw_dir: str | Path, table: str) -> list[Path]:
    """The files holding ``table``: ``<table>.csv``/``.parquet`` and the parts of ``<table>/``."""
    raw_dir = Path(raw_dir)
    files = [raw_dir / f"{table}.{ext}" for ext in ("csv", "parquet")]
    files = [path for path in files if path.is_file()]
    if (raw_dir / table).is_dir():
        files += sorted(
            path
            for path in (raw_dir / table).iterdir()
            if path.is_file() and path.suffix in (".csv", ".parquet")
        )
    if not files and table not in OPTIONAL_TABLES:
        raise FileNotFoundError(f"{raw_dir}: no {table}.csv, {table}.parquet or {table}/ folder")
    return files


def _check_month_ends(as_of_dates: Iterable[dt.date]) -> list[dt.date]:
    dates = sorted(set(as_of_dates))
    for date in dates:
        if (date + dt.timedelta(days=1)).day != 1:
            raise ValueError(f"as_of_dates must be month-ends, got {date}")
    return dates


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Fix the column order and dtypes shared by both references."""
    frame = frame.loc[:, list(INDICATOR_COLUMNS)].reset_index(drop=True)
    types = {column: "float64" for column in INDICATOR_COLUMNS}
    types |= dict.fromkeys(COUNT_COLUMNS, "int64")
    types |= dict.fromkeys(DATE_COLUMNS, "datetime64[ns]")
    types |= {"customer_id": "str", "is_full_window": "bool"}
    return frame.astype(types)


def compare_indicators(
    expected: pd.DataFrame, actual: pd.DataFrame, rtol: float = 1e-9, atol: float = 1e-9
) -> list[str]:
    """What differs between two indicator tables, one line per column; empty when equal.

    Rows are matched on (customer_id, as_of_date). Floats compare with ``rtol``; the
    small ``atol`` absorbs rounding residue where a figure cancels to zero (a return of
    exactly 0 comes out as +-1e-16 when the sums run in another order). Nulls equal nulls.
    """
    keys = ["customer_id", "as_of_date"]

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({"customer_id": "str", "as_of_date": "datetime64[ns]"})
        return frame.set_index(keys).sort_index()

    expected, actual = keyed(expected), keyed(actual)
    problems = []
    missing = expected.index.difference(actual.index)
    extra = actual.index.difference(expected.index)
    if len(missing) or len(extra):
        problems.append(
            f"rows: {len(missing)} missing (e.g. {list(missing[:3])}), "
            f"{len(extra)} unexpected (e.g. {list(extra[:3])})"
        )
    common = expected.index.intersection(actual.index)
    for column in INDICATOR_COLUMNS[2:]:
        if column not in actual.columns:
            problems.append(f"{column}: missing column")
            continue
        left, right = expected.loc[common, column], actual.loc[common, column]
        if column in DATE_COLUMNS:
            left, right = left.astype("datetime64[ns]"), right.astype("datetime64[ns]")
        if left.dtype.kind == "f" or right.dtype.kind == "f":
            x, y = left.to_numpy(dtype="float64"), right.to_numpy(dtype="float64")
            differs = ~np.isclose(y, x, rtol=rtol, atol=atol, equal_nan=True)
        else:
            differs = ~((left == right) | (left.isna() & right.isna())).to_numpy()
        if differs.any():
            first = common[differs.argmax()]
            problems.append(
                f"{column}: {differs.sum()} rows differ, e.g. {first}: "
                f"expected {left[first]!r}, got {right[first]!r}"
            )
    return problems


# --------------------------------------------------------------------------- DuckDB


def _duckdb_source(table: str, files: list[Path]) -> str:
    """A SELECT of the typed columns of ``table`` over all its files."""
    types = RAW_COLUMNS[table]
    if not files:  # the optional table is absent: an empty relation of the right shape
        columns = ", ".join(f"null::{kind} as {name}" for name, kind in types.items())
        return f"select {columns} where false"
    columns = ", ".join(f"{name}::{kind} as {name}" for name, kind in types.items())
    selects = []
    csv = [str(path) for path in files if path.suffix == ".csv"]
    parquet = [str(path) for path in files if path.suffix == ".parquet"]
    if csv:
        struct = ", ".join(f"'{name}': '{kind}'" for name, kind in types.items())
        selects.append(
            f"select {columns} from read_csv({csv!r}, header = true, delim = ',', "
            f"quote = '\"', dateformat = '%Y-%m-%d', types = {{{struct}}})"
        )
    if parquet:
        selects.append(f"select {columns} from read_parquet({parquet!r}, union_by_name = true)")
    return " union all ".join(selects)


# Month keys are year * 12 + month - 1: consecutive integers, cheap to join and window on.
_DUCKDB_SQL = """
with
accounts as ({accounts}),
customers as materialized (
    select
        customer_id,
        row_number() over (order by customer_id) as customer_key,
        min(open_date) as first_open_date,
        -- an account still open never closes
        max(coalesce(close_date, date '9999-12-31')) as last_close_date
    from accounts
    group by customer_id
),
account_owners as (
    select accounts.account_id, customers.customer_key
    from accounts join customers using (customer_id)
),
trade_months as materialized (
    select
        o.customer_key,
        year(t.trade_date) * 12 + month(t.trade_date) - 1 as month_key,
        count(*) as trade_count,
        sum(t.amount) as trading_volume,
        -- trading days of different months never coincide, so these add up over months
        count(distinct t.trade_date) as active_days,
        max(t.trade_date) as last_trade_date,
        -- the asset classes traded, one bit each, so a window can OR them together
        bit_or(case t.asset_class
            when 'stock' then 1 when 'fund' then 2 when 'bond' then 4
            when 'option' then 8 when 'other' then 16 end) as asset_classes
    from ({trades}) as t join account_owners as o using (account_id)
    group by all
),
fee_months as materialized (
    select
        o.customer_key,
        year(f.fee_date) * 12 + month(f.fee_date) - 1 as month_key,
        sum(f.amount) filter (where f.fee_type = 'commission') as commission,
        sum(f.amount) filter (where f.fee_type = 'margin_interest') as margin_interest
    from ({fees}) as f join account_owners as o using (account_id)
    group by all
),
snapshots as (
    -- the customer's position on each snapshot date: all accounts with a snapshot that day
    select
        o.customer_key,
        b.as_of_date,
        sum(b.cash) as cash,
        sum(coalesce(b.margin_debt, 0)) as margin_debt,
        sum(b.cash + b.market_value) as gross_assets,
        sum(b.cash + b.market_value - coalesce(b.margin_debt, 0)) as net_assets
    from ({balances}) as b join account_owners as o using (account_id)
    group by all
),
balance_months as materialized (
    select
        customer_key,
        year(as_of_date) * 12 + month(as_of_date) - 1 as month_key,
        count(*) as snapshot_dates,
        sum(net_assets) as net_assets_sum,
        sum(cash) as cash_sum,
        sum(margin_debt) as margin_debt_sum,
        sum(gross_assets) as gross_assets_sum,
        arg_max(net_assets, as_of_date) as month_last_net_assets
    from snapshots
    group by all
),
flow_months as materialized (
    select
        o.customer_key,
        year(c.flow_date) * 12 + month(c.flow_date) - 1 as month_key,
        sum(c.amount) filter (where c.direction = 'in') as cash_in,
        sum(c.amount) filter (where c.direction = 'out') as cash_out
    from ({cash_flows}) as c join account_owners as o using (account_id)
    group by all
),
data_months as (
    select month_key from trade_months
    union all select month_key from fee_months
    union all select month_key from balance_months
    union all select month_key from flow_months
),
coverage as (
    select min(month_key) as first_month, max(month_key) as last_month from data_months
),
as_of_months as ({as_of_months}),
grid_bounds as (
    select least(min(a.month_key), any_value(c.first_month)) as first_month,
           max(a.month_key) as last_month
    from as_of_months as a, coverage as c
),
grid_months as (
    select unnest(range(first_month, last_month + 1)) as month_key from grid_bounds
),
grid as (
    -- every customer in every month up to the last as-of month, active or not, so that
    -- a window of W rows is W calendar months
    select customers.customer_key, grid_months.month_key
    from customers cross join grid_months
),
monthly as (
    select *
    from grid
    left join trade_months using (customer_key, month_key)
    left join fee_months using (customer_key, month_key)
    left join balance_months using (customer_key, month_key)
    left join flow_months using (customer_key, month_key)
),
windowed as (
    select
        customer_key,
        month_key,
        sum(trade_count) over w as trade_count,
        sum(trading_volume) over w as trading_volume,
        sum(active_days) over w as active_days,
        max(last_trade_date) over w as last_trade_date,
        bit_or(asset_classes) over w as asset_classes,
        sum((trade_count > 0)::integer) over w as active_months,
        sum(commission) over w as commission,
        sum(margin_interest) over w as margin_interest,
        sum(snapshot_dates) over w as snapshot_dates,
        sum((snapshot_dates > 0)::integer) over w as present_months,
        sum(net_assets_sum) over w as net_assets_sum,
        sum(cash_sum) over w as cash_sum,
        sum(margin_debt_sum) over w as margin_debt_sum,
        sum(gross_assets_sum) over w as gross_assets_sum,
        sum(cash_in) over w as cash_in,
        sum(cash_out) over w as cash_out,
        last_value(month_last_net_assets ignore nulls) over w as end_net_assets,
        last_value(month_last_net_assets ignore nulls) over before_window as start_net_assets
    from monthly
    window
        w as (partition by customer_key order by month_key
            rows between {window_months} - 1 preceding and current row),
        before_window as (partition by customer_key order by month_key
            rows between unbounded preceding and {window_months} preceding)
),
dated as (
    select
        w.customer_key,
        c.customer_id,
        c.first_open_date,
        c.last_close_date,
        last_day(make_date(w.month_key // 12, w.month_key % 12 + 1, 1)) as as_of_date,
        make_date((w.month_key - {window_months} + 1) // 12,
            (w.month_key - {window_months} + 1) % 12 + 1, 1) as window_start_date,
        w.month_key - {window_months} + 1 >= (select first_month from coverage)
            as is_full_window,
        coalesce(w.trade_count, 0) as trade_count,
        coalesce(w.trading_volume, 0) as trading_volume,
        coalesce(w.active_days, 0) as active_days,
        w.last_trade_date,
        coalesce(bit_count(w.asset_classes), 0) as product_breadth,
        coalesce(w.active_months, 0) as active_months,
        coalesce(w.commission, 0) as commission_contribution,
        coalesce(w.margin_interest, 0) as margin_interest,
        coalesce(w.snapshot_dates, 0) as snapshot_dates,
        coalesce(w.present_months, 0) as present_months,
        coalesce(w.net_assets_sum / w.snapshot_dates, 0) as avg_assets,
        coalesce(w.cash_sum / w.snapshot_dates, 0) as avg_cash,
        w.margin_debt_sum,
        w.gross_assets_sum,
        coalesce(w.cash_in, 0) - coalesce(w.cash_out, 0) as net_inflow,
        coalesce(w.start_net_assets, 0) as start_net_assets,
        w.end_net_assets
    from windowed as w
    join customers as c using (customer_key)
    where w.month_key in (select month_key from as_of_months)
)
select
    customer_id,
    as_of_date,
    window_start_date,
    is_full_window,
    avg_assets,
    avg_cash,
    commission_contribution,
    margin_interest,
    margin_interest as interest_contribution,
    commission_contribution + margin_interest as realised_revenue,
    present_months::bigint as present_months,
    -- notional, not revenue: pro-rated by the months with a snapshot
    avg_cash * $cash_spread_rate * present_months / 12 as imputed_cash_spread,
    trading_volume,
    net_inflow,
    trade_count::bigint as trade_count,
    active_days::bigint as active_days,
    case when avg_assets > 0 then trading_volume / avg_assets end as turnover_rate,
    coalesce(as_of_date - last_trade_date, as_of_date - window_start_date + 2) as recency_days,
    date_diff('month', first_open_date, as_of_date) as tenure_months,
    active_months / {window_months} as active_month_share,
    product_breadth::bigint as product_breadth,
    case when snapshot_dates > 0 and gross_assets_sum > 0
        then margin_debt_sum / gross_assets_sum end as margin_usage,
    start_net_assets,
    end_net_assets,
    case when end_net_assets is not null and start_net_assets + net_inflow / 2 > 0
        then (end_net_assets - start_net_assets - net_inflow)
            / (start_net_assets + net_inflow / 2) end as return_rate
from dated
where first_open_date <= as_of_date and last_close_date >= window_start_date
-- customer_key follows customer_id's order
order by customer_key, as_of_date
"""

# The month-ends the data covers: every month of data, the latest one only when it is
# complete, i.e. when its last day is before the load date (the load is in a later month).
_ALL_AS_OF_MONTHS = """
    select unnest(range(first_month, last_month
        + (last_month < year($load_date) * 12 + month($load_date) - 1)::integer)) as month_key
    from coverage
"""
_GIVEN_AS_OF_MONTHS = "select year(d) * 12 + month(d) - 1 as month_key from unnest($as_of) as u(d)"


def indicators_sql(
    raw_dir: str | Path, window_months: int = 12, given_as_of_dates: bool = False
) -> str:
    """The one SQL statement of ``indicators_duckdb`` over the files of ``raw_dir``.

    Parameters: ``$cash_spread_rate``, and ``$as_of`` (a list of month-end dates) with
    ``given_as_of_dates`` or else ``$load_date``.
    """
    if window_months < 1:
        raise ValueError("window_months must be at least 1")
    sources = {table: _duckdb_source(table, table_files(raw_dir, table)) for table in RAW_COLUMNS}
    return _DUCKDB_SQL.format(
        **sources,
        window_months=int(window_months),
        as_of_months=_GIVEN_AS_OF_MONTHS if given_as_of_dates else _ALL_AS_OF_MONTHS,
    )


def _default_memory_limit() -> str:
    """Two fifths of the machine's memory: the result's DataFrame needs room beside DuckDB."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(total * 2 // 5 // 2**20, 256)}MiB"


def indicators_duckdb(
    raw_dir: str | Path,
    load_date: dt.date,
    window_months: int = 12,
    cash_spread_rate: float = 0.015,
    as_of_dates: Iterable[dt.date] | None = None,
    memory_limit: str | None = None,
) -> pd.DataFrame:
    """``customer_indicators`` by one hand-written DuckDB query on the raw files.

    ``as_of_dates=None`` means every month-end the data covers; ``load_date`` only
    decides whether the latest month with data is complete. DuckDB works within
    ``memory_limit`` (default: two fifths of the machine's memory) and spills the rest
    to a temporary folder.
    """
    params: dict[str, object] = {"cash_spread_rate": cash_spread_rate}
    if as_of_dates is None:
        params["load_date"] = load_date
    else:
        params["as_of"] = _check_month_ends(as_of_dates)
    sql = indicators_sql(raw_dir, window_months, as_of_dates is not None)
    with tempfile.TemporaryDirectory(prefix="reference-duckdb-") as spill:
        config = {
            "memory_limit": memory_limit or _default_memory_limit(),
            "temp_directory": spill,
        }
        with duckdb.connect(config=config) as con:
            con.execute("set enable_progress_bar = false")
            # streamed out as Arrow batches, so DuckDB never holds the whole result twice
            table = con.sql(sql, params=params).to_arrow_reader(1_000_000).read_all()
    return _tidy(table.to_pandas(date_as_object=False, self_destruct=True, split_blocks=True))


# --------------------------------------------------------------------------- pandas

_PANDAS_TYPES = {"VARCHAR": "str", "DOUBLE": "float64"}


def _read_pandas(path: Path, types: dict[str, str]) -> pd.DataFrame:
    if path.suffix == ".csv":
        frame = pd.read_csv(
            path,
            usecols=list(types),
            dtype={name: _PANDAS_TYPES.get(kind, "str") for name, kind in types.items()},
            keep_default_na=False,
            na_values={name: [""] for name in types},
        )
    else:
        frame = pd.read_parquet(path, columns=list(types))
    for name, kind in types.items():
        if kind == "DATE":
            frame[name] = pd.to_datetime(frame[name], format="ISO8601").astype("datetime64[ns]")
        else:
            frame[name] = frame[name].astype(_PANDAS_TYPES[kind])
    return frame


def read_raw(raw_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every contract table of a landing folder as a typed DataFrame (the columns used).

    An absent ``cash_flows`` table comes back empty.
    """
    tables = {}
    for table, types in RAW_COLUMNS.items():
        parts = [_read_pandas(path, types) for path in table_files(raw_dir, table)]
        if not parts:
            parts = [_read_pandas_empty(types)]
        tables[table] = pd.concat(parts, ignore_index=True)
    return tables


def _read_pandas_empty(types: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            name: pd.Series(dtype="datetime64[ns]" if kind == "DATE" else _PANDAS_TYPES[kind])
            for name, kind in types.items()
        }
    )


def _data_months(tables: dict[str, pd.DataFrame]) -> pd.PeriodIndex:
    """The calendar months from the earliest to the latest dated row of any table."""
    dates = pd.concat(
        [
            tables["trades"]["trade_date"],
            tables["fees"]["fee_date"],
            tables["balances"]["as_of_date"],
            tables["cash_flows"]["flow_date"],
        ]
    )
    return pd.period_range(dates.min(), dates.max(), freq="M")


def indicators_pandas(
    raw_dir: str | Path,
    load_date: dt.date,
    window_months: int = 12,
    cash_spread_rate: float = 0.015,
    as_of_dates: Iterable[dt.date] | None = None,
) -> pd.DataFrame:
    """``customer_indicators`` in plain pandas: one pass over the raw rows per month-end.

    Same arguments and result as ``indicators_duckdb``.
    """
    if window_months < 1:
        raise ValueError("window_months must be at least 1")
    tables = read_raw(raw_dir)
    accounts = tables["accounts"]
    owner = accounts.set_index("account_id")["customer_id"]

    def by_customer(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(customer_id=frame["account_id"].map(owner))

    trades = by_customer(tables["trades"])
    trades["month"] = trades["trade_date"].dt.to_period("M")
    fees = by_customer(tables["fees"])
    fees["commission_contribution"] = fees["amount"].where(fees["fee_type"] == "commission", 0.0)
    fees["margin_interest"] = fees["amount"].where(fees["fee_type"] == "margin_interest", 0.0)
    flows = by_customer(tables["cash_flows"])
    flows["cash_in"] = flows["amount"].where(flows["direction"] == "in", 0.0)
    flows["cash_out"] = flows["amount"].where(flows["direction"] == "out", 0.0)

    # The customer's position on each snapshot date, summed over their accounts.
    balances = by_customer(tables["balances"])
    balances["margin_debt"] = balances["margin_debt"].fillna(0.0)
    snapshots = (
        balances.groupby(["customer_id", "as_of_date"], as_index=False)[
            ["cash", "market_value", "margin_debt"]
        ]
        .sum()
        .sort_values(["customer_id", "as_of_date"])
    )
    snapshots["gross_assets"] = snapshots["cash"] + snapshots["market_value"]
    snapshots["net_assets"] = snapshots["gross_assets"] - snapshots["margin_debt"]
    snapshots["month"] = snapshots["as_of_date"].dt.to_period("M")

    by_owner = accounts.assign(
        close_date=accounts["close_date"].fillna(pd.Timestamp.max)  # still open
    ).groupby("customer_id")
    customers = pd.DataFrame(
        {
            "first_open_date": by_owner["open_date"].min(),
            "last_close_date": by_owner["close_date"].max(),
        }
    )

    data_months = _data_months(tables)
    if as_of_dates is None:
        as_of_dates = [month.end_time.date() for month in data_months]
        if as_of_dates and as_of_dates[-1] >= load_date:  # the latest month is incomplete
            as_of_dates.pop()
    else:
        as_of_dates = _check_month_ends(as_of_dates)

    frames = []
    for as_of_day in as_of_dates:
        as_of = pd.Timestamp(as_of_day)
        start_month = as_of.to_period("M") - (window_months - 1)
        start = start_month.to_timestamp()
        out = customers[
            (customers["first_open_date"] <= as_of) & (customers["last_close_date"] >= start)
        ].copy()

        def in_window(frame: pd.DataFrame, column: str, start=start, as_of=as_of) -> pd.DataFrame:
            return frame[(frame[column] >= start) & (frame[column] <= as_of)]

        window_trades = in_window(trades, "trade_date").groupby("customer_id")
        out = out.join(
            window_trades.agg(
                trade_count=("amount", "size"),
                trading_volume=("amount", "sum"),
                active_days=("trade_date", "nunique"),
                active_months=("month", "nunique"),
                product_breadth=("asset_class", "nunique"),
                last_trade_date=("trade_date", "max"),
            )
        )
        revenue = in_window(fees, "fee_date").groupby("customer_id")
        out = out.join(revenue[["commission_contribution", "margin_interest"]].sum())
        window_snapshots = in_window(snapshots, "as_of_date").groupby("customer_id")
        out = out.join(
            window_snapshots.agg(
                avg_assets=("net_assets", "mean"),
                avg_cash=("cash", "mean"),
                present_months=("month", "nunique"),
                margin_debt_sum=("margin_debt", "sum"),
                gross_assets_sum=("gross_assets", "sum"),
                end_net_assets=("net_assets", "last"),  # snapshots are sorted by date
            )
        )
        earlier = snapshots[snapshots["as_of_date"] < start]
        out["start_net_assets"] = earlier.groupby("customer_id")["net_assets"].last()
        out = out.join(
            in_window(flows, "flow_date").groupby("customer_id")[["cash_in", "cash_out"]].sum()
        )

        zero_when_missing = [
            "trade_count",
            "trading_volume",
            "active_days",
            "active_months",
            "product_breadth",
            "commission_contribution",
            "margin_interest",
            "avg_assets",
            "avg_cash",
            "present_months",
            "cash_in",
            "cash_out",
            "start_net_assets",
        ]
        out[zero_when_missing] = out[zero_when_missing].fillna(0)
        out["as_of_date"] = as_of
        out["window_start_date"] = start
        out["is_full_window"] = start_month >= data_months[0]
        out["net_inflow"] = out["cash_in"] - out["cash_out"]
        out["interest_contribution"] = out["margin_interest"]
        out["realised_revenue"] = out["commission_contribution"] + out["margin_interest"]
        # notional, not revenue: pro-rated by the months with a snapshot
        out["imputed_cash_spread"] = out["avg_cash"] * cash_spread_rate * out["present_months"] / 12
        out["turnover_rate"] = (out["trading_volume"] / out["avg_assets"]).where(
            out["avg_assets"] > 0
        )
        days_in_window = (as_of - start).days + 1
        out["recency_days"] = (as_of - out["last_trade_date"]).dt.days.fillna(days_in_window + 1)
        out["tenure_months"] = (as_of.year - out["first_open_date"].dt.year) * 12 + (
            as_of.month - out["first_open_date"].dt.month
        )
        out["active_month_share"] = out["active_months"] / window_months
        out["margin_usage"] = (out["margin_debt_sum"] / out["gross_assets_sum"]).where(
            out["gross_assets_sum"] > 0
        )
        dietz_base = out["start_net_assets"] + out["net_inflow"] / 2
        out["return_rate"] = (
            (out["end_net_assets"] - out["start_net_assets"] - out["net_inflow"]) / dietz_base
        ).where(out["end_net_assets"].notna() & (dietz_base > 0))
        frames.append(out.rename_axis("customer_id").reset_index())

    result = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=INDICATOR_COLUMNS)
    )
    result = result.sort_values(["customer_id", "as_of_date"], kind="stable")
    return _tidy(result)
