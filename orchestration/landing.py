"""Land a raw landing folder for the warehouse: check every file, hand its rows to dbt.

Each contract table becomes a view ``raw.<table>`` over the files this load
lands, with every contract column as text (as it arrived), the file it came
from and its position there; the dbt base models type each value and route
every row to staging or to ``audit.quarantine`` in one pass over the files.
Loads are incremental by file: a file landed before with the same size and
modification time is not read again (``raw.landed_files``). This module only
judges whole files; rows are judged in dbt:

- a missing required table, a required column missing from a file, an empty or
  unreadable file, or a file that is not UTF-8 raises ``LandingError`` naming the
  file (and the column) before anything is written;
- a CSV file whose last line is cut (no line break after it, and it does not
  parse) is a truncated or half-copied file: ``LandingError`` too;
- a table that lost rows, or whose malformed share rose, beyond
  ``VolumeBounds`` against the previous load raises ``LandingError``;
- a CSV line the reader cannot split into the header's fields is kept in
  ``raw.malformed_rows`` (the quarantine picks it up), never dropped.

Files are only read, never modified or moved.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb

from orchestration.config import VolumeBounds


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
    "managers": TableContract(
        ("manager_id", "branch_id", "level", "capacity_hours_per_month"), required=False
    ),
}
#: Tables that are snapshots of the present, not logs: always landed whole.
SNAPSHOT_TABLES = ("accounts", "managers")
FORMATS = ("csv", "parquet")


def new_load_id(now: dt.datetime | None = None) -> str:
    """A load's id: its UTC start time and a random suffix, e.g. ``20261121T060000Z-1a2b3c``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


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
    modified_ns: int


def landing_fingerprint(raw_dir: Path) -> str:
    """Names, sizes and modification times of every file in the landing folder."""
    digest = hashlib.sha256()
    for path in sorted(p for p in raw_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(raw_dir)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


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


def land(
    con: duckdb.DuckDBPyConnection,
    files: list[SourceFile],
    load_id: str,
    bounds: VolumeBounds | None = None,
) -> list[LandedFile]:
    """Check this load's files and point ``raw.<table>`` at the ones with new rows.

    Loads are incremental by file. A file already landed with the same size and
    modification time holds rows the warehouse already has, so it is left out
    (unless some of its rows wait for a later verdict, see ``_unchanged_files``);
    a new or changed file is landed, and a changed or vanished file's old rows
    are dropped by the base models (they keep only rows of the files listed in
    ``raw.landed_files``). ``accounts`` and ``managers`` are snapshots and are always
    landed whole.

    Every file to land is read once here (row count, malformed lines, encoding,
    quoting); ``raw.<table>`` becomes a view reading those files' contract
    columns as text, with ``_source_file`` and ``_source_row``. Also keeps
    ``raw.landed_files`` (every file whose rows the warehouse holds, with the
    load that landed it), ``raw.malformed_rows`` and ``raw.latest_load``.
    A table that lost more rows, or whose share of malformed lines rose more,
    than ``bounds`` allow against the previous load stops the load
    (:func:`check_volumes`). Returns the files landed by this load.
    """
    con.execute("create schema if not exists raw")
    _upgrade_old_layout(con)
    con.execute("""create table if not exists raw.landed_files (
        load_id varchar, landed_at timestamp, source_table varchar, source_file varchar,
        format varchar, bytes bigint, modified_ns bigint, rows bigint, malformed_rows bigint)""")
    con.execute("""create table if not exists raw.malformed_rows (
        source_table varchar, source_file varchar, line bigint, error varchar, raw_line varchar)""")
    kept = _unchanged_files(con, files)
    to_land = [f for f in files if (f.table, f.relative) not in kept]
    previous = {
        (table, name): (rows, malformed)
        for table, name, rows, malformed in con.execute(
            "select source_table, source_file, rows, malformed_rows from raw.landed_files"
        ).fetchall()
    }
    # rows of files that changed, vanished or are landed again are replaced
    con.execute(
        "create or replace temp table kept_files (source_table varchar, source_file varchar)"
    )
    if kept:
        con.executemany("insert into kept_files values (?, ?)", sorted(kept))
    for name in ("landed_files", "malformed_rows"):
        con.execute(
            f"delete from raw.{name} where (source_table, source_file) not in "
            "(select (source_table, source_file) from kept_files)"
        )
    landed = [_check_file(con, source, quoted) for source, quoted in _read_ahead(to_land)]
    current = {key: previous[key] for key in kept if key in previous}
    current.update({(f.table, f.source_file): (f.rows, f.malformed_rows) for f in landed})
    check_volumes(previous, current, bounds or VolumeBounds())
    for table, contract in CONTRACT.items():
        _create_view(con, table, contract, [f for f in to_land if f.table == table])
    landed_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    con.executemany(
        "insert into raw.landed_files values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                load_id,
                landed_at,
                f.table,
                f.source_file,
                f.format,
                f.bytes,
                f.modified_ns,
                f.rows,
                f.malformed_rows,
            )
            for f in landed
        ],
    )
    con.execute(
        "create or replace table raw.latest_load as "
        "select ?::varchar as load_id, ?::timestamp as landed_at, ?::bigint as files_landed, "
        "?::bigint as files_kept",
        [load_id, landed_at, len(landed), len(kept)],
    )
    return landed


def check_volumes(
    previous: Mapping[tuple[str, str], tuple[int, int]],
    current: Mapping[tuple[str, str], tuple[int, int]],
    bounds: VolumeBounds,
) -> None:
    """Stop a load whose tables shrank or broke beyond ``bounds`` (a pure function).

    ``previous`` and ``current``: (table, file) -> (rows, malformed lines) of the
    files the warehouse held before this load and holds after it. Per table, the
    rows may drop by at most ``max_row_drop`` of the previous count, and the share
    of malformed lines may rise by at most ``max_malformed_jump``. A halved extract,
    a file cut short or a vanished file would otherwise publish with exit 0. The
    message names the files that shrank or vanished, with both counts. A first
    load (or a full refresh) has nothing to compare with.
    """
    problems = []
    for table in sorted({table for table, _ in previous}):
        before = [value for (t, _), value in previous.items() if t == table]
        after = [value for (t, _), value in current.items() if t == table]
        rows_before, rows_after = sum(r for r, _ in before), sum(r for r, _ in after)
        bad_before = sum(m for _, m in before) / max(1, rows_before + sum(m for _, m in before))
        bad_after = sum(m for _, m in after) / max(1, rows_after + sum(m for _, m in after))
        files = [
            f"{name} {rows:,} -> "
            + (f"{current[(t, name)][0]:,}" if (t, name) in current else "gone")
            for (t, name), (rows, _) in sorted(previous.items())
            if t == table and current.get((t, name), (0, 0))[0] < rows
        ]
        shrank = f" ({'; '.join(files)})" if files else ""
        if rows_before and rows_after < (1 - bounds.max_row_drop) * rows_before:
            problems.append(
                f"{table} has {rows_after:,} rows against {rows_before:,} after the last load, "
                f"{1 - rows_after / rows_before:.0%} fewer (TIERS_MAX_ROW_DROP="
                f"{bounds.max_row_drop:g}){shrank}"
            )
        if bad_after - bad_before > bounds.max_malformed_jump:
            problems.append(
                f"{table}: {bad_after:.1%} of its lines are malformed against {bad_before:.1%} "
                f"after the last load (TIERS_MAX_MALFORMED_JUMP={bounds.max_malformed_jump:g})"
            )
    if problems:
        raise LandingError(
            "; ".join(problems) + ". A truncated or partial extract? Deliver the files whole, "
            "or, if the change is real, run once with the bound "
            "raised (e.g. TIERS_MAX_ROW_DROP=1)"
        )


def _upgrade_old_layout(con: duckdb.DuckDBPyConnection) -> None:
    """Warehouses built before incremental loads kept raw rows as tables: land afresh."""
    old = (
        con.execute(
            "select count(*) from duckdb_columns() where schema_name = 'raw' "
            "and table_name = 'landed_files' and column_name = 'modified_ns'"
        ).fetchall()[0][0]
        == 0
    )
    if old:
        for name, kind in con.execute(
            "select table_name, 'table' from duckdb_tables() where schema_name = 'raw' "
            "union all select view_name, 'view' from duckdb_views() where schema_name = 'raw'"
        ).fetchall():
            con.execute(f"drop {kind} raw.{name}")
        for (name,) in con.execute(
            "select table_name from duckdb_tables() where schema_name = 'staging' "
            "and table_name like 'base_broker__%'"
        ).fetchall():
            con.execute(f"drop table staging.{name}")


def _unchanged_files(con: duckdb.DuckDBPyConnection, files: list[SourceFile]) -> set:
    """(table, file) of the files to keep from earlier loads.

    A file is kept when it was landed before with the same size and modification
    time, unless some of its rows were quarantined for a reason that depends on
    more than the row itself (dated after that load's day, an account not in
    that load's accounts, a key held by another row): the next load judges them
    again. ``accounts`` is never kept.
    """
    landed = {
        (table, name): (size, modified)
        for table, name, size, modified in con.execute(
            "select source_table, source_file, bytes, modified_ns from raw.landed_files"
        ).fetchall()
    }
    unsettled = _files_with_unsettled_rows(con)
    unchanged = set()
    for f in files:
        stat = f.path.stat()
        key = (f.table, f.relative)
        if (
            f.table not in SNAPSHOT_TABLES
            and landed.get(key) == (stat.st_size, stat.st_mtime_ns)
            and key not in unsettled
        ):
            unchanged.add(key)
    return unchanged


#: Quarantine rules whose verdict a later load may change.
CONTEXT_RULES = ("future_date", "orphan_account", "duplicate_key")


def _files_with_unsettled_rows(con: duckdb.DuckDBPyConnection) -> set:
    """(table, file) of files with rows quarantined under one of ``CONTEXT_RULES``."""
    built = {
        name
        for (name,) in con.execute(
            "select table_name from duckdb_tables() where schema_name = 'staging'"
        ).fetchall()
    }
    pattern = "|".join(CONTEXT_RULES)
    files = set()
    for table in CONTRACT:
        if f"base_broker__{table}" in built:
            files |= {
                (table, name)
                for (name,) in con.execute(
                    f"select distinct _source_file from staging.base_broker__{table} "
                    "where regexp_matches(rejection_rules, ?)",
                    [pattern],
                ).fetchall()
            }
    return files


def _scan(source: SourceFile, keep_rejects: bool = False) -> str:
    """The table function reading ``source``'s fields (CSV: all text).

    Malformed CSV lines are skipped, or with ``keep_rejects`` stored in the temp
    tables ``csv_rejects`` and ``csv_reject_scans``.
    """
    if source.format == "parquet":
        return f"read_parquet({_literal(source.path.resolve())})"
    fields = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(source.n_fields))
    errors = (
        "store_rejects = true, rejects_table = 'csv_rejects', rejects_scan = 'csv_reject_scans'"
        if keep_rejects
        else "ignore_errors = true"
    )
    return (
        f"read_csv({_literal(source.path.resolve())}, header = true, auto_detect = false, "
        f"delim = ',', quote = '\"', escape = '\"', columns = {{{fields}}}, {errors})"
    )


def _holds_line_break(source: SourceFile) -> str:
    """SQL true for a CSV row with a line break in a contract value (an unclosed quote)."""
    return " or ".join(
        f"contains(c{p}, chr(10)) or contains(c{p}, chr(13))" for p in source.columns.values()
    )


def _text_values(con: duckdb.DuckDBPyConnection, source: SourceFile) -> dict[str, str]:
    """SQL for each contract column found in ``source``, as the text a CSV would hold."""
    if source.format == "csv":
        return {c: f"c{p}" for c, p in source.columns.items()}
    types = dict(
        con.execute(
            "select column_name, column_type from (describe select * from read_parquet(?))",
            [str(source.path)],
        ).fetchall()
    )
    names = list(types)
    date_columns = CONTRACT[source.table].date_columns
    return {
        c: _parquet_text(f'"{names[p]}"', types[names[p]], c in date_columns)
        for c, p in source.columns.items()
    }


def _create_view(
    con: duckdb.DuckDBPyConnection, table: str, contract: TableContract, sources: list[SourceFile]
) -> None:
    """``raw.<table>``: the contract columns of ``sources`` as text, one select per file."""
    selects = []
    for source in sources:
        value = _text_values(con, source)
        columns = ", ".join(
            f"{value[c]} as {c}" if c in value else f"null::varchar as {c}"
            for c in contract.columns
        )
        selects.append(
            f"select {columns}, {_literal(source.relative)} as _source_file, "
            f"row_number() over () as _source_row from {_scan(source)}"
        )
    if not selects:
        columns = ", ".join(f"null::varchar as {c}" for c in contract.columns)
        selects.append(
            f"select {columns}, null::varchar as _source_file, null::bigint as "
            "_source_row where false"
        )
    is_table = con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'raw' and table_name = ?",
        [table],
    ).fetchall()[0][0]
    if is_table:  # a table of the same name stops create or replace view
        con.execute(f"drop table raw.{table}")
    con.execute(f"create or replace view raw.{table} as\n" + "\nunion all\n".join(selects))


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


#: Files whose bytes are read ahead of the one DuckDB checks (see ``_read_ahead``).
READ_AHEAD_FILES = 2


def _read_ahead(sources: list[SourceFile]) -> Iterator[tuple[SourceFile, Future[bool] | None]]:
    """Each of ``sources`` in order, with whether it holds a quote (None for Parquet).

    A thread reads each CSV file through (``_has_quotes``) up to
    ``READ_AHEAD_FILES`` files ahead of the caller, so the disk reads the next
    files while DuckDB parses this one from the page cache. Files just written
    are cached anyway; files read cold cost a disk pass (525 MB/s here) that
    would otherwise come on top of DuckDB's.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="landing-read-ahead") as reader:

        def look_up(source: SourceFile) -> Future[bool] | None:
            return reader.submit(_has_quotes, source.path) if source.format == "csv" else None

        pending = deque(look_up(source) for source in sources[:READ_AHEAD_FILES])
        for position, source in enumerate(sources):
            if position + READ_AHEAD_FILES < len(sources):
                pending.append(look_up(sources[position + READ_AHEAD_FILES]))
            yield source, pending.popleft()


def _check_file(
    con: duckdb.DuckDBPyConnection, source: SourceFile, quoted: Future[bool] | None
) -> LandedFile:
    """Read ``source`` once: count its rows, keep its malformed lines, stop on whole-file errors.

    ``quoted``: whether the CSV file holds a quote (``_read_ahead``), None for Parquet.
    """
    stat = source.path.stat()
    scan = _scan(source, keep_rejects=True)
    if quoted is not None and quoted.result():
        # a value holding a line break swallowed the lines after it (an unclosed quote)
        query = f"select count(*), count(*) filter (where {_holds_line_break(source)}) from {scan}"
    elif source.format == "csv":  # only a quoted value can hold a line break
        read = ", ".join(f"count(c{i})" for i in range(source.n_fields))  # every field: UTF-8
        query = f"select count(*), 0, {read} from {scan}"
    else:
        query = f"select count(*), 0 from {scan}"
    try:
        rows, broken_rows = con.execute(query).fetchall()[0][:2]
    except duckdb.Error as error:
        raise LandingError(
            f"{source.path} cannot be read as {source.format.upper()}: {_first_line(error)}"
        ) from None
    malformed = 0
    if source.format == "csv":
        malformed = _keep_malformed_lines(con, source)
        if broken_rows:
            raise _unclosed_quote(source, _first_broken_row(con, source))
    return LandedFile(
        source.table,
        source.relative,
        source.format,
        rows,
        malformed,
        stat.st_size,
        stat.st_mtime_ns,
    )


def _has_quotes(path: Path) -> bool:
    """Whether the file holds a double quote anywhere (a byte search, no parsing).

    Reads 16 MB at a time: the read itself lets other threads run.
    """
    chunk = bytearray(1 << 24)
    with path.open("rb", buffering=0) as handle:
        while size := handle.readinto(chunk):
            if chunk.find(b'"', 0, size) != -1:
                return True
    return False


def _first_broken_row(con: duckdb.DuckDBPyConnection, source: SourceFile) -> str:
    """Where the first value holding a line break is (only read when there is one)."""
    row = con.execute(
        f"select min(_row) from (select *, row_number() over () as _row from {_scan(source)}) "
        f"where {_holds_line_break(source)}"
    ).fetchall()[0][0]
    return f"data row {row}"


def _keep_malformed_lines(con: duckdb.DuckDBPyConnection, source: SourceFile) -> int:
    encoding = con.execute(
        "select min(line) from csv_rejects where error_type = 'INVALID ENCODING'"
    ).fetchone()[0]
    if encoding is not None:
        raise LandingError(
            f"{source.path} is not UTF-8 encoded (first bad line {encoding}); re-export it as UTF-8"
        )
    cut = _cut_last_line(con, source)
    if cut is not None:
        raise LandingError(
            f"{source.path} ends in a cut line (line {cut} has no line break after it and "
            "not the header's fields): the file was truncated or is still being copied; "
            "copy it again whole"
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


def _cut_last_line(con: duckdb.DuckDBPyConnection, source: SourceFile) -> int | None:
    """The line number of the file's last line when it is rejected and has no line
    break after it: a file cut mid-line (a truncated or half-copied file), not a
    broken row. A file may well end without a line break; then its last line only
    counts as cut when it does not parse."""
    with source.path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - (1 << 16)))
        tail = handle.read()
    if not tail or tail.endswith(b"\n"):
        return None
    last = tail.rsplit(b"\n", 1)[-1].rstrip(b"\r").decode("utf-8", "replace")
    return con.execute("select max(line) from csv_rejects where csv_line = ?", [last]).fetchone()[0]


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
