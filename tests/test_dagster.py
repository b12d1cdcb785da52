"""The Dagster code location and tiering_job, run in-process on generated data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

from orchestration.config import ConfigError, prepare_manifest, sensor_settle_seconds
from tests.conftest import LOAD_DATE, OCTOBER, SEPTEMBER, query, run_job

prepare_manifest()  # the definitions read the dbt manifest at import

from orchestration import assets  # noqa: E402
from orchestration.assets import FINGERPRINT_TAG, dbt_args  # noqa: E402
from orchestration.definitions import decide, defs, landing_fingerprint  # noqa: E402

TIER_CODES = {"vip", "potential", "ordinary_a", "ordinary_b", "free", "sleeping"}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_definitions_load_with_every_part():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "raw/trades",
        "staging/stg_broker__trades",
        "marts/customer_indicators",
        "tiers/model_params",
        "tiers/model_runs",
        "tiers/model_k_diagnostics",
        "tiers/customer_assignments",
        "tiers/customer_scores",
        "tiers/customer_tier_history",
        "tiers/customer_tiers",
        "tiers/override_audit",
        "tiers/tier_activity_by_branch",
        "raw/tier_overrides",
        "published_warehouse",
    } <= keys
    checks = {key.name for key in graph.asset_check_keys}
    gates = {"kmo_adequate", "smallest_segment_share", "vip_share", "changed_tier_share"}
    assert gates <= checks
    assert {spec.name for spec in assets.grading_gates.check_specs if spec.blocking} == gates
    assert any(name.startswith("not_null_customer_indicators") for name in checks)  # dbt tests
    # the model and its predictions are assets of their own; scoring_job leaves both out
    scoring = defs.resolve_job_def("scoring_job").asset_layer.selected_asset_keys
    tiering = defs.resolve_job_def("tiering_job").asset_layer.selected_asset_keys
    fitted = {
        dg.AssetKey(["tiers", "model_params"]),
        dg.AssetKey(["tiers", "customer_assignments"]),
    }
    assert fitted <= tiering and not fitted & scoring
    assert dg.AssetKey(["tiers", "customer_scores"]) in scoring
    assert defs.resolve_schedule_def("monthly_after_month_end").cron_schedule == "0 6 2 * *"
    assert defs.resolve_sensor_def("new_raw_files") is not None


def test_the_jobs_run_every_step_in_the_run_process():
    """The run lock taken by raw_files covers the run only if no step has a process
    of its own (orchestration.runlock)."""
    for job in ("tiering_job", "scoring_job"):
        assert defs.resolve_job_def(job).executor_def is dg.in_process_executor


def test_old_dbt_target_folders_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "DBT_PROJECT_DIR", tmp_path)
    now = time.time()
    for age in range(14):  # run-00 newest ... run-13 oldest, a day apart; one recent log
        folder = tmp_path / "target" / f"run-{age:02d}"
        folder.mkdir(parents=True)
        (folder / "dbt.log").write_text("")
        stamp = now - age * 86400
        os.utime(folder / "dbt.log", (stamp, stamp))
        os.utime(folder, (stamp, stamp))
    os.utime(tmp_path / "target" / "run-12" / "dbt.log")  # still written to (another run)
    assets.prune_dbt_targets(keep=10)
    left = sorted(folder.name for folder in (tmp_path / "target").iterdir())
    # the ten written to last stay: run-12 by its log
    assert left == [f"run-{age:02d}" for age in range(9)] + ["run-12"]
    os.utime(tmp_path / "target" / "run-12" / "dbt.log", (now - 99 * 86400,) * 2)
    assets.prune_dbt_targets(keep=3, younger_than=1.5 * 86400)
    left = sorted(folder.name for folder in (tmp_path / "target").iterdir())
    assert left == ["run-00", "run-01", "run-02"]  # the rest are older than 1.5 days


def test_dbt_args_carry_the_load_date_and_full_refresh():
    assert dbt_args("build", LOAD_DATE) == [
        "build",
        "--vars",
        '{"load_date": "2026-11-21"}',
        "--exclude-resource-type",
        "unit_test",  # unit tests run in make test, not in production runs
    ]
    window = dbt_args("build", LOAD_DATE, dbt_vars={"window_months": 6})[2]
    assert window == '{"load_date": "2026-11-21", "window_months": 6}'
    assert dbt_args("build", LOAD_DATE, full_refresh=True)[-1] == "--full-refresh"


def test_dbt_vars_are_passed_only_when_they_differ_from_dbt_defaults():
    # dbt reuses a parse only for the same --vars: with the defaults, every dbt call
    # of a run passes the same ones, and dbt_project.yml supplies the values
    import yaml

    from orchestration.assets import IndicatorConfig, TierConfig
    from orchestration.config import DBT_PROJECT_DIR

    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    for defaults in (IndicatorConfig(), TierConfig()):
        assert defaults.dbt_vars() == {}
        assert {name: project["vars"][name] for name in defaults.model_dump()} == (
            defaults.model_dump()
        )
    assert TierConfig(hysteresis_patience=1).dbt_vars() == {"hysteresis_patience": 1}
    changed = IndicatorConfig(window_months=6, reporting_currency="HKD").dbt_vars()
    assert changed == {"window_months": 6, "reporting_currency": "HKD"}


def test_the_sensor_fingerprint_changes_with_the_files(tmp_path):
    (tmp_path / "trades.csv").write_text("a\n")
    before = landing_fingerprint(tmp_path)
    assert landing_fingerprint(tmp_path) == before
    (tmp_path / "fees.csv").write_text("b\n")
    assert landing_fingerprint(tmp_path) != before


def test_the_sensor_waits_until_the_files_stop_changing(tmp_path):
    """A half-copied file keeps changing: no run until the folder is unchanged for the
    settle time; then one run, and none again for the same files."""
    trades = tmp_path / "trades.csv"
    trades.write_text("trade_id,account_id\nT1,")  # a copy in progress
    first = decide(None, landing_fingerprint(tmp_path), now=0.0, settle=60)
    assert first.run_for is None and "waiting" in first.reason
    trades.write_text("trade_id,account_id\nT1,A1\nT2,")  # still growing
    growing = decide(first.cursor, landing_fingerprint(tmp_path), now=300.0, settle=60)
    assert growing.run_for is None and "waiting" in growing.reason
    early = decide(growing.cursor, landing_fingerprint(tmp_path), now=330.0, settle=60)
    assert early.run_for is None and "unchanged for 30 s" in early.reason
    settled = decide(early.cursor, landing_fingerprint(tmp_path), now=400.0, settle=60)
    assert settled.run_for == landing_fingerprint(tmp_path)
    again = decide(settled.cursor, landing_fingerprint(tmp_path), now=700.0, settle=60)
    assert again.run_for is None and again.reason == "no new files"
    # a cursor of the earlier sensor (the bare fingerprint of the last run) still works
    assert decide(settled.run_for, settled.run_for, now=0.0, settle=60).run_for is None


def test_the_settle_time_is_a_number_of_seconds():
    assert sensor_settle_seconds({}) == 60
    assert sensor_settle_seconds({"TIERS_SENSOR_SETTLE_SECONDS": "0"}) == 0
    for bad in ("soon", "-5"):
        with pytest.raises(ConfigError, match="TIERS_SENSOR_SETTLE_SECONDS"):
            sensor_settle_seconds({"TIERS_SENSOR_SETTLE_SECONDS": bad})


def test_a_sensor_run_whose_files_changed_since_lands_nothing(clean_landing, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(clean_landing, landing)
    asked_for = landing_fingerprint(landing)
    with (landing / "trades.csv").open("a") as handle:
        handle.write("T999,")  # the copy went on after the sensor's tick
    warehouse = tmp_path / "warehouse.duckdb"
    result = run_job(landing, warehouse, tags={FINGERPRINT_TAG: asked_for})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "raw_files"
    assert (
        "changed after the sensor asked" in failure.step_failure_data.user_failure_data.description
    )
    assert not warehouse.exists()


def test_the_job_publishes_tiers_for_the_latest_month(graded):
    warehouse, result = graded
    assert result.success
    ((as_of, graded_customers),) = query(
        warehouse,
        "select max(as_of_date), count(*) filter (where as_of_date = "
        "(select max(as_of_date) from marts.customer_indicators)) from marts.customer_indicators",
    )
    rows = query(
        warehouse, "select as_of_date, tier, count(*) from tiers.customer_tiers group by all"
    )
    assert {r[0] for r in rows} == {as_of}
    assert {r[1] for r in rows} <= TIER_CODES
    assert sum(r[2] for r in rows) == graded_customers
    for table in ("tier_profiles", "tier_migrations", "service_plans", "model_runs"):
        assert query(warehouse, f"select count(*) from tiers.{table}")[0][0] > 0
    assert (warehouse.parent / "snapshots" / "latest" / "tiers" / "customer_tiers.parquet").exists()


def test_the_file_and_the_snapshot_name_the_same_run(graded):
    warehouse, result = graded
    snapshots = warehouse.parent / "snapshots"
    assert query(warehouse, "select run_id from audit.publication") == [(result.run_id,)]
    assert (snapshots / "LATEST").read_text().strip() == result.run_id
    manifest = json.loads((snapshots / "latest" / "_manifest.json").read_text())
    assert manifest["run_id"] == result.run_id


def test_a_publish_cut_off_leaves_the_file_and_latest_as_they_were(
    graded, clean_landing, tmp_path, monkeypatch
):
    """The snapshot is written first and LATEST moves last: a run that dies while
    swapping the file in leaves both on the previous run, and says so in the file."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(graded[0], warehouse)
    shutil.copytree(graded[0].parent / "snapshots", tmp_path / "snapshots", symlinks=True)
    before = digest(warehouse)

    def cut_off(build, target, storage=None):
        raise OSError("killed while publishing")

    monkeypatch.setattr(assets.publish, "publish", cut_off)
    result = run_job(clean_landing, warehouse)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "published_warehouse"
    assert digest(warehouse) == before
    latest = (tmp_path / "snapshots" / "LATEST").read_text().strip()
    assert latest == graded[1].run_id != result.run_id
    assert query(warehouse, "select run_id from audit.publication") == [(latest,)]
    assert (tmp_path / "snapshots" / result.run_id / "_manifest.json").is_file()  # unpointed


def test_the_job_stores_the_k_diagnostics_and_shows_them(graded):
    warehouse, result = graded
    ((as_of,),) = query(warehouse, "select max(as_of_date) from tiers.customer_tiers")
    rows = query(
        warehouse,
        "select k, run_id from tiers.model_k_diagnostics where as_of_date = ? order by k",
        [as_of],
    )
    assert [k for k, _ in rows] == list(range(2, 11))
    assert {run_id for _, run_id in rows} == {
        query(warehouse, "select run_id from tiers.model_runs where as_of_date = ?", [as_of])[0][0]
    }
    shown = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("tier_model")
    }
    table = shown["tiers/model_k_diagnostics"]["k diagnostics"].value
    assert "silhouette" in table and "stability" in table and "davies_bouldin" in table
    assert shown["tiers/model_runs"]["kmo"].value > 0
    (published,) = [
        m
        for m in result.asset_materializations_for_node("published_warehouse")
        if m.asset_key.to_user_string() == "published_warehouse"  # not the month-ends'
    ]
    assert "vip" in published.metadata["tier sizes"].value or "free" in (
        published.metadata["tier sizes"].value
    )


def test_tier_tables_hold_no_personal_data(graded):
    warehouse, _ = graded
    columns = query(
        warehouse,
        "select table_name, column_name from information_schema.columns "
        "where table_schema = 'tiers'",
    )
    personal = {"birth_year", "gender", "manager_id", "risk_level"}
    assert not {c for _, c in columns} & personal
    # the branch appears only in the aggregate by branch, never beside a customer
    assert {t for t, c in columns if c == "branch_id"} == {"tier_activity_by_branch"}
    assert "customer_id" not in {c for t, c in columns if t == "tier_activity_by_branch"}


READER = textwrap.dedent(
    """
    import sys, time, duckdb
    path, stop = sys.argv[1], sys.argv[2]
    import pathlib
    seen = errors = 0
    while not pathlib.Path(stop).exists():
        try:
            with duckdb.connect(path, read_only=True) as con:
                n, tiers = con.execute(
                    "select count(*), count(distinct as_of_date) from tiers.customer_tiers"
                ).fetchall()[0]
                assert n > 0 and tiers == 1, (n, tiers)
                seen += 1
        except Exception as error:
            errors += 1
            print(repr(error), flush=True)
        time.sleep(0.05)
    print(f"seen={seen} errors={errors}", flush=True)
    """
)


def tier_tables(warehouse) -> dict[str, list[tuple]]:
    tables = [
        "customer_tiers",
        "customer_tier_history",
        "tier_profiles",
        "tier_migrations",
        "model_runs",
        "customer_assignments",
    ]
    out = {t: query(warehouse, f"select * from tiers.{t} order by all") for t in tables}
    # a re-run keeps every fit's id and figures; only its clock times and run ids differ
    out["model_runs"] = query(
        warehouse,
        "select * exclude (started_at, finished_at, params) from tiers.model_runs order by all",
    )
    return out


@pytest.fixture(scope="module")
def second_run(graded, clean_landing, tmp_path_factory):
    """The job run again on the same data while a BI client keeps querying the tiers.

    Returns the run's result, the tier tables before and after, and the reader's output.
    """
    warehouse = tmp_path_factory.mktemp("second_run") / "warehouse.duckdb"
    shutil.copyfile(graded[0], warehouse)
    before = tier_tables(warehouse)
    stop = tmp_path_factory.mktemp("reader") / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(warehouse), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)
        result = run_job(clean_landing, warehouse)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    return result, before, tier_tables(warehouse), out


def test_a_second_run_of_the_same_month_changes_nothing(second_run):
    result, before, after, _ = second_run
    assert result.success
    assert after == before


def test_a_reader_is_never_refused_during_a_run(second_run):
    """A BI client keeps querying the published tiers while the job runs again."""
    result, _, _, out = second_run
    assert result.success  # not blocked by the reader
    assert out.strip().endswith("errors=0"), out
    assert int(out.split("seen=")[1].split()[0]) > 0


def test_a_broken_service_plans_file_stops_the_run_before_it_lands_anything(
    graded, clean_landing, tmp_path
):
    warehouse, _ = graded
    before = digest(warehouse)
    plans = tmp_path / "plans.yml"
    plans.write_text("version: broken\ntiers: {vip: {}}\n")
    result = run_job(clean_landing, warehouse, service_plans=str(plans))
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "raw_files"
    assert str(plans) in failure.step_failure_data.error.cause.message
    assert digest(warehouse) == before
    assert not list((warehouse.parent / ".build").glob("*"))  # no build was started


def test_overrides_are_applied_and_audited(graded, clean_landing, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(graded[0], warehouse)
    customer, model_tier = query(
        warehouse,
        "select customer_id, tier from tiers.customer_tiers where tier <> 'vip' "
        "order by customer_id limit 1",
    )[0]
    overrides = tmp_path / "overrides.csv"
    overrides.write_text(
        "customer_id,tier,reason,valid_until\n"
        f"{customer},vip,board member,2099-12-31\n"
        "C_NOT_A_CUSTOMER,vip,typo,\n"
    )
    assert run_job(clean_landing, warehouse, overrides=str(overrides)).success
    row = query(
        warehouse,
        "select tier, model_tier, is_override, override_reason from tiers.customer_tiers "
        "where customer_id = ?",
        [customer],
    )
    assert row == [("vip", model_tier, True, "board member")]
    audit = dict(
        query(
            warehouse,
            "select customer_id, applied from tiers.override_audit "
            "where as_of_date = (select max(as_of_date) from tiers.customer_tiers)",
        )
    )
    assert audit == {customer: True, "C_NOT_A_CUSTOMER": False}


def test_regrading_a_published_month_keeps_the_overrides_it_was_graded_with(
    graded_september, clean_landing, tmp_path
):
    """September graded with an override, then re-graded through October without the
    file: September keeps its override (today's file is not applied to the past);
    October, graded now, has none."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(graded_september, warehouse)
    (customer,) = query(
        warehouse,
        "select customer_id from tiers.customer_tiers where tier <> 'vip' "
        "order by customer_id limit 1",
    )[0]
    overrides = tmp_path / "overrides.csv"
    overrides.write_text(f"customer_id,tier,reason,valid_until\n{customer},vip,board member,\n")
    september = SEPTEMBER.isoformat()
    assert run_job(clean_landing, warehouse, overrides=str(overrides), as_of=september).success
    assert run_job(clean_landing, warehouse, tags={"tiers/grade_from": september}).success
    rows = query(
        warehouse,
        "select as_of_date, tier, is_override from tiers.customer_tier_history "
        "where customer_id = ? and as_of_date >= ? order by as_of_date",
        [customer, SEPTEMBER],
    )
    assert rows[0] == (SEPTEMBER, "vip", True)
    assert rows[-1][0] == OCTOBER and rows[-1][2] is False


def test_views_do_not_depend_on_the_file_name(graded, tmp_path):
    """BI may open a copy under any name: every view resolves inside the file it is read from."""
    warehouse, _ = graded
    copy = tmp_path / "bi_copy.duckdb"
    shutil.copyfile(warehouse, copy)
    views = query(
        copy,
        "select schema_name, view_name from duckdb_views() "
        "where not internal and schema_name not in ('main', 'information_schema', 'pg_catalog')",
    )
    assert ("marts", "fct_trades") in views
    for schema, view in views:
        assert query(copy, f"select count(*) from {schema}.{view}")[0][0] >= 0


def test_run_configuration_reaches_dbt_and_the_model(clean_landing, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    run_config = {
        "ops": {
            "warehouse_models": {"config": {"window_months": 6}},
            "tier_model": {
                "config": {"n_clusters": 5, "naming_thresholds": {"vip_max_share": 0.2}}
            },
        }
    }
    assert run_job(clean_landing, warehouse, run_config=run_config).success
    assert query(warehouse, "select distinct window_months from marts.customer_indicators") == [
        (6,)
    ]
    assert query(warehouse, "select distinct k from tiers.model_runs") == [(5,)]  # every month
    ((k, params),) = query(
        warehouse, "select k, params from tiers.model_runs order by as_of_date desc limit 1"
    )
    assert k == 5 and '"vip_max_share": 0.2' in params


def test_python_and_sql_disagreeing_stops_the_publish(graded, clean_landing, monkeypatch, tmp_path):
    """The SQL scorer is checked against Python's assignment in every run: a customer
    whose segments differ fails the dbt test, and nothing is published."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(graded[0], warehouse)
    before = digest(warehouse)
    assign = assets.assign_month

    def off_by_one(con, as_of):
        rows = assign(con, as_of)
        first = rows["customer_id"].min()
        con.execute(
            "update tiers.customer_assignments set segment = segment + 1 "
            "where customer_id = ? and as_of_date = ?",
            [first, as_of],
        ).fetchall()
        return rows

    monkeypatch.setattr(assets, "assign_month", off_by_one)
    result = run_job(clean_landing, warehouse)
    assert not result.success
    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    assert failed == ["tier_models"]
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "published_warehouse" not in started
    assert digest(warehouse) == before


def test_every_tiers_and_marts_column_is_described_in_the_dbt_manifest(graded):
    """BI users read the tiers and marts schemas (the service desk's included) through
    the dbt docs: each column of each table, the dbt models' and the Python-written
    sources' alike, has a description."""
    import json

    manifest = json.loads(prepare_manifest().read_text())
    described = {
        (node["schema"], node["name"]): {
            name for name, column in node["columns"].items() if column["description"]
        }
        for node in [*manifest["nodes"].values(), *manifest["sources"].values()]
        if node.get("schema") in ("tiers", "marts") and node["resource_type"] in ("model", "source")
    }
    columns = query(
        graded[0],
        "select table_schema, table_name, column_name from information_schema.columns "
        "where table_schema in ('tiers', 'marts')",
    )
    tables = {(schema, table) for schema, table, _ in columns}
    assert ("marts", "customers_at_risk") in tables
    assert tables <= set(described)
    assert [(s, t, c) for s, t, c in columns if c not in described[s, t]] == []


def test_dagsters_sqlite_storage_does_not_wait_for_the_disk(tmp_path, monkeypatch):
    from dagster import DagsterInstance
    from sqlalchemy import create_engine, text

    from orchestration import assets, dagster_storage

    assert assets.dagster_storage is dagster_storage  # the definitions' import installs it
    engine = create_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    with engine.connect() as con:
        assert con.execute(text("pragma synchronous")).scalar() == 0  # OFF
    # Dagster's own storage gets it too: a run recorded in a DAGSTER_HOME
    (tmp_path / "home").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "home"))
    with instance.event_log_storage.index_connection() as con:
        assert con.execute(text("pragma synchronous")).scalar() == 0
    monkeypatch.setenv("TIERS_DAGSTER_SQLITE_SYNC", "full")
    assert dagster_storage.sync_mode() == "FULL"
    monkeypatch.setenv("TIERS_DAGSTER_SQLITE_SYNC", "sometimes")
    with pytest.raises(ConfigError, match="TIERS_DAGSTER_SQLITE_SYNC"):
        dagster_storage.sync_mode()
