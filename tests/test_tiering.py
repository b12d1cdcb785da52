"""orchestration.tiering.grade on a built warehouse, in-process: hysteresis across months,
k diagnostics, gates and what model_runs records.

Grades a copy of the shared ``clean_warehouse`` (the marts, no grading) without dbt
or Dagster, so it costs seconds; the job and the CLI around it are tested in
test_dagster.py and test_run.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import shutil

import duckdb
import pandas as pd
import pytest

from ml import TIERS
from orchestration.config import ConfigError
from orchestration.tiering import (
    GateSettings,
    GradingSettings,
    evaluate_gates,
    grade,
    hysteresis_state,
)

SEPTEMBER = dt.date(2026, 9, 30)
OCTOBER = dt.date(2026, 10, 31)
SETTINGS = GradingSettings()  # hysteresis_patience 2


def _history(con, month) -> pd.DataFrame:
    return con.execute(
        "select * from tiers.customer_tier_history where as_of_date = ? order by customer_id",
        [month],
    ).df()


@pytest.fixture(scope="module")
def warehouse(clean_warehouse, tmp_path_factory):
    """A copy of the built warehouse with September then October graded (patience 2)."""
    path = tmp_path_factory.mktemp("tiering") / "warehouse.duckdb"
    shutil.copyfile(clean_warehouse, path)
    with duckdb.connect(str(path)) as con:
        grade(con, SEPTEMBER, SETTINGS)
        october = grade(con, OCTOBER, SETTINGS)
    return path, october


def test_hysteresis_holds_a_model_change_for_one_month(warehouse):
    path, _ = warehouse
    with duckdb.connect(str(path), read_only=True) as con:
        before = _history(con, SEPTEMBER).set_index("customer_id")
        after = _history(con, OCTOBER).set_index("customer_id")
    assert not before["is_override"].any() and not after["is_override"].any()
    # September is the first graded month: everyone publishes the model tier
    assert (before["tier"] == before["model_tier"]).all()
    assert (before["pending_months"] == 0).all() and before["pending_tier"].isna().all()

    both = after.index.intersection(before.index)
    changed = after.loc[both, "model_tier"] != before.loc[both, "tier"]
    assert changed.sum() > 0  # the fixture really has model changes
    held = after.loc[both[changed]]
    # one month in the new model tier < patience 2: the published tier stays
    assert (held["tier"] == before.loc[held.index, "tier"]).all()
    assert (held["hysteresis_tier"] == held["tier"]).all()
    assert (held["pending_tier"] == held["model_tier"]).all()
    assert (held["pending_months"] == 1).all()
    assert held["reason"].str.startswith("hysteresis:pending_tier=").all()
    assert (
        held["reason"] == "hysteresis:pending_tier=" + held["model_tier"] + "|pending_months=1"
    ).all()
    steady = after.loc[both[~changed]]
    assert (steady["tier"] == steady["model_tier"]).all()
    assert (steady["pending_months"] == 0).all() and steady["pending_tier"].isna().all()
    new = after.loc[after.index.difference(before.index)]
    assert (new["tier"] == new["model_tier"]).all()


def test_the_published_tables_show_the_published_tier(warehouse):
    path, _ = warehouse
    with duckdb.connect(str(path), read_only=True) as con:
        latest = con.execute("select * from tiers.customer_tiers order by customer_id").df()
        october = _history(con, OCTOBER)
        profiles = dict(
            con.execute(
                "select tier, customers from tiers.tier_profiles where as_of_date = ?", [OCTOBER]
            ).fetchall()
        )
        moved = con.execute(
            "select coalesce(sum(customers), 0) from tiers.tier_migrations "
            "where as_of_date = ? and movement in ('up', 'down')",
            [OCTOBER],
        ).fetchall()[0][0]
    pd.testing.assert_frame_equal(latest, october)
    counts = latest["tier"].value_counts()
    assert profiles == {tier: int(counts.get(tier, 0)) for tier in TIERS}
    assert moved == 0  # with patience 2, nobody's published tier can move in the second month


def test_regrading_a_month_gives_the_same_tiers(warehouse, tmp_path):
    path, october = warehouse
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(path, copy)
    with duckdb.connect(str(copy)) as con:
        before = _history(con, OCTOBER)
        again = grade(con, OCTOBER, SETTINGS)
        after = _history(con, OCTOBER)
    assert again.grading_id == october.grading_id
    pd.testing.assert_frame_equal(after, before)


def test_patience_one_publishes_the_model_tiers(warehouse, tmp_path):
    path, october = warehouse
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(path, copy)
    with duckdb.connect(str(copy)) as con:
        off = grade(con, OCTOBER, GradingSettings(hysteresis_patience=1))
        rows = _history(con, OCTOBER)
    assert off.grading_id != october.grading_id  # the settings are part of the grading
    assert (rows["tier"] == rows["model_tier"]).all()
    assert (rows["pending_months"] == 0).all()


def test_patience_must_be_at_least_one():
    with pytest.raises(ConfigError, match="hysteresis_patience"):
        GradingSettings(hysteresis_patience=0)


def test_k_diagnostics_are_stored_for_k_2_to_10(warehouse):
    path, october = warehouse
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "select as_of_date, run_id, k, kmeans_k, inertia, silhouette, calinski_harabasz, "
            "davies_bouldin, stability from tiers.model_k_diagnostics order by as_of_date, k"
        ).df()
        (run_id,) = con.execute(
            "select run_id from tiers.model_runs where as_of_date = ?", [OCTOBER]
        ).fetchall()[0]
    for month in (SEPTEMBER, OCTOBER):
        of_month = rows[rows["as_of_date"].dt.date == month]
        assert of_month["k"].tolist() == list(range(2, 11))
        assert of_month["run_id"].nunique() == 1
    of_october = rows[rows["as_of_date"].dt.date == OCTOBER]
    assert of_october["run_id"].iloc[0] == run_id == october.grading_id
    assert (of_october["kmeans_k"] <= of_october["k"]).all()
    multi = of_october[of_october["kmeans_k"] >= 2]
    assert (
        multi[["inertia", "silhouette", "calinski_harabasz", "davies_bouldin"]].notna().all().all()
    )
    assert multi["stability"].between(-1, 1).all() and (multi["inertia"] > 0).all()


def test_model_runs_record_the_model_choices_and_the_gates(warehouse):
    path, october = warehouse
    with duckdb.connect(str(path), read_only=True) as con:
        row = (
            con.execute(
                "select k, kmeans_k, factor_count_rule, extraction, gates_failed, "
                "accepted_by_operator, params from tiers.model_runs where as_of_date = ?",
                [OCTOBER],
            )
            .df()
            .iloc[0]
        )
    model = october.model
    assert row["k"] == len(model.segments_)
    assert row["factor_count_rule"] == model.factor_model_.selection_
    assert row["extraction"] == model.extraction == SETTINGS.extraction
    assert row["gates_failed"] == "" and not row["accepted_by_operator"]
    assert [gate.name for gate in october.gates] == [
        "kmo_adequate",
        "smallest_segment_share",
        "vip_share",
        "changed_tier_share",
    ]
    assert all(gate.passed for gate in october.gates)
    assert '"hysteresis_patience": 2' in row["params"] and '"accept": false' in row["params"]


def test_a_failed_gate_is_recorded_and_an_accepted_one_too(warehouse, tmp_path):
    path, october = warehouse
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(path, copy)
    strict = GateSettings(min_segment_share=0.5, max_vip_share=0.0001)
    with duckdb.connect(str(copy)) as con:
        failed = grade(con, OCTOBER, SETTINGS, gates=strict)
        refused = con.execute(
            "select gates_failed, accepted_by_operator from tiers.model_runs where as_of_date = ?",
            [OCTOBER],
        ).fetchall()
        accepted = grade(
            con, OCTOBER, SETTINGS, gates=GateSettings(max_vip_share=0.0001, accept=True)
        )
        recorded = con.execute(
            "select gates_failed, accepted_by_operator from tiers.model_runs where as_of_date = ?",
            [OCTOBER],
        ).fetchall()
    assert [g.name for g in failed.failed_gates] == ["smallest_segment_share", "vip_share"]
    assert not failed.accepted_by_operator
    assert refused == [("smallest_segment_share,vip_share", False)]
    assert accepted.accepted_by_operator and recorded == [("vip_share", True)]
    # gates never change the grading itself
    assert failed.grading_id == accepted.grading_id == october.grading_id


def test_gate_values_and_thresholds(warehouse):
    _, october = warehouse
    current = october.tables["customer_tiers"]
    migrations = october.tables["tier_migrations"]
    naming = SETTINGS.naming_rules()
    by_name = {
        gate.name: gate
        for gate in evaluate_gates(october.model, current, migrations, GateSettings(), naming)
    }
    assert by_name["kmo_adequate"].value == october.model.quality_["kmo"]
    assert by_name["kmo_adequate"].threshold == 0.6
    kmeans = october.model.segments_.query("source == 'kmeans'")["share"]
    assert by_name["smallest_segment_share"].value == kmeans.min()
    assert by_name["vip_share"].value == (current["tier"] == "vip").mean()
    assert by_name["vip_share"].threshold == naming.vip_max_share
    assert by_name["changed_tier_share"].value == 0.0  # patience 2: nobody moved yet
    assert by_name["changed_tier_share"].threshold == 0.25

    # 3 of the 4 customers graded both months changed tier; 5 new ones do not count
    moves = pd.DataFrame(
        {
            "from_tier": ["vip", "free", "new"],
            "to_tier": ["free", "free", "vip"],
            "movement": ["down", "same", "new"],
            "customers": [3, 1, 5],
        }
    )
    gate = evaluate_gates(october.model, current, moves, GateSettings(), naming)[3]
    assert gate.value == 0.75 and not gate.passed
    assert gate.describe() == (
        "changed_tier_share: 0.75, must be share of customers whose published tier "
        "changed <= max_changed_share = 0.25"
    )

    no_kmo = copy.copy(october.model)
    no_kmo.quality_ = {**october.model.quality_, "kmo": float("nan")}
    assert not evaluate_gates(no_kmo, current, migrations, GateSettings(), naming)[0].passed


def test_a_customer_missing_a_month_keeps_the_state_of_their_latest_month():
    con = duckdb.connect()
    con.execute("create schema tiers")
    con.execute(
        "create table tiers.customer_tier_history as select * from (values "
        "('A', date '2026-08-31', 'vip', 'vip', null, 0), "  # absent in September
        "('B', date '2026-05-31', 'vip', 'vip', null, 0), "  # gone for too long
        "('C', date '2026-08-31', 'free', 'free', null, 0), "
        "('C', date '2026-09-30', 'free', 'free', 'ordinary_b', 1), "
        "('D', date '2026-10-31', 'free', 'free', null, 0)"  # this month's own row
        ") as t(customer_id, as_of_date, model_tier, hysteresis_tier, pending_tier, pending_months)"
    )
    state = hysteresis_state(con, OCTOBER).set_index("customer_id")
    assert state.index.tolist() == ["A", "C"]
    assert state.loc["A", "tier"] == "vip"
    assert state.loc["C", ["tier", "pending_tier", "pending_months"]].tolist() == [
        "free",
        "ordinary_b",
        1,
    ]


def test_the_model_tiers_changes_are_reported_beside_the_published(warehouse):
    _, october = warehouse
    current = october.tables["customer_tiers"]
    migrations = october.tables["tier_migrations"]
    naming = SETTINGS.naming_rules()
    before = current[["customer_id", "model_tier"]].copy()
    before.loc[before.index[:10], "model_tier"] = "sleeping"  # ten held back by hysteresis
    before = before[before["customer_id"] != current["customer_id"].iloc[-1]]  # one is new
    changed = (current["model_tier"].iloc[:10] != "sleeping").sum()
    gate = evaluate_gates(october.model, current, migrations, GateSettings(), naming, before)[3]
    assert gate.metadata["model_changed_share"] == pytest.approx(changed / len(before))
    first = evaluate_gates(october.model, current, migrations, GateSettings(), naming)[3]
    assert "model_changed_share" not in first.metadata
