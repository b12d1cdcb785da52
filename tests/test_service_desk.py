"""The service desk marts on a book no threshold was tuned on (seed 303), graded by the job.

The book has managers (over and under capacity), customers without one, and
customers who drift to sleep (``seeds.generate --drift-share``). The rules are
asserted, not figures of a run: cells add up to tier sizes, hours reconcile with
the service plans, moves never overload a manager, no personal data reaches the
marts, and the early warning catches customers before they go dormant.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from benchmarks.early_warning import evaluate
from seeds.generate import generate
from tests.conftest import END, build, query

SERVICE_DESK = (
    "customer_service_book",
    "tier_suitability_matrix",
    "manager_books",
    "manager_reassignments",
    "customers_at_risk",
)
PERSONAL = {"birth_year", "gender", "customer_type", "first_open_date", "primary_account_id"}


# the gates are the tiering tests' subject: a synthetic book is graded here for its marts
ACCEPT_GATES = {"ops": {"grading_gates": {"config": {"accept_gates": True}}}}


@pytest.fixture(scope="module")
def desk(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("desk")
    landing = root / "landing"
    generate(landing, 1500, 30, END, seed=303, drift_share=0.06)
    return build(landing, root / "warehouse.duckdb", run_config=ACCEPT_GATES)


def frame(warehouse: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).df()


def test_matrix_cells_add_up_to_the_tier_sizes(desk):
    matrix = frame(
        desk,
        "select as_of_date, tier, sum(customers) as customers "
        "from marts.tier_suitability_matrix group by all",
    )
    history = frame(
        desk,
        "select as_of_date, tier, count(*) as customers "
        "from tiers.customer_tier_history group by all",
    )
    merged = matrix.merge(history, on=["as_of_date", "tier"], how="left", suffixes=("", "_h"))
    assert len(merged) == 30 * 6  # every month-end, every tier
    assert (merged["customers"] == merged["customers_h"].fillna(0)).all()
    grades = set(
        frame(desk, "select distinct suitability_grade from marts.tier_suitability_matrix")[
            "suitability_grade"
        ]
    )
    assert grades == {"C1", "C2", "C3", "C4", "C5", "unknown"}


def test_a_grade_caps_the_products_whatever_the_tier(desk):
    caps = frame(
        desk,
        "select distinct suitability_grade, max_product_risk_level "
        "from marts.customer_service_book",
    ).set_index("suitability_grade")["max_product_risk_level"]
    assert caps["C1"] == 1 and caps["C5"] == 5 and pd.isna(caps["unknown"])


def test_manager_hours_are_the_plans_hours_times_the_tier_sizes(desk):
    plans = frame(
        desk, "select tier, contacts_per_year, hours_per_contact from tiers.service_plans"
    )
    per_customer = dict(
        zip(
            plans["tier"], plans["contacts_per_year"] * plans["hours_per_contact"] / 12, strict=True
        )
    )
    sizes = frame(
        desk, "select as_of_date, tier, count(*) as n from tiers.customer_tier_history group by all"
    )
    sizes["hours"] = sizes["n"] * sizes["tier"].map(per_customer)
    expected = sizes.groupby("as_of_date")["hours"].sum()
    books = frame(
        desk,
        "select as_of_date, sum(required_hours_per_month) as hours, "
        "sum(customers) as customers from marts.manager_books group by all",
    )
    books = books.set_index("as_of_date")
    assert books["hours"].to_numpy() == pytest.approx(expected[books.index].to_numpy(), rel=1e-9)
    # every graded customer is in exactly one book, the unassigned rows included
    assert (books["customers"] == sizes.groupby("as_of_date")["n"].sum()[books.index]).all()


def test_books_hold_managers_over_and_under_capacity_and_flag_the_level_gaps(desk):
    latest = frame(
        desk,
        "select * from marts.manager_books "
        "where as_of_date = (select max(as_of_date) from marts.manager_books)",
    )
    assert {"over", "within", "unassigned"} <= set(latest["load_status"])
    listed = latest[latest["is_listed"]]
    over = listed["required_hours_per_month"] > listed["capacity_hours_per_month"]
    assert (listed.loc[over, "load_status"] == "over").all()
    # the flag counts exactly the customers whose manager ranks below their plan's level
    gaps = frame(
        desk,
        "select manager_id, count(*) as n from marts.customer_service_book "
        "where as_of_date = (select max(as_of_date) from marts.manager_books) "
        "and manager_level_rank > required_level_rank group by all",
    ).set_index("manager_id")["n"]
    flagged = listed.set_index("manager_id")["customers_below_plan_level"]
    assert gaps.sum() > 0
    assert (flagged[flagged > 0].sort_index() == gaps.sort_index()).all()


def test_moves_bring_managers_within_capacity_and_never_overload_a_receiver(desk):
    books = frame(
        desk,
        "select as_of_date, manager_id, branch_id, manager_level_rank, "
        "capacity_hours_per_month, required_hours_per_month, load_status "
        "from marts.manager_books where is_listed",
    )
    moves = frame(
        desk,
        "select m.*, l.level_rank as required_rank from marts.manager_reassignments m "
        "join staging.stg_crm__manager_levels l "
        "on m.required_manager_level = l.manager_level",
    )
    assert (moves["status"] == "proposed").any()
    proposed = moves[moves["status"] == "proposed"]
    ins = proposed.groupby(["as_of_date", "to_manager_id"])["contact_hours_per_month"].sum()
    outs = proposed.groupby(["as_of_date", "from_manager_id"])["contact_hours_per_month"].sum()
    after = books.set_index(["as_of_date", "manager_id"])
    after["in"] = ins.reindex(after.index).fillna(0).to_numpy()
    after["out"] = outs.reindex(after.index).fillna(0).to_numpy()
    after["hours"] = after["required_hours_per_month"] + after["in"] - after["out"]
    receivers = after[after["in"] > 0]
    assert (receivers["hours"] <= receivers["capacity_hours_per_month"] + 1e-9).all()
    stuck = set(
        moves.loc[moves["status"] == "not_possible", ["as_of_date", "from_manager_id"]].itertuples(
            index=False, name=None
        )
    )
    relieved = after[(after["load_status"] == "over") & ~after.index.isin(stuck)]
    assert len(relieved) > 0
    assert (relieved["hours"] <= relieved["capacity_hours_per_month"] + 1e-9).all()
    # within the branch, to a manager of the level the plan asks for
    target = books.set_index(["as_of_date", "manager_id"])
    to = target.loc[list(zip(proposed["as_of_date"], proposed["to_manager_id"], strict=True))]
    assert (to["branch_id"].to_numpy() == proposed["branch_id"].to_numpy()).all()
    assert (to["manager_level_rank"].to_numpy() <= proposed["required_rank"].to_numpy()).all()
    assert moves.loc[moves["status"] == "not_possible", "note"].notna().all()


def test_the_early_warning_catches_dormancy_ahead_with_few_false_alarms(desk):
    quality = evaluate(desk)
    assert quality.events >= 30  # enough customers went dormant to judge
    assert quality.catch_rate >= 0.8
    assert quality.false_alarm_share <= 0.2


def test_at_risk_rows_carry_their_trend_and_are_never_sleeping(desk):
    rows = frame(desk, "select * from marts.customers_at_risk")
    assert len(rows) > 0 and (rows["tier"] != "sleeping").all()
    quiet = rows[rows["is_gone_quiet"]]
    assert (quiet["recency_days"] >= 120).all()
    assert (quiet["recency_days"] >= 8 * quiet["usual_gap_days"] - 1e-9).all()
    falling = rows[rows["is_falling"]]
    assert (falling["trade_count"] <= 0.75 * falling["trade_count_before"]).all()
    assert (falling["net_assets"] < falling["net_assets_before"]).all()
    # idle customers: months left = the dormant rule's 365 days less the idle ones
    idle = rows[rows["recency_days"] > 31]
    expected = ((365 - idle["recency_days"]) / 30.4375).apply(lambda m: max(int(-(-m // 1)), 0))
    assert (idle["months_until_dormant"] == expected).all()


def test_no_personal_data_in_the_service_desk_marts(desk):
    for table in SERVICE_DESK:
        columns = set(frame(desk, f"select * from marts.{table} limit 0").columns)
        assert not columns & PERSONAL, table


def test_without_a_managers_file_every_book_is_unlisted(graded):
    """The session's ``clean_landing`` has no managers file (conftest): the books are built
    from the accounts' manager ids, none listed, and the hours still add up."""
    path, _ = graded
    books = query(path, "select distinct load_status from marts.manager_books")
    assert {status for (status,) in books} <= {"not_listed", "unassigned"}
    assert query(path, "select count(*) from marts.manager_reassignments") == [(0,)]
