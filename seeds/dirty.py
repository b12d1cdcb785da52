"""Plant bad rows in a generated landing folder (``python -m seeds.generate --dirty``).

Every row rule of the input contract is broken at least once, each planted row
breaking exactly one rule so the expected quarantine reason is unambiguous. Rows
are appended to the end of each table (its last part file), so for duplicate
keys the original row comes first and is the one kept. CSV output also gets
structurally malformed lines (a field too many, a field too few).

``_dirty_manifest.csv`` lists every planted row: ``source_table``, ``rule`` (the
quarantine rule code), ``key`` (the row's key; ``account_id|as_of_date`` for
balances, empty for malformed lines) and ``detail``.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path

import duckdb

KEYS = {
    "accounts": ("account_id",),
    "trades": ("trade_id",),
    "fees": ("fee_id",),
    "balances": ("account_id", "as_of_date"),
    "cash_flows": ("flow_id",),
    "managers": ("manager_id",),
}

# (rule, detail, fresh key?, column overrides). ``{future}`` becomes a date after the load.
PLANTS = {
    "accounts": [
        ("duplicate_key", "exact copy of the first account row", False, {}),
        (
            "duplicate_key",
            "same account_id as the first row, other branch",
            False,
            {"branch_id": "B999"},
        ),
        ("missing_value", "customer_id empty", True, {"customer_id": None}),
        ("invalid_date", "open_date is not a calendar date", True, {"open_date": "2023-02-30"}),
        ("invalid_date", "open_date in DD/MM/YYYY", True, {"open_date": "15/03/2021"}),
        (
            "close_before_open",
            "close_date before open_date",
            True,
            {"open_date": "2022-05-01", "close_date": "2021-01-01"},
        ),
        ("future_date", "open_date after the load", True, {"open_date": "{future}"}),
        ("invalid_value", "account_type outside cash/margin", True, {"account_type": "premium"}),
        ("invalid_value", "gender outside M/F/U", True, {"gender": "X"}),
        ("invalid_value", "risk_level outside C1..C5", True, {"risk_level": "C9"}),
        (
            "invalid_value",
            "customer_type outside individual/institution",
            True,
            {"customer_type": "robot"},
        ),
        ("invalid_number", "birth_year not an integer", True, {"birth_year": "19x0"}),
    ],
    "trades": [
        ("duplicate_key", "exact copy of the first trade", False, {}),
        (
            "duplicate_key",
            "same trade_id as the first trade, other amount",
            False,
            {"amount": "999.99"},
        ),
        ("orphan_account", "account_id not in accounts", True, {"account_id": "A_UNKNOWN"}),
        (
            "orphan_account",
            "account_id of a quarantined account row",
            True,
            {"account_id": "A_DIRTY_03"},
        ),
        ("invalid_date", "trade_date with slashes", True, {"trade_date": "2025/03/04"}),
        ("future_date", "trade_date after the load", True, {"trade_date": "{future}"}),
        ("missing_value", "symbol empty", True, {"symbol": None}),
        ("invalid_value", "asset_class outside the list", True, {"asset_class": "crypto"}),
        ("invalid_value", "side outside B/S", True, {"side": "X"}),
        ("out_of_range", "quantity zero", True, {"quantity": "0"}),
        ("out_of_range", "price negative", True, {"price": "-1.5"}),
        ("out_of_range", "amount negative", True, {"amount": "-100.00"}),
        ("invalid_number", "amount with a thousands separator", True, {"amount": "1,234.50"}),
        ("invalid_number", "price not a number", True, {"price": "abc"}),
    ],
    "fees": [
        ("duplicate_key", "exact copy of the first fee", False, {}),
        ("orphan_account", "account_id not in accounts", True, {"account_id": "A_UNKNOWN"}),
        ("invalid_value", "fee_type outside the list", True, {"fee_type": "tip"}),
        ("invalid_number", "amount not a number", True, {"amount": "ten"}),
        ("future_date", "fee_date after the load", True, {"fee_date": "{future}"}),
        ("missing_value", "fee_date empty", True, {"fee_date": None}),
    ],
    "balances": [
        (
            "duplicate_key",
            "same account_id and as_of_date as the first snapshot",
            False,
            {"cash": "1.00"},
        ),
        ("orphan_account", "account_id not in accounts", True, {"account_id": "A_UNKNOWN"}),
        ("out_of_range", "cash negative", True, {"cash": "-10.00"}),
        ("out_of_range", "market_value negative", True, {"market_value": "-1"}),
        ("out_of_range", "margin_debt negative", True, {"margin_debt": "-5"}),
        ("invalid_number", "market_value not a number", True, {"market_value": "n/a"}),
        ("invalid_date", "as_of_date month 13", True, {"as_of_date": "2025-13-31"}),
        ("future_date", "as_of_date after the load", True, {"as_of_date": "{future}"}),
    ],
    "cash_flows": [
        ("duplicate_key", "exact copy of the first flow", False, {}),
        ("orphan_account", "account_id not in accounts", True, {"account_id": "A_UNKNOWN"}),
        ("missing_value", "account_id empty", True, {"account_id": None}),
        ("invalid_value", "direction outside in/out", True, {"direction": "sideways"}),
        ("out_of_range", "amount zero", True, {"amount": "0"}),
        ("out_of_range", "amount negative", True, {"amount": "-50"}),
        ("invalid_date", "flow_date not a date", True, {"flow_date": "yesterday"}),
    ],
    "managers": [
        (
            "duplicate_key",
            "same manager_id as the first manager, other level",
            False,
            {"level": "online only"},
        ),
        ("missing_value", "branch_id empty", True, {"branch_id": None}),
        ("invalid_value", "level not named in the service plans", True, {"level": "intern"}),
        ("invalid_number", "capacity not a number", True, {"capacity_hours_per_month": "full"}),
        ("out_of_range", "capacity negative", True, {"capacity_hours_per_month": "-10"}),
    ],
}

# Appended to CSV files only: lines the CSV reader itself rejects.
MALFORMED_LINES = {
    "trades": ("a field too many", "T_DIRTY_BAD,A000000000,2025-01-02,600000,stock,B,100,1,100,x"),
    "fees": ("a field too few", "F_DIRTY_BAD,A000000000,2025-01-02"),
}


def plant(out: Path, fmt: str, end: dt.date) -> dict[str, int]:
    """Append the planted rows to the tables in ``out``; return rows planted per table."""
    future = (end + dt.timedelta(days=3 * 365)).isoformat()
    manifest = []
    planted = {}
    con = duckdb.connect()
    for table, plants in PLANTS.items():
        path = _last_part(out, table, fmt)
        reader = "read_parquet" if fmt == "parquet" else "read_csv"
        template = con.execute(
            f"select columns(*)::varchar from {reader}('{path}') limit 1"
        ).fetchdf()
        columns = list(template.columns)
        first = {c: (None if _isnull(v) else str(v)) for c, v in template.iloc[0].items()}
        rows = []
        for n, (rule, detail, fresh, overrides) in enumerate(plants, start=1):
            row = dict(first)
            if fresh:
                _fresh_key(row, table, n)
            row.update(
                {
                    c: (v.format(future=future) if isinstance(v, str) else v)
                    for c, v in overrides.items()
                }
            )
            rows.append([row[c] for c in columns])
            manifest.append((table, rule, "|".join(str(row[k]) for k in KEYS[table]), detail))
        if fmt == "csv":
            with path.open("a", newline="", encoding="utf-8") as handle:
                csv.writer(handle, lineterminator="\n").writerows(
                    ["" if v is None else v for v in r] for r in rows
                )
                if table in MALFORMED_LINES:
                    detail, line = MALFORMED_LINES[table]
                    handle.write(line + "\n")
                    manifest.append((table, "malformed_line", "", detail))
        else:
            _append_parquet(con, path, columns, rows)
        planted[table] = len(rows) + (fmt == "csv" and table in MALFORMED_LINES)
    con.close()
    with (out / "_dirty_manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("source_table", "rule", "key", "detail"))
        writer.writerows(manifest)
    return planted


def _last_part(out: Path, table: str, fmt: str) -> Path:
    single = out / f"{table}.{fmt}"
    return single if single.exists() else sorted((out / table).glob(f"*.{fmt}"))[-1]


def _fresh_key(row: dict, table: str, n: int) -> None:
    """Give a planted row a key of its own, so it breaks no uniqueness rule."""
    if table == "accounts":
        row["account_id"] = f"A_DIRTY_{n:02d}"
    elif table == "balances":
        row["as_of_date"] = (dt.date(2001, 1, 1) + dt.timedelta(days=n)).isoformat()
    else:
        row[KEYS[table][0]] = f"{table[0].upper()}_DIRTY_{n:02d}"


def _isnull(value: object) -> bool:
    return value is None or value != value  # NaN / NaT


def _append_parquet(
    con: duckdb.DuckDBPyConnection, path: Path, columns: list[str], rows: list[list]
) -> None:
    """Rewrite a Parquet file with every column as text and the planted rows at the end."""
    values = ", ".join(
        f"({n}, "
        + ", ".join("null" if v is None else "'" + v.replace("'", "''") + "'" for v in r)
        + ")"
        for n, r in enumerate(rows)
    )
    casts = ", ".join(f'"{c}"::varchar as "{c}"' for c in columns)
    names = ", ".join(f'"{c}"' for c in columns)
    tmp = path.with_name(path.name + ".tmp")
    con.execute(f"""copy (select * exclude (_part, _row) from (
                             select 0 as _part, file_row_number as _row, {casts}
                             from read_parquet('{path}', file_row_number = true)
                             union all
                             select 1, * from (values {values}) planted(_row, {names}))
                         order by _part, _row)
                    to '{tmp}' (format parquet, compression zstd)""")
    os.replace(tmp, path)
