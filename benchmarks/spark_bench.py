"""The whole warehouse built on local Spark beside the DuckDB job, from one landing folder.

    python -m benchmarks.spark_bench --customers 100000

Uses the bench's generated book (``data/bench/<customers>/with_new_month``, made by
``make bench`` or generated here), built from scratch by each engine:

1. ``python -m orchestration.spark``: the landing (the whole-file checks, the rows
   written as Parquet for Spark), a local Spark session, ``dbt build`` up to the
   marts, the grading of every month-end, the tiers and service desk models;
2. ``python -m orchestration run``: the DuckDB job (landing, build, grading,
   tiers, publish).

Each is a process of its own, timed, with the peak memory of its process tree
(Spark's JVM included). Writes ``benchmarks/results/spark-<time>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
from pathlib import Path

import psutil

from benchmarks.bench import base_environment, prepare_dataset, prepare_manifest, run_job
from benchmarks.measure import run_measured
from orchestration.config import REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spark_bench")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "data" / "bench")
    parser.add_argument("--driver-memory", default="8g", help="Spark's driver (local mode)")
    args = parser.parse_args(argv)
    size_dir = args.work / str(args.customers)
    dataset = prepare_dataset(args.customers, size_dir)
    run_dir = size_dir / "spark_runs"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env = {
        **base_environment(),
        "TIERS_RAW_DIR": str(dataset.with_new_month),
        "TIERS_SPARK_DRIVER_MEMORY": args.driver_memory,
    }
    timings = run_dir / "spark_timings.json"
    spark = run_measured(
        [
            sys.executable,
            "-m",
            "orchestration.spark",
            "--dir",
            str(run_dir / "spark"),
            "--no-unit-tests",
            "--timings",
            str(timings),
        ],
        env,
        run_dir / "spark.log",
    )
    if spark.returncode != 0:
        print(f"the Spark build failed: {run_dir / 'spark.log'}", file=sys.stderr)
        return 1
    steps = json.loads(timings.read_text())
    shutil.rmtree(run_dir / "spark", ignore_errors=True)  # its Parquet: as big as the book
    prepare_manifest()
    (run_dir / "duck").mkdir()
    figures, duck = run_job("duckdb", dataset.with_new_month, run_dir / "duck", run_dir)
    gb = 1e9
    lines = [
        f"# Spark beside DuckDB: {args.customers:,} customers × 25 months "
        f"({dataset.raw_bytes / gb:.2f} GB of CSV)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / gb:.1f} GB RAM, {platform.platform()}; Spark in "
        f"local mode (local[2], driver memory {args.driver_memory}). One run each, a full "
        "build of the whole warehouse from the landing folder.",
        "",
        "| Spark step | seconds |",
        "| --- | --- |",
        *(f"| {step} | {seconds:.1f} |" for step, seconds in steps.items()),
        "",
        "| DuckDB job stage | seconds |",
        "| --- | --- |",
        *(f"| {stage} | {figure.wall_s:.1f} |" for stage, figure in figures.items()),
        "",
        "| engine | whole process | peak memory (process tree) |",
        "| --- | --- | --- |",
        f"| Spark | {spark.wall_s:.1f} s | {spark.peak_bytes / gb:.2f} GB |",
        f"| DuckDB | {duck.wall_s:.1f} s | {duck.peak_bytes / gb:.2f} GB |",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"spark-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
