"""The grading across months, through the Dagster job: the model fit, the SQL scorer, the
history dbt builds (hysteresis, overrides), the gates and what model_runs records.

September then October of one generated book are graded with ``tiering_job``
(``as_of``); hand-computed cases of the same rules are dbt unit tests beside the
models (dbt_project/models/tiers/_tiers__unit_tests.yml).
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil

import duckdb
import pandas as pd
import pytest

from ml import TIERS, TieringModel, apply_hysteresis
from orchestration.report import tier_summary
from orchestration.tiering import GateSettings, evaluate_gates, stored_model
from tests.conftest import OCTOBER, SEPTEMBER, build, dbt, query, run_job


def _history(path, month) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(
            "select * from tiers.customer_tier_history where as_of_date = ? order by customer_id",
            [month],
        ).df()


def _checks(result) -> dict:
    return {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _month_number(day) -> int:
    return day.year * 12 + day.month


def test_hysteresis_in_sql_equals_the_library_rule_applied_month_after_month(graded):
    """Every month of the history, graded in one run or month by month, is
    ml.apply_hysteresis of that month's model tiers and the state of each customer's
    latest earlier row at most three months before."""
    path, _ = graded
    history = pd.DataFrame(
        query(
            path,
            "select as_of_date, customer_id, model_tier, hysteresis_tier, pending_tier, "
            "pending_months, reason from tiers.customer_tier_history "
            "order by as_of_date, customer_id",
        ),
        columns=[
            "as_of_date",
            "customer_id",
            "model_tier",
            "tier",
            "pending_tier",
            "pending_months",
            "reason",
        ],
    )
    months = sorted(history["as_of_date"].unique())
    assert len(months) > 3  # the first run graded the whole history
    state: dict[str, tuple] = {}  # customer -> (month, tier, pending_tier, pending_months)
    held = 0
    for month in months:
        rows = history[history["as_of_date"] == month].reset_index(drop=True)
        previous = pd.DataFrame(
            [
                (customer, tier, pending, count)
                for customer, (when, tier, pending, count) in state.items()
                if _month_number(month) - _month_number(when) <= 3
            ],
            columns=["customer_id", "tier", "pending_tier", "pending_months"],
        )
        expected = apply_hysteresis(
            rows[["customer_id", "model_tier"]].rename(columns={"model_tier": "tier"}),
            previous,
            patience=2,
        )
        assert rows["tier"].tolist() == expected["tier"].tolist(), month
        assert (
            rows["pending_tier"].fillna("-").tolist()
            == expected["pending_tier"].fillna("-").tolist()
        ), month
        assert rows["pending_months"].tolist() == expected["pending_months"].tolist(), month
        is_held = (expected["tier"] != expected["model_tier"]).to_numpy()
        assert rows.loc[is_held, "reason"].str.startswith("hysteresis:pending_tier=").all()
        held += int(is_held.sum())
        for row in expected.itertuples():
            state[row.customer_id] = (month, row.tier, row.pending_tier, row.pending_months)
    assert held > 0  # the book really has model changes held back


def test_the_sql_scores_equal_pythons_assignments(graded):
    path, _ = graded
    both = query(
        path,
        """select count(*), count(*) filter (where s.segment = a.segment
                                           and s.model_tier = a.model_tier)
           from (select * from tiers.customer_scores where as_of_date = $1) as s
           full outer join (select * from tiers.customer_assignments where as_of_date = $1) as a
           using (customer_id)""",
        [OCTOBER],
    )
    ((n, agree),) = both
    assert n > 0 and agree == n


def test_the_sql_scores_keep_every_graded_month_end(graded):
    """September's run graded every month-end up to September, October's run October
    alone: the scorer's tables still hold every month-end of the history."""
    path, _ = graded
    months = "select distinct as_of_date from tiers.{} order by 1"
    history = query(path, months.format("customer_tier_history"))
    assert len(history) > 2
    assert query(path, months.format("customer_scores")) == history
    assert query(path, months.format("customer_factor_scores")) == history


def test_the_published_tables_show_the_published_tier(graded):
    path, _ = graded
    latest = query(path, "select * from tiers.customer_tiers order by customer_id")
    october = _history(path, OCTOBER)
    assert len(latest) == len(october)
    profiles = dict(
        query(
            path, "select tier, customers from tiers.tier_profiles where as_of_date = ?", [OCTOBER]
        )
    )
    counts = october["tier"].value_counts()
    assert profiles == {tier: int(counts.get(tier, 0)) for tier in TIERS}
    ((moved,),) = query(
        path,
        "select coalesce(sum(customers), 0) from tiers.tier_migrations "
        "where as_of_date = ? and movement in ('up', 'down')",
        [OCTOBER],
    )
    both = october.merge(_history(path, SEPTEMBER), on="customer_id", suffixes=("", "_before"))
    assert moved == (both["tier"] != both["tier_before"]).sum()


def test_profiles_reconcile_with_the_indicators(graded):
    path, _ = graded
    rows = query(
        path,
        """select p.tier, p.revenue, p.mean_avg_assets, p.total_avg_assets,
                  sum(coalesce(i.commission_contribution, 0)
                      + coalesce(i.interest_contribution, 0)),
                  avg(i.avg_assets), sum(i.avg_assets)
           from tiers.tier_profiles as p
           left join tiers.customer_tier_history as h
               on h.as_of_date = p.as_of_date and h.tier = p.tier
           left join marts.customer_indicators as i
               on i.customer_id = h.customer_id and i.as_of_date = h.as_of_date
           where p.as_of_date = ?
           group by all""",
        [OCTOBER],
    )
    for _, revenue, mean_assets, total_assets, want_revenue, want_mean, want_total in rows:
        assert revenue == pytest.approx(want_revenue or 0.0)
        assert total_assets == pytest.approx(want_total or 0.0)
        assert (mean_assets is None) == (want_mean is None)
        if want_mean is not None:
            assert mean_assets == pytest.approx(want_mean)


def test_k_diagnostics_are_stored_for_k_2_to_10_for_each_runs_latest_month_end(graded):
    path, _ = graded
    # the first run graded every month-end through September, the second October
    diagnosed = query(path, "select distinct as_of_date from tiers.model_k_diagnostics order by 1")
    assert [month for (month,) in diagnosed] == [SEPTEMBER, OCTOBER]
    ((fitted,),) = query(path, "select count(distinct as_of_date) from tiers.model_runs")
    assert fitted > 2
    for month in (SEPTEMBER, OCTOBER):
        rows = query(
            path,
            "select k, kmeans_k, run_id, stability, inertia from tiers.model_k_diagnostics "
            "where as_of_date = ? order by k",
            [month],
        )
        assert [r[0] for r in rows] == list(range(2, 11))
        assert all(kmeans_k <= k for k, kmeans_k, *_ in rows)
        ((run_id,),) = query(
            path, "select run_id from tiers.model_runs where as_of_date = ?", [month]
        )
        assert {r[2] for r in rows} == {run_id}
        assert all(inertia > 0 for *_, inertia in rows)


def test_model_runs_record_the_model_choices_and_the_gates(graded):
    path, result = graded
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute("select * from tiers.model_runs where as_of_date = ?", [OCTOBER]).df()
        model, run_id, _ = stored_model(con, OCTOBER)
    row = row.iloc[0]
    assert row["run_id"] == run_id
    assert row["k"] == len(model.segments_)
    assert row["factor_count_rule"] == model.factor_model_.selection_
    assert row["extraction"] == TieringModel().extraction
    assert row["gates_failed"] == "" and not row["accepted_by_operator"]
    checks = _checks(result)
    assert {"kmo_adequate", "smallest_segment_share", "vip_share", "changed_tier_share"} <= set(
        checks
    )
    assert all(checks[name].passed for name in ("kmo_adequate", "vip_share"))


def test_gate_values_and_thresholds(graded):
    path, _ = graded
    with duckdb.connect(str(path), read_only=True) as con:
        run_id, gates = evaluate_gates(con, OCTOBER, GateSettings())
        model, stored_run, _ = stored_model(con, OCTOBER)
        history = con.execute(
            "select tier, model_tier from tiers.customer_tier_history where as_of_date = ?",
            [OCTOBER],
        ).df()
        before, now = (
            con.execute(
                "select customer_id, tier, model_tier from tiers.customer_tier_history "
                "where as_of_date = ?",
                [month],
            ).df()
            for month in (SEPTEMBER, OCTOBER)
        )
    by_name = {gate.name: gate for gate in gates}
    assert run_id == stored_run
    assert by_name["kmo_adequate"].value == model.quality_["kmo"]
    assert by_name["kmo_adequate"].threshold == 0.6
    kmeans = model.segments_.loc[model.segments_["source"] == "kmeans", "share"]
    assert by_name["smallest_segment_share"].value == pytest.approx(kmeans.min())
    assert by_name["vip_share"].value == pytest.approx((history["tier"] == "vip").mean())
    assert by_name["vip_share"].threshold == model.naming.vip_max_share
    both = now.merge(before, on="customer_id", suffixes=("", "_before"))
    published_changed = (both["tier"] != both["tier_before"]).mean()
    assert by_name["changed_tier_share"].value == pytest.approx(published_changed)
    changed = (both["model_tier"] != both["model_tier_before"]).mean()
    assert by_name["changed_tier_share"].metadata["model_changed_share"] == pytest.approx(changed)
    with duckdb.connect(str(path), read_only=True) as con:
        strict = evaluate_gates(con, OCTOBER, GateSettings(min_kmo=0.99))[1][0]
    assert not strict.passed
    assert strict.describe() == f"kmo_adequate: {strict.value:.4g}, must be kmo >= min_kmo = 0.99"


def test_a_failed_gate_stops_the_publish_and_an_accepted_one_is_recorded(
    graded, clean_landing, tmp_path
):
    path, _ = graded
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(path, copy)
    published = copy.read_bytes()
    strict = {"ops": {"grading_gates": {"config": {"min_segment_share": 0.5}}}}
    refused = run_job(clean_landing, copy, run_config=strict, as_of=OCTOBER.isoformat())
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.is_step_failure]
    reason = failure.step_failure_data.user_failure_data.description
    assert "smallest_segment_share" in reason and "min_segment_share = 0.5" in reason
    assert "--accept-grading" in reason
    check = _checks(refused)["smallest_segment_share"]
    assert not check.passed and check.severity.value == "ERROR"
    started = {e.step_key for e in refused.all_events if e.event_type_value == "STEP_START"}
    assert "published_warehouse" not in started
    assert copy.read_bytes() == published

    strict["ops"]["grading_gates"]["config"]["accept_gates"] = True
    accepted = run_job(clean_landing, copy, run_config=strict, as_of=OCTOBER.isoformat())
    assert accepted.success
    assert query(
        copy,
        "select gates_failed, accepted_by_operator from tiers.model_runs where as_of_date = ?",
        [OCTOBER],
    ) == [("smallest_segment_share", True)]
    assert _checks(accepted)["smallest_segment_share"].severity.value == "WARN"
    assert "Gates failed and accepted by the operator: smallest_segment_share" in tier_summary(copy)


def test_scoring_job_grades_a_month_with_the_last_model(graded_september, clean_landing, tmp_path):
    """No refit: October is scored in SQL with September's model, and no model is stored
    for October; Python's prediction with that model agrees for every customer."""
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(graded_september, copy)
    result = run_job(clean_landing, copy, job="scoring_job", as_of=OCTOBER.isoformat())
    assert result.success
    assert query(copy, "select max(as_of_date) from tiers.model_runs") == [(SEPTEMBER,)]
    with duckdb.connect(str(copy), read_only=True) as con:
        model, run_id, month = stored_model(con, OCTOBER)
        indicators = con.execute(
            "select * from marts.customer_indicators where as_of_date = ? order by customer_id",
            [OCTOBER],
        ).df()
        history = con.execute(
            "select customer_id, model_tier, segment, run_id, driver_1 "
            "from tiers.customer_tier_history where as_of_date = ? order by customer_id",
            [OCTOBER],
        ).df()
    assert month == SEPTEMBER and set(history["run_id"]) == {run_id}
    expected = model.assign(indicators, explain=False)
    assert history["customer_id"].tolist() == expected["customer_id"].tolist()
    assert history["segment"].tolist() == expected["segment"].tolist()
    assert history["model_tier"].tolist() == expected["tier"].tolist()
    assert history["driver_1"].isna().all()  # Python's drivers come with a fit


def test_scoring_a_warehouse_without_a_model_says_what_to_run(clean_landing, tmp_path):
    result = run_job(clean_landing, tmp_path / "warehouse.duckdb", job="scoring_job")
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "no tiering model fitted" in failure.step_failure_data.user_failure_data.description


def test_tier_tables_of_the_python_layout_are_brought_to_the_dbt_contracts(
    graded_september, clean_landing, tmp_path
):
    """A warehouse graded before the tiers schema moved into dbt: its history carried the
    factor scores, its audit a run id, no assignments table existed and the activity by
    branch was a mart. The next run upgrades it: every month kept (hysteresis reads
    September's state), the old model columns in customer_assignments, the stale mart
    dropped, and the incremental models accept their tables."""
    import json

    from orchestration.config import prepare_manifest
    from orchestration.tiering import upgrade_tier_tables

    history_keys = (
        "select customer_id, as_of_date, tier, pending_tier "
        "from tiers.customer_tier_history where as_of_date = '2026-09-30' order by all"
    )
    assignment_keys = (
        "select customer_id, as_of_date, segment, factor_1 from tiers.customer_assignments "
        "where as_of_date = '2026-09-30' order by all"
    )
    path = tmp_path / "warehouse.duckdb"
    shutil.copyfile(graded_september, path)
    with duckdb.connect(str(path)) as con:
        before = con.execute(history_keys).fetchall()
        assigned = con.execute(assignment_keys).fetchall()
        # the layout the Python tier tables had
        con.execute("""
            create or replace table tiers.customer_tier_history as
            select h.*, a.factor_1, a.factor_2
            from tiers.customer_tier_history as h
            join tiers.customer_assignments as a using (customer_id, as_of_date)""")
        con.execute("drop table tiers.customer_assignments")
        con.execute("""
            create or replace table tiers.override_audit as
            select * exclude (valid_until_date), 'r' as run_id from tiers.override_audit""")
        con.execute(
            "create table marts.tier_activity_by_branch as "
            "select * from tiers.tier_activity_by_branch"
        )
    assert run_job(clean_landing, path, as_of=OCTOBER.isoformat()).success
    assert query(path, history_keys) == before
    assert query(path, assignment_keys) == assigned
    assert query(
        path,
        "select distinct data_type from information_schema.columns "
        "where table_schema = 'tiers' and column_name = 'as_of_date'",
    ) == [("DATE",)]
    assert query(
        path,
        "select count(*) from information_schema.tables where table_schema = 'marts' "
        "and table_name = 'tier_activity_by_branch'",
    ) == [(0,)]
    ((held,),) = query(
        path,
        "select count(*) from tiers.customer_tier_history "
        "where as_of_date = ? and pending_tier is not null",
        [OCTOBER],
    )
    assert held > 0  # September's published tiers hold October's model changes back
    with duckdb.connect(str(path)) as con:
        assert upgrade_tier_tables(con, json.loads(prepare_manifest().read_text())) == []


def test_the_summary_names_the_month_ends_graded(graded):
    path, _ = graded  # September's run graded every month-end up to it, then October
    assert tier_summary(path, [OCTOBER]).startswith(f"This run graded month-end {OCTOBER}\n")
    assert tier_summary(path, [SEPTEMBER, OCTOBER]).startswith(
        f"This run graded 2 month-ends, {SEPTEMBER} to {OCTOBER}, in order\n"
    )


#: What a grading decides, month by month: compared across gradings of the same data.
_GRADED_STATE = (
    "select as_of_date, customer_id, tier, model_tier, hysteresis_tier, pending_tier, "
    "pending_months, run_id from tiers.customer_tier_history order by all",
    "select as_of_date, from_as_of_date, from_tier, to_tier, customers "
    "from tiers.tier_migrations order by all",
    "select as_of_date, run_id from tiers.model_runs order by all",
)


@pytest.mark.parametrize(
    ("settings", "tags"),
    [
        ({"grade_from": "first"}, None),
        ({}, {"tiers/grade_from": "2026-06"}),  # as a UI backfill tags it
        ({"as_of": SEPTEMBER.isoformat()}, None),
    ],
    ids=["backfill", "from-june-by-tag", "september-after-october"],
)
def test_regrading_gives_the_history_an_in_order_grading_gives(
    graded, clean_landing, tmp_path, settings, tags
):
    """September's run (every month-end up to it) then October's, re-graded as a
    backfill, from June, or out of order (September again): the same history,
    migrations and fits, each month re-graded through the latest."""
    path, _ = graded
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(path, copy)
    before = [query(path, sql) for sql in _GRADED_STATE]
    result = run_job(clean_landing, copy, tags=tags, **settings)
    assert result.success
    assert [query(copy, sql) for sql in _GRADED_STATE] == before
    (graded_now,) = query(
        copy,
        "select list(as_of_date order by as_of_date) from tiers.grading_runs "
        "where orchestrator_run_id = ?",
        [result.run_id],
    )[0]
    months = [
        m for (m,) in query(copy, "select distinct as_of_date from tiers.model_runs order by 1")
    ]
    first = months[0] if settings.get("grade_from") else dt.date(2026, 6, 30) if tags else SEPTEMBER
    assert graded_now == [m for m in months if m >= first]  # through October, in order


def test_the_first_run_grades_every_month_end_so_migrations_are_real(graded_september):
    """A new warehouse graded as of September: every month-end up to it is graded, and
    after the first month the migrations pair real months (not everyone `new`)."""
    marts = [
        m
        for (m,) in query(
            graded_september,
            "select distinct as_of_date from marts.customer_indicators "
            "where as_of_date <= ? order by 1",
            [SEPTEMBER],
        )
    ]
    history = [
        m
        for (m,) in query(
            graded_september,
            "select distinct as_of_date from tiers.customer_tier_history order by 1",
        )
    ]
    assert history == marts and len(marts) > 1
    rows = query(
        graded_september,
        "select as_of_date, coalesce(sum(customers) filter (where movement = 'new'), 0), "
        "sum(customers) "
        "from tiers.tier_migrations group by as_of_date order by as_of_date",
    )
    assert rows[0][1] == rows[0][2]  # the first month: everyone is new
    assert all(new < total / 2 for _, new, total in rows[1:])


def test_the_dbt_unit_tests_pass(graded, tmp_path):
    """The hand-computed dbt unit tests beside the models (every layer); production
    runs leave them out (orchestration.assets.dbt_args), so they run here."""
    copy = tmp_path / "warehouse.duckdb"  # dbt opens it read-write
    shutil.copyfile(graded[0], copy)
    done = dbt(copy, "test", "--select", "test_type:unit")
    assert done.returncode == 0, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " ERROR=0 " in summary and "PASS=0 " not in summary, summary


def test_a_corrected_file_rebuilds_the_month_ends_it_changed_and_regrades_from_there(
    graded, clean_landing, tmp_path
):
    """A corrected fees extract changes one fee of July, a corrected trades extract
    swaps the amounts of two August trades, and a new customer opens an account in
    October: audit.load_months marks July, August and October alone as changed (the
    new customer changes no earlier month), the indicators equal a full build of the
    new data, and the run re-grades from July through October."""
    path, _ = graded
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(path, copy)
    landing = tmp_path / "landing"
    shutil.copytree(clean_landing, landing)
    fees = pd.read_csv(landing / "fees.csv", dtype=str, keep_default_na=False)
    july = dt.date(2026, 7, 31)
    row = fees.index[fees["fee_date"].str.startswith("2026-07")][0]
    fees.loc[row, "amount"] = "987654.00"
    fees.to_csv(landing / "fees.csv", index=False)
    # a swap keeps every column's values, only not in the same rows
    trades = pd.read_csv(landing / "trades.csv", dtype=str, keep_default_na=False)
    august = trades[trades["trade_date"].str.startswith("2026-08")]
    first = august.index[0]
    second = august.index[august["amount"] != august.loc[first, "amount"]][0]
    trades.loc[[first, second], "amount"] = trades.loc[[second, first], "amount"].to_numpy()
    trades.to_csv(landing / "trades.csv", index=False)
    accounts = pd.read_csv(landing / "accounts.csv", dtype=str, keep_default_na=False)
    opened = accounts.iloc[[0]].assign(
        account_id="A999999990", customer_id="C99999990", open_date="2026-10-05", close_date=""
    )
    pd.concat([accounts, opened]).to_csv(landing / "accounts.csv", index=False)

    result = run_job(landing, copy)
    assert result.success
    changed = query(
        copy,
        "select as_of_date from audit.load_months where is_changed and load_id = "
        "(select load_id from raw.latest_load) order by 1",
    )
    assert changed == [(july,), (dt.date(2026, 8, 31),), (OCTOBER,)]
    (graded_now,) = query(
        copy,
        "select list(as_of_date order by as_of_date) from tiers.grading_runs "
        "where orchestrator_run_id = ?",
        [result.run_id],
    )[0]
    assert graded_now == [july, dt.date(2026, 8, 31), SEPTEMBER, OCTOBER]
    full = build(landing, tmp_path / "full" / "warehouse.duckdb", "marts")
    indicators = "select * from marts.customer_indicators order by customer_id, as_of_date"
    assert query(copy, indicators) == query(full, indicators)
    # the customer-months: July on recomputed, the new customer's every month added
    activity = "select * from marts.fct_customer_monthly_activity order by all"
    assert query(copy, activity) == query(full, activity)
    assert query(path, indicators) != query(copy, indicators)  # the stale numbers are gone


def test_the_published_metadata_plots_the_grading(graded):
    """Numbers the UI plots over runs (tier sizes and shares, KMO, silhouette, changed
    share) and the charts as PNG images, on the publish and the k diagnostics."""
    path, result = graded
    metadata = {
        event.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    published = metadata["published_warehouse"]
    sizes = {tier: published[f"customers {tier}"].value for tier in TIERS}
    (graded_customers,) = query(path, "select count(*) from tiers.customer_tiers")[0]
    assert sum(sizes.values()) == published["customers"].value == graded_customers
    assert sum(published[f"share {tier}"].value for tier in TIERS) == pytest.approx(1)
    assert 0 < published["kmo"].value <= 1 and -1 <= published["silhouette"].value <= 1
    assert 0 <= published["changed tier share"].value <= 1
    charts = [
        published["tier sizes chart"],
        published["tier profiles chart"],
        published["migration matrix chart"],
        metadata["tiers/model_k_diagnostics"]["k diagnostics chart"],
    ]
    for chart in charts:
        prefix, _, encoded = chart.value.partition("(data:image/png;base64,")
        assert prefix.startswith("![") and base64.b64decode(encoded.rstrip(")"))[:4] == b"\x89PNG"


def test_each_month_end_the_run_graded_is_a_partition_of_the_graded_month_ends(graded):
    path, result = graded
    events = [
        event
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "tiers/graded_month_ends"
    ]
    assert [event.partition for event in events] == [OCTOBER.isoformat()]  # October's run
    metadata = events[0].step_materialization_data.materialization.metadata
    (customers,) = query(
        path, "select count(*) from tiers.customer_tier_history where as_of_date = ?", [OCTOBER]
    )[0]
    assert metadata["customers"].value == customers
    assert sum(metadata[f"customers {tier}"].value for tier in TIERS) == customers
