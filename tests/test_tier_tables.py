"""The ``tiers`` table shapes: service plans, overrides, tiers, profiles, migrations, history.

A real TieringModel fitted on a small synthetic book; every expectation is a
rule (counts add up, overrides show, bad rows are reported), not a number from
a run.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from ml import ALL_INDICATORS, TIER_RANK, TIERS, TieringModel, apply_hysteresis
from orchestration.config import ConfigError
from orchestration.tier_tables import (
    SERVICE_PLANS_PATH,
    customer_tiers,
    history_upsert,
    k_diagnostics_table,
    load_overrides,
    load_service_plans,
    model_run_row,
    model_tables,
    override_audit,
    tier_migrations,
    tier_profiles,
)
from tests.ml.synthetic_book import make_indicators, next_month

AS_OF = dt.date(2026, 10, 31)
NEXT_AS_OF = dt.date(2026, 11, 30)
RUN_ID = "run-test"
PERSONAL_DATA = ("birth_year", "gender", "name", "customer_name", "phone", "email", "id_number")
OVERRIDE_HEADER = ["customer_id", "tier", "reason", "valid_until"]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def book() -> pd.DataFrame:
    """Indicators of 3,000 customers (customer_id as the index), with personal columns."""
    frame = make_indicators(3_000, seed=11)
    rng = np.random.default_rng(0)
    frame["birth_year"] = rng.integers(1940, 2005, len(frame))
    frame["gender"] = rng.choice(["M", "F", "U"], len(frame))
    return frame


@pytest.fixture(scope="module")
def model(book) -> TieringModel:
    return TieringModel(silhouette_sample_size=1_000).fit(book)


@pytest.fixture(scope="module")
def assigned(model, book) -> pd.DataFrame:
    return model.assign(book)


@pytest.fixture(scope="module")
def plans() -> pd.DataFrame:
    return load_service_plans()


@pytest.fixture(scope="module")
def tiers(assigned, plans) -> pd.DataFrame:
    return customer_tiers(assigned, None, AS_OF, RUN_ID, plans=plans)


@pytest.fixture(scope="module")
def next_tiers(model, book, plans) -> pd.DataFrame:
    """Next month: drifted, some customers gone, some new; graded with the stored model."""
    later = next_month(book.drop(columns=["birth_year", "gender"]), seed=12)
    return customer_tiers(model.assign(later), None, NEXT_AS_OF, "run-next", plans=plans)


def _customer_of_tier(assigned: pd.DataFrame, tier: str, nth: int = 0) -> str:
    return str(assigned.loc[assigned["tier"] == tier, "customer_id"].sort_values().iloc[nth])


def _write_overrides(path: Path, rows: list[list[str]], header=OVERRIDE_HEADER) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ------------------------------------------------------------- service plans


def _plans_document() -> dict:
    return yaml.safe_load(SERVICE_PLANS_PATH.read_text(encoding="utf-8"))


def _write_plans(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "service_plans.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_shipped_service_plans_cover_every_tier_once(plans):
    assert plans["tier"].tolist() == list(TIERS)
    assert plans["tier_rank"].tolist() == [TIER_RANK[t] for t in TIERS]
    assert plans["service_time_share"].sum() == pytest.approx(1.0, abs=1e-9)
    assert plans["service_time_share"].between(0, 1).all()
    assert (plans["contacts_per_year"] >= 0).all()
    assert plans["plan_version"].nunique() == 1
    text = ["display_name", "manager_level", "contact_frequency", "description"]
    assert (plans[text].apply(lambda column: column.str.len()) > 0).all().all()


def test_service_plans_missing_tier_names_file_and_tier(tmp_path):
    document = _plans_document()
    del document["tiers"]["free"]
    path = _write_plans(tmp_path, document)
    with pytest.raises(ConfigError, match="free") as error:
        load_service_plans(path)
    assert str(path) in str(error.value)


def test_service_plans_shares_must_sum_to_one(tmp_path):
    document = _plans_document()
    document["tiers"]["vip"]["service_time_share"] += 0.05
    path = _write_plans(tmp_path, document)
    with pytest.raises(ConfigError, match="sum") as error:
        load_service_plans(path)
    assert str(path) in str(error.value)


def test_service_plans_unknown_tier_code(tmp_path):
    document = _plans_document()
    document["tiers"]["gold"] = dict(document["tiers"]["vip"], service_time_share=0.0)
    path = _write_plans(tmp_path, document)
    with pytest.raises(ConfigError, match="gold") as error:
        load_service_plans(path)
    assert str(path) in str(error.value)


def test_service_plans_tier_given_twice(tmp_path):
    path = tmp_path / "service_plans.yml"
    text = SERVICE_PLANS_PATH.read_text(encoding="utf-8")
    path.write_text(text + "\n  vip:\n    display_name: VIP again\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="twice") as error:
        load_service_plans(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("description", None, "description"),
        ("service_time_share", "30%", "service_time_share"),
        ("service_time_share", 1.5, "service_time_share"),
        ("contacts_per_year", -1, "contacts_per_year"),
        ("display_name", "  ", "display_name"),
    ],
)
def test_service_plans_bad_field(tmp_path, field, value, message):
    document = _plans_document()
    if value is None:
        del document["tiers"]["potential"][field]
    else:
        document["tiers"]["potential"][field] = value
    path = _write_plans(tmp_path, document)
    with pytest.raises(ConfigError, match=message) as error:
        load_service_plans(path)
    assert str(path) in str(error.value) and "potential" in str(error.value)


def test_service_plans_unreadable_file_names_it(tmp_path):
    missing = tmp_path / "nowhere.yml"
    with pytest.raises(ConfigError, match="nowhere.yml"):
        load_service_plans(missing)
    broken = tmp_path / "broken.yml"
    broken.write_text("tiers: [vip: {\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.yml"):
        load_service_plans(broken)


# ----------------------------------------------------------------- overrides


def test_override_is_applied_and_visible(tmp_path, assigned, plans):
    customer = _customer_of_tier(assigned, "free")
    path = _write_overrides(tmp_path / "o.csv", [[customer, "vip", "board_member", ""]])
    overrides = load_overrides(path, AS_OF, assigned["customer_id"])
    assert overrides.rejected.empty
    out = customer_tiers(assigned, overrides.valid, AS_OF, RUN_ID, plans=plans)

    row = out.set_index("customer_id").loc[customer]
    assert row["tier"] == "vip" and row["tier_rank"] == TIER_RANK["vip"]
    assert row["model_tier"] == "free"
    assert row["is_override"]
    assert row["override_reason"] == "board_member"
    assert row["reason"] == "override:board_member"
    assert pd.isna(row["override_valid_until"])
    assert row["tier_name"] == plans.set_index("tier").loc["vip", "display_name"]
    others = out[out["customer_id"] != customer]
    assert not others["is_override"].any()
    assert (others["tier"] == others["model_tier"]).all()


def test_override_in_force_through_its_last_day_expired_ones_ignored(tmp_path, assigned, plans):
    last_day, expired = (
        _customer_of_tier(assigned, "free", 0),
        _customer_of_tier(assigned, "free", 1),
    )
    path = _write_overrides(
        tmp_path / "o.csv",
        [
            [last_day, "potential", "campaign", AS_OF.isoformat()],
            [expired, "potential", "old campaign", (AS_OF - dt.timedelta(days=1)).isoformat()],
        ],
    )
    overrides = load_overrides(path, AS_OF, assigned["customer_id"])
    assert overrides.valid["customer_id"].tolist() == [last_day]
    assert overrides.valid["valid_until"].tolist() == [AS_OF]
    assert overrides.rejected["customer_id"].tolist() == [expired]
    assert overrides.rejected["rejection"].str.contains("expired").all()

    out = customer_tiers(assigned, overrides.valid, AS_OF, RUN_ID, plans=plans).set_index(
        "customer_id"
    )
    assert out.loc[last_day, "tier"] == "potential"
    assert out.loc[last_day, "override_valid_until"] == AS_OF
    assert out.loc[expired, "tier"] == "free" and not out.loc[expired, "is_override"]


def test_bad_override_rows_are_rejected_with_reasons(tmp_path, assigned, plans):
    good = _customer_of_tier(assigned, "free", 0)
    duplicate = _customer_of_tier(assigned, "free", 1)
    unknown_tier = _customer_of_tier(assigned, "free", 2)
    bad_date = _customer_of_tier(assigned, "free", 3)
    no_reason = _customer_of_tier(assigned, "free", 4)
    rows = [
        [good, "vip", "ok", ""],
        [duplicate, "vip", "first", ""],
        [duplicate, "potential", "second", "2030-01-31"],
        [unknown_tier, "gold", "typo", ""],
        [bad_date, "vip", "bad date", "31/12/2026"],
        ["NOT-A-CUSTOMER", "vip", "not graded", ""],
        ["", "vip", "no id", ""],
        [no_reason, "vip", "", ""],
        [good + "x", "vip", "comma", "in", "reason"],
    ]
    path = _write_overrides(tmp_path / "o.csv", rows)
    overrides = load_overrides(path, AS_OF, assigned["customer_id"])

    assert overrides.valid["customer_id"].tolist() == [good]
    rejected = overrides.rejected
    assert len(overrides.valid) + len(rejected) == len(rows)
    assert rejected["rejection"].notna().all() and rejected["record"].notna().all()
    by_line = rejected.set_index("source_line")["rejection"]
    expected = {
        3: "duplicate",
        4: "duplicate",
        5: "unknown tier",
        6: "not a date",
        7: "not graded",
        8: "missing customer_id",
        9: "missing reason",
        10: "fields",
    }
    assert sorted(by_line.index) == sorted(expected)
    for line, words in expected.items():
        assert words in by_line[line], (line, by_line[line])

    out = customer_tiers(assigned, overrides.valid, AS_OF, RUN_ID, plans=plans)
    assert out["is_override"].sum() == 1
    assert out.set_index("customer_id").loc[duplicate, "tier"] == "free"


def test_override_audit_lists_every_override_considered(tmp_path, assigned, plans):
    applied = _customer_of_tier(assigned, "free", 0)
    refused = _customer_of_tier(assigned, "ordinary_b", 0)
    path = _write_overrides(
        tmp_path / "o.csv",
        [[applied, "vip", "ok", "2027-03-31"], [refused, "gold", "typo", ""], ["", "vip", "x", ""]],
    )
    overrides = load_overrides(path, AS_OF, assigned["customer_id"])
    tiers = customer_tiers(assigned, overrides.valid, AS_OF, RUN_ID, plans=plans)
    audit = override_audit(tiers, overrides.rejected, AS_OF, RUN_ID)

    assert len(audit) == len(overrides.valid) + len(overrides.rejected) == 3
    assert audit["applied"].sum() == tiers["is_override"].sum() == 1
    assert (audit["rejection"].isna() == audit["applied"]).all()
    rows = audit.set_index("customer_id", drop=False)
    assert rows.loc[applied, "requested_tier"] == "vip"
    assert rows.loc[applied, "model_tier"] == "free"
    assert rows.loc[applied, "valid_until"] == "2027-03-31"
    assert rows.loc[refused, "model_tier"] == "ordinary_b"
    assert not rows.loc[refused, "applied"]
    assert (audit["as_of_date"] == AS_OF).all() and (audit["run_id"] == RUN_ID).all()


def test_override_file_missing_a_column_names_file_and_column(tmp_path, assigned):
    path = _write_overrides(
        tmp_path / "o.csv", [["C1", "vip", "x"]], header=["customer_id", "tier", "reason"]
    )
    with pytest.raises(ConfigError, match="valid_until") as error:
        load_overrides(path, AS_OF, assigned["customer_id"])
    assert str(path) in str(error.value)


def test_override_file_unreadable_or_empty_names_it(tmp_path, assigned):
    with pytest.raises(ConfigError, match="absent.csv"):
        load_overrides(tmp_path / "absent.csv", AS_OF, assigned["customer_id"])
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty.csv"):
        load_overrides(empty, AS_OF, assigned["customer_id"])


def test_no_override_file_gives_empty_frames(assigned, plans, tiers):
    overrides = load_overrides(None, AS_OF, assigned["customer_id"])
    assert overrides.valid.empty and overrides.rejected.empty
    assert {"customer_id", "tier", "reason", "valid_until"} <= set(overrides.valid.columns)
    assert "rejection" in overrides.rejected.columns
    with_empty = customer_tiers(assigned, overrides.valid, AS_OF, RUN_ID, plans=plans)
    pd.testing.assert_frame_equal(with_empty, tiers)
    assert override_audit(tiers, overrides.rejected, AS_OF, RUN_ID).empty


def test_override_file_as_a_spreadsheet_saves_it(tmp_path, assigned):
    """Excel's BOM, capitalised header and tier code, blank lines, extra columns."""
    customer = _customer_of_tier(assigned, "free")
    path = tmp_path / "o.csv"
    path.write_text(
        f"\ufeffCustomer_ID, Tier ,Reason,Valid_Until,Entered_By\n\n{customer},VIP,ok,,anna\n\n",
        encoding="utf-8",
    )
    overrides = load_overrides(path, AS_OF, assigned["customer_id"])
    assert overrides.rejected.empty
    assert overrides.valid[["customer_id", "tier"]].values.tolist() == [[customer, "vip"]]


# ------------------------------------------------------------ customer tiers


def test_customer_tiers_one_row_per_customer_sorted(tiers, assigned):
    assert tiers["customer_id"].is_unique
    assert tiers["customer_id"].tolist() == sorted(assigned["customer_id"])
    for column in ("as_of_date", "tier", "tier_rank", "segment", "reason", "run_id"):
        assert column in tiers.columns and tiers[column].notna().all()
    assert (tiers["as_of_date"] == AS_OF).all() and (tiers["run_id"] == RUN_ID).all()
    assert set(tiers["tier"]) <= set(TIERS)
    assert (tiers["tier_rank"] == tiers["tier"].map(TIER_RANK)).all()


def test_customer_tiers_without_overrides_are_the_models(tiers, assigned):
    model = assigned.set_index("customer_id").loc[tiers["customer_id"]]
    assert (tiers["tier"].to_numpy() == model["tier"].to_numpy()).all()
    assert (tiers["model_tier"] == tiers["tier"]).all()
    assert (tiers["reason"].to_numpy() == model["reason"].to_numpy()).all()
    factors = [c for c in assigned.columns if c.startswith("factor_")]
    assert factors and all(c in tiers.columns for c in factors)
    np.testing.assert_array_equal(tiers[factors].to_numpy(), model[factors].to_numpy())


def test_customer_tiers_show_the_model_tier_and_the_published_one(tmp_path, assigned, plans):
    """Hysteresis holds some customers in last month's tier; an override wins over both."""
    held, overridden, moved = (_customer_of_tier(assigned, "free", i) for i in range(3))
    last_month = pd.DataFrame(
        {
            "customer_id": [held, overridden, moved],
            "tier": ["vip", "vip", "vip"],
            "pending_tier": [None, None, "free"],
            "pending_months": [0, 0, 1],
        }
    )
    hysteresis = apply_hysteresis(assigned[["customer_id", "tier"]], last_month, patience=2)
    path = _write_overrides(tmp_path / "o.csv", [[overridden, "potential", "campaign", ""]])
    overrides = load_overrides(path, AS_OF, assigned["customer_id"])
    out = customer_tiers(
        assigned, overrides.valid, AS_OF, RUN_ID, plans=plans, hysteresis=hysteresis
    ).set_index("customer_id")

    row = out.loc[held]
    assert (row["tier"], row["model_tier"], row["hysteresis_tier"]) == ("vip", "free", "vip")
    assert (row["pending_tier"], row["pending_months"]) == ("free", 1)
    assert row["reason"] == "hysteresis:pending_tier=free|pending_months=1"
    assert row["tier_rank"] == 1 and not row["is_override"]
    row = out.loc[overridden]
    assert (row["tier"], row["model_tier"], row["hysteresis_tier"]) == ("potential", "free", "vip")
    assert row["is_override"] and row["reason"] == "override:campaign"
    row = out.loc[moved]  # second month in free: published
    assert (row["tier"], row["hysteresis_tier"], row["pending_months"]) == ("free", "free", 0)
    assert pd.isna(row["pending_tier"]) and row["reason"].startswith("segment=")
    others = out.drop(index=[held, overridden, moved])
    assert (others["tier"] == others["model_tier"]).all()  # new this month: the model's tier
    assert (others["pending_months"] == 0).all() and others["pending_tier"].isna().all()


def test_customer_tiers_refuse_hysteresis_rows_of_other_customers(assigned, plans):
    hysteresis = apply_hysteresis(assigned[["customer_id", "tier"]].iloc[1:])
    with pytest.raises(ValueError, match="one row per customer"):
        customer_tiers(assigned, None, AS_OF, RUN_ID, plans=plans, hysteresis=hysteresis)


def test_customer_tiers_carry_no_personal_data(assigned, plans, book):
    with_personal = assigned.assign(
        birth_year=book["birth_year"].to_numpy(),
        gender=book["gender"].to_numpy(),
        name="someone",
        phone="555",
        branch_id="B01",
    )
    out = customer_tiers(with_personal, None, AS_OF, RUN_ID, plans=plans)
    assert not set(PERSONAL_DATA) & set(out.columns)


def test_customer_tiers_deterministic_whatever_the_row_order(assigned, plans, tiers):
    shuffled = assigned.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(customer_tiers(shuffled, None, AS_OF, RUN_ID, plans=plans), tiers)


def test_customer_tiers_refuses_overrides_for_ungraded_customers(assigned, plans):
    stray = load_overrides(None, AS_OF, []).valid
    stray = pd.concat(
        [stray, pd.DataFrame({"customer_id": ["NOBODY"], "tier": ["vip"], "reason": ["x"]})]
    )
    with pytest.raises(ValueError, match="NOBODY"):
        customer_tiers(assigned, stray, AS_OF, RUN_ID, plans=plans)


# ------------------------------------------------------------- tier profiles


def test_profiles_add_up_to_the_graded_population(tiers, book):
    profiles = tier_profiles(tiers, book, AS_OF)
    assert profiles["tier"].tolist() == list(TIERS)
    assert profiles["customers"].sum() == len(tiers)
    assert profiles["share"].sum() == pytest.approx(1.0)
    assert profiles["revenue_share"].sum() == pytest.approx(1.0)
    assert (profiles["as_of_date"] == AS_OF).all()
    present = [c for c in ALL_INDICATORS if c in book.columns]
    assert [c for c in profiles.columns if c.startswith("mean_")] == [f"mean_{c}" for c in present]


def test_profiles_revenue_and_means_reconcile_with_the_indicators(tiers, book):
    profiles = tier_profiles(tiers, book, AS_OF).set_index("tier")
    joined = book.join(tiers.set_index("customer_id")["tier"])
    revenue = (joined["commission_contribution"] + joined["interest_contribution"]).groupby(
        joined["tier"]
    )
    for tier, expected in revenue.sum().items():
        assert profiles.loc[tier, "revenue"] == pytest.approx(expected)
    assert profiles["revenue"].sum() == pytest.approx(
        (book["commission_contribution"] + book["interest_contribution"]).sum()
    )
    assert profiles["total_avg_assets"].sum() == pytest.approx(book["avg_assets"].sum())
    means = joined.groupby("tier")["recency_days"].mean()
    for tier, expected in means.items():
        assert profiles.loc[tier, "mean_recency_days"] == pytest.approx(expected)


def test_profiles_keep_an_empty_tier(tiers, book):
    no_free = tiers.assign(tier=tiers["tier"].replace("free", "ordinary_b"))
    profiles = tier_profiles(no_free, book, AS_OF).set_index("tier")
    assert len(profiles) == len(TIERS)
    assert profiles.loc["free", "customers"] == 0
    assert profiles.loc["free", "share"] == 0
    assert profiles.loc["free", "revenue"] == 0
    assert profiles.loc["free", "total_avg_assets"] == 0
    assert profiles.loc["free", [c for c in profiles if c.startswith("mean_")]].isna().all()


def test_profiles_use_only_the_as_of_month(tiers, book):
    this_month = book.reset_index().assign(as_of_date=AS_OF)
    other_month = this_month.assign(as_of_date=dt.date(2026, 9, 30), avg_assets=1e12)
    both = pd.concat([other_month, this_month])
    pd.testing.assert_frame_equal(
        tier_profiles(tiers, both, AS_OF), tier_profiles(tiers, book, AS_OF)
    )


def test_profiles_need_every_graded_customer(tiers, book):
    with pytest.raises(ValueError, match="no indicator row"):
        tier_profiles(tiers, book.iloc[1:], AS_OF)


# ----------------------------------------------------------- tier migrations


def test_migrations_count_the_union_of_both_months(tiers, next_tiers):
    migrations = tier_migrations(tiers, next_tiers, AS_OF, NEXT_AS_OF)
    before, after = set(tiers["customer_id"]), set(next_tiers["customer_id"])
    assert migrations["customers"].sum() == len(before | after)
    assert not migrations[["from_tier", "to_tier"]].duplicated().any()
    assert (migrations["customers"] > 0).all()
    assert migrations.loc[migrations["from_tier"] == "new", "customers"].sum() == len(
        after - before
    )
    assert migrations.loc[migrations["to_tier"] == "gone", "customers"].sum() == len(before - after)
    assert after - before and before - after  # the fixture really has both
    assert (migrations["from_as_of_date"] == AS_OF).all()
    assert (migrations["as_of_date"] == NEXT_AS_OF).all()


def test_migrations_pair_counts_and_movement(tiers, next_tiers):
    migrations = tier_migrations(tiers, next_tiers, AS_OF, NEXT_AS_OF)
    pairs = tiers.merge(next_tiers, on="customer_id", suffixes=("_from", "_to"))
    expected = pairs.groupby(["tier_from", "tier_to"]).size()
    stayed = migrations[~migrations["from_tier"].eq("new") & ~migrations["to_tier"].eq("gone")]
    for row in stayed.itertuples():
        assert row.customers == expected[(row.from_tier, row.to_tier)]
        up = TIER_RANK[row.to_tier] < TIER_RANK[row.from_tier]
        down = TIER_RANK[row.to_tier] > TIER_RANK[row.from_tier]
        assert row.movement == ("up" if up else "down" if down else "same")


def test_first_month_everyone_is_new(tiers):
    for previous in (None, tiers.iloc[:0]):
        migrations = tier_migrations(previous, tiers, None, AS_OF)
        assert (migrations["from_tier"] == "new").all()
        assert migrations["customers"].sum() == len(tiers)
        assert migrations["from_as_of_date"].isna().all()


def test_migrations_deterministic_whatever_the_row_order(tiers, next_tiers):
    pd.testing.assert_frame_equal(
        tier_migrations(tiers.sample(frac=1.0, random_state=1), next_tiers, AS_OF, NEXT_AS_OF),
        tier_migrations(tiers, next_tiers, AS_OF, NEXT_AS_OF),
    )


# ------------------------------------------------------------------- history


def test_history_upsert_is_idempotent(tiers, next_tiers):
    first = history_upsert(None, tiers)
    both = history_upsert(first, next_tiers)
    assert len(both) == len(tiers) + len(next_tiers)
    assert not both[["as_of_date", "customer_id"]].duplicated().any()
    pd.testing.assert_frame_equal(history_upsert(both, next_tiers), both)
    pd.testing.assert_frame_equal(history_upsert(both, tiers), both)


def test_history_upsert_replaces_the_month(tiers, next_tiers):
    both = history_upsert(history_upsert(None, tiers), next_tiers)
    rerun = history_upsert(both, tiers.assign(run_id="rerun"))
    assert len(rerun) == len(both)
    month = rerun["as_of_date"] == AS_OF
    assert (rerun.loc[month, "run_id"] == "rerun").all()
    assert (rerun.loc[~month, "run_id"] == "run-next").all()


def test_history_upsert_accepts_dates_read_back_from_duckdb(tiers, next_tiers):
    both = history_upsert(history_upsert(None, tiers), next_tiers)
    read_back = both.assign(
        as_of_date=pd.to_datetime(both["as_of_date"].astype(str)).astype("datetime64[us]"),
        override_valid_until=pd.Series(pd.NaT, index=both.index, dtype="datetime64[us]"),
    )
    pd.testing.assert_frame_equal(history_upsert(read_back, next_tiers), both)


# ---------------------------------------------------------------- model runs


def test_model_run_row_reports_the_models_quality(model, book):
    started = dt.datetime(2026, 11, 21, 6, 0, tzinfo=dt.UTC)
    finished = started + dt.timedelta(minutes=3)
    params = {"n_clusters": 6, "as_of": AS_OF, "naming": model.naming, "columns": model.columns_}
    row = model_run_row(model, RUN_ID, AS_OF, 12, len(book), params, started, finished)

    assert len(row) == 1
    run = row.iloc[0]
    assert run["run_id"] == RUN_ID and run["as_of_date"] == AS_OF
    assert run["started_at"] == started and run["finished_at"] == finished
    assert run["n_customers"] == len(book) and run["window_months"] == 12
    assert run["k"] == len(model.segments_) == model.n_clusters
    assert run["kmeans_k"] == (model.segments_["source"] == "kmeans").sum()
    assert run["n_factors"] == len(model.to_tables()["model_factors"])
    assert run["factor_count_rule"] == model.factor_model_.selection_
    assert run["extraction"] == model.extraction
    assert run["gates_failed"] == "" and not run["accepted_by_operator"]
    for metric in ("kmo", "bartlett_p_value", "variance_explained", "silhouette", "inertia"):
        assert run[metric] == model.quality_[metric]
    assert run["indicator_columns"].split(",") == list(model.columns_)
    stored = json.loads(run["params"])
    assert list(stored) == sorted(stored)
    assert stored["as_of"] == AS_OF.isoformat() and stored["n_clusters"] == 6


def test_model_run_row_leaves_unreported_metrics_null(model, book):
    partial = copy.copy(model)
    partial.quality_ = {k: v for k, v in model.quality_.items() if k != "davies_bouldin"}
    now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    row = model_run_row(partial, RUN_ID, AS_OF, 12, len(book), {}, now, now)
    assert row["davies_bouldin"].isna().all()
    assert row["kmo"].notna().all()


def test_model_run_row_records_failed_and_accepted_gates(model, book):
    now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    row = model_run_row(
        model,
        RUN_ID,
        AS_OF,
        12,
        len(book),
        {},
        now,
        now,
        gates_failed=["kmo_adequate", "vip_share"],
        accepted_by_operator=True,
    )
    assert row["gates_failed"].tolist() == ["kmo_adequate,vip_share"]
    assert row["accepted_by_operator"].dtype == bool and row["accepted_by_operator"].all()


def test_k_diagnostics_table_adds_month_and_run(model, book):
    diagnostics = model.diagnose_k(book, range(2, 5), 500)
    table = k_diagnostics_table(diagnostics.iloc[::-1], RUN_ID, AS_OF)
    assert list(table.columns[:4]) == ["as_of_date", "run_id", "k", "kmeans_k"]
    assert table["k"].tolist() == [2, 3, 4]
    assert (table["as_of_date"] == AS_OF).all() and (table["run_id"] == RUN_ID).all()
    for column in ("inertia", "silhouette", "calinski_harabasz", "davies_bouldin", "stability"):
        np.testing.assert_array_equal(table[column], diagnostics[column].to_numpy())


def test_model_tables_add_run_and_month(model):
    original = model.to_tables()
    tables = model_tables(model, RUN_ID, AS_OF)
    assert list(tables) == list(original)
    for name, table in tables.items():
        assert list(table.columns[:2]) == ["run_id", "as_of_date"]
        assert (table["run_id"] == RUN_ID).all() and (table["as_of_date"] == AS_OF).all()
        pd.testing.assert_frame_equal(
            table.drop(columns=["run_id", "as_of_date"]), original[name].reset_index(drop=True)
        )


# ------------------------------------------------------------------- warehouse


def test_every_table_has_one_sql_type_per_column_even_when_empty(
    model, book, assigned, plans, tiers, next_tiers
):
    """DuckDB reads each column with a real type: dates as DATE, no NULL-typed column."""
    now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    no_overrides = load_overrides(None, AS_OF, assigned["customer_id"])
    frames = {
        "service_plans": plans,
        "customer_tiers": tiers,
        "customer_tier_history": history_upsert(None, tiers),
        "tier_profiles": tier_profiles(tiers, book, AS_OF),
        "tier_migrations": tier_migrations(tiers, next_tiers, AS_OF, NEXT_AS_OF),
        "first_migrations": tier_migrations(None, tiers, None, AS_OF),
        "empty_audit": override_audit(tiers, no_overrides.rejected, AS_OF, RUN_ID),
        "empty_rejected": no_overrides.rejected,
        "model_runs": model_run_row(model, RUN_ID, AS_OF, 12, len(book), {}, now, now),
        "model_k_diagnostics": k_diagnostics_table(
            model.diagnose_k(book, range(2, 4), 500), RUN_ID, AS_OF
        ),
        **model_tables(model, RUN_ID, AS_OF),
    }
    with duckdb.connect() as con:
        for name, frame in frames.items():
            con.register("frame", frame)
            types = dict(
                con.execute("select column_name, column_type from (describe frame)").fetchall()
            )
            assert '"NULL"' not in types.values(), name
            for column in ("as_of_date", "from_as_of_date", "override_valid_until"):
                if column in types:
                    assert types[column] == "DATE", (name, column)
            con.unregister("frame")
