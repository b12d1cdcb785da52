"""The job, in-process: land the raw files, build the dbt project, publish the warehouse.

The warehouse is built in ``.build/`` next to the published file, starting from a
copy of the published file so that incremental models (the month-ends of
``marts.customer_indicators``) only add what is new, and moved over the published
file with ``os.replace`` only when every step (and every dbt test) passed. A
failed run leaves the published file as it was, and readers holding the
published file open keep reading the old one until they reconnect.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from orchestration.config import DBT_PROJECT_DIR, Settings
from orchestration.landing import discover, land


class PipelineError(RuntimeError):
    """A step failed; the published warehouse was left untouched."""


@dataclass(frozen=True)
class RunResult:
    load_id: str
    warehouse: Path


def new_load_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def build_path(warehouse: Path) -> Path:
    """Where a run builds the warehouse before publishing it.

    Same file name as the published file: DuckDB names a file's catalog after
    it, and dbt's views refer to that catalog, so the name must survive the move.
    """
    return warehouse.parent / ".build" / warehouse.name


def start_build(warehouse: Path, full_refresh: bool) -> Path:
    """A build file to run on: a copy of the published warehouse, or a new file.

    The published file is only ever replaced, never written in place, so a copy
    taken while readers hold it open is consistent.
    """
    build = build_path(warehouse)
    shutil.rmtree(build.parent, ignore_errors=True)
    build.parent.mkdir(parents=True)
    if warehouse.exists() and not full_refresh:
        shutil.copyfile(warehouse, build)
    return build


def dbt_command(args: list[str], load_date: dt.date) -> list[str]:
    """The dbt CLI call for this project, with the run's variables."""
    dbt = Path(sys.executable).with_name("dbt")
    return [
        str(dbt),
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--vars",
        json.dumps({"load_date": load_date.isoformat()}),
    ]


def dbt_env(warehouse: Path) -> dict[str, str]:
    return {**os.environ, "TIERS_WAREHOUSE": str(warehouse), "DO_NOT_TRACK": "1"}


def run(
    settings: Settings, load_date: dt.date | None = None, full_refresh: bool = False
) -> RunResult:
    """Run the whole job for ``settings``; raise on the first failure, publishing nothing.

    ``full_refresh`` builds from an empty file and rebuilds every month-end
    (needed after changing the ``window_months`` or ``cash_spread_rate`` vars).
    """
    load_date = load_date or dt.date.today()
    files = discover(settings.raw_dir)  # whole-file problems stop the run here
    build = start_build(settings.warehouse, full_refresh)
    load_id = new_load_id()
    with duckdb.connect(str(build)) as con:
        land(con, files, load_id)
    command = dbt_command(["build", *(["--full-refresh"] if full_refresh else [])], load_date)
    if subprocess.run(command, cwd=DBT_PROJECT_DIR, env=dbt_env(build)).returncode != 0:
        raise PipelineError(
            f"dbt build failed (see its output above); the published warehouse "
            f"{settings.warehouse} is unchanged, the failed build is kept at {build}"
        )
    os.replace(build, settings.warehouse)
    shutil.rmtree(build.parent, ignore_errors=True)
    return RunResult(load_id, settings.warehouse)


def summary(warehouse: Path) -> str:
    """A short text report of the published warehouse's latest load."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        counts = con.execute("""select source_table, files, raw_rows, accepted_rows,
                                       quarantined_rows, load_id
                                from audit.load_reconciliation order by source_table""").fetchall()
        rules = con.execute("""select rule, count(*) from audit.quarantine
                               group by rule order by count(*) desc, rule""").fetchall()
        first, last = con.execute("""select min(as_of_date), max(as_of_date)
                                     from staging.stg_broker__balances""").fetchall()[0]
        month_ends, latest, graded = con.execute("""
            select count(distinct as_of_date), max(as_of_date),
                   count(*) filter (where as_of_date = (select max(as_of_date)
                                                        from marts.customer_indicators))
            from marts.customer_indicators""").fetchall()[0]
    lines = [
        f"Warehouse {warehouse} (load {counts[0][5] if counts else '-'})",
        f"{'table':<12}{'files':>6}{'raw rows':>13}{'accepted':>13}{'quarantined':>13}",
    ]
    lines += [f"{t:<12}{f:>6}{r:>13,}{a:>13,}{q:>13,}" for t, f, r, a, q, _ in counts]
    lines.append(
        "Quarantined by rule: "
        + (", ".join(f"{rule} {n:,}" for rule, n in rules) or "none")
        + " (details: audit.quarantine)"
    )
    if first is not None:
        lines.append(f"Balance snapshots cover {first} to {last}")
    if latest is not None:
        lines.append(
            f"Indicators: {month_ends} month-ends up to {latest}, "
            f"{graded:,} customers as of {latest} (marts.customer_indicators)"
        )
    return "\n".join(lines)
