"""Shared fixtures: small generated landing folders and warehouses built from them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from orchestration import runlock
from orchestration.config import DBT_PROJECT_DIR, prepare_manifest
from seeds.generate import generate

END = dt.date(2026, 10, 31)
LOAD_DATE = dt.date(2026, 11, 21)  # the "day of the load" the tests pretend it is


def make_landing(
    out: Path,
    customers: int = 400,
    months: int = 14,
    seed: int = 7,
    fmt: str = "csv",
    parts: int = 1,
    dirty: bool = False,
) -> Path:
    generate(out, customers, months, END, seed, fmt, parts, dirty)
    return out


#: How far :func:`build` goes: the Dagster assets of ``tiering_job`` it runs, by node name.
UPTO = {
    "ingestion": ("raw_files", "staging_models"),
    "marts": ("raw_files", "staging_models", "warehouse_models"),
}


def build(
    raw_dir: Path,
    warehouse: Path,
    upto: str = "tiers",
    *,
    load_date: dt.date = LOAD_DATE,
    full_refresh: bool = False,
    run_config: dict | None = None,
    **settings,
) -> Path:
    """Build and publish ``warehouse`` from ``raw_dir`` with the product's ``tiering_job``.

    ``upto`` "ingestion" or "marts" runs the job's subset up to that layer, then the
    publish (as materialising a selection in the UI does); "tiers" the whole job.
    Raises AssertionError with the failed steps' errors when the run fails.
    """
    subset = UPTO.get(upto)
    result = run_job(
        raw_dir,
        warehouse,
        run_config,
        subset=(*subset, "published_warehouse") if subset else None,
        load_date=load_date.isoformat(),
        tags={"tiers/full_refresh": "true"} if full_refresh else None,
        **settings,
    )
    errors = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    causes = []
    for error in errors:
        while error is not None:  # the step error, then what raised it
            causes.append(error.message.strip())
            error = error.cause
    assert result.success, causes
    return warehouse


def worker_target_path() -> Path:
    """A dbt target folder of this test process's own: with two test workers
    (pytest-xdist), dbt calls of both would otherwise write the same
    ``target/`` files (the manifest the Dagster definitions read among them)."""
    return DBT_PROJECT_DIR / "target" / f"pytest-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


def dbt(warehouse: Path, *args: str, dbt_vars: dict | None = None) -> subprocess.CompletedProcess:
    """Run one dbt command (e.g. ``"test", "--select", name``) on ``warehouse``, output
    captured, with the tests' load date and ``dbt_vars``: to check or rebuild one node of
    a warehouse :func:`build` made."""
    variables = {"load_date": LOAD_DATE.isoformat(), **(dbt_vars or {})}
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("dbt")),
            *args,
            "--vars",
            json.dumps(variables),
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            *([] if "--target-path" in args else ["--target-path", str(worker_target_path())]),
        ],
        cwd=warehouse.parent,
        env={**os.environ, "TIERS_WAREHOUSE": warehouse.name, "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
    )


def query(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def tree_digest(folder: Path) -> dict[str, str]:
    """Content hash of every file under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def clean_landing(tmp_path_factory) -> Path:
    """A clean book without the optional managers file (a broker may not keep one: the
    service desk marts still build, tests/test_service_desk.py); the dirty and other
    books have one."""
    landing = make_landing(tmp_path_factory.mktemp("clean"))
    (landing / "managers.csv").unlink()
    return landing


@pytest.fixture(scope="session")
def clean_warehouse(clean_landing, tmp_path_factory) -> Path:
    return build(clean_landing, tmp_path_factory.mktemp("wh_clean") / "warehouse.duckdb", "marts")


@pytest.fixture(scope="session", params=[("csv", 3), ("parquet", 1)], ids=["csv-parts", "parquet"])
def dirty_landing(request, tmp_path_factory) -> Path:
    fmt, parts = request.param
    return make_landing(tmp_path_factory.mktemp(f"dirty_{fmt}"), fmt=fmt, parts=parts, dirty=True)


@pytest.fixture(scope="session")
def dirty_warehouse(dirty_landing, tmp_path_factory) -> Path:
    return build(dirty_landing, tmp_path_factory.mktemp("wh_dirty") / "warehouse.duckdb", "marts")


def run_job(
    landing: Path,
    warehouse: Path,
    run_config: dict | None = None,
    job: str = "tiering_job",
    subset: tuple[str, ...] | None = None,
    tags: dict | None = None,
    **settings,
):
    """Run one of the product's Dagster jobs in-process on ``landing`` into ``warehouse``.

    ``settings`` are TiersResource fields (``as_of``, ``overrides``, ``service_plans``,
    ``load_date``); ``subset`` names the job's nodes to run (all by default).
    """
    prepare_manifest()  # the definitions read the dbt manifest at import
    from orchestration.assets import TiersResource
    from orchestration.definitions import make_definitions

    config = {"as_of": None, "overrides": None, "load_date": LOAD_DATE.isoformat(), **settings}
    tiers = TiersResource(raw_dir=str(landing), warehouse=str(warehouse), **config)
    definitions = make_definitions(tiers)
    chosen = definitions.resolve_job_def(job)
    if subset:
        keys = {
            key
            for assets in definitions.assets
            # an AssetSpec (tiers/graded_month_ends) runs no node of its own
            if getattr(assets, "node_def", None) and assets.node_def.name in subset
            for key in assets.keys
        }
        chosen = chosen.get_subset(asset_selection=keys)
    try:
        return chosen.execute_in_process(run_config=run_config, tags=tags, raise_on_error=False)
    finally:
        # a run that failed before publishing holds the run lock until its process
        # ends: in the Dagster run worker at once, here at the end of the tests
        runlock.release(warehouse)


SEPTEMBER = dt.date(2026, 9, 30)
OCTOBER = dt.date(2026, 10, 31)


@pytest.fixture(scope="session")
def graded_september(clean_landing, tmp_path_factory) -> Path:
    """``clean_landing`` graded by ``tiering_job`` as of September (its first graded month)."""
    path = tmp_path_factory.mktemp("graded_september") / "warehouse.duckdb"
    assert run_job(clean_landing, path, as_of=SEPTEMBER.isoformat()).success
    return path


@pytest.fixture(scope="session")
def graded(graded_september, clean_landing, tmp_path_factory):
    """September, then October (the latest month-end) graded: the warehouse and the October
    run's result. Tests that change it work on a copy."""
    path = tmp_path_factory.mktemp("graded") / "warehouse.duckdb"
    shutil.copyfile(graded_september, path)
    result = run_job(clean_landing, path)
    assert result.success
    return path, result
