"""Warehouse build without grading, and the helpers the Dagster job shares.

``run`` lands the raw files and runs ``dbt build`` (all models but the ones on
the tier tables) into a build copy of the published warehouse
(:mod:`orchestration.publish`), and publishes it only when every step and dbt
test passed. The tests build their warehouses with it; ``python -m orchestration
run`` runs the whole Dagster ``tiering_job`` instead, which adds the grading.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from orchestration import publish
from orchestration.config import DBT_PROJECT_DIR, Settings, duckdb_memory_limit
from orchestration.landing import discover, land

#: dbt models built on the tier tables (tagged in dbt); they run after grading.
TIER_REPORTING = "tag:tier_reporting"
#: dbt models that type and judge the landed rows (staging, quarantine, reconciliation).
INGESTION = "staging audit"


class PipelineError(RuntimeError):
    """A step failed; the published warehouse was left untouched."""


@dataclass(frozen=True)
class RunResult:
    load_id: str
    warehouse: Path


def new_load_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


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


def prepare_manifest() -> Path:
    """``dbt parse`` when the manifest is missing or older than the dbt project's files.

    Dagster reads the dbt project from this manifest at import time; ``dagster
    dev`` prepares it itself, everything else (the CLI, tests, CI) calls this first.
    """
    manifest = DBT_PROJECT_DIR / "target" / "manifest.json"
    sources = [
        p
        for folder in ("models", "macros", "tests")
        for p in (DBT_PROJECT_DIR / folder).rglob("*")
        if p.is_file()
    ] + [DBT_PROJECT_DIR / "dbt_project.yml", DBT_PROJECT_DIR / "profiles.yml"]
    if manifest.exists() and manifest.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return manifest
    done = subprocess.run(
        dbt_command(["parse"], dt.date.today()),
        cwd=DBT_PROJECT_DIR,
        env={**os.environ, "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise PipelineError(f"dbt parse failed:\n{done.stdout[-3000:]}")
    return manifest


def warehouse_vars(warehouse: Path) -> dict[str, str]:
    """The variables dbt's profile reads: the file to build and DuckDB's memory limit."""
    return {"TIERS_WAREHOUSE": str(warehouse), "TIERS_DUCKDB_MEMORY_LIMIT": duckdb_memory_limit()}


def run_dbt(
    args: list[str], load_date: dt.date, warehouse: Path, **kwargs: Any
) -> subprocess.CompletedProcess:
    """Run one dbt command on ``warehouse``; ``kwargs`` go to :func:`subprocess.run`.

    dbt runs in the file's folder and the profile names the file alone: dbt parses
    the whole project again when the profile changes (3.5 s a call here), and with
    the absolute path it changed with every run, whose build file has a folder of
    its own. By name, every build file of a warehouse has the same profile, and dbt
    reuses the last call's parse.
    """
    return subprocess.run(
        dbt_command(args, load_date),
        cwd=warehouse.parent,
        env={**os.environ, **warehouse_vars(Path(warehouse.name)), "DO_NOT_TRACK": "1"},
        **kwargs,
    )


def run(
    settings: Settings,
    load_date: dt.date | None = None,
    full_refresh: bool = False,
    select: str | None = None,
) -> RunResult:
    """Land, dbt build and publish ``settings``; raise on the first failure, publishing nothing.

    No grading: the tests build warehouses with this; the Dagster job (which
    ``python -m orchestration run`` runs) also grades.

    ``full_refresh`` builds from an empty file and rebuilds every month-end
    (needed after changing the ``window_months`` or ``cash_spread_rate`` vars);
    ``select`` (a dbt selector, e.g. ``INGESTION``) builds only those models.
    """
    load_date = load_date or dt.date.today()
    files = discover(settings.raw_dir)  # whole-file problems stop the run here
    load_id = new_load_id()
    build = publish.start_build(settings.warehouse, load_id, full_refresh)
    with duckdb.connect(str(build)) as con:
        land(con, files, load_id)
    # the models on the tier tables need a grading: the Dagster job builds them
    build_args = ["build", "--exclude", TIER_REPORTING, *(["--select", select] if select else [])]
    build_args += ["--full-refresh"] if full_refresh else []
    if run_dbt(build_args, load_date, build).returncode != 0:
        raise PipelineError(
            f"dbt build failed (see its output above); the published warehouse "
            f"{settings.warehouse} is unchanged, the failed build is kept at {build}"
        )
    publish.publish(build, settings.warehouse)
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


def tier_summary(warehouse: Path) -> str:
    """The latest grading in the published warehouse: tier sizes and model quality."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        sizes = con.execute("""select tier, count(*), count(*) filter (where is_override)
                               from tiers.customer_tiers group by tier
                               order by min(tier_rank)""").fetchall()
        as_of, run_id, kmo, factors, k, silhouette, gates_failed, accepted = con.execute("""
            select as_of_date, run_id, kmo, n_factors, k, silhouette, gates_failed,
                   accepted_by_operator
            from tiers.model_runs
            where run_id = (select max(run_id) from tiers.customer_tiers)""").fetchall()[0]
        held, graded = con.execute("""select count(*) filter (where hysteresis_tier <> model_tier),
                                        max(as_of_date)
                                 from tiers.customer_tiers""").fetchall()[0]
    total = sum(n for _, n, _ in sizes) or 1
    lines = [
        f"Tiers as of {graded} (model {run_id} fitted on {as_of}; KMO {kmo:.2f}, {factors} factors, "
        f"k = {k}, silhouette {silhouette:.2f})",
        f"{'tier':<12}{'customers':>11}{'share':>8}{'overrides':>11}",
    ]
    lines += [f"{t:<12}{n:>11,}{n / total:>8.1%}{o:>11,}" for t, n, o in sizes]
    lines.append(f"Held in their published tier by hysteresis: {held:,}")
    if gates_failed and accepted:
        lines.append(f"Gates failed and accepted by the operator: {gates_failed}")
    lines.append("Details: tiers.customer_tiers, tiers.tier_profiles, tiers.model_runs")
    return "\n".join(lines)
