"""Shared fixtures: small generated landing folders and warehouses built from them."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from pathlib import Path

import duckdb
import pytest

from orchestration.config import Settings
from orchestration.pipeline import run, run_dbt
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


def build(raw_dir: Path, warehouse: Path, select: str | None = None) -> Path:
    run(Settings(raw_dir, warehouse, None), load_date=LOAD_DATE, select=select)
    return warehouse


def dbt(warehouse: Path, *args: str) -> subprocess.CompletedProcess:
    """Run one dbt command (e.g. ``"test", "--select", name``) on ``warehouse``, output captured."""
    return run_dbt(list(args), LOAD_DATE, warehouse, capture_output=True, text=True)


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
    return make_landing(tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="session")
def clean_warehouse(clean_landing, tmp_path_factory) -> Path:
    return build(clean_landing, tmp_path_factory.mktemp("wh_clean") / "warehouse.duckdb")


@pytest.fixture(scope="session", params=[("csv", 3), ("parquet", 1)], ids=["csv-parts", "parquet"])
def dirty_landing(request, tmp_path_factory) -> Path:
    fmt, parts = request.param
    return make_landing(tmp_path_factory.mktemp(f"dirty_{fmt}"), fmt=fmt, parts=parts, dirty=True)


@pytest.fixture(scope="session")
def dirty_warehouse(dirty_landing, tmp_path_factory) -> Path:
    return build(dirty_landing, tmp_path_factory.mktemp("wh_dirty") / "warehouse.duckdb")


def run_job(
    landing: Path,
    warehouse: Path,
    run_config: dict | None = None,
    job: str = "tiering_job",
    **settings,
):
    """Run one of the product's Dagster jobs in-process on ``landing`` into ``warehouse``.

    ``settings`` are TiersResource fields (``as_of``, ``overrides``, ``service_plans``).
    """
    from orchestration.config import prepare_manifest

    prepare_manifest()  # the definitions read the dbt manifest at import
    from orchestration.assets import TiersResource
    from orchestration.definitions import make_definitions

    config = {"as_of": None, "overrides": None, "load_date": LOAD_DATE.isoformat(), **settings}
    tiers = TiersResource(raw_dir=str(landing), warehouse=str(warehouse), **config)
    return (
        make_definitions(tiers)
        .resolve_job_def(job)
        .execute_in_process(run_config=run_config, raise_on_error=False)
    )
