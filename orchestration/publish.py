"""Build beside the published warehouse, swap it in whole, and snapshot it to Parquet.

BI tools connect read-only to the published DuckDB file and must never see a
half-written table nor be locked out during a run. DuckDB allows one writing
process per file, and any process holding a file (even read-only) keeps writers
out, so the published file is never written in place:

1. :func:`start_build` copies the published file to ``.build/<run_id>/`` next to
   it (a plain byte copy, consistent because the published file only ever
   changes by being replaced);
2. the run writes to that copy;
3. :func:`publish` moves the finished copy over the published path with
   ``os.replace``, an atomic rename: a reader opening the path gets the old file
   or the new one, never a mix, and readers already connected keep the old file
   (its inode lives on) until they reconnect.

Within one Python process, ``duckdb.connect(path)`` hands back the already open
database while any connection to ``path`` is still open, so a process sees a
newly published file only once all its connections to the old one are closed.

DuckDB 2's own files cannot be read by the older DuckDB versions that BI
drivers bundle, so the published file is written in an older storage format
(:func:`storage_version`, :func:`publish`), and :func:`write_snapshot` also
exports the BI-facing schemas to Parquet behind a stable ``latest`` pointer.

One run at a time: each step removes what an earlier, unfinished run left behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb

from orchestration.config import ConfigError, duckdb_memory_limit

BUILD_DIR = ".build"
MANIFEST = "_manifest.json"
LATEST_LINK = "latest"
LATEST_FILE = "LATEST"


def _connect(database: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection within the job's memory limit (config.duckdb_memory_limit):
    DuckDB's own default, 80 % of the machine, let the storage-format copy and the
    snapshot of a million customers' 24 month-ends take 21 GB; within the limit
    DuckDB spills to disk instead."""
    return duckdb.connect(
        database, read_only=read_only, config={"memory_limit": duckdb_memory_limit()}
    )


class PublishError(RuntimeError):
    """A warehouse file is not in a state that can be copied or published safely."""


def run_build_path(warehouse: Path, run_id: str) -> Path:
    """Where run ``run_id`` builds the warehouse: ``<dir>/.build/<run_id>/<file name>``.

    Same file name as the published file: DuckDB names a file's catalog after its
    stem, and dbt's views refer to that catalog, so the name must survive the move.
    """
    return warehouse.parent / BUILD_DIR / run_id / warehouse.name


#: The DuckDB storage format the warehouse is written in: that of DuckDB 1.0 (file
#: format 64), which every DuckDB since 0.10 reads, so BI tools and CLIs that
#: bundle an older DuckDB than this product's open the published file.
#: TIERS_STORAGE_VERSION overrides it ("latest": this DuckDB's own format).
DEFAULT_STORAGE_VERSION = "v1.0.0"


def storage_version(environ: Mapping[str, str] = os.environ) -> str | None:
    """``TIERS_STORAGE_VERSION`` (a DuckDB version, ``latest``), else the default;
    None for ``latest``."""
    text = (environ.get("TIERS_STORAGE_VERSION") or DEFAULT_STORAGE_VERSION).strip()
    if text.lower() == "latest":
        return None
    if not re.fullmatch(r"v\d+\.\d+\.\d+", text):
        raise ConfigError(
            f"TIERS_STORAGE_VERSION={text!r}: expected a DuckDB version such as v1.0.0, or latest"
        )
    return text


def file_format(database: Path) -> int | None:
    """The storage format number in a DuckDB file's header (64 for DuckDB 0.10 to
    1.1's format), None if the file is not a DuckDB file."""
    with database.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[8:12] != b"DUCK":
        return None
    return int.from_bytes(header[12:20], "little")


def start_build(
    warehouse: Path,
    run_id: str,
    full_refresh: bool = False,
    storage: str | None = DEFAULT_STORAGE_VERSION,
) -> Path:
    """Make the build file for ``run_id``: a copy of the published warehouse, or a
    new empty file.

    Removes everything else under ``.build/`` (builds of older runs that failed or
    were killed, and an earlier attempt of this run). Without ``full_refresh`` the
    published file, when there is one, is copied so incremental models only add
    what is new; with it, or on the first run, the build starts from an empty file.
    The build is written in the ``storage`` format (a DuckDB version, None: this
    DuckDB's), which DuckDB keeps for every later write to the file: a published
    file in another format (one written before this setting) is converted once,
    by copying its database into a new file. Returns the build file's path.
    """
    build = run_build_path(warehouse, run_id)
    builds = build.parent.parent
    if builds.is_dir():
        for old in builds.iterdir():
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
    build.parent.mkdir(parents=True)
    if not warehouse.exists() or full_refresh:
        _create(build, storage)
        return build
    if _wal(warehouse).exists():
        # Only a writer (or one that crashed) leaves a log; the file may be mid-checkpoint.
        raise PublishError(
            f"{warehouse} has a write-ahead log {_wal(warehouse).name}: something opened "
            "the published file for writing. Close it (a crashed writer's log is replayed "
            "by opening the file once with duckdb) and run again."
        )
    _create(build, storage)
    if file_format(warehouse) == file_format(build):
        shutil.copyfile(warehouse, build)
    else:  # another storage format: copy the database into the new file
        with _connect() as con:
            con.execute(f"attach {_literal(str(warehouse))} as published (read_only)")
            con.execute(f"attach {_literal(str(build))} as build")
            con.execute("copy from database published to build")
    return build


def _create(database: Path, storage: str | None) -> None:
    """An empty DuckDB file in the ``storage`` format (None: this DuckDB's own)."""
    options = f" (storage_version {_literal(storage)})" if storage else ""
    with duckdb.connect() as con:
        try:
            con.execute(f"attach {_literal(str(database))} as new_build{options}")
        except duckdb.Error as error:
            raise ConfigError(f"TIERS_STORAGE_VERSION={storage}: {error}") from None


def publish(build: Path, warehouse: Path, storage: str | None = None) -> None:
    """Move the finished ``build`` file over ``warehouse`` atomically, then drop its folder.

    With ``storage`` (a DuckDB version), what is moved is a fresh copy of the build's
    database in that storage format: DuckDB 2 writing into an older-format file
    run after run leaves metadata that DuckDB 1.1 cannot load (tested), while a
    file written in one pass reads there. The copy costs one pass over the
    warehouse per publish.

    The caller closes every connection to ``build`` first: DuckDB checkpoints the
    write-ahead log into the file and deletes the log when the last connection
    closes. A log still next to the build means a connection is open or a writer
    died; publishing would lose what is only in the log, so this raises
    :class:`PublishError` instead and leaves both files untouched.
    """
    if _wal(build).exists():
        raise PublishError(
            f"{build} still has a write-ahead log {_wal(build).name}: close every "
            "connection to the build before publishing it"
        )
    if storage:
        fresh = build.with_name(f"fresh-{build.name}")
        fresh.unlink(missing_ok=True)
        _create(fresh, storage)
        with _connect() as con:
            # the rows keep their order: without it the copy was a tenth faster at 100k,
            # but the next run summed the same doubles in another order (last digits)
            con.execute(f"attach {_literal(str(build))} as build (read_only)")
            con.execute(f"attach {_literal(str(fresh))} as fresh")
            con.execute("copy from database build to fresh")
        build = fresh
    os.replace(build, warehouse)
    _fsync_dir(warehouse.parent)
    shutil.rmtree(build.parent, ignore_errors=True)


def snapshot_root(warehouse: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Folder of the Parquet snapshots for ``warehouse``.

    The ``TIERS_SNAPSHOT_DIR`` environment variable when set, else ``snapshots/``
    beside the warehouse file.
    """
    configured = environ.get("TIERS_SNAPSHOT_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return warehouse.parent / "snapshots"


def write_snapshot(
    warehouse: Path,
    snapshot_root: Path,
    run_id: str,
    schemas: Iterable[str] = ("tiers", "marts"),
    keep: int = 12,
    point: bool = True,
) -> Path:
    """Export every table of ``schemas`` to Parquet and point ``latest`` at it
    (with ``point=False`` the complete folder is left for :func:`point_latest`).

    Views are left out: they are queries over the warehouse (``marts.fct_trades``,
    ``marts.fct_fees`` and ``marts.fct_customer_monthly_activity`` read every staged
    trade and fee or every customer month, 100 million rows at a million
    customers), so exporting them would cost more than the run itself.

    The tables with a row per customer and month-end (:data:`MONTH_PARTITIONED`,
    when they have an ``as_of_date``) are written one file per month-end, and a
    month-end whose rows are the same as in the previous snapshot (same rows,
    columns and fingerprint, the ``bit_xor`` of the rows' hashes) is hard-linked
    from it rather than written again: a monthly run writes the new month-end and
    those it re-graded.

    Layout under ``snapshot_root`` (by default :func:`snapshot_root`, which the
    ``TIERS_SNAPSHOT_DIR`` environment variable overrides)::

        <run_id>/<schema>/<table>.parquet   one Snappy-compressed file per table, or
        <run_id>/<schema>/<table>/<YYYY-MM-DD>.parquet   one per month-end (MONTH_PARTITIONED)
        <run_id>/_manifest.json             run_id, created_at (UTC), each table's row
                                            count, and each month-end's file, rows and
                                            fingerprint
        latest -> <run_id>                  relative symlink to the newest complete snapshot
        LATEST                              the newest run folder's name, for tools
                                            that do not follow symlinks

    The run folder is written under a hidden temporary name and renamed into place
    when complete, then ``latest`` and ``LATEST`` are each swapped with
    ``os.replace``, so a reader that resolves ``latest`` (or reads ``LATEST``) once
    and reads from that folder always gets one complete snapshot. The newest
    ``keep`` run folders are kept (by ``created_at``), older ones deleted, never
    the one ``latest`` points to.

    ``warehouse`` (the published file or a closed build) is opened read-only; no
    connection of this process may hold it open for writing. Raises
    :class:`PublishError` when a schema has nothing to export, rather than
    pointing BI at a snapshot missing it, and ``FileExistsError`` when a
    snapshot of ``run_id`` already exists.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    schemas = tuple(schemas)
    run_dir = snapshot_root / run_id
    if run_dir.exists():
        raise FileExistsError(f"a snapshot of run {run_id} already exists at {run_dir}")
    staging = snapshot_root / f".tmp-{run_id}"
    shutil.rmtree(staging, ignore_errors=True)
    created_at = dt.datetime.now(dt.UTC).isoformat()

    previous_dir = _latest_complete(snapshot_root)
    previous = _manifest_partitions(previous_dir)
    tables = []
    with _connect(str(warehouse), read_only=True) as con:
        # the tables have no row order to keep; without one DuckDB writes the row
        # groups of a file in parallel (a third faster at a million customers)
        con.execute("set preserve_insertion_order = false")
        found = con.execute(
            """select table_schema, table_name from information_schema.tables
               where table_catalog = current_database()
                 and table_type = 'BASE TABLE'
                 and list_contains(?, table_schema)
               order by table_schema, table_name""",
            [list(schemas)],
        ).fetchall()
        missing = sorted(set(schemas) - {schema for schema, _ in found})
        if missing:
            raise PublishError(f"{warehouse} has no tables in schema(s) {missing}")
        for schema in schemas:
            (staging / schema).mkdir(parents=True)
        for schema, table in found:
            columns = _columns(con, schema, table)
            if (schema, table) in MONTH_PARTITIONED and "as_of_date" in dict(columns):
                tables.append(
                    _write_by_month(con, schema, table, columns, staging, previous_dir, previous)
                )
                continue
            file = Path(schema) / f"{table}.parquet"
            # Snappy: every Parquet reader has it, and at a million customers it
            # writes customer_indicators in half zstd's time, files a quarter larger
            (rows,) = con.execute(
                f"copy (select * from {_ident(schema)}.{_ident(table)}) "
                f"to {_literal(str(staging / file))} (format parquet, compression snappy)"
            ).fetchone()
            tables.append({"schema": schema, "table": table, "file": file.as_posix(), "rows": rows})

    manifest = {"run_id": run_id, "created_at": created_at, "tables": tables}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    staging.rename(run_dir)
    if point:
        point_latest(snapshot_root, run_id, keep)
    return run_dir


#: Tables the snapshot writes one file per month-end (``as_of_date``): those with a
#: row per customer (or proposed move) and month-end, which a monthly run only adds
#: to, or re-grades from a month-end on.
MONTH_PARTITIONED = frozenset(
    {
        ("marts", "customer_indicators"),
        ("marts", "customer_service_book"),
        ("marts", "manager_reassignments"),
        ("tiers", "customer_assignments"),
        ("tiers", "customer_factor_scores"),
        ("tiers", "customer_scores"),
        ("tiers", "customer_tier_history"),
    }
)


def _latest_complete(snapshot_root: Path) -> Path | None:
    """The folder of the snapshot ``LATEST`` names, if it is complete."""
    run_id = latest_snapshot(snapshot_root) if snapshot_root.is_dir() else None
    folder = snapshot_root / run_id if run_id else None
    return folder if folder is not None and (folder / MANIFEST).is_file() else None


def _manifest_partitions(folder: Path | None) -> dict[tuple[str, str], dict[str, dict]]:
    """``(schema, table) -> {month-end: partition entry}`` of a snapshot's manifest."""
    if folder is None:
        return {}
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return {
        (entry["schema"], entry["table"]): {p["as_of_date"]: p for p in entry["partitions"]}
        for entry in manifest["tables"]
        if "partitions" in entry
    }


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[tuple[str, str]]:
    """``(name, type)`` of each column of ``schema.table``, in order."""
    return con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_catalog = current_database() and table_schema = ? and table_name = ? "
        "order by ordinal_position",
        [schema, table],
    ).fetchall()


def _write_by_month(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    table: str,
    columns: list[tuple[str, str]],
    staging: Path,
    previous_dir: Path | None,
    previous: dict[tuple[str, str], dict[str, dict]],
) -> dict:
    """Write ``schema.table`` (its ``columns``) one file per month-end into ``staging``,
    linking the month-ends unchanged since the previous snapshot; its manifest entry."""
    relation = f"{_ident(schema)}.{_ident(table)}"
    layout = hashlib.sha256(repr(columns).encode()).hexdigest()[:16]
    # one pass over the table: rows and the bit_xor of the rows' hashes per month-end;
    # DuckDB hashes a row by xor-ing its fields' hashes, hashed again to mix them (else
    # a column changed alike in an even number of rows would cancel out)
    found = con.execute(
        f"select strftime(t.as_of_date, '%Y-%m-%d'), count(*), bit_xor(hash(hash(t))) "
        f"from {relation} as t group by 1 order by 1"
    ).fetchall()
    if any(month is None for month, *_ in found):
        raise PublishError(f"{schema}.{table} has rows without an as_of_date")
    folder = staging / schema / table
    folder.mkdir(parents=True)
    before = previous.get((schema, table), {})
    partitions, changed = [], []
    for month, rows, digest in found:
        fingerprint = f"{digest:016x}-{layout}"
        file = Path(schema) / table / f"{month}.parquet"
        partitions.append(
            {"as_of_date": month, "file": file.as_posix(), "rows": rows, "fingerprint": fingerprint}
        )
        old = before.get(month)
        if (
            previous_dir is not None
            and old is not None
            and (old["rows"], old["fingerprint"]) == (rows, fingerprint)
            and (previous_dir / old["file"]).is_file()
        ):
            _link_or_copy(previous_dir / old["file"], staging / file)
        else:
            changed.append(month)
    if changed:
        # one pass writes every changed month-end: DuckDB's partitioned write, into
        # as_of_date=<day>/ folders, then each file renamed to <day>.parquet
        written = staging / f".{schema}.{table}"
        months = ", ".join(f"date {_literal(month)}" for month in changed)
        con.execute(
            f"copy (select * from {relation} where as_of_date in ({months})) "
            f"to {_literal(str(written))} (format parquet, compression snappy, "
            "partition_by (as_of_date), write_partition_columns true)"
        )
        for month in changed:
            parts = sorted((written / f"as_of_date={month}").glob("*.parquet"))
            if len(parts) != 1:
                raise PublishError(
                    f"{schema}.{table}: DuckDB wrote {len(parts)} files for {month}, expected 1"
                )
            parts[0].rename(folder / f"{month}.parquet")
        shutil.rmtree(written)
    return {
        "schema": schema,
        "table": table,
        "rows": sum(p["rows"] for p in partitions),
        "partitioned_by": "as_of_date",
        "files": f"{schema}/{table}/*.parquet",
        "partitions": partitions,
        "written": len(changed),
    }


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (the file is never written again), or a copy where links fail."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def point_latest(snapshot_root: Path, run_id: str, keep: int = 12) -> None:
    """Point ``latest`` and ``LATEST`` at the complete snapshot of ``run_id``, then
    prune (the newest ``keep`` folders stay)."""
    link_tmp = snapshot_root / f".{LATEST_LINK}.tmp"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(run_id, target_is_directory=True)
    os.replace(link_tmp, snapshot_root / LATEST_LINK)
    file_tmp = snapshot_root / f".{LATEST_FILE}.tmp"
    file_tmp.write_text(run_id + "\n", encoding="utf-8")
    os.replace(file_tmp, snapshot_root / LATEST_FILE)
    _fsync_dir(snapshot_root)
    _prune(snapshot_root, keep, current=run_id)


def latest_snapshot(snapshot_root: Path) -> str | None:
    """The run id ``LATEST`` names, None before the first snapshot."""
    latest = snapshot_root / LATEST_FILE
    return latest.read_text(encoding="utf-8").strip() if latest.is_file() else None


def record_publication(build: Path, run_id: str) -> None:
    """Write ``audit.publication`` into ``build``: the run it is, so a reader can
    tell whether the DuckDB file and ``snapshots/LATEST`` come from the same run."""
    with duckdb.connect(str(build)) as con:
        con.execute("create schema if not exists audit")
        con.execute(
            "create or replace table audit.publication as select ?::varchar as run_id, "
            "now()::timestamp as published_at",
            [run_id],
        )


def _prune(snapshot_root: Path, keep: int, current: str) -> None:
    """Delete run folders beyond the newest ``keep`` and leftovers of unfinished snapshots."""
    runs = []
    for folder in snapshot_root.iterdir():
        if folder.is_symlink() or not folder.is_dir():
            continue
        if folder.name.startswith(".tmp-"):
            shutil.rmtree(folder, ignore_errors=True)
        elif (folder / MANIFEST).is_file():
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            runs.append((dt.datetime.fromisoformat(manifest["created_at"]), folder.name, folder))
    runs.sort(reverse=True)
    for _, name, folder in runs[keep:]:
        if name != current:
            shutil.rmtree(folder, ignore_errors=True)


def _wal(database: Path) -> Path:
    return database.with_name(database.name + ".wal")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
