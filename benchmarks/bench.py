"""The benchmark: ``python -m benchmarks.bench`` (``make bench``).

Per size (customers x 24 months of history plus one new month, from the
project's generator):

1. full build: ``python -m orchestration run`` on the 24 months, fresh warehouse;
2. incremental: the new month's files added, on a copy of a built warehouse;
3. full rebuild: ``--full-refresh`` on the 25 months, for the incremental's fraction;
4. the floor: one hand-written DuckDB query on the raw files
   (``benchmarks/reference.py``), for all month-ends and for the new one;
5. plain pandas on the 24 months, with a wall-time and a memory cap.

Each runs in its own process, measured by :mod:`benchmarks.measure`; figures
are medians of ``--repeats`` runs. The tables go to ``benchmarks/results/``
(markdown and raw JSON) and to the terminal. Layout of the work folder::

    <work-dir>/<customers>/generated/        the generator's output (reused when identical)
    <work-dir>/<customers>/history/          accounts + the first 24 months (hard links)
    <work-dir>/<customers>/with_new_month/   history + the 25th month
    <work-dir>/<customers>/logs/             every run's output and step timings
    <work-dir>/<customers>/runs/             warehouses (deleted unless --keep)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from benchmarks import report
from benchmarks.contender import OUT_OF_MEMORY_EXIT
from benchmarks.measure import (
    WHOLE_JOB,
    Figure,
    Measured,
    Summary,
    run_measured,
    stage_figures,
    step_windows,
    summarise,
)
from benchmarks.report import (
    FLOOR_ALL,
    FLOOR_NEW,
    FULL_BUILD,
    FULL_REBUILD,
    INCREMENTAL,
    PANDAS,
    Dataset,
    Outcome,
    SizeResult,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 10_000)
DEFAULT_WORK_DIR = REPO_ROOT / "data" / "bench"
DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

# The data: 24 months of history ending 2026-09 and one new month, 2026-10.
HISTORY_MONTHS = 24
END_DATE = dt.date(2026, 10, 31)
NEW_MONTH = "2026-10"
SEED = 42
# The job's indicator parameters (orchestration.assets.IndicatorConfig's defaults).
WINDOW_MONTHS = 12
CASH_SPREAD_RATE = 0.015
WAREHOUSE_NAME = "brokerage.duckdb"
# Environment variables of the job a user may set to tune it; every other TIERS_*
# variable is left out so the bench measures the job's defaults.
PASSED_THROUGH = ("TIERS_DUCKDB_MEMORY_LIMIT",)


class BenchError(RuntimeError):
    """A run the benchmark needs failed; the message names its log."""


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...]
    repeats: int | None  # None: 3 up to 100,000 customers, 1 above
    work_dir: Path
    results_dir: Path
    keep: bool
    pandas: bool
    pandas_timeout_s: float
    pandas_memory_cap_bytes: int
    load_date: dt.date
    full_rebuild: bool = True

    def repeats_for(self, customers: int) -> int:
        if self.repeats is not None:
            return self.repeats
        return 3 if customers <= 100_000 else 1


# --------------------------------------------------------------------------- data


def prepare_dataset(customers: int, size_dir: Path) -> Dataset:
    """Generate (or reuse) 25 months of data and lay out the two landing folders."""
    generated = size_dir / "generated"
    arguments = generator_arguments(customers)
    marker = generated / "_bench_generation.json"
    wanted = {"arguments": arguments, "generator_sha256": generator_digest()}
    previous = json.loads(marker.read_text()) if marker.is_file() else {}
    reused = {key: previous.get(key) for key in wanted} == wanted
    if reused:
        generation_s = previous["seconds"]
    else:
        marker.unlink(missing_ok=True)
        generated.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "seeds.generate", "--out", str(generated), *arguments]
        log = size_dir / "logs" / "generate.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        measured = run_measured(command, base_environment(), log)
        if measured.returncode != 0:
            raise BenchError(f"the generator failed (exit {measured.returncode}); see {log}")
        generation_s = measured.wall_s
        marker.write_text(json.dumps({**wanted, "seconds": generation_s}, indent=2))
    history, with_new_month = size_dir / "history", size_dir / "with_new_month"
    split_landing(generated, history, with_new_month, NEW_MONTH)
    raw_bytes = sum(p.stat().st_size for p in with_new_month.rglob("*") if p.is_file())
    return Dataset(customers, generated, history, with_new_month, raw_bytes, generation_s, reused)


def generator_arguments(customers: int) -> list[str]:
    return [
        "--customers",
        str(customers),
        "--months",
        str(HISTORY_MONTHS + 1),
        "--end-date",
        END_DATE.isoformat(),
        "--seed",
        str(SEED),
        "--format",
        "csv",
        "--monthly-files",
    ]


def generator_digest() -> str:
    """A changed generator makes new data even with the same arguments."""
    code = (REPO_ROOT / "seeds" / "generate.py").read_bytes()
    return hashlib.sha256(code).hexdigest()


def split_landing(generated: Path, history: Path, with_new_month: Path, new_month: str) -> None:
    """``history``: every contract file but ``new_month``'s; ``with_new_month``: all of them.

    Files are hard-linked (copied where links are impossible); files and folders
    whose names start with ``_`` or ``.`` are not contract tables and stay out.
    """
    for folder in (history, with_new_month):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for path in sorted(generated.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.is_file():
            link(path, history / path.name)
            link(path, with_new_month / path.name)
            continue
        (history / path.name).mkdir()
        (with_new_month / path.name).mkdir()
        for part in sorted(path.iterdir()):
            if part.stem != new_month:
                link(part, history / path.name / part.name)
            link(part, with_new_month / path.name / part.name)


def link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# --------------------------------------------------------------------------- the job


def base_environment() -> dict[str, str]:
    """The environment of every measured process: no TIERS_* setting but the tuning knobs."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TIERS_") or name in PASSED_THROUGH
    }
    env["DO_NOT_TRACK"] = "1"
    return env


def job_environment(landing: Path, run_dir: Path) -> dict[str, str]:
    """The job reads ``landing`` and publishes into ``run_dir``, snapshots included."""
    return {
        **base_environment(),
        "TIERS_RAW_DIR": str(landing),
        "TIERS_WAREHOUSE": str(run_dir / WAREHOUSE_NAME),
        "TIERS_SNAPSHOT_DIR": str(run_dir / "snapshots"),
    }


def prepare_manifest() -> None:
    """Parse the dbt project once, so that no measured run pays for ``dbt parse``."""
    code = "from orchestration.config import prepare_manifest; prepare_manifest()"
    done = subprocess.run([sys.executable, "-c", code], env=base_environment(), cwd=REPO_ROOT)
    if done.returncode != 0:
        raise BenchError("preparing the dbt manifest failed (see above)")


def run_job(
    name: str, landing: Path, run_dir: Path, log_dir: Path, full_refresh: bool = False
) -> tuple[dict[str, Figure], Measured]:
    """One measured ``python -m orchestration run``: figures per stage."""
    timings = log_dir / f"{name}.timings.json"
    log = log_dir / f"{name}.log"
    timings.unlink(missing_ok=True)
    command = [sys.executable, "-m", "orchestration", "run", "--timings", str(timings)]
    if full_refresh:
        command.append("--full-refresh")
    measured = run_measured(command, job_environment(landing, run_dir), log)
    if measured.returncode != 0:
        raise BenchError(f"{name}: the job failed (exit {measured.returncode}); see {log}")
    windows = step_windows(json.loads(timings.read_text()))
    return stage_figures(measured, windows), measured


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------- contenders


def run_contender(
    name: str,
    command: list[str],
    result_file: Path,
    log: Path,
    timeout_s: float | None = None,
    memory_cap_bytes: int | None = None,
) -> tuple[Figure, str | None, dict]:
    """One measured reference run: its figure, why it failed (or None) and its result."""
    result_file.unlink(missing_ok=True)
    command = [*command, "--result", str(result_file)]
    measured = run_measured(command, base_environment(), log, timeout_s, memory_cap_bytes)
    failure = contender_failure(measured, timeout_s)
    if failure is not None:
        return Figure(measured.wall_s, measured.peak_bytes), failure, {}
    if measured.returncode != 0:
        raise BenchError(f"{name}: exit {measured.returncode}; see {log}")
    result = json.loads(result_file.read_text())
    # the computation's own time: interpreter start and imports are left out, as they
    # are from the job's stages
    return Figure(result["end"] - result["start"], measured.peak_bytes), None, result


def contender_failure(measured: Measured, timeout_s: float | None) -> str | None:
    """Why a contender did not finish, in words for the table; None when it did."""
    if measured.stopped == "timed out":
        return f"timed out after {report.duration(timeout_s)}"
    if measured.stopped == "over the memory cap":
        return "failed: out of memory (over the bench's cap)"
    if measured.returncode == OUT_OF_MEMORY_EXIT:
        return "failed: out of memory (MemoryError)"
    if measured.returncode == -9:  # SIGKILL we did not send: the kernel's OOM killer
        return "failed: out of memory (killed)"
    return None


def contender_command(kind: str, landing: Path, load_date: dt.date, as_of=None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.contender",
        kind,
        str(landing),
        "--load-date",
        load_date.isoformat(),
        "--window-months",
        str(WINDOW_MONTHS),
        "--cash-spread-rate",
        str(CASH_SPREAD_RATE),
    ]
    if as_of is not None:
        command += ["--as-of", as_of.isoformat()]
    return command


def repeat_contender(
    name: str,
    tag: str,
    command: list[str],
    repeats: int,
    log_dir: Path,
    details: list[dict],
    timeout_s: float | None = None,
    memory_cap_bytes: int | None = None,
) -> Outcome:
    """Run a contender ``repeats`` times; a failed run ends the repeats."""
    figures, result, failure = [], {}, None
    for attempt in range(1, repeats + 1):
        figure, failure, result = run_contender(
            name,
            command,
            log_dir / f"{tag}-{attempt}.result.json",
            log_dir / f"{tag}-{attempt}.log",
            timeout_s,
            memory_cap_bytes,
        )
        figures.append(figure)
        details.append({"run": name, "repeat": attempt, "failure": failure, **as_dict(figure)})
        progress(name, attempt, repeats, figure, failure)
        if failure:
            break
    return Outcome(summarise(figures), failure, result.get("rows"), result.get("month_ends"))


# --------------------------------------------------------------------------- one size


@dataclass
class JobRuns:
    """The measured runs of the job at one size, by run (full build, incremental, ...)."""

    log_dir: Path
    repeats: int
    figures: dict[str, list[dict[str, Figure]]] = field(default_factory=dict)
    max_rss_single_bytes: dict[str, int] = field(default_factory=dict)
    details: list[dict] = field(default_factory=list)

    def measure(
        self, run: str, attempt: int, landing: Path, run_dir: Path, full_refresh: bool = False
    ) -> None:
        name = f"{run.replace(' ', '-')}-{attempt}"
        figures, measured = run_job(name, landing, run_dir, self.log_dir, full_refresh)
        self.figures.setdefault(run, []).append(figures)
        self.max_rss_single_bytes[run] = max(
            self.max_rss_single_bytes.get(run, 0), measured.max_rss_single_bytes
        )
        self.details.append(
            {
                "run": run,
                "repeat": attempt,
                "max_rss_single_bytes": measured.max_rss_single_bytes,
                "stages": {stage: as_dict(figure) for stage, figure in figures.items()},
            }
        )
        progress(run, attempt, self.repeats, figures[WHOLE_JOB])

    def medians(self) -> dict[str, dict[str, Summary]]:
        return {
            run: {stage: summarise([f[stage] for f in figures]) for stage in figures[0]}
            for run, figures in self.figures.items()
        }


def full_builds(jobs: JobRuns, dataset: Dataset, runs_dir: Path, keep: bool) -> Path:
    """Build the history on a fresh warehouse ``repeats`` times; the last warehouse built."""
    for attempt in range(1, jobs.repeats + 1):
        run_dir = fresh_dir(runs_dir / f"full-build-{attempt}")
        jobs.measure(FULL_BUILD, attempt, dataset.history, run_dir)
        if attempt < jobs.repeats and not keep:
            shutil.rmtree(run_dir)
    return run_dir / WAREHOUSE_NAME


def incremental_runs(
    jobs: JobRuns, dataset: Dataset, built: Path, runs_dir: Path, keep: bool
) -> None:
    """The monthly run: the new month on a copy of the history warehouse, each time afresh."""
    for attempt in range(1, jobs.repeats + 1):
        run_dir = fresh_dir(runs_dir / f"incremental-{attempt}")
        shutil.copy2(built, run_dir / WAREHOUSE_NAME)
        jobs.measure(INCREMENTAL, attempt, dataset.with_new_month, run_dir)
        if not keep:
            shutil.rmtree(run_dir)


def full_rebuilds(jobs: JobRuns, dataset: Dataset, built: Path, runs_dir: Path) -> None:
    """``--full-refresh`` on all 25 months, over an existing warehouse."""
    run_dir = fresh_dir(runs_dir / "full-rebuild")
    shutil.copy2(built, run_dir / WAREHOUSE_NAME)
    for attempt in range(1, jobs.repeats + 1):
        jobs.measure(FULL_REBUILD, attempt, dataset.with_new_month, run_dir, full_refresh=True)


def reference_runs(
    dataset: Dataset, options: Options, repeats: int, log_dir: Path, details: list[dict]
) -> dict[str, Outcome]:
    """The floor for all month-ends and for the new one, and plain pandas."""
    load_date = options.load_date
    contenders = {
        FLOOR_ALL: repeat_contender(
            FLOOR_ALL,
            "duckdb-all",
            contender_command("duckdb", dataset.history, load_date),
            repeats,
            log_dir,
            details,
        ),
        FLOOR_NEW: repeat_contender(
            FLOOR_NEW,
            "duckdb-new",
            contender_command("duckdb", dataset.with_new_month, load_date, END_DATE),
            repeats,
            log_dir,
            details,
        ),
    }
    if options.pandas:
        contenders[PANDAS] = repeat_contender(
            PANDAS,
            "pandas-all",
            contender_command("pandas", dataset.history, load_date),
            repeats,
            log_dir,
            details,
            options.pandas_timeout_s,
            options.pandas_memory_cap_bytes,
        )
    return contenders


def bench_size(customers: int, options: Options) -> SizeResult:
    """Everything at one size: data, the job's three runs, the references."""
    size_dir = options.work_dir / str(customers)
    print(f"\n== {customers:,} customers", flush=True)
    dataset = prepare_dataset(customers, size_dir)
    how = "reused" if dataset.reused else "generated"
    print(f"data {how}: {report.gigabytes(dataset.raw_bytes)} GB of CSV", flush=True)
    log_dir = fresh_dir(size_dir / "logs" / "runs")
    runs_dir = fresh_dir(size_dir / "runs")
    repeats = options.repeats_for(customers)

    jobs = JobRuns(log_dir, repeats)
    built = full_builds(jobs, dataset, runs_dir, options.keep)
    job_rows, job_month_ends = indicator_rows(built)
    incremental_runs(jobs, dataset, built, runs_dir, options.keep)
    if options.full_rebuild:
        full_rebuilds(jobs, dataset, built, runs_dir)
    if not options.keep:
        shutil.rmtree(runs_dir)
    contenders = reference_runs(dataset, options, repeats, log_dir, jobs.details)
    return SizeResult(
        customers=customers,
        dataset=dataset,
        runs=jobs.medians(),
        contenders=contenders,
        job_indicator_rows=job_rows,
        job_month_ends=job_month_ends,
        max_rss_single_bytes=jobs.max_rss_single_bytes,
        details=jobs.details,
    )


def indicator_rows(warehouse: Path) -> tuple[int, int]:
    """Rows and month-ends of the job's ``marts.customer_indicators``: the same work?"""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows, month_ends = con.execute(
            "select count(*), count(distinct as_of_date) from marts.customer_indicators"
        ).fetchone()
    return rows, month_ends


def progress(
    run: str, attempt: int, repeats: int, figure: Figure, failure: str | None = None
) -> None:
    peak = report.gigabytes(figure.peak_bytes)
    status = f" ({failure})" if failure else ""
    print(f"  {run} {attempt}/{repeats}: {figure.wall_s:.1f} s, peak {peak} GB{status}", flush=True)


def as_dict(figure: Figure) -> dict:
    return dataclasses.asdict(figure)


# --------------------------------------------------------------------------- main


def parse_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes are positive customer counts, e.g. 10000,100000")
    return sizes


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="Measure the whole job (ingestion, dbt build, tiering, publish) at "
        "several sizes against one DuckDB query and plain pandas.",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        help="customer counts, comma-separated (default 10000,100000,1000000)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="runs of everything per size, figures are medians "
        "(default 3 up to 100,000 customers, 1 above)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help="generated data, logs and warehouses (default data/bench)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=DEFAULT_RESULTS_DIR,
        help="where the tables go (default benchmarks/results)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep every run's warehouse in the work dir"
    )
    parser.add_argument("--no-pandas", action="store_true", help="skip the plain-pandas runs")
    parser.add_argument(
        "--no-full-rebuild",
        action="store_true",
        help="skip the full rebuild; the monthly run is then a share of the full build",
    )
    parser.add_argument(
        "--pandas-timeout",
        type=float,
        default=30.0,
        metavar="MINUTES",
        help="stop a pandas run after this many minutes (default 30)",
    )
    parser.add_argument(
        "--pandas-memory-cap",
        type=float,
        default=20.0,
        metavar="GB",
        help="stop a pandas run whose memory exceeds this, as out of memory (default 20)",
    )
    parser.add_argument(
        "--load-date",
        type=dt.date.fromisoformat,
        default=dt.date.today(),
        help="day of the load for the DuckDB query and pandas (default today, as the job)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: sizes 2000,10000 and 1 repeat (unless given)",
    )
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return Options(
        sizes=args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES),
        repeats=args.repeats if args.repeats is not None else (1 if args.quick else None),
        work_dir=args.work_dir.resolve(),
        results_dir=args.results_dir.resolve(),
        keep=args.keep,
        pandas=not args.no_pandas,
        full_rebuild=not args.no_full_rebuild,
        pandas_timeout_s=args.pandas_timeout * 60,
        pandas_memory_cap_bytes=int(args.pandas_memory_cap * 1e9),
        load_date=args.load_date,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    arguments = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "benchmarks.bench", *arguments])
    started = dt.datetime.now(dt.UTC)
    header = report.Header(
        started=started,
        command=command,
        machine=report.machine(),
        settings={
            "load date": options.load_date.isoformat(),
            "data": f"{HISTORY_MONTHS} months of history before {NEW_MONTH}, then the new "
            f"month {NEW_MONTH}; generator seed {SEED}, CSV, one file per table and month",
            "indicators": f"window {WINDOW_MONTHS} months, cash spread rate {CASH_SPREAD_RATE}",
            **{name: os.environ[name] for name in PASSED_THROUGH if name in os.environ},
        },
    )
    print(f"Benchmark: {command}", flush=True)
    try:
        prepare_manifest()
        results = []
        for customers in options.sizes:
            results.append(bench_size(customers, options))
            paths = report.write(header, results, options.results_dir)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print()
    print(paths[0].read_text())
    print(f"Written to {paths[0]}, {paths[1]} and {paths[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
