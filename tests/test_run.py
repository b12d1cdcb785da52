"""`python -m orchestration run`: the headless job as cron and the README use it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import pytest

from orchestration import runlock
from orchestration.__main__ import run_config
from orchestration.config import REPO_ROOT, ConfigError, Settings, parse_as_of, parse_flag
from tests.conftest import make_landing, query, run_job, tree_digest


def cli_environment(raw_dir, warehouse, **env) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items() if name != "TIERS_ACCEPT_GRADING"}
    environ.update(TIERS_RAW_DIR=str(raw_dir), TIERS_WAREHOUSE=str(warehouse), **env)
    return environ


def run_cli(raw_dir, warehouse, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", "orchestration", "run", *args],
        cwd=REPO_ROOT,
        env=cli_environment(raw_dir, warehouse, **env),
        capture_output=True,
        text=True,
    )


def start_cli(raw_dir, warehouse, *args, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration", "run", *args],
        cwd=REPO_ROOT,
        env=cli_environment(raw_dir, warehouse, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Overlap:
    """A Dagster run started on the warehouse while the CLI run was building it."""

    result: Any  # the Dagster run's ExecuteInProcessResult
    cli_was_running: bool  # the CLI run had not finished when the Dagster run ended
    builds_during: list[str]  # the CLI run's build folders, after the Dagster run


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A landing folder, its digest before the run, and a warehouse published from it.

    While the CLI run builds, a Dagster run of tiering_job on the same warehouse is
    started in this process (``overlap``)."""
    root = tmp_path_factory.mktemp("run")
    landing = make_landing(root / "landing", customers=120, months=6, dirty=True)
    before = tree_digest(landing)
    warehouse = root / "out" / "warehouse.duckdb"
    (root / "dagster_home").mkdir()
    cli = start_cli(landing, warehouse, DAGSTER_HOME=str(root / "dagster_home"))
    builds = warehouse.parent / ".build"
    while cli.poll() is None and not (builds.is_dir() and any(builds.iterdir())):
        time.sleep(0.2)  # until the CLI run has started its build (under the lock)
    result = run_job(landing, warehouse)
    overlap = Overlap(
        result=result,
        cli_was_running=cli.poll() is None,
        builds_during=[p.name for p in (warehouse.parent / ".build").glob("*")],
    )
    stdout, stderr = cli.communicate()
    done = subprocess.CompletedProcess(cli.args, cli.returncode, stdout, stderr)
    return landing, before, warehouse, done, overlap


def test_a_dagster_run_started_during_a_cli_run_stops_and_harms_neither(published):
    """Two overlapping runs: the second is refused before it touches anything, the
    first keeps its build and publishes."""
    _, _, warehouse, done, overlap = published
    assert overlap.cli_was_running, "the CLI run ended before the overlap was tried"
    assert not overlap.result.success
    (failure,) = [e for e in overlap.result.all_events if e.is_step_failure]
    assert failure.step_key == "raw_files"
    reason = failure.step_failure_data.user_failure_data.description
    assert "another run is building" in reason and "a CLI run" in reason
    assert len(overlap.builds_during) == 1  # the CLI run's build, not deleted
    assert done.returncode == 0, done.stderr
    assert query(warehouse, "select count(*) from tiers.customer_tiers")[0][0] > 0
    assert runlock.lock_path(warehouse).read_text() == ""  # released, holder cleared


def test_run_publishes_and_prints_a_summary(published):
    _, _, warehouse, done, _ = published
    assert done.returncode == 0, done.stderr
    assert warehouse.is_file()
    assert not list((warehouse.parent / ".build").glob("*"))  # no build left behind
    for table in ["accounts", "trades", "fees", "balances", "cash_flows"]:
        assert table in done.stdout
    assert "Quarantined by rule:" in done.stdout and "duplicate_key" in done.stdout
    (first, latest, months) = query(
        warehouse,
        "select min(as_of_date), max(as_of_date), count(distinct as_of_date) "
        "from tiers.customer_tier_history",
    )[0]
    # a new warehouse: the first run grades every month-end
    assert f"This run graded {months} month-ends, {first} to {latest}, in order" in done.stdout


def test_run_prints_a_line_per_step_and_logs_the_rest(published):
    _, _, warehouse, done, _ = published
    lines = done.stdout.splitlines()
    assert len(lines) < 60, done.stdout
    assert "DEBUG" not in done.stdout and "PASS=" not in done.stdout
    for step in ("raw_files", "warehouse_models", "tier_model", "published_warehouse"):
        assert any(
            line.startswith("[") and f"] {step} " in line and "done in" in line for line in lines
        ), step
    (log,) = (warehouse.parent / "logs").glob("run-*.log")
    assert f"Log: {log}" in done.stdout
    text = log.read_text()
    assert "STEP_SUCCESS" in text and "Done. PASS=" in text  # Dagster's events, dbt's output


def test_cli_runs_are_recorded_in_the_dagster_instance(published):
    """With DAGSTER_HOME (as `make run` sets it), the UI shows the CLI's runs."""
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus

    _, _, warehouse, done, _ = published
    assert done.returncode == 0, done.stderr
    with DagsterInstance.from_config(str(warehouse.parent.parent / "dagster_home")) as instance:
        (run,) = instance.get_runs()
        assert run.job_name == "tiering_job" and run.status == DagsterRunStatus.SUCCESS
        tiers = instance.get_latest_materialization_event(AssetKey(["tiers", "customer_tiers"]))
        assert tiers is not None and tiers.run_id == run.run_id


def test_run_never_modifies_the_raw_files(published):
    landing, before, _, _, _ = published
    assert tree_digest(landing) == before


def test_bad_file_fails_clearly_and_leaves_the_published_warehouse(published, tmp_path):
    landing, _, warehouse, _, _ = published
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in landing.iterdir():
        if path.is_file():
            (broken / path.name).write_bytes(path.read_bytes())
    text = (broken / "accounts.csv").read_text(encoding="utf-8")
    (broken / "accounts.csv").write_text(text.replace("open_date", "opened", 1), encoding="utf-8")
    before = warehouse.read_bytes()
    done = run_cli(broken, warehouse)
    assert done.returncode == 2
    assert "accounts.csv" in done.stderr and "'open_date'" in done.stderr
    assert "Nothing was published" in done.stderr
    assert warehouse.read_bytes() == before


def test_a_failed_gate_exits_1_and_publishes_nothing(published, tmp_path):
    """The CLI's side of a failed gate; the accepted path is tests/test_tiering.py's."""
    landing, _, warehouse, _, _ = published
    config = tmp_path / "strict.yml"
    config.write_text("ops:\n  grading_gates:\n    config:\n      min_segment_share: 0.5\n")
    before = warehouse.read_bytes()
    done = run_cli(landing, warehouse, "--config", str(config))
    assert done.returncode == 1, done.stderr
    assert "error in step grading_gates" in done.stderr
    assert "smallest_segment_share" in done.stderr and "min_segment_share = 0.5" in done.stderr
    assert "--accept-grading" in done.stderr and "Nothing was published" in done.stderr
    assert warehouse.read_bytes() == before


def test_run_config_adds_the_operators_acceptance(tmp_path):
    assert run_config(None, False) == {}
    accept = {"grading_gates": {"config": {"accept_gates": True}}}
    assert run_config(None, True) == {"ops": accept}
    path = tmp_path / "run.yml"
    path.write_text("ops:\n  tier_models:\n    config: {hysteresis_patience: 3}\n")
    assert run_config(path, True) == {
        "ops": {"tier_models": {"config": {"hysteresis_patience": 3}}, **accept}
    }
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="run.yml"):
        run_config(path, False)
    with pytest.raises(ConfigError, match="absent.yml"):
        run_config(tmp_path / "absent.yml", False)


def test_a_misspelt_run_config_is_an_input_error(tmp_path, monkeypatch, capsys):
    from orchestration.__main__ import main

    path = tmp_path / "run.yml"
    path.write_text("ops:\n  tier_models:\n    config: {hysteresis_patiense: 3}\n")
    warehouse = tmp_path / "brokerage.duckdb"
    monkeypatch.setenv("TIERS_WAREHOUSE", str(warehouse))
    assert main(["run", "--config", str(path)]) == 2
    assert "hysteresis_patiense" in capsys.readouterr().err
    assert not warehouse.exists()


@pytest.mark.parametrize(
    ("text", "expected"), [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)]
)
def test_accept_grading_variable(text, expected):
    assert parse_flag("TIERS_ACCEPT_GRADING", {"TIERS_ACCEPT_GRADING": text}) is expected
    assert parse_flag("TIERS_ACCEPT_GRADING", {}) is False


def test_a_bad_accept_grading_variable_is_refused(tmp_path):
    done = run_cli(tmp_path, tmp_path / "warehouse.duckdb", TIERS_ACCEPT_GRADING="maybe")
    assert done.returncode == 2
    assert "TIERS_ACCEPT_GRADING='maybe'" in done.stderr


def test_run_rejects_a_bad_as_of(published):
    landing, _, warehouse, _, _ = published
    done = run_cli(landing, warehouse, TIERS_AS_OF="2026-10-15")
    assert done.returncode == 2
    assert "TIERS_AS_OF" in done.stderr and "month-end" in done.stderr


def test_run_rejects_an_as_of_outside_the_data(published):
    landing, _, warehouse, _, _ = published
    before = warehouse.read_bytes()
    done = run_cli(landing, warehouse, TIERS_AS_OF="2019-01-31")
    assert done.returncode == 2
    assert "TIERS_AS_OF=2019-01-31 is not a month-end the data covers" in done.stderr
    assert warehouse.read_bytes() == before


def test_run_rejects_an_as_of_not_over_yet_before_building(published):
    landing, _, warehouse, _, _ = published
    before = warehouse.read_bytes()
    done = run_cli(landing, warehouse, TIERS_AS_OF="2031-01-31")
    assert done.returncode == 2
    assert "TIERS_AS_OF=2031-01-31 is not over on the day of the load" in done.stderr
    assert "error in step raw_files" in done.stderr  # the first step, before any build
    assert warehouse.read_bytes() == before


def test_a_warehouse_named_like_a_schema_is_refused():
    with pytest.raises(ConfigError, match="clashes with the warehouse schema"):
        Settings.from_env({"TIERS_WAREHOUSE": "/srv/bi/tiers.duckdb"})


def test_settings_defaults_work_out_of_the_box():
    settings = Settings.from_env({})
    assert settings.raw_dir == REPO_ROOT / "seeds" / "sample"
    assert (settings.raw_dir / "accounts.csv").is_file()
    assert settings.warehouse == REPO_ROOT / "data" / "warehouse.duckdb"
    assert settings.as_of is None


@pytest.mark.parametrize("text", ["2026-02-30", "31/10/2026", "2026-10-30"])
def test_as_of_must_be_a_month_end_date(text):
    with pytest.raises(ConfigError):
        parse_as_of(text)


def test_as_of_accepts_month_ends():
    assert str(parse_as_of("2024-02-29")) == "2024-02-29"


def test_a_cli_run_started_during_a_dagster_run_is_refused(tmp_path):
    """While a Dagster run holds the warehouse's lock, the CLI is refused with a clear
    message that names the run, and touches nothing."""
    warehouse = tmp_path / "warehouse.duckdb"
    with runlock.holding(warehouse, "Dagster run 1234abcd"):
        done = run_cli(REPO_ROOT / "seeds" / "sample", warehouse)
    assert done.returncode == 2
    assert "another run is building" in done.stderr and "Dagster run 1234abcd" in done.stderr
    assert not warehouse.exists() and not (tmp_path / ".build").exists()
