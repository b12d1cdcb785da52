"""Land a raw landing folder into the warehouse's ``raw`` schema, as text.

Every contract column is copied as it arrived (VARCHAR), with the file it came
from and its position there, so the dbt staging layer can type each value and
route every row to staging or to ``audit.quarantine``. This module only judges
whole files; rows are judged in dbt:

- a missing required table, a required column missing from a file, an empty or
  unreadable file, or a file that is not UTF-8 raises ``LandingError`` naming the
  file (and the column) before anything is written;
- a CSV line the reader cannot split into the header's fields is kept in
  ``raw.malformed_rows`` (the quarantine picks it up), never dropped.

Files are only read, never modified or moved.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb


@dataclass(frozen=True)
class TableContract:
    required_columns: tuple[str, ...]
    optional_columns: tuple[str, ...] = ()
    date_columns: tuple[str, ...] = ()
    required: bool = True

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required_columns + self.optional_columns


CONTRACT = {
    "accounts": TableContract(
        ("account_id", "customer_id", "open_date", "account_type", "branch_id"),
        ("close_date", "customer_type", "birth_year", "gender", "risk_level", "manager_id"),
        ("open_date", "close_date"),
    ),
    "trades": TableContract(
        (
            "trade_id",
            "account_id",
            "trade_date",
            "symbol",
            "asset_class",
            "side",
            "quantity",
            "price",
            "amount",
        ),
        date_columns=("trade_date",),
    ),
    "fees": TableContract(
        ("fee_id", "account_id", "fee_date", "fee_type", "amount"), ("trade_id",), ("fee_date",)
    ),
    "balances": TableContract(
        ("account_id", "as_of_date", "cash", "market_value"), ("margin_debt",), ("as_of_date",)
    ),
    "cash_flows": TableContract(
        ("flow_id", "account_id", "flow_date", "direction", "amount"),
        date_columns=("flow_date",),
        required=False,
    ),
}
FORMATS = ("csv", "parquet")


class LandingError(Exception):
    """A whole file or table is unusable; the message names the file and the column."""


@dataclass(frozen=True)
class SourceFile:
    table: str
    path: Path
    relative: str  # path inside the landing folder, as recorded in the warehouse
    format: str
    columns: dict[str, int]  # contract column -> position in the file
    n_fields: int  # columns in the file's header


@dataclass(frozen=True)
class LandedFile:
    table: str
    source_file: str
    format: str
    rows: int
    malformed_rows: int
    bytes: int


def discover(raw_dir: Path) -> list[SourceFile]:
    """Find and check every contract table's files; raise ``LandingError`` on the first problem.

    Only reads file headers, so it is cheap to run before anything is written.
    """
    if not raw_dir.is_dir():
        raise LandingError(
            f"landing folder {raw_dir} does not exist or is not a folder (set TIERS_RAW_DIR)"
        )
    found = []
    for table, contract in CONTRACT.items():
        paths = _table_paths(raw_dir, table)
        if not paths and contract.required:
            raise LandingError(
                f"required table '{table}' is missing from {raw_dir}: expected {table}.csv, "
                f"{table}.parquet or a folder {table}/ of such files"
            )
        for path in paths:
            fmt = path.suffix.lower().lstrip(".")
            header = _csv_header(path) if fmt == "csv" else _parquet_header(path)
            found.append(
                SourceFile(
                    table,
                    path,
                    path.relative_to(raw_dir).as_posix(),
                    fmt,
                    _match_columns(path, contract, header),
                    len(header),
                )
            )
    return found


def _table_paths(raw_dir: Path, table: str) -> list[Path]:
    files = [
        raw_dir / f"{table}.{fmt}" for fmt in FORMATS if (raw_dir / f"{table}.{fmt}").is_file()
    ]
    folder = raw_dir / table
    if folder.is_dir():
        files.append(folder)
    if len(files) > 1:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in files)
        raise LandingError(
            f"table '{table}' is given more than once in {raw_dir} ({names}): "
            "keep exactly one file or one folder"
        )
    if not files or files[0].is_file():
        return files
    parts, strays = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")):
            continue
        if path.is_file() and path.suffix.lower().lstrip(".") in FORMATS:
            parts.append(path)
        else:
            strays.append(path.name + ("/" if path.is_dir() else ""))
    if strays:  # never skip data silently: a .csv.gz or a subfolder may hold rows
        raise LandingError(
            f"folder {folder} holds entries that are not .csv or .parquet part files: "
            f"{', '.join(strays)}; move them out, or prefix their names with _ to keep them"
        )
    if not parts:
        raise LandingError(f"folder {folder} holds no .csv or .parquet part files")
    return parts


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            first_line = handle.readline()
    except OSError as error:
        raise LandingError(f"{path} cannot be read: {error.strerror}") from None
    if not first_line:
        raise LandingError(f"{path} is empty: a CSV file needs a header row")
    if not first_line.strip():
        raise LandingError(f"{path} has no header row: its first line is blank")
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise LandingError(
            f"{path} is not UTF-8 encoded (header row, byte {error.start}); re-export it as UTF-8"
        ) from None
    try:
        return next(csv.reader([text.rstrip("\r\n")]))
    except csv.Error as error:
        raise LandingError(f"{path} cannot be read as CSV (header row: {error})") from None


def _parquet_header(path: Path) -> list[str]:
    try:
        with duckdb.connect() as con:
            return [
                row[0]
                for row in con.execute(
                    "describe select * from read_parquet(?)", [str(path)]
                ).fetchall()
            ]
    except duckdb.Error as error:
        raise LandingError(f"{path} cannot be read as Parquet: {_first_line(error)}") from None


def _match_columns(path: Path, contract: TableContract, header: list[str]) -> dict[str, int]:
    """Map contract columns to their position; header names are matched trimmed, any case."""
    positions: dict[str, int] = {}
    for position, name in enumerate(header):
        key = name.strip().lower()
        if key in contract.columns:
            if key in positions:
                raise LandingError(f"{path}: column '{key}' appears more than once in the header")
            positions[key] = position
    missing = [c for c in contract.required_columns if c not in positions]
    if missing:
        raise LandingError(
            f"{path}: required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} missing (header: {', '.join(header)})"
        )
    return positions


def land(con: duckdb.DuckDBPyConnection, files: list[SourceFile], load_id: str) -> list[LandedFile]:
    """Copy every file's rows into ``raw.<table>`` (all text) and record the load.

    Creates ``raw.<table>`` for every contract table (empty when an optional
    table is absent), ``raw.malformed_rows`` and ``raw.landed_files``.
    """
    con.execute("create schema if not exists raw")
    con.execute("""create or replace table raw.malformed_rows (
        source_table varchar, source_file varchar, line bigint, error varchar, raw_line varchar)""")
    for table, contract in CONTRACT.items():
        columns = ", ".join(f"{c} varchar" for c in contract.columns)
        con.execute(
            f"create or replace table raw.{table} "
            f"({columns}, _source_file varchar, _source_row bigint)"
        )
    landed = [_land_file(con, source) for source in files]
    con.execute("""create or replace table raw.landed_files (
        load_id varchar, landed_at timestamp, source_table varchar, source_file varchar,
        format varchar, bytes bigint, rows bigint, malformed_rows bigint)""")
    landed_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    con.executemany(
        "insert into raw.landed_files values (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                load_id,
                landed_at,
                f.table,
                f.source_file,
                f.format,
                f.bytes,
                f.rows,
                f.malformed_rows,
            )
            for f in landed
        ],
    )
    return landed


def _land_file(con: duckdb.DuckDBPyConnection, source: SourceFile) -> LandedFile:
    contract = CONTRACT[source.table]
    if source.format == "csv":
        fields = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(source.n_fields))
        scan = (
            f"read_csv(?, header = true, auto_detect = false, delim = ',', quote = '\"', "
            f"escape = '\"', columns = {{{fields}}}, store_rejects = true, "
            f"rejects_table = 'csv_rejects', rejects_scan = 'csv_reject_scans')"
        )
        value = {c: f"c{p}" for c, p in source.columns.items()}
    else:
        types = dict(
            con.execute(
                "select column_name, column_type from (describe select * from read_parquet(?))",
                [str(source.path)],
            ).fetchall()
        )
        names = list(types)
        scan = "read_parquet(?)"
        value = {
            c: _parquet_text(f'"{names[p]}"', types[names[p]], c in contract.date_columns)
            for c, p in source.columns.items()
        }
    select = ", ".join(
        f"{value[c]} as {c}" if c in value else f"null as {c}" for c in contract.columns
    )
    try:
        rows = con.execute(
            f"""insert into raw.{source.table}
                               select {select}, ? as _source_file,
                                      row_number() over () as _source_row
                               from {scan}""",
            [source.relative, str(source.path)],
        ).fetchone()[0]
    except duckdb.Error as error:
        raise LandingError(
            f"{source.path} cannot be read as {source.format.upper()}: {_first_line(error)}"
        ) from None
    malformed = 0
    if source.format == "csv":
        malformed = _keep_malformed_lines(con, source)
        _check_no_line_breaks(con, source)
    return LandedFile(
        source.table, source.relative, source.format, rows, malformed, source.path.stat().st_size
    )


def _keep_malformed_lines(con: duckdb.DuckDBPyConnection, source: SourceFile) -> int:
    encoding = con.execute(
        "select min(line) from csv_rejects where error_type = 'INVALID ENCODING'"
    ).fetchone()[0]
    if encoding is not None:
        raise LandingError(
            f"{source.path} is not UTF-8 encoded (first bad line {encoding}); re-export it as UTF-8"
        )
    unclosed = con.execute(
        "select min(line) from csv_rejects where error_type = 'UNTERMINATED QUOTE' "
        "or regexp_matches(csv_line, '[\r\n]')"
    ).fetchone()[0]
    if unclosed is not None:
        raise _unclosed_quote(source, f"line {unclosed}")
    malformed = con.execute(
        """
        insert into raw.malformed_rows
        select ?, ?, line,
               arg_min(error_type || ': ' || coalesce(error_message, 'no detail'), column_idx),
               any_value(csv_line)
        from csv_rejects group by line order by line""",  # one rejection per column: keep one
        [source.table, source.relative],
    ).fetchone()[0]
    con.execute("drop table if exists csv_rejects")
    con.execute("drop table if exists csv_reject_scans")
    return malformed


def _check_no_line_breaks(con: duckdb.DuckDBPyConnection, source: SourceFile) -> None:
    """No contract value holds a line break: one that does swallowed the lines after it."""
    broken = " or ".join(f"regexp_matches({c}, '[\r\n]')" for c in source.columns)
    row = con.execute(
        f"select min(_source_row) from raw.{source.table} where _source_file = ? and ({broken})",
        [source.relative],
    ).fetchone()[0]
    if row is not None:
        raise _unclosed_quote(source, f"data row {row}")


def _unclosed_quote(source: SourceFile, where: str) -> LandingError:
    return LandingError(
        f"{source.path}: a quoted value opened at {where} runs over a line break, so the "
        'lines after it would be read as part of one value (an unclosed or stray quote "); '
        "fix the quoting in the file"
    )


def _parquet_text(column: str, column_type: str, is_date: bool) -> str:
    """A Parquet value as the text a CSV would have held; midnight timestamps become dates."""
    if is_date and column_type.startswith("TIMESTAMP"):
        return (
            f"case when {column} = date_trunc('day', {column}) "
            f"then strftime({column}, '%Y-%m-%d') else {column}::varchar end"
        )
    return f"{column}::varchar"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]
