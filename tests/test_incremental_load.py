"""Loads are incremental by file: only new or changed files are read, and the
warehouse ends up as a full load of the same folder would leave it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from orchestration.landing import SNAPSHOT_TABLES
from tests.conftest import build, dbt, make_landing, query

FACT_TABLES = ("trades", "fees", "balances", "cash_flows")
STAGING = ("accounts", *FACT_TABLES)
#: The snapshot tables' part files, landed whole by every load.
SNAPSHOTS = {f"{table}/part-0000{i}.csv" for table in SNAPSHOT_TABLES for i in range(3)}
QUARANTINE = """select source_table, source_file, source_row, source_line, rule, rules,
                       reason, record
                from audit.quarantine"""


@pytest.fixture(scope="module")
def all_parts(tmp_path_factory) -> Path:
    """Dirty data in three part files per table."""
    return make_landing(
        tmp_path_factory.mktemp("parts"), customers=150, months=4, parts=3, dirty=True
    )


def load(landing: Path, warehouse: Path) -> Path:
    """Land and build the staging and audit models (what a load changes)."""
    return build(landing, warehouse, "ingestion")


def copy_landing(source: Path, target: Path, hold_back: str | None = None) -> Path:
    """Copy ``source`` keeping modification times, without the fact tables' ``hold_back`` part."""
    shutil.copytree(source, target)
    if hold_back:
        for table in FACT_TABLES:
            (target / table / hold_back).unlink()
    return target


def add_back(source: Path, target: Path, part: str) -> None:
    for table in FACT_TABLES:
        shutil.copy2(source / table / part, target / table / part)


def landed_by_latest_load(warehouse: Path) -> set[str]:
    return {
        file
        for (file,) in query(
            warehouse,
            "select source_file from raw.landed_files "
            "where load_id = (select load_id from raw.latest_load)",
        )
    }


def unsettled_files(warehouse: Path) -> set[str]:
    """Files with rows quarantined for a reason a later load may change."""
    return {
        file
        for table in FACT_TABLES
        for (file,) in query(
            warehouse,
            f"select distinct _source_file from staging.base_broker__{table} "
            "where regexp_matches(rejection_rules, 'future_date|orphan_account|duplicate_key')",
        )
    }


def contents(warehouse: Path) -> dict[str, list[tuple]]:
    tables = {
        t: query(warehouse, f"select * from staging.stg_broker__{t} order by all") for t in STAGING
    }
    tables["quarantine"] = query(warehouse, QUARANTINE + " order by all")
    tables["reconciliation"] = query(
        warehouse,
        "select source_table, files, raw_rows, accepted_rows, quarantined_rows "
        "from audit.load_reconciliation order by all",
    )
    return tables


@pytest.fixture(scope="module")
def full_load(all_parts, tmp_path_factory) -> Path:
    return load(all_parts, tmp_path_factory.mktemp("full") / "warehouse.duckdb")


def copy_warehouse(warehouse: Path, folder: Path) -> Path:
    """A copy of a loaded warehouse, for a test that loads on top of it or changes it."""
    folder.mkdir(exist_ok=True)
    return Path(shutil.copy2(warehouse, folder / warehouse.name))


@dataclass(frozen=True)
class TwoLoads:
    """A full build without the fact tables' last part, then one more with it added back."""

    warehouse: Path
    first_accepted: int
    first_unsettled: set[str]


@pytest.fixture(scope="module")
def two_loads(all_parts, tmp_path_factory) -> TwoLoads:
    folder = tmp_path_factory.mktemp("two_loads")
    landing = copy_landing(all_parts, folder / "landing", hold_back="part-00002.csv")
    warehouse = build(landing, folder / "warehouse.duckdb", "marts")
    accepted = query(warehouse, "select sum(accepted_rows) from audit.load_reconciliation")[0][0]
    unsettled = unsettled_files(warehouse)
    add_back(all_parts, landing, "part-00002.csv")
    build(landing, warehouse, "marts")
    return TwoLoads(warehouse, accepted, unsettled)


def test_a_new_file_is_landed_alone_and_the_result_equals_a_full_load(two_loads, full_load):
    warehouse = two_loads.warehouse

    # the second load read the new parts, the snapshots (accounts, managers) and the
    # files with rows to judge again (dated after the first load's day, orphans,
    # duplicates), no other
    new_parts = {f"{table}/part-00002.csv" for table in FACT_TABLES}
    assert landed_by_latest_load(warehouse) == new_parts | SNAPSHOTS | two_loads.first_unsettled
    accepted = query(warehouse, "select sum(accepted_rows) from audit.load_reconciliation")[0][0]
    assert accepted > two_loads.first_accepted
    assert contents(warehouse) == contents(full_load)


def test_an_unchanged_folder_lands_only_what_may_change_and_changes_nothing(
    all_parts, full_load, tmp_path
):
    warehouse = copy_warehouse(full_load, tmp_path)
    before = contents(warehouse)
    unsettled = unsettled_files(warehouse)

    load(all_parts, warehouse)

    assert landed_by_latest_load(warehouse) == SNAPSHOTS | unsettled
    assert query(warehouse, "select files_kept from raw.latest_load")[0][0] > 0
    assert contents(warehouse) == before


def test_a_changed_file_replaces_its_rows_and_a_vanished_file_takes_its_rows(
    all_parts, full_load, tmp_path, monkeypatch
):
    # a third of the fees goes: beyond the default bound, accepted as real here
    monkeypatch.setenv("TIERS_MAX_ROW_DROP", "1")
    landing = copy_landing(all_parts, tmp_path / "landing")
    warehouse = copy_warehouse(full_load, tmp_path / "warehouse")

    # drop the last trade of part 1 (a new size and time), delete fees part 2
    trades = landing / "trades" / "part-00001.csv"
    lines = trades.read_text(encoding="utf-8").splitlines(keepends=True)
    trades.write_text("".join(lines[:-1]), encoding="utf-8")
    os.utime(trades, ns=(trades.stat().st_atime_ns, trades.stat().st_mtime_ns + 10**9))
    (landing / "fees" / "part-00002.csv").unlink()
    load(landing, warehouse)

    expected = load(copy_landing(landing, tmp_path / "again"), tmp_path / "fresh.duckdb")
    assert contents(warehouse) == contents(expected)
    assert query(
        warehouse,
        "select count(*) from staging.base_broker__fees where _source_file = 'fees/part-00002.csv'",
    ) == [(0,)]


def test_the_transaction_marts_are_tested_on_the_rows_of_this_load(two_loads, tmp_path):
    """fct_fees' data tests read this load's files, as the staging tests do, and no earlier ones."""
    warehouse = copy_warehouse(two_loads.warehouse, tmp_path)
    this_load = landed_by_latest_load(warehouse)
    earlier = sorted(
        f"fees/part-0000{i}.csv" for i in range(3) if f"fees/part-0000{i}.csv" not in this_load
    )
    assert "fees/part-00002.csv" in this_load and earlier
    # an accepted fee of an earlier load and one of this load lose their fee_id
    with duckdb.connect(str(warehouse)) as con:
        for file in (earlier[0], "fees/part-00002.csv"):
            con.execute(
                """update staging.base_broker__fees set fee_id = null
                   where _source_file = $1 and _source_row = (
                       select min(_source_row) from staging.base_broker__fees
                       where _source_file = $1 and rejection_reason is null)""",
                [file],
            )
    test = "not_null_fct_fees_fee_id"
    check = dbt(warehouse, "test", "--select", test)
    assert check.returncode != 0
    assert f"Failure in test {test}" in check.stdout
    assert "Got 1 result" in check.stdout  # the row of this load, not the earlier one
