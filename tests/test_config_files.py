"""The config files in the warehouse: service plans and tier overrides.

Python checks whole files (orchestration.config_files) and lands them as
raw.service_plans and raw.tier_overrides; dbt judges the override lines
(stg_crm__tier_overrides) and the month's rules (tiers.override_audit) and
publishes tiers.service_plans. The dbt tests build a small warehouse with a
stand-in tiers.customer_scores (each customer's model tier by a fixed rule),
so the audit's expectations do not depend on a model fit.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from ml import TIER_RANK, TIERS
from orchestration.config import ConfigError
from orchestration.config_files import (
    RAW_OVERRIDE_COLUMNS,
    SERVICE_PLANS_PATH,
    land_overrides,
    land_service_plans,
    load_service_plans,
)
from tests.conftest import build, dbt, make_landing

AS_OF = dt.date(2026, 10, 31)  # the landing's last month-end
EARLIER = dt.date(2026, 9, 30)
OVERRIDE_HEADER = ["customer_id", "tier", "reason", "valid_until"]
CONFIG_MODELS = "stg_crm__service_plans stg_crm__tier_overrides service_plans override_audit"


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


def test_shipped_service_plans_cover_every_tier_once():
    plans = load_service_plans()
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


def test_service_plans_hours_per_contact_defaults_to_one_hour(tmp_path):
    document = _plans_document()
    del document["tiers"]["potential"]["hours_per_contact"]
    plans = load_service_plans(_write_plans(tmp_path, document)).set_index("tier")
    assert plans.loc["potential", "hours_per_contact"] == 1.0
    assert (
        plans.loc["vip", "hours_per_contact"]
        == _plans_document()["tiers"]["vip"]["hours_per_contact"]
    )


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
        ("hours_per_contact", "an hour", "hours_per_contact"),
        ("hours_per_contact", -0.5, "hours_per_contact"),
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


def test_land_service_plans_writes_the_checked_rows_and_nothing_on_error(tmp_path):
    with duckdb.connect() as con:
        plans = land_service_plans(con)
        landed = con.execute("select * from raw.service_plans order by tier_rank").df()
        types = dict(
            con.execute(
                "select column_name, column_type from (describe raw.service_plans)"
            ).fetchall()
        )
        document = _plans_document()
        del document["tiers"]["free"]
        with pytest.raises(ConfigError, match="free"):
            land_service_plans(con, _write_plans(tmp_path, document))
        (kept,) = con.execute("select count(*) from raw.service_plans").fetchone()
    pd.testing.assert_frame_equal(landed, plans, check_dtype=False)
    assert types["tier_rank"] == "BIGINT" and types["service_time_share"] == "DOUBLE"
    assert kept == len(TIERS)  # the bad file replaced nothing


# ------------------------------------------------- overrides: whole files


def _raw_overrides(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute("select * from raw.tier_overrides order by source_line").df()


def test_override_file_missing_a_column_names_file_and_column(tmp_path):
    path = _write_overrides(
        tmp_path / "o.csv", [["C1", "vip", "x"]], header=["customer_id", "tier", "reason"]
    )
    with duckdb.connect() as con, pytest.raises(ConfigError, match="valid_until") as error:
        land_overrides(con, path)
    assert str(path) in str(error.value)


def test_override_file_column_given_twice_names_it(tmp_path):
    path = _write_overrides(
        tmp_path / "o.csv", [["C1", "vip", "x", "", "y"]], header=[*OVERRIDE_HEADER, " Reason"]
    )
    with duckdb.connect() as con, pytest.raises(ConfigError, match="reason") as error:
        land_overrides(con, path)
    assert str(path) in str(error.value) and "twice" in str(error.value)


def test_override_file_unreadable_empty_or_not_utf8_names_it(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n \n", encoding="utf-8")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("customer_id,tier,reason,valid_until\nC1,vip,Müller,\n".encode("latin-1"))
    with duckdb.connect() as con:
        land_overrides(con, None)
        for path, words in [(tmp_path / "absent.csv", "cannot read"), (empty, "empty"),
                            (latin, "UTF-8")]:  # fmt: skip
            with pytest.raises(ConfigError, match=words) as error:
                land_overrides(con, path)
            assert str(path) in str(error.value)
        (rows,) = con.execute("select count(*) from raw.tier_overrides").fetchone()
    assert rows == 0  # nothing was written


def test_no_override_file_lands_an_empty_table_with_every_column():
    with duckdb.connect() as con:
        assert land_overrides(con, None) == 0
        columns = con.execute(
            "select column_name, column_type from (describe raw.tier_overrides)"
        ).fetchall()
    assert [name for name, _ in columns] == list(RAW_OVERRIDE_COLUMNS)
    assert {name: kind.lower() for name, kind in columns} == RAW_OVERRIDE_COLUMNS


def test_every_override_line_is_landed_as_written(tmp_path):
    """Excel's BOM, capitalised header, blank lines, extra columns, a line split wrong."""
    path = tmp_path / "o.csv"
    path.write_text(
        "\ufeffCustomer_ID, Tier ,Reason,Valid_Until,Entered_By\n\n"
        'C1, VIP ,"ok, really",,anna\n\nC2,vip,comma,in,reason,x\n,,,,\n',
        encoding="utf-8",
    )
    with duckdb.connect() as con:
        assert land_overrides(con, path) == 2
        rows = _raw_overrides(con)
        assert land_overrides(con, None) == 0  # replaced each run
    first, second = rows.to_dict("records")
    assert (first["customer_id"], first["tier"], first["reason"]) == ("C1", " VIP ", "ok, really")
    assert first["valid_until"] == "" and first["source_line"] == 3
    assert json.loads(first["record"])["entered_by"] == "anna"
    assert second["source_line"] == 5 and pd.isna(second["customer_id"])
    assert (second["field_count"], second["header_field_count"]) == (6, 5)
    assert json.loads(second["record"]) == ["C2", "vip", "comma", "in", "reason", "x"]


# ------------------------------------------------- overrides: in the warehouse


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    """A small warehouse up to the marts, with a stand-in tiers.customer_scores.

    The stand-in grades every customer of marts.customer_indicators in each
    month-end, model tier by customer_id rank (the nth customer in TIERS[n % 6]),
    and leaves the first customer (a vip) out of AS_OF.
    """
    root = tmp_path_factory.mktemp("config_files")
    raw = make_landing(root / "raw", customers=90, months=3)
    warehouse = root / "warehouse.duckdb"
    tiers = ", ".join(f"'{tier}'" for tier in TIERS)
    build(raw, warehouse, "marts")
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema if not exists tiers")
        con.execute(f"""
            create or replace table tiers.customer_scores as
            with ranked as (
                select
                    customer_id,
                    as_of_date,
                    dense_rank() over (order by customer_id) - 1 as position
                from marts.customer_indicators
            )
            select
                customer_id,
                as_of_date,
                [{tiers}][position % 6 + 1] as model_tier,
                (position % 6 + 1)::bigint as segment
            from ranked
            where not (as_of_date = '{AS_OF}' and position = 0)""")
    return warehouse


def _customers(warehouse: Path, tier: str, as_of: dt.date = AS_OF) -> list[str]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return [
            customer
            for (customer,) in con.execute(
                "select customer_id from tiers.customer_scores where model_tier = ? "
                "and as_of_date = ? order by customer_id",
                [tier, as_of],
            ).fetchall()
        ]


def _build_config_models(warehouse: Path, grading_month: dt.date) -> None:
    """Build the config models (and run their tests) for ``grading_month``."""
    done = dbt(
        warehouse,
        "build",
        "--select",
        *CONFIG_MODELS.split(),
        "--indirect-selection",
        "cautious",
        dbt_vars={"grading_month": grading_month.isoformat()},
    )
    assert done.returncode == 0, done.stdout[-4000:]


def _audit(warehouse: Path, overrides: Path | None, grading_month: dt.date) -> pd.DataFrame:
    """Land ``overrides``, build the config models and read the month's audit rows."""
    with duckdb.connect(str(warehouse)) as con:
        land_service_plans(con)
        land_overrides(con, overrides)
    _build_config_models(warehouse, grading_month)
    return _month(warehouse, grading_month)


def _month(warehouse: Path, as_of: dt.date) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(
            "select * from tiers.override_audit where as_of_date = ? order by source_line",
            [as_of],
        ).df()


@pytest.fixture(scope="module")
def overrides(warehouse, tmp_path_factory) -> dict[str, str]:
    """Customers by the part they play in the overrides file (one dbt build for all)."""
    free = _customers(warehouse, "free")
    return {
        "applied": free[0],
        "applied_until": free[1],
        "last_day": free[2],
        "expired": free[3],
        "duplicate": free[4],
        "bad_date": free[5],
        "no_reason": free[6],
        "spreadsheet": free[7],
        "after_expiry": free[8],
        "unreadable_date": free[9],
        "unknown_tier": _customers(warehouse, "ordinary_b")[0],
        "not_graded": _customers(warehouse, "vip", EARLIER)[0],  # graded the month before only
    }


@pytest.fixture(scope="module")
def audit(warehouse, overrides, tmp_path_factory) -> pd.DataFrame:
    """tiers.override_audit for AS_OF of one file with every case, saved from a spreadsheet
    (Excel's BOM, capitalised header, blank lines, an extra column), indexed by role."""
    c = overrides
    last_day, day_before = AS_OF.isoformat(), (AS_OF - dt.timedelta(days=1)).isoformat()
    lines = [
        ("applied", [c["applied"], "vip", "board_member", "", "anna"]),
        ("applied_until", [c["applied_until"], "vip", "ok", "2027-03-31", ""]),
        ("last_day", [c["last_day"], "potential", "campaign", last_day, ""]),
        ("expired", [c["expired"], "potential", "old campaign", day_before, ""]),
        ("duplicate_first", [c["duplicate"], "vip", "first", "", ""]),
        ("duplicate_second", [c["duplicate"], "potential", "second", "2030-01-31", ""]),
        ("unknown_tier", [c["unknown_tier"], "gold", "typo", "", ""]),
        ("bad_date", [c["bad_date"], "vip", "bad date", "31/12/2026", ""]),
        ("unknown_customer", ["NOT-A-CUSTOMER", "vip", "not graded", "", ""]),
        ("no_id", ["", "vip", "no id", "", ""]),
        ("no_reason", [c["no_reason"], "vip", "", "", ""]),
        ("malformed", [c["applied"] + "x", "vip", "comma", "in", "reason", "x"]),
        ("not_graded", [c["not_graded"], "vip", "left", "", ""]),
        ("nothing_but_a_date", ["", "", "", "2026-02-30", ""]),
        ("spreadsheet", [f" {c['spreadsheet']} ", " VIP ", "ok", "", "bob"]),
        ("after_expiry_old", [c["after_expiry"], "vip", "old", "2026-01-31", ""]),
        ("after_expiry_new", [c["after_expiry"], "potential", "new", "", ""]),
        ("unreadable_date_typo", [c["unreadable_date"], "vip", "typo", "2027-31-01", ""]),
        ("unreadable_date_other", [c["unreadable_date"], "potential", "ok", "", ""]),
    ]
    text, line, roles = "\ufeffCustomer_ID, Tier ,Reason,Valid_Until,Entered_By\n\n", 2, {}
    for position, (role, fields) in enumerate(lines):
        line += 1
        roles[line] = role
        text += ",".join(fields) + "\n"
        if position % 5 == 4:  # blank lines are skipped, and counted
            text += "\n"
            line += 1
    path = tmp_path_factory.mktemp("overrides") / "overrides.csv"
    path.write_text(text, encoding="utf-8")
    out = _audit(warehouse, path, AS_OF)
    assert len(out) == len(lines)  # no line vanishes
    return out.set_index(out["source_line"].map(roles).rename("role"))


def test_service_plans_table_is_the_file(warehouse, audit):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        table = con.execute("select * from tiers.service_plans order by tier_rank").df()
    plans = load_service_plans()
    pd.testing.assert_frame_equal(table[plans.columns], plans, check_dtype=False)
    # and the monthly hours a customer of the tier asks for
    hours = plans["contacts_per_year"] * plans["hours_per_contact"] / 12
    assert table["contact_hours_per_customer_month"].tolist() == pytest.approx(hours.tolist())


def test_override_is_applied_and_visible(audit, overrides):
    row = audit.loc["applied"]
    assert row["applied"] and pd.isna(row["rejection"])
    assert (row["customer_id"], row["requested_tier"], row["model_tier"]) == (
        overrides["applied"],
        "vip",
        "free",
    )
    assert row["reason"] == "board_member" and row["source_line"] == 3
    assert pd.isna(row["valid_until"]) and pd.isna(row["valid_until_date"])
    assert (audit["as_of_date"] == pd.Timestamp(AS_OF)).all()


def test_override_in_force_through_its_last_day_expired_ones_ignored(audit):
    assert audit.loc["last_day", "applied"]
    assert audit.loc["last_day", "valid_until"] == AS_OF.isoformat()
    assert audit.loc["last_day", "valid_until_date"] == pd.Timestamp(AS_OF)
    assert not audit.loc["expired", "applied"]
    assert audit.loc["expired", "rejection"].startswith("expired: valid_until 2026-10-30")


def test_bad_override_rows_are_rejected_with_reasons(audit):
    applied = ["applied", "applied_until", "last_day", "spreadsheet", "after_expiry_new"]
    assert sorted(audit.index[audit["applied"]]) == sorted(applied)
    line = audit["source_line"].astype(str)
    duplicates = f"duplicate_override: lines {line['duplicate_first']}, {line['duplicate_second']}"
    expected = {
        "expired": ["expired"],
        "duplicate_first": [duplicates],
        "duplicate_second": [duplicates],
        "unknown_tier": ["invalid_value: tier 'gold' is not a tier code (vip, potential"],
        "bad_date": ["invalid_date: valid_until '31/12/2026'"],
        "unknown_customer": ["not_graded: customer_id 'NOT-A-CUSTOMER'"],
        "no_id": ["missing_value: customer_id"],
        "no_reason": ["missing_value: reason"],
        "malformed": ["malformed_line: 6 fields where the header has 5"],
        "not_graded": ["not_graded: customer_id"],
        "nothing_but_a_date": ["missing_value: customer_id", "missing_value: tier",
                               "missing_value: reason", "invalid_date: valid_until '2026-02-30'"],
        "after_expiry_old": ["expired"],
        "unreadable_date_typo": ["invalid_date", "duplicate_override"],
        "unreadable_date_other": ["duplicate_override"],
    }  # fmt: skip
    rejection = audit["rejection"]
    assert sorted(rejection.dropna().index) == sorted(expected)
    for role, words in expected.items():
        for word in words:
            assert word in rejection[role], (role, rejection[role])
    assert "not_graded" not in rejection["no_id"]  # no customer, nothing to look up
    assert "; " not in rejection["malformed"]  # a line split wrong has no values to judge
    assert "duplicate" not in rejection["after_expiry_old"]  # an expired line does not count


def test_override_audit_lists_every_override_considered(audit):
    assert (audit["rejection"].isna() == audit["applied"]).all()
    assert audit.loc["applied_until", "valid_until"] == "2027-03-31"
    assert audit.loc["applied_until", "valid_until_date"] == pd.Timestamp(2027, 3, 31)
    assert audit.loc["unknown_tier", "model_tier"] == "ordinary_b"
    assert audit.loc["unknown_tier", "requested_tier"] == "gold"
    for role in ("unknown_customer", "no_id", "not_graded", "malformed"):
        assert pd.isna(audit.loc[role, "model_tier"]), role
    applied = audit[audit["applied"]]
    assert applied["customer_id"].is_unique and (applied["model_tier"] == "free").all()


def test_override_file_as_a_spreadsheet_saves_it(audit, overrides):
    row = audit.loc["spreadsheet"]
    assert (row["customer_id"], row["requested_tier"]) == (overrides["spreadsheet"], "vip")
    assert row["applied"]


def test_override_audit_is_incremental_by_month_end(tmp_path, warehouse, overrides, audit):
    """A run replaces every row of the month it grades and keeps the other months'."""
    customer, expiring = overrides["applied"], overrides["last_day"]
    until_earlier = _write_overrides(
        tmp_path / "earlier.csv", [[expiring, "vip", "ok", EARLIER.isoformat()]]
    )
    earlier = _audit(warehouse, until_earlier, EARLIER)
    assert earlier["applied"].tolist() == [True]
    # the next month's file: the earlier line has expired, a new one
    later_file = _write_overrides(
        tmp_path / "later.csv",
        [[expiring, "vip", "ok", EARLIER.isoformat()], [customer, "potential", "x", ""]],
    )
    later = _audit(warehouse, later_file, AS_OF)  # replaces the rows of `audit`
    assert later["applied"].tolist() == [False, True]
    pd.testing.assert_frame_equal(_month(warehouse, EARLIER), earlier)

    assert _audit(warehouse, None, AS_OF).empty  # no overrides file: the month has no rows
    pd.testing.assert_frame_equal(_month(warehouse, EARLIER), earlier)
