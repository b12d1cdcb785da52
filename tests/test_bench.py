"""The benchmark (``benchmarks/bench.py``): its arithmetic on made-up figures, the
landing split, the measuring of a process, and one run of the whole bench at a tiny size.

Nothing here asserts a speed: speed is what the bench reports, not what tests check.
"""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import bench, report
from benchmarks.measure import (
    MARTS,
    OVERHEAD,
    STAGES,
    WHOLE_JOB,
    Figure,
    Measured,
    StepWindow,
    Summary,
    run_measured,
    stage_figures,
    step_windows,
    summarise,
)
from seeds.generate import generate
from tests.conftest import END

MB = 10**6


def measured(samples, start=0.0, end=10.0) -> Measured:
    return Measured(start, end, samples, returncode=0, max_rss_single_bytes=0)


WINDOWS = [
    StepWindow("raw_files", 1.0, 2.0),
    StepWindow("staging_models", 2.0, 4.0),
    StepWindow("warehouse_models", 4.0, 7.0),
    StepWindow("tier_model", 7.0, 8.0),
    StepWindow("staging_models", 8.0, 8.5),
    StepWindow("published_warehouse", 8.5, 9.0),
]


def test_each_sample_counts_for_the_stage_whose_step_it_falls_in():
    samples = [
        (0.5, 100),  # start-up: overhead
        (1.5, 300),  # raw_files: ingestion
        (3.0, 200),  # staging_models: ingestion
        (5.0, 900),  # warehouse_models: dbt build
        (7.5, 400),  # tier_model: tiering
        (8.2, 250),  # staging_models again: ingestion, lower than its other step
        (9.5, 150),  # tear-down: overhead
    ]
    figures = stage_figures(measured(samples), WINDOWS)
    assert figures["ingestion"] == Figure(3.5, 300)
    assert figures["dbt build"] == Figure(3.0, 900)
    assert figures["tiering"] == Figure(1.0, 400)
    assert figures["publish"] == Figure(0.5, None)  # no sample inside: unknown, not 0
    assert figures[MARTS] == Figure(6.5, 900)
    assert figures[OVERHEAD] == Figure(2.0, 150)
    assert figures[WHOLE_JOB] == Figure(10.0, 900)
    stage_walls = sum(figures[stage].wall_s for stage in (*STAGES, OVERHEAD))
    assert stage_walls == pytest.approx(figures[WHOLE_JOB].wall_s)


def test_a_step_no_stage_claims_is_an_error():
    timings = {"steps": [{"step": "raw_files", "start": 1, "end": 2}]}
    assert step_windows(timings) == [StepWindow("raw_files", 1, 2)]
    timings["steps"].append({"step": "brand_new_step", "start": 2, "end": 3})
    with pytest.raises(ValueError, match="brand_new_step"):
        step_windows(timings)


def test_summaries_are_medians_and_skip_missing_peaks():
    summary = summarise([Figure(3.0, 30), Figure(1.0, None), Figure(2.0, 10), Figure(9.0, 20)])
    assert summary.wall_s == 2.5
    assert summary.peak_bytes == 20
    assert summary.repeats == 4
    assert summarise([Figure(1.0, None)]).peak_bytes is None


def test_floor_ratio_is_job_over_query_and_must_be_within_1_5x_at_1m():
    job, floor = Summary(30.0, None, 1), Summary(20.0, None, 1)
    within = report.floor_comparison(1_000_000, "x", job, floor)
    assert (within.ratio, within.met) == (1.5, True)
    beyond = report.floor_comparison(1_000_000, "x", Summary(50.0, None, 1), floor)
    assert (beyond.ratio, beyond.met) == (2.5, False)
    small = report.floor_comparison(10_000, "x", Summary(50.0, None, 1), floor)
    assert (small.met, small.target) == (None, "<= 1.5 at 1M")
    shown = report.floor_comparison(1_000_000, "x", job, floor, judged=False)
    assert (shown.ratio, shown.met, shown.target) == (1.5, None, "")


def size_result(customers: int, full: float, monthly: float, rebuild: float | None, peak: int):
    def whole(seconds: float) -> dict[str, Summary]:
        return {WHOLE_JOB: Summary(seconds, peak, 1)}

    runs = {report.FULL_BUILD: whole(full), report.INCREMENTAL: whole(monthly)}
    if rebuild is not None:
        runs[report.FULL_REBUILD] = whole(rebuild)
    return report.SizeResult(customers, None, runs, {}, 0, 0, {})


def test_targets_at_1m_and_at_10k():
    at_1m = {t.name: t for t in report.targets(size_result(1_000_000, 170, 20, 200, 5 * 10**9))}
    assert at_1m["whole job (ingest -> marts -> tiers -> publish), full build"].met is True
    assert at_1m["peak memory of the whole job, any run"].met is True
    monthly = at_1m["monthly run / full rebuild, whole job"]
    assert (monthly.measured, monthly.met) == (0.1, True)
    over = {t.name: t for t in report.targets(size_result(1_000_000, 181, 30, None, 7 * 10**9))}
    assert over["whole job (ingest -> marts -> tiers -> publish), full build"].met is False
    assert over["peak memory of the whole job, any run"].met is False
    # without a full rebuild, the monthly run is a share of the full build
    assert over["monthly run / full build, whole job"].met is False
    at_10k = report.targets(size_result(10_000, 14.0, 9.0, 15.0, 10**9))
    assert [(t.limit, t.met) for t in at_10k][0] == (15.0, True)
    assert all(t.met is None for t in at_10k[1:])
    at_100k = report.targets(size_result(100_000, 50.0, 9.0, 55.0, 10**9))
    assert all(t.met is None for t in at_100k)


def test_pandas_ratio_is_judged_at_1m_only_and_a_memory_failure_is_a_result():
    job = Summary(60.0, None, 1)
    small = report.pandas_comparison(10_000, job, Summary(120.0, None, 1), None)
    assert (small.ratio, small.met, small.target) == (2.0, None, ">= 10 at 1M")
    slow = report.pandas_comparison(1_000_000, job, Summary(900.0, None, 1), None)
    assert (slow.ratio, slow.met) == (15.0, True)
    close = report.pandas_comparison(1_000_000, job, Summary(300.0, None, 1), None)
    assert close.met is False
    out_of_memory = report.pandas_comparison(
        1_000_000, job, Summary(200.0, None, 1), "failed: out of memory (MemoryError)"
    )
    assert out_of_memory.met is True
    assert report.ratio_text(out_of_memory) == "> 3.33"
    cut_short = report.pandas_comparison(
        1_000_000, job, Summary(300.0, None, 1), "timed out after 5 min"
    )
    assert cut_short.met is None  # 5x so far: whether it would reach 10x is not known
    cut_late = report.pandas_comparison(
        1_000_000, job, Summary(1800.0, None, 1), "timed out after 30 min"
    )
    assert cut_late.met is True


def test_texts_of_figures():
    assert report.gigabytes(1_234_000_000) == "1.23"
    assert report.gigabytes(None) == "–"
    assert report.duration(1800) == "30 min"
    assert report.duration(45) == "45 s"
    assert report.met_text(True) == "yes"
    assert report.met_text(False) == "**no**"
    assert report.met_text(None) == "–"
    assert report.table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_contender_failures_are_named():
    def ended(returncode, stopped=None):
        return Measured(0, 1, [], returncode, 0, stopped)

    assert bench.contender_failure(ended(0), 60) is None
    assert bench.contender_failure(ended(-9, "timed out"), 1800) == "timed out after 30 min"
    assert "out of memory" in bench.contender_failure(ended(-9, "over the memory cap"), 60)
    assert "MemoryError" in bench.contender_failure(ended(3), 60)
    assert "killed" in bench.contender_failure(ended(-9), 60)
    assert bench.contender_failure(ended(1), 60) is None  # a plain error: the bench stops


def test_history_holds_all_but_the_new_month_and_the_other_folder_everything(tmp_path):
    generated = tmp_path / "generated"
    generate(generated, 50, 3, END, 7, monthly_files=True)
    (generated / "_bench_generation.json").write_text("{}")
    history, with_new_month = tmp_path / "history", tmp_path / "with_new_month"
    bench.split_landing(generated, history, with_new_month, "2026-10")
    for table in ("trades", "fees", "balances", "cash_flows"):
        assert sorted(p.name for p in (history / table).iterdir()) == ["2026-08.csv", "2026-09.csv"]
        assert sorted(p.name for p in (with_new_month / table).iterdir()) == [
            "2026-08.csv",
            "2026-09.csv",
            "2026-10.csv",
        ]
    for folder in (history, with_new_month):
        assert sorted(p.name for p in folder.iterdir()) == [
            "accounts.csv",
            "balances",
            "cash_flows",
            "fees",
            "managers.csv",
            "trades",
        ]
        assert (folder / "accounts.csv").read_bytes() == (generated / "accounts.csv").read_bytes()
    # laid out again from scratch: nothing left over from the run before
    bench.split_landing(generated, history, with_new_month, "2026-09")
    assert sorted(p.name for p in (history / "trades").iterdir()) == ["2026-08.csv", "2026-10.csv"]


def test_the_memory_of_a_whole_process_tree_is_sampled(tmp_path):
    # the parent holds 50 MB and starts a child holding 200 MB: the tree holds both
    # (the bytes are written, so the pages are resident; slow starts on a busy
    # machine leave the sampler 3 s to see the child)
    child = "import time; b = b'x' * 200_000_000; time.sleep(3)"
    parent = (
        "import subprocess, sys; a = b'x' * 50_000_000; "
        f"subprocess.run([sys.executable, '-c', {child!r}])"
    )
    done = run_measured([sys.executable, "-c", parent], {}, tmp_path / "log")
    assert done.returncode == 0 and done.stopped is None
    assert done.peak_bytes > 250 * MB
    # the kernel's largest single process; not compared with the peak: Linux counts
    # a forked child's memory from its parent's at the fork (here pytest's)
    assert done.max_rss_single_bytes > 200 * MB


def test_a_process_over_its_caps_is_stopped(tmp_path):
    hog = "import time; b = bytearray(300_000_000); time.sleep(30)"
    capped = run_measured([sys.executable, "-c", hog], {}, tmp_path / "log", None, 200 * MB)
    assert capped.stopped == "over the memory cap" and capped.returncode == -9
    sleeper = "import time; time.sleep(30)"
    late = run_measured([sys.executable, "-c", sleeper], {}, tmp_path / "log", timeout_s=0.5)
    assert late.stopped == "timed out" and late.returncode == -9


def test_the_references_use_the_jobs_indicator_settings():
    from orchestration.assets import IndicatorConfig

    defaults = IndicatorConfig()
    assert defaults.window_months == bench.WINDOW_MONTHS
    assert defaults.cash_spread_rate == bench.CASH_SPREAD_RATE


def test_options():
    quick = bench.parse_args(["--quick"])
    assert quick.sizes == (2_000, 10_000)
    assert quick.repeats_for(10_000) == 1
    default = bench.parse_args([])
    assert default.sizes == (10_000, 100_000, 1_000_000)
    assert (default.repeats_for(100_000), default.repeats_for(1_000_000)) == (3, 1)
    given = bench.parse_args(["--sizes", "500,1_000", "--repeats", "2", "--no-pandas"])
    assert (given.sizes, given.repeats_for(1_000_000), given.pandas) == ((500, 1_000), 2, False)
    assert default.full_rebuild and not bench.parse_args(["--no-full-rebuild"]).full_rebuild
    assert given.pandas_timeout_s == 1800 and given.pandas_memory_cap_bytes == 20 * 10**9
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "0"])


def test_the_bench_runs_end_to_end_at_a_tiny_size(tmp_path, capsys):
    results = tmp_path / "results"
    code = bench.main(
        ["--sizes", "300", "--repeats", "1", "--work-dir", str(tmp_path / "work"),
         "--results-dir", str(results)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    latest = (results / "latest.md").read_text()
    assert latest in printed
    stages = {(row[1], row[2]) for row in table_rows(latest, "## Stages")}
    for run in report.RUN_ORDER:
        for stage in report.STAGE_ROWS:
            assert (run, stage) in stages
    for contender in (report.FLOOR_ALL, report.FLOOR_NEW, report.PANDAS):
        assert (contender, "indicators") in stages
    comparisons = {row[1] for row in table_rows(latest, "## Comparisons")}
    assert comparisons == {
        "job / one DuckDB query, full history",
        "job / one DuckDB query, new month (incremental run)",
        "plain pandas / job, full history",
        *(f"incremental / full rebuild: {stage}" for stage in (*STAGES, OVERHEAD, WHOLE_JOB)),
    }
    assert len(table_rows(latest, "## Targets")) == 3
    raw = json.loads(next(results.glob("*.json")).read_text())
    assert {c["name"] for c in raw["comparisons"]} == comparisons
    # the job and the query computed the same indicators
    (size,) = raw["results"]
    assert size["job_indicator_rows"] == size["contenders"][report.FLOOR_ALL]["rows"]
    # warehouses are cleaned up, the data stays for the next run
    assert not (tmp_path / "work" / "300" / "runs").exists()
    assert (tmp_path / "work" / "300" / "generated" / "_bench_generation.json").is_file()


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the table under the section starting with ``heading``, as cells."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_generated_data_is_reused_only_when_the_arguments_are_the_same(tmp_path):
    first = bench.prepare_dataset(50, tmp_path)
    again = bench.prepare_dataset(50, tmp_path)
    assert (first.reused, again.reused) == (False, True)
    assert again.generation_s == first.generation_s
    assert (again.with_new_month / "trades" / "2026-10.csv").is_file()
    marker = first.generated / "_bench_generation.json"
    marker.write_text(marker.read_text().replace('"50"', '"51"'))
    assert bench.prepare_dataset(50, tmp_path).reused is False
