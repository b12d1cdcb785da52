"""Configuration from the environment, with defaults that work out of the box."""

from __future__ import annotations

import calendar
import datetime as dt
import fcntl
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Schemas in the warehouse; the warehouse file must not be named like one of them.
SCHEMAS = ("main", "raw", "staging", "intermediate", "marts", "audit", "tiers")
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DEFAULT_RAW_DIR = REPO_ROOT / "seeds" / "sample"
DEFAULT_WAREHOUSE = REPO_ROOT / "data" / "warehouse.duckdb"


def duckdb_memory_limit(environ: Mapping[str, str] = os.environ) -> str:
    """``TIERS_DUCKDB_MEMORY_LIMIT``, else half the machine's memory and at most 5 GB.

    DuckDB's own default (80 % of the memory) lets one dbt run take 19 GB of a
    24 GB machine; within this limit it spills to disk instead, and the whole job
    stays under 8 GB at a million customers.
    """
    if environ.get("TIERS_DUCKDB_MEMORY_LIMIT"):
        return environ["TIERS_DUCKDB_MEMORY_LIMIT"]
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return f"{max(1, min(5, int(memory_gb / 2)))}GB"


class ConfigError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


#: Seconds the landing folder must stay unchanged before the sensor asks for a run
#: (TIERS_SENSOR_SETTLE_SECONDS): a file still being copied changes size or mtime.
DEFAULT_SETTLE_SECONDS = 60


def sensor_settle_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """``TIERS_SENSOR_SETTLE_SECONDS``, else :data:`DEFAULT_SETTLE_SECONDS`."""
    text = environ.get("TIERS_SENSOR_SETTLE_SECONDS") or str(DEFAULT_SETTLE_SECONDS)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"TIERS_SENSOR_SETTLE_SECONDS={text!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"TIERS_SENSOR_SETTLE_SECONDS={text!r} must be 0 or more")
    return value


@dataclass(frozen=True)
class VolumeBounds:
    """How far a table may move against the previous load before the run stops
    (``orchestration.landing.check_volumes``)."""

    max_row_drop: float = 0.2  # TIERS_MAX_ROW_DROP: share of a table's rows it may lose
    max_malformed_jump: float = 0.01  # TIERS_MAX_MALFORMED_JUMP: rise in its malformed share

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> VolumeBounds:
        return cls(
            _share(environ, "TIERS_MAX_ROW_DROP", cls.max_row_drop),
            _share(environ, "TIERS_MAX_MALFORMED_JUMP", cls.max_malformed_jump),
        )


def _share(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name) or str(default)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise ConfigError(f"{name}={text!r} must be a share between 0 and 1")
    return value


@dataclass(frozen=True)
class Settings:
    raw_dir: Path  # TIERS_RAW_DIR: the landing folder
    warehouse: Path  # TIERS_WAREHOUSE: the published DuckDB file
    as_of: dt.date | None  # TIERS_AS_OF: month-end to grade as of; None = last complete month
    overrides: Path | None = None  # TIERS_OVERRIDES: the CRM team's tier overrides (CSV)
    service_plans: Path = REPO_ROOT / "config" / "service_plans.yml"  # TIERS_SERVICE_PLANS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        raw_dir = Path(environ.get("TIERS_RAW_DIR") or DEFAULT_RAW_DIR).expanduser().resolve()
        warehouse = Path(environ.get("TIERS_WAREHOUSE") or DEFAULT_WAREHOUSE).expanduser().resolve()
        if warehouse.stem.lower() in SCHEMAS:
            raise ConfigError(
                f"TIERS_WAREHOUSE={warehouse}: DuckDB names the file's catalog "
                f"{warehouse.stem!r}, which clashes with the warehouse schema of that name "
                f"(queries on {warehouse.stem}.<table> become ambiguous); pick another file "
                f"name, e.g. brokerage.duckdb"
            )
        overrides = environ.get("TIERS_OVERRIDES") or None
        plans = environ.get("TIERS_SERVICE_PLANS") or REPO_ROOT / "config" / "service_plans.yml"
        return cls(
            raw_dir,
            warehouse,
            parse_as_of(environ.get("TIERS_AS_OF") or None),
            Path(overrides).expanduser().resolve() if overrides else None,
            Path(plans).expanduser().resolve(),
        )


def parse_flag(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """A yes/no environment variable: ``1``/``true``/``yes``, or ``0``/``false``/``no``/unset."""
    text = (environ.get(name) or "").strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name}={environ[name]!r}: expected 1 or 0 (true/false, yes/no)")


def parse_as_of(text: str | None) -> dt.date | None:
    """Parse TIERS_AS_OF: a month-end date, YYYY-MM-DD."""
    if text is None:
        return None
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"TIERS_AS_OF={text!r} is not a date (YYYY-MM-DD)") from None
    if day.day != calendar.monthrange(day.year, day.month)[1]:
        raise ConfigError(
            f"TIERS_AS_OF={text!r} is not a month-end date "
            f"(e.g. {day.replace(day=calendar.monthrange(day.year, day.month)[1])})"
        )
    return day


def parse_grade_from(text: str | None) -> dt.date | str | None:
    """Parse TIERS_GRADE_FROM (``run --from``): the month-end to re-grade from, as
    ``YYYY-MM`` or a month-end ``YYYY-MM-DD``; ``first`` for the first month-end the
    marts hold (``run --backfill``)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.lower() == "first":
        return "first"
    try:
        month = dt.datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        try:
            return parse_as_of(text)
        except ConfigError:
            raise ConfigError(
                f"TIERS_GRADE_FROM={text!r} is not a month (YYYY-MM), a month-end date "
                "(YYYY-MM-DD) or 'first'"
            ) from None
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def prepare_manifest() -> Path:
    """``dbt parse`` when the manifest is missing or older than the dbt project's files.

    Dagster reads the dbt project from this manifest at import time; ``dagster
    dev`` prepares it itself, everything else (the CLI, tests, CI) calls this first.
    Raises :class:`ConfigError` with dbt's output when the project does not parse.
    Processes that call it at once (two test workers, the CLI beside the UI) take
    turns on a lock in the target folder: one parses, the others find it fresh.
    """
    target = DBT_PROJECT_DIR / "target"
    target.mkdir(exist_ok=True)
    with (target / ".parse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _parse_if_stale(target / "manifest.json")


def _parse_if_stale(manifest: Path) -> Path:
    sources = [
        p
        for folder in ("models", "macros", "tests")
        for p in (DBT_PROJECT_DIR / folder).rglob("*")
        if p.is_file()
    ] + [DBT_PROJECT_DIR / "dbt_project.yml", DBT_PROJECT_DIR / "profiles.yml"]
    if manifest.exists() and manifest.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return manifest
    dbt = Path(sys.executable).with_name("dbt")
    done = subprocess.run(
        [
            str(dbt),
            "parse",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
        ],
        cwd=DBT_PROJECT_DIR,
        env={**os.environ, "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ConfigError(f"dbt parse failed:\n{done.stdout[-3000:]}")
    return manifest
