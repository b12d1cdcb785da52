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
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path

import duckdb
from dbt.cli.main import dbtRunner

from ml import MODEL_TABLES, TieringModel
from orchestration import config_files
from orchestration.config import DBT_PROJECT_DIR, VolumeBounds
from orchestration.landing import CONTRACT, discover, land, new_load_id
from orchestration.tiering import (
    FIT_SAMPLE_SIZE,
    assign_month,
    fit_month,
    fit_sample_query,
    graded_months,
    record_grading,
)

#: The raw tables dbt reads (sources broker and crm), all handed to Spark.
RAW_TABLES = (
    *CONTRACT,
    "landed_files",
    "malformed_rows",
    "latest_load",
    "service_plans",
    "tier_overrides",
)

#: The tables the grading writes (source ``tiers``), handed to Spark like the raw ones.
TIER_SOURCES = (
    *MODEL_TABLES,
    "model_runs",
    "model_k_diagnostics",
    "customer_assignments",
    "grading_runs",
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


def stage(
    raw_dir: Path,
    stage_dir: Path,
    service_plans: Path = config_files.SERVICE_PLANS_PATH,
    overrides: Path | None = None,
    bounds: VolumeBounds | None = None,
) -> Path:
    """Judge ``raw_dir``'s files as the DuckDB job does and write the raw tables as Parquet
    into ``stage_dir/raw/<table>``; returns ``stage_dir/raw``.

    A Spark build is a full build of what the folder holds: ``stage_dir`` is emptied
    and every file landed anew, so there is no previous load for the volume bounds
    (``TIERS_MAX_ROW_DROP``, ``TIERS_MAX_MALFORMED_JUMP``) to compare with. A whole-file
    problem raises :class:`~orchestration.landing.LandingError`, a broken config file
    :class:`~orchestration.config.ConfigError`: a missing table or column, or a
    broken service plans file, before ``stage_dir`` is touched; an unreadable,
    cut or badly quoted file once the files are read, leaving ``stage_dir``
    without raw tables (nothing for Spark to build from).
    """
    files = discover(raw_dir)
    config_files.load_service_plans(service_plans)  # checked before anything is removed
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    with duckdb.connect(str(stage_dir / "landing.duckdb")) as con:
        land(con, files, new_load_id(), bounds)
        config_files.land_service_plans(con, service_plans)
        config_files.land_overrides(con, overrides)
        for table in RAW_TABLES:
            export_table(con, "raw", table, stage_dir / "raw" / table)
    return stage_dir / "raw"


def export_table(con: duckdb.DuckDBPyConnection, schema: str, table: str, folder: Path) -> None:
    """Write ``schema.table`` as Parquet into ``folder`` (made here)."""
    folder.mkdir(parents=True)
    con.execute(
        f"copy (select {_spark_columns(con, schema, table)} from {schema}.{table}) "
        f"to '{folder / 'part-0.parquet'}' (format parquet)"
    )


def _spark_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> str:
    """The columns of ``schema.table``, timestamps as UTC instants: Spark reads a Parquet
    timestamp without a time zone as ``timestamp_ntz``, not the ``timestamp`` the
    contracts name (the session's time zone is UTC, so the values are the same)."""
    types = con.execute(
        f"select column_name, column_type from (describe {schema}.{table})"
    ).fetchall()
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
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # else Spark looks up the host's address
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("brokerage-tiers")
    for key, value in session_conf().items():
        builder = builder.config(key, value)
    builder = builder.config("spark.sql.warehouse.dir", str(warehouse_dir.resolve()))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")  # dbt's reuse of the session warns on each call
    return spark


def register_raw(spark, raw_folder: Path) -> None:
    """``raw.<table>``: an external Parquet table over each staged raw table."""
    register(spark, "raw", {table: raw_folder / table for table in RAW_TABLES})


def register(spark, schema: str, folders: dict[str, Path]) -> None:
    """An external Parquet table ``schema.<name>`` over each folder."""
    spark.sql(f"create database if not exists {schema}")
    for table, folder in folders.items():
        spark.sql(f"drop table if exists {schema}.{table}")
        spark.sql(f"create table {schema}.{table} using parquet location '{folder}'")


def grade(
    spark, spark_dir: Path, run_id: str, fit_sample_size: int | None = FIT_SAMPLE_SIZE
) -> list[dt.date]:
    """Grade every month-end of Spark's ``marts.customer_indicators``, in order, and hand
    the model tables and the assignments to Spark as ``tiers.<table>``.

    The grading is the DuckDB job's own code (``orchestration.tiering``: each month
    fitted, warm-started from the one before, then every customer assigned): it
    reads Spark's indicators, Parquet files, through a DuckDB view in
    ``<spark_dir>/stage/grading.duckdb`` and writes its tables there; they are
    exported as Parquet (``<spark_dir>/stage/tiers/<table>``) and registered in
    Spark. A month-end of more than ``fit_sample_size`` customers starts K-means on
    a sample Spark draws. Returns the month-ends graded.
    """
    indicators = spark_dir / "warehouse" / "marts.db" / "customer_indicators"
    stage_dir = spark_dir / "stage"
    grading = stage_dir / "grading.duckdb"
    grading.unlink(missing_ok=True)
    shutil.rmtree(stage_dir / "tiers", ignore_errors=True)
    with duckdb.connect(str(grading)) as con:
        con.execute("create schema marts")
        # partitioned by as_of_date: the partition folders name it
        con.execute(
            "create view marts.customer_indicators as select * replace "
            "(cast(as_of_date as date) as as_of_date) from read_parquet("
            f"'{indicators}/*/*.parquet', hive_partitioning = true)"
        )
        months = grade_every_month(
            con, run_id, partial(draw_fit_sample_in_spark, spark), fit_sample_size
        )
        folders = {table: stage_dir / "tiers" / table for table in TIER_SOURCES}
        for table, folder in folders.items():
            export_table(con, "tiers", table, folder)
    register(spark, "tiers", folders)
    return months


def draw_fit_sample_in_spark(spark, as_of: dt.date, size: int) -> list[str]:
    """The month's fit sample (:func:`orchestration.tiering.fit_sample_query`), drawn by
    Spark from its ``marts.customer_indicators``."""
    query = fit_sample_query(as_of, size)
    return [row.customer_id for row in spark.sql(query).collect()]


def grade_every_month(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    draw_sample: Callable[[dt.date, int], list[str]] | None = None,
    fit_sample_size: int | None = FIT_SAMPLE_SIZE,
) -> list[dt.date]:
    """The grading of a full build, as the Dagster job's steps run it: every month-end
    of ``marts.customer_indicators`` recorded for ``run_id``, fitted in order (each
    warm-started from the one before; the k diagnostics for the latest; a month-end
    of more than ``fit_sample_size`` customers starts K-means on a sample drawn by
    ``draw_sample``), then every customer assigned. Returns the month-ends."""
    months = graded_months(con)
    record_grading(con, run_id, months)
    for month in months:
        fit_month(
            con,
            month,
            TieringModel(),
            orchestrator_run_id=run_id,
            diagnose=month == months[-1],
            fit_sample_size=fit_sample_size,
            draw_sample=draw_sample,
        )
    for month in months:
        assign_month(con, month)
    return months


def run_dbt(args: Sequence[str], dbt_vars: dict | None = None) -> None:
    """``dbt <args> --target spark`` in this process (it shares the Spark session).

    dbt prints only errors unless ``TIERS_SPARK_VERBOSE=1``; its whole log is in
    ``dbt_project/logs/dbt.log``."""

    quiet = [] if os.environ.get("TIERS_SPARK_VERBOSE") == "1" else ["--quiet"]
    command = [
        *quiet,
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


#: The dbt selections of a Spark build: the layers up to the marts and the audit,
#: then, after the grading, the tiers and the service desk marts.
WAREHOUSE_LAYERS = ("staging", "intermediate", "marts", "audit")
TIER_LAYERS = ("tiers", "service_desk")
#: Spark's databases (the service desk marts are in marts).
SCHEMAS = ("raw", "staging", "intermediate", "marts", "audit", "tiers")


def build(
    raw_dir: Path,
    spark_dir: Path,
    load_date: dt.date | None = None,
    service_plans: Path = config_files.SERVICE_PLANS_PATH,
    overrides: Path | None = None,
    unit_tests: bool = True,
    timings: dict[str, float] | None = None,
    tiers: bool = True,
    fit_sample_size: int | None = FIT_SAMPLE_SIZE,
):
    """Land ``raw_dir`` and build the whole warehouse on Spark under ``spark_dir``
    (with ``tiers`` False, up to the marts and the audit).

    ``spark_dir/stage`` holds the staged raw tables and the grading's tables,
    ``spark_dir/warehouse`` Spark's tables (Parquet, one folder per table). A full
    build: both are emptied first. Runs ``dbt build`` up to the marts and the audit
    (models and data tests), grades every month-end (:func:`grade`), builds the
    tiers and the service desk marts, then runs dbt's unit tests (which need the
    incremental models to exist). Returns the Spark session, whose catalog holds
    the tables until the process ends; ``timings`` gets each step's seconds.
    Raises ``LandingError`` / ``ConfigError`` for unusable input,
    :class:`SparkBuildError` when dbt fails.
    """
    timings = {} if timings is None else timings
    started = time.monotonic()
    raw_folder = stage(raw_dir, spark_dir / "stage", service_plans, overrides)
    timings["landing"] = time.monotonic() - started
    warehouse = spark_dir / "warehouse"
    if warehouse.exists():
        shutil.rmtree(warehouse)
    started = time.monotonic()
    spark = spark_session(warehouse)
    for schema in SCHEMAS:  # a build before in this process: gone
        spark.sql(f"drop database if exists {schema} cascade")
    register_raw(spark, raw_folder)
    timings["session"] = time.monotonic() - started
    run_id = str(uuid.uuid4())
    dbt_vars = {
        "load_date": (load_date or dt.date.today()).isoformat(),
        "orchestrator_run_id": run_id,
    }
    layers = ["--select", *WAREHOUSE_LAYERS, "--exclude", *TIER_LAYERS]
    started = time.monotonic()
    run_dbt(
        [
            "build",
            *layers,
            "--indirect-selection",
            "cautious",
            "--exclude-resource-type",
            "unit_test",
        ],
        dbt_vars,
    )
    timings["dbt_build"] = time.monotonic() - started
    if tiers:
        started = time.monotonic()
        grade(spark, spark_dir, run_id, fit_sample_size)
        timings["grading"] = time.monotonic() - started
        started = time.monotonic()
        run_dbt(
            ["build", "--select", *TIER_LAYERS, "--exclude-resource-type", "unit_test"], dbt_vars
        )
        timings["dbt_tiers"] = time.monotonic() - started
    if unit_tests and tiers:
        started = time.monotonic()
        run_dbt(["test", "--resource-type", "unit_test"], dbt_vars)
        timings["unit_tests"] = time.monotonic() - started
    return spark


def table_rows(spark, schemas: Iterable[str] = SCHEMAS[1:]):
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
    import logging

    from orchestration.config import ConfigError, Settings
    from orchestration.landing import LandingError

    parser = argparse.ArgumentParser(
        prog="python -m orchestration.spark",
        description="Land TIERS_RAW_DIR, build the marts, grade every month-end and build the "
        "tiers on local Spark (dbt-spark, method session); the tables are written as Parquet "
        "under --dir.",
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
    parser.add_argument(
        "--fit-sample-size",
        type=int,
        default=FIT_SAMPLE_SIZE,
        metavar="N",
        help="a month-end of more customers starts K-means on a stratified sample of N, "
        f"drawn by Spark; 0: never (default {FIT_SAMPLE_SIZE})",
    )
    args = parser.parse_args(argv)
    if args.fit_sample_size < 0:
        parser.error("--fit-sample-size must be 0 (never) or a number of customers")
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
            fit_sample_size=args.fit_sample_size or None,
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
    for step, seconds in timings.items():
        print(f"{step:12} {seconds:7.1f} s")
    print(
        f"Built on Spark in {time.monotonic() - started:.0f} s; tables under "
        f"{(args.dir / 'warehouse').resolve()}"
    )
    for name, rows in table_rows(spark).items():
        print(f"{name:55} {rows:>12,}")
    tiers = spark.sql(
        "select max(as_of_date) as as_of_date, tier, count(*) as customers "
        "from tiers.customer_tiers group by tier order by min(tier_rank)"
    ).collect()
    if tiers:
        print(f"Tiers as of {tiers[0].as_of_date} (tiers.customer_tiers):")
        for row in tiers:
            print(f"  {row.tier:12} {row.customers:>10,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
