"""Building beside the published warehouse, swapping it in, and Parquet snapshots for BI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from orchestration.config import ConfigError
from orchestration.publish import (
    PublishError,
    file_format,
    publish,
    run_build_path,
    snapshot_root,
    start_build,
    storage_version,
    write_snapshot,
)

ROWS = 5_000  # rows of each version of tiers.customer_tiers
TIMEOUT_S = 60  # generous: the machine may be loaded; nothing here is timed


def write_version(database: Path, version: int) -> None:
    """Replace the tier tables with ``version``: every row has ``v = version``, so a
    half-written table shows a wrong count or mixed values."""
    with duckdb.connect(str(database)) as con:
        con.execute("create schema if not exists tiers")
        con.execute("create schema if not exists marts")
        con.execute(
            f"""create or replace table tiers.customer_tiers as
                select i as customer_id, {version} as v from range({ROWS}) as r(i);
                create or replace table tiers.service_plans as
                select i as tier_rank, {version} as v from range(6) as r(i);
                create or replace table marts.customer_indicators as
                select i as customer_id, {version} as v from range({2 * ROWS}) as r(i);
                create or replace view marts.vip_customers as
                select * from tiers.customer_tiers where customer_id < 100"""
        )


EXPECTED_ROWS = {
    "tiers/customer_tiers.parquet": ROWS,
    "tiers/service_plans.parquet": 6,
    "marts/customer_indicators.parquet": 2 * ROWS,
}  # not the view marts.vip_customers: views stay in the warehouse


def versions(database: Path) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute("select count(*), min(v), max(v) from tiers.customer_tiers").fetchall()


def release(warehouse: Path, run_id: str, version: int) -> None:
    """One run that succeeds: build on a copy, write ``version``, publish."""
    build = start_build(warehouse, run_id)
    write_version(build, version)
    publish(build, warehouse)


@pytest.fixture
def warehouse(tmp_path) -> Path:
    """A published warehouse holding version 0."""
    path = tmp_path / "data" / "warehouse.duckdb"
    release(path, "run-0", 0)
    return path


# -- build and publish -------------------------------------------------------------------


def test_run_build_path_keeps_the_file_name(tmp_path):
    warehouse = tmp_path / "data" / "warehouse.duckdb"
    assert run_build_path(warehouse, "abc") == tmp_path / "data" / ".build" / "abc" / (
        "warehouse.duckdb"
    )


def test_start_build_copies_the_published_file(warehouse):
    build = start_build(warehouse, "run-1")
    assert build == run_build_path(warehouse, "run-1")
    assert build.read_bytes() == warehouse.read_bytes()
    assert versions(build) == [(ROWS, 0, 0)]


def test_full_refresh_and_first_run_start_from_an_empty_file(warehouse, tmp_path):
    build = start_build(warehouse, "run-1", full_refresh=True)
    first = start_build(tmp_path / "new" / "warehouse.duckdb", "run-1")
    for empty in (build, first):
        with duckdb.connect(str(empty), read_only=True) as con:
            assert con.execute("select count(*) from duckdb_tables()").fetchone() == (0,)
        assert file_format(empty) == OLD_FORMAT


#: the storage format DuckDB 0.10 to 1.1 write and every later DuckDB reads
OLD_FORMAT = 64


def test_a_warehouse_in_the_newest_format_is_converted_once(tmp_path):
    """A warehouse published before the storage setting (DuckDB 2's own format) is
    copied into the older format by the next build; later builds copy it as is."""
    warehouse = tmp_path / "data" / "warehouse.duckdb"
    build = start_build(warehouse, "run-0", storage=None)
    write_version(build, 3)
    publish(build, warehouse)
    assert file_format(warehouse) != OLD_FORMAT

    converted = start_build(warehouse, "run-1")
    assert file_format(converted) == OLD_FORMAT and versions(converted) == [(ROWS, 3, 3)]
    with duckdb.connect(str(converted), read_only=True) as con:  # the view came along
        assert con.execute("select count(*) from marts.vip_customers").fetchone() == (100,)
    publish(converted, warehouse)
    assert start_build(warehouse, "run-2").read_bytes() == warehouse.read_bytes()


def test_a_bad_storage_version_is_a_setting_error():
    with pytest.raises(ConfigError, match="TIERS_STORAGE_VERSION='1.0'"):
        storage_version({"TIERS_STORAGE_VERSION": "1.0"})
    assert storage_version({"TIERS_STORAGE_VERSION": "latest"}) is None
    assert storage_version({}) == "v1.0.0"


def test_an_older_duckdb_reads_the_published_warehouse(graded):
    """DuckDB 1.1.3 (as BI tools bundle; installed by make setup) opens the published
    file and reads the tiers, the marts and a view, with the answers of this DuckDB."""
    warehouse = graded[0]
    old_duckdb = Path(sys.prefix) / "old-duckdb"
    assert (old_duckdb / "duckdb").is_dir(), "make setup installs DuckDB 1.1.3 there"
    queries = [
        "select tier, count(*) from tiers.customer_tiers group by tier order by tier",
        "select count(*), sum(trade_count) from marts.customer_indicators",
        "select count(*) from marts.fct_trades",  # a view
        "select count(*) from tiers.customer_tier_history",
    ]
    script = (
        "import duckdb, json, sys\n"
        "con = duckdb.connect(sys.argv[1], read_only=True)\n"
        "print(json.dumps([duckdb.__version__] + "
        "[con.execute(q).fetchall() for q in sys.argv[2:]], default=str))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(warehouse), *queries],
        env={**os.environ, "PYTHONPATH": str(old_duckdb)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    version, *answers = json.loads(done.stdout)
    assert version == "1.1.3"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        expected = [con.execute(q).fetchall() for q in queries]
    assert answers == json.loads(json.dumps(expected, default=str))


def test_start_build_removes_builds_of_older_runs(warehouse):
    stale = start_build(warehouse, "killed-run")
    write_version(stale, 99)
    legacy = warehouse.parent / ".build" / warehouse.name  # a build file straight in .build/
    legacy.write_bytes(b"left over")

    build = start_build(warehouse, "run-1")

    assert sorted(p.name for p in build.parent.parent.iterdir()) == ["run-1"]
    assert versions(build) == [(ROWS, 0, 0)]


def test_start_build_refuses_a_published_file_open_for_writing(warehouse):
    con = duckdb.connect(str(warehouse))  # someone writing to the published file in place
    try:
        con.execute("create table tiers.scratch as select 1 as v")
        with pytest.raises(PublishError, match="write-ahead log"):
            start_build(warehouse, "run-1")
    finally:
        con.close()
    assert versions(start_build(warehouse, "run-1")) == [(ROWS, 0, 0)]


def test_publish_replaces_the_published_file(warehouse):
    before = warehouse.read_bytes()
    build = start_build(warehouse, "run-1")
    write_version(build, 1)

    publish(build, warehouse)

    assert versions(warehouse) == [(ROWS, 1, 1)]
    assert warehouse.read_bytes() != before
    assert not build.parent.exists()
    assert list((warehouse.parent / ".build").iterdir()) == []


def test_publish_refuses_a_build_with_an_open_connection(warehouse):
    before = warehouse.read_bytes()
    build = start_build(warehouse, "run-1")
    con = duckdb.connect(str(build))
    try:
        con.execute(
            f"create or replace table tiers.customer_tiers as select 1 as v from range({ROWS})"
        )
        with pytest.raises(PublishError, match="write-ahead log"):
            publish(build, warehouse)
    finally:
        con.close()
    assert warehouse.read_bytes() == before

    publish(build, warehouse)  # once closed, the log is checkpointed into the file
    assert versions(warehouse) == [(ROWS, 1, 1)]


def test_failed_build_leaves_the_published_file_byte_identical(warehouse):
    before = warehouse.read_bytes()
    with pytest.raises(RuntimeError, match="dbt failed"):
        build = start_build(warehouse, "run-1")
        write_version(build, 1)
        raise RuntimeError("dbt failed")

    assert warehouse.read_bytes() == before
    assert versions(warehouse) == [(ROWS, 0, 0)]
    assert versions(build) == [(ROWS, 1, 1)]  # kept for a post-mortem until the next run
    start_build(warehouse, "run-2")
    assert not build.parent.exists()


# -- BI readers while runs publish -------------------------------------------------------

READER = """
import json, os, sys, time
import duckdb

path, stop, reconnect_every = sys.argv[1], sys.argv[2], int(sys.argv[3])
query = "select count(*), min(v), max(v) from tiers.customer_tiers"

def report(**fields):
    print(json.dumps(fields), flush=True)

con = duckdb.connect(path, read_only=True)
report(event="ready")
i = 0
while not os.path.exists(stop):
    i += 1
    try:
        if reconnect_every and i % reconnect_every == 0:
            con.close()
            con = duckdb.connect(path, read_only=True)
        count, low, high = con.execute(query).fetchone()
        report(event="read", count=count, low=low, high=high)
    except Exception as error:
        report(event="error", error=f"{type(error).__name__}: {error}")
    time.sleep(0.002)
con.close()
report(event="done")
"""


class ReaderProcess:
    """A separate process querying the published warehouse read-only until told to stop."""

    def __init__(self, warehouse: Path, stop: Path, reconnect_every: int):
        self.events: list[dict] = []
        self.changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-c", READER, str(warehouse), str(stop), str(reconnect_every)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.collector = threading.Thread(target=self._collect, daemon=True)
        self.collector.start()

    def _collect(self) -> None:
        for line in self.process.stdout:
            with self.changed:
                self.events.append(json.loads(line))
                self.changed.notify_all()

    def wait_for(self, condition) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: condition(self.events), timeout=TIMEOUT_S):
                raise AssertionError(
                    f"reader timed out (exit code {self.process.poll()}), "
                    f"last events {self.events[-3:]}"
                )

    def reads(self) -> list[dict]:
        return [e for e in self.events if e["event"] == "read"]

    def finish(self) -> str:
        self.process.wait(timeout=TIMEOUT_S)
        self.collector.join(timeout=TIMEOUT_S)
        return self.process.stderr.read()


def test_readers_never_fail_nor_see_half_a_version_while_runs_publish(warehouse, tmp_path):
    """BI tools keep reading while ten runs build and publish.

    Two reader processes: one reconnects every few queries, one holds its first
    connection for the whole test. (They are separate processes because within
    one process duckdb.connect returns the already open database while any
    connection to the path is open, so the reconnects would never see new files.)
    """
    stop = tmp_path / "stop"
    reconnecting = ReaderProcess(warehouse, stop, reconnect_every=3)
    holding = ReaderProcess(warehouse, stop, reconnect_every=0)
    try:
        for reader in (reconnecting, holding):
            reader.wait_for(lambda events: any(e["event"] == "read" for e in events))

        for version in range(1, 11):
            # The holder has the published file open; the run must go through regardless.
            release(warehouse, f"run-{version}", version)
            reconnecting.wait_for(lambda events, v=version: any(e.get("low") == v for e in events))
        reads_by_holder = len(holding.reads())  # it keeps reading after the last publish
        holding.wait_for(
            lambda events: sum(e["event"] == "read" for e in events) > reads_by_holder + 3
        )
        assert holding.process.poll() is None, "the holding reader died"
    finally:
        stop.touch()
        stderr = [reader.finish() for reader in (reconnecting, holding)]

    for reader, err in zip((reconnecting, holding), stderr, strict=True):
        assert reader.process.returncode == 0, err
        assert [e for e in reader.events if e["event"] == "error"] == []
        assert reader.events[-1] == {"event": "done"}
        assert all(r["count"] == ROWS and r["low"] == r["high"] for r in reader.reads())

    seen = [r["low"] for r in reconnecting.reads()]
    assert set(seen) == set(range(11))
    assert seen == sorted(seen), "a reconnecting reader went back to an older version"
    # The holder keeps reading the file it opened; its inode outlives the replace.
    assert {r["low"] for r in holding.reads()} == {0}
    assert versions(warehouse) == [(ROWS, 10, 10)]


# -- Parquet snapshots -------------------------------------------------------------------


def parquet_counts(folder: Path) -> dict[str, tuple]:
    """``(rows, min v, max v)`` of every Parquet file under ``folder``, by relative path."""
    with duckdb.connect() as con:
        return {
            p.relative_to(folder).as_posix(): con.execute(
                "select count(*), min(v), max(v) from read_parquet(?)", [str(p)]
            ).fetchone()
            for p in sorted(folder.rglob("*.parquet"))
        }


def test_snapshot_root_defaults_beside_the_warehouse(tmp_path):
    warehouse = tmp_path / "data" / "warehouse.duckdb"
    assert snapshot_root(warehouse, {}) == tmp_path / "data" / "snapshots"
    assert snapshot_root(warehouse, {"TIERS_SNAPSHOT_DIR": str(tmp_path / "bi")}) == (
        tmp_path / "bi"
    )


def test_write_snapshot_exports_every_table_but_no_view(warehouse, tmp_path):
    root = tmp_path / "snapshots"
    run_dir = write_snapshot(warehouse, root, "run-0")

    assert run_dir == root / "run-0"
    assert parquet_counts(run_dir) == {file: (rows, 0, 0) for file, rows in EXPECTED_ROWS.items()}
    manifest = json.loads((run_dir / "_manifest.json").read_text())
    assert manifest["run_id"] == "run-0" and manifest["created_at"]
    assert {t["file"]: t["rows"] for t in manifest["tables"]} == EXPECTED_ROWS
    assert os.readlink(root / "latest") == "run-0"
    assert (root / "LATEST").read_text().strip() == "run-0"
    assert sorted(p.name for p in root.iterdir()) == ["LATEST", "latest", "run-0"]


def test_write_snapshot_compresses_with_snappy_which_every_parquet_reader_has(warehouse, tmp_path):
    run_dir = write_snapshot(warehouse, tmp_path / "snapshots", "run-0")

    with duckdb.connect() as con:
        codecs = con.execute(
            "select distinct compression from parquet_metadata(?)", [str(run_dir / "**/*.parquet")]
        ).fetchall()
    assert codecs == [("SNAPPY",)]


def test_write_snapshot_moves_latest_and_prunes_old_runs(warehouse, tmp_path):
    root = tmp_path / "snapshots"
    for version in range(5):
        if version:
            release(warehouse, f"run-{version}", version)
        write_snapshot(warehouse, root, f"run-{version}", keep=2)

    assert sorted(p.name for p in root.iterdir()) == ["LATEST", "latest", "run-3", "run-4"]
    assert (root / "latest").resolve() == (root / "run-4").resolve()
    assert (root / "LATEST").read_text().strip() == "run-4"
    assert parquet_counts(root / "latest")["tiers/customer_tiers.parquet"] == (ROWS, 4, 4)


def write_months(database: Path, months: dict[str, int]) -> None:
    """marts.customer_indicators with 100 customers per month-end, ``v`` per month-end."""
    rows = " union all ".join(
        f"select i as customer_id, date '{month}' as as_of_date, {v} as v from range(100) r(i)"
        for month, v in months.items()
    )
    with duckdb.connect(str(database)) as con:
        con.execute("create schema if not exists tiers")
        con.execute("create or replace table tiers.customer_tiers as select 1 as v")
        con.execute("create schema if not exists marts")
        con.execute(f"create or replace table marts.customer_indicators as {rows}")


def test_a_snapshot_writes_only_the_month_ends_that_changed(tmp_path):
    warehouse, root = tmp_path / "warehouse.duckdb", tmp_path / "snapshots"
    write_months(warehouse, {"2026-08-31": 1, "2026-09-30": 1})
    first = write_snapshot(warehouse, root, "run-1")
    # a monthly run: October is new, September re-graded, August as it was
    write_months(warehouse, {"2026-08-31": 1, "2026-09-30": 2, "2026-10-31": 3})
    second = write_snapshot(warehouse, root, "run-2")

    folder = Path("marts/customer_indicators")
    assert parquet_counts(second) == {
        "tiers/customer_tiers.parquet": (1, 1, 1),
        f"{folder}/2026-08-31.parquet": (100, 1, 1),
        f"{folder}/2026-09-30.parquet": (100, 2, 2),
        f"{folder}/2026-10-31.parquet": (100, 3, 3),
    }

    def same_file(month: str) -> bool:
        return (first / folder / f"{month}.parquet").samefile(second / folder / f"{month}.parquet")

    assert same_file("2026-08-31") and not same_file("2026-09-30")
    (entry,) = [
        t
        for t in json.loads((second / "_manifest.json").read_text())["tables"]
        if t["table"] == "customer_indicators"
    ]
    assert entry["rows"] == 300 and entry["written"] == 2
    assert [p["as_of_date"] for p in entry["partitions"]] == [
        "2026-08-31",
        "2026-09-30",
        "2026-10-31",
    ]
    # the month-end files read as one table, the month-end in every row
    with duckdb.connect() as con:
        assert con.execute(
            "select count(*), count(distinct as_of_date) from read_parquet(?)",
            [str(root / "latest" / folder / "*.parquet")],
        ).fetchone() == (300, 3)
    # a new column changes every month-end's fingerprint: all are written again
    with duckdb.connect(str(warehouse)) as con:
        con.execute("alter table marts.customer_indicators add column note varchar")
    third = write_snapshot(warehouse, root, "run-3")
    assert not (first / folder / "2026-08-31.parquet").samefile(
        third / folder / "2026-08-31.parquet"
    )


def test_write_snapshot_refuses_a_missing_schema_and_keeps_latest(warehouse, tmp_path):
    root = tmp_path / "snapshots"
    write_snapshot(warehouse, root, "run-0")

    with pytest.raises(PublishError, match="audit"):
        write_snapshot(warehouse, root, "run-1", schemas=("tiers", "audit"))
    with pytest.raises(FileExistsError):
        write_snapshot(warehouse, root, "run-0")

    assert os.readlink(root / "latest") == "run-0"
    assert (root / "LATEST").read_text().strip() == "run-0"
    assert not (root / "run-1").exists()


def test_readers_through_latest_always_see_a_complete_snapshot(warehouse, tmp_path):
    root = tmp_path / "snapshots"
    write_snapshot(warehouse, root, "run-0")
    observed: list[set[int]] = []  # the versions each complete read saw (one each time)
    problems: list[str] = []
    stop = threading.Event()

    def read_latest() -> None:
        with duckdb.connect() as con:
            while not stop.is_set():
                try:
                    # Resolve the pointer once, then read the whole set from that folder.
                    run_dir = root / (root / "LATEST").read_text().strip()
                    manifest = json.loads((run_dir / "_manifest.json").read_text())
                    files = {t["file"]: t["rows"] for t in manifest["tables"]}
                    if files != EXPECTED_ROWS:
                        problems.append(f"{run_dir.name}: manifest lists {files}")
                    seen = set()
                    for file, rows in files.items():
                        count, low, high = con.execute(
                            "select count(*), min(v), max(v) from read_parquet(?)",
                            [str(run_dir / file)],
                        ).fetchone()
                        if count != rows or low != high:
                            problems.append(f"{run_dir.name}/{file}: {count} rows, v {low}..{high}")
                        seen.add(low)
                    # A single file read straight through the symlink is complete too.
                    count, low, high = con.execute(
                        "select count(*), min(v), max(v) from read_parquet(?)",
                        [str(root / "latest" / "tiers" / "customer_tiers.parquet")],
                    ).fetchone()
                    if count != ROWS or low != high:
                        problems.append(
                            f"latest/tiers/customer_tiers: {count} rows, v {low}..{high}"
                        )
                    observed.append(seen)
                except Exception as error:  # any failure to read is what this test catches
                    problems.append(f"{type(error).__name__}: {error}")

    reader = threading.Thread(target=read_latest, daemon=True)
    reader.start()
    try:
        for version in range(1, 6):
            release(warehouse, f"run-{version}", version)
            write_snapshot(warehouse, root, f"run-{version}", keep=3)
            deadline = time.monotonic() + TIMEOUT_S
            while {version} not in observed and not problems and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()
        reader.join(timeout=TIMEOUT_S)

    assert problems == []
    assert all(len(seen) == 1 for seen in observed)
    assert {5} in observed


def _files_held(path: Path) -> list[str]:
    """The files under ``path``'s name this process holds open, '(deleted)' when replaced."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(path)):
            held.append(target)
    return held


def test_a_pooled_bi_client_with_nullpool_reads_each_publish(warehouse):
    """SQLAlchemy with duckdb-engine, as BI tools connect: read-only and without a
    pool (NullPool), every query opens the file as published now and nothing keeps
    a replaced file open; the default pool keeps reading the file it opened."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    url = f"duckdb:///{warehouse}?access_mode=read_only"
    query = sa.text("select min(v), count(*) from tiers.customer_tiers")
    fresh = sa.create_engine(url, poolclass=NullPool)
    with fresh.connect() as con:
        assert con.execute(query).one() == (0, ROWS)
        with pytest.raises(sa.exc.SQLAlchemyError, match="read-only"):
            con.execute(sa.text("create table tiers.scratch as select 1"))
    pooled = sa.create_engine(url)  # QueuePool: connections outlive a publish
    with pooled.connect() as con:
        assert con.execute(query).one() == (0, ROWS)
    release(warehouse, "run-1", 1)
    with pooled.connect() as con:
        assert con.execute(query).one() == (0, ROWS)  # the old file, still open
    assert _files_held(warehouse) == [f"{warehouse} (deleted)"]
    # within one process DuckDB hands new connections the database still open,
    # so the pooled engine must let go first (a BI server has one engine per URI)
    pooled.dispose()
    with fresh.connect() as con:
        assert con.execute(query).one() == (1, ROWS)
    release(warehouse, "run-2", 2)
    assert _files_held(warehouse) == []
    with fresh.connect() as con:
        assert con.execute(query).one() == (2, ROWS)
