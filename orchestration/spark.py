"""The warehouse on Apache Spark: land a raw folder for Spark, build the dbt project there.

The dbt project is the same on both engines; ``--target spark`` (dbt-spark) swaps
the DuckDB-only SQL for Spark SQL through ``adapter.dispatch`` macros
(``dbt_project/macros/cross_engine.sql``).

Landing is the same as on DuckDB (:mod:`orchestration.landing`): every file is
judged whole on the machine that runs the job (header, encoding, cut lines,
quoting, volumes) and its malformed lines are kept in ``raw.malformed_rows``.
What it hands over differs: on DuckDB ``raw.<table>`` is a view over the files;
for Spark the landed rows (contract columns as text, ``_source_file``,
``_source_row``) are written once as Parquet under ``<stage>/raw/<table>``, and
Spark reads them as external tables in the database ``raw``. The rows are the
same, so the quarantine and the reconciliation are too.

``method: session`` runs Spark inside this process (local mode, the in-memory
catalog): :func:`build` creates the session, registers the raw tables and runs
``dbt build`` in the same process, so every table lives as long as the process.
A cluster (``method: thrift``) is described in docs/spark.md.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from orchestration import config_files
from orchestration.config import DBT_PROJECT_DIR, VolumeBounds
from orchestration.landing import CONTRACT, discover, land, new_load_id

#: The raw tables dbt reads (sources broker and crm), all handed to Spark.
RAW_TABLES = (
    *CONTRACT,
    "landed_files",
    "malformed_rows",
    "latest_load",
    "service_plans",
    "tier_overrides",
)

#: Spark settings for a local session (``TIERS_SPARK_MASTER`` and
#: ``TIERS_SPARK_DRIVER_MEMORY`` change the two that depend on the machine).
#: ANSI mode off: a cast that fails is NULL and x / 0 is NULL, as on DuckDB.
SESSION_CONF = {
    "spark.sql.catalogImplementation": "in-memory",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.legacy.createHiveTableByDefault": "false",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.driver.extraJavaOptions": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1",
}


@dataclass(frozen=True)
class Staged:
    """A landing folder staged for Spark: the Parquet per raw table and the load."""

    stage_dir: Path
    load_id: str
    rows: dict[str, int]

    def table_path(self, table: str) -> Path:
        return self.stage_dir / "raw" / table


def stage(
    raw_dir: Path,
    stage_dir: Path,
    service_plans: Path = config_files.SERVICE_PLANS_PATH,
    overrides: Path | None = None,
    bounds: VolumeBounds | None = None,
) -> Staged:
    """Judge ``raw_dir``'s files as the DuckDB job does and write the raw tables as Parquet.

    ``stage_dir`` is emptied first: a Spark build is a full build of what the
    folder holds. Whole-file problems raise :class:`~orchestration.landing.LandingError`
    (and a broken config file :class:`~orchestration.config.ConfigError`) before
    anything is written to ``stage_dir/raw``.
    """
    files = discover(raw_dir)
    plans = config_files.load_service_plans(service_plans)  # checked before anything is written
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    (stage_dir / "raw").mkdir(parents=True)
    load_id = new_load_id()
    rows = {}
    with duckdb.connect(str(stage_dir / "landing.duckdb")) as con:
        land(con, files, load_id, bounds)
        config_files.land_service_plans(con, service_plans)
        config_files.land_overrides(con, overrides)
        for table in RAW_TABLES:
            target = stage_dir / "raw" / table
            target.mkdir()
            con.execute(
                f"copy (select {_spark_columns(con, table)} from raw.{table}) "
                f"to '{target / 'part-0.parquet'}' (format parquet)"
            )
            rows[table] = con.execute(f"select count(*) from raw.{table}").fetchone()[0]
    del plans
    return Staged(stage_dir, load_id, rows)


def _spark_columns(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """The columns of ``raw.<table>``, timestamps as UTC instants: Spark reads a Parquet
    timestamp without a time zone as ``timestamp_ntz``, not the ``timestamp`` the
    contracts name (the session's time zone is UTC, so the values are the same)."""
    types = con.execute(f"select column_name, column_type from (describe raw.{table})").fetchall()
    return ", ".join(
        f'"{name}"::timestamptz as "{name}"' if kind == "TIMESTAMP" else f'"{name}"'
        for name, kind in types
    )


def session_conf(environ=os.environ) -> dict[str, str]:
    conf = dict(SESSION_CONF)
    conf["spark.master"] = environ.get("TIERS_SPARK_MASTER") or "local[2]"
    conf["spark.driver.memory"] = environ.get("TIERS_SPARK_DRIVER_MEMORY") or "4g"
    return conf


def spark_session(warehouse_dir: Path):
    """The process's Spark session (created on first call), tables under ``warehouse_dir``."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("brokerage-tiers")
    for key, value in session_conf().items():
        builder = builder.config(key, value)
    builder = builder.config("spark.sql.warehouse.dir", str(warehouse_dir.resolve()))
    return builder.getOrCreate()


def register_raw(spark, staged: Staged) -> None:
    """``raw.<table>``: an external Parquet table over each staged raw table."""
    spark.sql("create database if not exists raw")
    for table in RAW_TABLES:
        spark.sql(f"drop table if exists raw.{table}")
        spark.sql(f"create table raw.{table} using parquet location '{staged.table_path(table)}'")


def run_dbt(args: Sequence[str], dbt_vars: dict | None = None) -> None:
    """``dbt <args> --target spark`` in this process (it shares the Spark session)."""
    import json

    from dbt.cli.main import dbtRunner

    command = [
        *args,
        "--target",
        "spark",
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        # the DuckDB job's manifest stays in target/: Dagster reads it
        "--target-path",
        str(DBT_PROJECT_DIR / "target" / "spark"),
    ]
    if dbt_vars:
        command += ["--vars", json.dumps(dbt_vars)]
    result = dbtRunner().invoke(command)
    if not result.success:
        raise SparkBuildError(f"dbt {' '.join(args)} failed on Spark: {result.exception or ''}")


class SparkBuildError(RuntimeError):
    """dbt failed on the Spark target."""


#: The layers a Spark build makes: everything up to the marts and the audit. The
#: tiers and service desk models need the grading's model tables, written on DuckDB
#: only for now (docs/spark.md).
SPARK_SELECTION = ("staging", "intermediate", "marts", "audit")
#: Tests that read a model outside SPARK_SELECTION are left out with it.
SPARK_EXCLUSION = ("tiers", "service_desk")


def build(
    raw_dir: Path,
    spark_dir: Path,
    load_date: dt.date | None = None,
    service_plans: Path = config_files.SERVICE_PLANS_PATH,
    overrides: Path | None = None,
    unit_tests: bool = True,
    timings: dict[str, float] | None = None,
):
    """Land ``raw_dir`` and build the warehouse on Spark under ``spark_dir``.

    ``spark_dir/stage`` holds the staged raw tables, ``spark_dir/warehouse`` Spark's
    tables (Parquet, one folder per table). A full build: both are emptied first.
    Runs ``dbt build`` (models and data tests), then the unit tests (which need the
    incremental models to exist). Returns the Spark session, whose catalog holds
    the tables until the process ends; ``timings`` gets each step's seconds. Raises
    ``LandingError`` / ``ConfigError`` for unusable input, :class:`SparkBuildError`
    when dbt fails.
    """
    timings = {} if timings is None else timings
    started = time.monotonic()
    staged = stage(raw_dir, spark_dir / "stage", service_plans, overrides)
    timings["stage"] = time.monotonic() - started
    warehouse = spark_dir / "warehouse"
    if warehouse.exists():
        shutil.rmtree(warehouse)
    started = time.monotonic()
    spark = spark_session(warehouse)
    for schema in ("raw", *SPARK_SELECTION):  # a build before in this process: gone
        spark.sql(f"drop database if exists {schema} cascade")
    register_raw(spark, staged)
    timings["session"] = time.monotonic() - started
    dbt_vars = {"load_date": (load_date or dt.date.today()).isoformat()}
    common = ["--select", *SPARK_SELECTION, "--exclude", *SPARK_EXCLUSION]
    common += ["--indirect-selection", "cautious"]
    started = time.monotonic()
    run_dbt(["build", *common, "--exclude-resource-type", "unit_test"], dbt_vars)
    timings["dbt_build"] = time.monotonic() - started
    if unit_tests:
        started = time.monotonic()
        run_dbt(["test", *common, "--resource-type", "unit_test"], dbt_vars)
        timings["unit_tests"] = time.monotonic() - started
    return spark


def table_rows(spark, schemas: Iterable[str] = ("staging", "intermediate", "marts", "audit")):
    """``{schema.table: rows}`` of the Spark build's tables (views left out)."""
    rows = {}
    for schema in schemas:
        for table in spark.sql(f"show tables in {schema}").collect():
            name = f"{schema}.{table.tableName}"
            kind = spark.sql(f"describe table extended {name}").where("col_name = 'Type'")
            if kind.collect()[0].data_type != "VIEW":
                rows[name] = spark.table(name).count()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import json
    import logging

    from orchestration.config import ConfigError, Settings
    from orchestration.landing import LandingError

    parser = argparse.ArgumentParser(
        prog="python -m orchestration.spark",
        description="Land TIERS_RAW_DIR and build the marts and the audit on local Spark "
        "(dbt-spark, method session); the tables are written as Parquet under --dir.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("TIERS_SPARK_DIR") or "data/spark"),
        help="folder for the staged raw tables and Spark's tables (TIERS_SPARK_DIR; "
        "default data/spark)",
    )
    parser.add_argument(
        "--no-unit-tests", action="store_true", help="skip dbt's unit tests after the build"
    )
    parser.add_argument(
        "--timings", type=Path, metavar="FILE", help="write each step's seconds to FILE as JSON"
    )
    args = parser.parse_args(argv)
    timings: dict[str, float] = {}
    # the analysis errors dbt handles (a relation that does not exist yet) stay quiet
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    started = time.monotonic()
    try:
        settings = Settings.from_env()
        spark = build(
            settings.raw_dir,
            args.dir.resolve(),
            None,
            settings.service_plans,
            settings.overrides,
            unit_tests=not args.no_unit_tests,
            timings=timings,
        )
    except (ConfigError, LandingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SparkBuildError as error:
        print(
            f"error: {error} (dbt's log: {DBT_PROJECT_DIR / 'logs' / 'dbt.log'})", file=sys.stderr
        )
        return 1
    if args.timings:
        args.timings.write_text(json.dumps(timings, indent=2))
    print(
        f"Built on Spark in {time.monotonic() - started:.0f} s; tables under "
        f"{(args.dir / 'warehouse').resolve()}"
    )
    for name, rows in table_rows(spark).items():
        print(f"{name:55} {rows:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
