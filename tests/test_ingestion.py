"""Raw rows end up in staging or in quarantine, never lost, with reasons a person can read."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil

import duckdb
import pytest

from orchestration.landing import CONTRACT
from seeds.dirty import KEYS
from tests.conftest import LOAD_DATE, build, dbt, make_landing, query

KEY_SQL = {
    table: " || '|' || ".join(f"json_extract_string(record, '{k}')" for k in keys)
    for table, keys in KEYS.items()
}


def reconciliation(warehouse):
    return {
        row[0]: row[1:]
        for row in query(
            warehouse,
            "select source_table, raw_rows, accepted_rows, quarantined_rows "
            "from audit.load_reconciliation",
        )
    }


def raw_row_counts(landing):
    """Rows per table counted straight from the files, independently of the pipeline."""
    counts = {}
    with duckdb.connect() as con:
        for table in CONTRACT:
            files = sorted(landing.glob(f"{table}.*")) + sorted(landing.glob(f"{table}/*"))
            total = 0
            for path in files:
                if path.suffix == ".csv":
                    with path.open(encoding="utf-8", newline="") as handle:
                        total += sum(1 for _ in csv.reader(handle)) - 1
                else:
                    total += con.execute(f"select count(*) from '{path}'").fetchone()[0]
            counts[table] = total
    return counts


def test_clean_data_is_all_accepted(clean_landing, clean_warehouse):
    raw = raw_row_counts(clean_landing)
    assert reconciliation(clean_warehouse) == {t: (n, n, 0) for t, n in raw.items()}
    assert query(clean_warehouse, "select count(*) from audit.quarantine") == [(0,)]


def test_every_raw_row_is_accepted_or_quarantined(dirty_landing, dirty_warehouse):
    raw = raw_row_counts(dirty_landing)
    for table, (raw_rows, accepted, quarantined) in reconciliation(dirty_warehouse).items():
        assert raw_rows == raw[table] == accepted + quarantined, table
        assert quarantined > 0, table


def test_quarantine_holds_exactly_the_planted_rows(dirty_landing, dirty_warehouse):
    with (dirty_landing / "_dirty_manifest.csv").open(encoding="utf-8") as handle:
        planted = [(r["source_table"], r["key"], r["rule"]) for r in csv.DictReader(handle)]
    found = []
    for table in CONTRACT:
        found += query(
            dirty_warehouse,
            f"""
            select source_table, coalesce({KEY_SQL[table]}, ''), rule from audit.quarantine
            where source_table = '{table}' and rule <> 'malformed_line'
            union all
            select source_table, '', rule from audit.quarantine
            where source_table = '{table}' and rule = 'malformed_line'""",
        )
    assert sorted(found) == sorted(planted)


def test_each_quarantined_row_has_a_reason_and_its_original_values(dirty_landing, dirty_warehouse):
    rows = query(
        dirty_warehouse,
        "select source_table, rule, reason, record, source_file from audit.quarantine",
    )
    for table, rule, reason, record, source_file in rows:
        assert reason.startswith(rule + ": ") and len(reason) > len(rule) + 10
        assert (dirty_landing / source_file).is_file()
        values = json.loads(record)
        if rule == "malformed_line":
            assert set(values) == {"line"} and values["line"]
        else:
            assert set(values) == set(CONTRACT[table].columns)


def test_reasons_quote_the_offending_value(dirty_warehouse):
    reasons = [r[0] for r in query(dirty_warehouse, "select reason from audit.quarantine")]
    for bad in [
        "'2023-02-30'",
        "'premium'",
        "'1,234.50'",
        "'crypto'",
        "'sideways'",
        "'n/a'",
        "'A_UNKNOWN' is not in accounts",
        "'A_DIRTY_03' belongs to an account row that was quarantined",
        "is after the load date " + LOAD_DATE.isoformat(),
    ]:
        assert any(bad in reason for reason in reasons), bad


def test_duplicates_keep_the_first_row(dirty_landing, dirty_warehouse):
    for table, keys in KEYS.items():
        key = " || '|' || ".join(f"{k}::varchar" for k in keys)
        kept = query(
            dirty_warehouse,
            f"""
            select {key}, min(source_file || ':' || lpad(source_row::varchar, 9, '0')),
                   count(*)
            from staging.stg_broker__{table} group by all having count(*) > 1""",
        )
        assert kept == [], table
    duplicates = query(
        dirty_warehouse,
        """
        select q.source_file, q.source_row, s.source_file, s.source_row
        from audit.quarantine q
        join staging.stg_broker__trades s
          on s.trade_id = json_extract_string(q.record, 'trade_id')
        where q.rule = 'duplicate_key' and q.source_table = 'trades'""",
    )
    assert duplicates
    for q_file, q_row, s_file, s_row in duplicates:
        assert (s_file, s_row) < (q_file, q_row)


def test_staging_types_the_values(clean_warehouse):
    types = dict(
        query(
            clean_warehouse,
            """select column_name, data_type
        from information_schema.columns
        where table_schema = 'staging' and table_name = 'stg_broker__trades'""",
        )
    )
    assert types["trade_date"] == "DATE"
    assert types["amount"].startswith("DECIMAL")
    assert query(
        clean_warehouse,
        "select count(*) from staging.stg_broker__balances where margin_debt is null",
    ) == [(0,)]


def test_the_reconciliation_check_fails_when_a_row_is_lost(clean_landing, tmp_path):
    warehouse = build(clean_landing, tmp_path / "warehouse.duckdb", "marts")
    with duckdb.connect(str(warehouse)) as con:
        con.execute("delete from staging.base_broker__fees where _source_row = 1")
    rebuild = dbt(warehouse, "run", "--select", "load_reconciliation")
    assert rebuild.returncode == 0, rebuild.stdout
    check = dbt(warehouse, "test", "--select", "assert_load_reconciles")
    assert check.returncode != 0
    assert "assert_load_reconciles" in check.stdout


def test_indicators_that_disagree_with_the_trades_fail_a_dbt_test(clean_warehouse, tmp_path):
    """Trades lost under month-ends already built (the indicators kept) fail the build."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(clean_warehouse, warehouse)
    test = "assert_indicators_reconcile_with_the_trades"
    assert dbt(warehouse, "test", "--select", test).returncode == 0
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "delete from staging.base_broker__trades where rejection_reason is null "
            "and trade_date between date '2026-03-01' and date '2026-03-05'"
        )
    ((holding_march,),) = query(
        warehouse,
        "select count(distinct as_of_date) from marts.customer_indicators "
        "where window_start_date <= date '2026-03-01' and as_of_date >= date '2026-03-31'",
    )
    check = dbt(warehouse, "test", "--select", test)
    assert check.returncode != 0
    assert f"Failure in test {test}" in check.stdout
    assert f"Got {holding_march} results" in check.stdout  # the month-ends whose window holds it


@pytest.mark.parametrize(
    ("table", "test"),
    [
        ("fees", "unique_stg_broker__fees_fee_id"),
        ("balances", "unique_stg_broker__balances_account_id_as_of_date"),
    ],
)
def test_the_unique_tests_fail_on_a_repeated_key(clean_warehouse, tmp_path, table, test):
    """The project's `unique` test (hashes first, values second) still finds a repeat."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(clean_warehouse, warehouse)
    key = {"fees": ["fee_id"], "balances": ["account_id", "as_of_date"]}[table]
    with duckdb.connect(str(warehouse)) as con:
        # the second accepted row of a file takes the first one's key
        con.execute(f"""
            update staging.base_broker__{table} as judged
            set {", ".join(f"{c} = first_row.{c}" for c in key)}
            from (select * from staging.base_broker__{table}
                  where _source_row = 1 and rejection_reason is null
                  order by _source_file limit 1) as first_row
            where judged._source_file = first_row._source_file and judged._source_row = 2
              and judged.rejection_reason is null""")
    check = dbt(warehouse, "test", "--select", test)
    assert check.returncode != 0
    assert f"Failure in test {test}" in check.stdout
    assert "Got 1 result" in check.stdout


FUTURE_DATES = {
    "accounts": "open_date > $d or close_date > $d",
    "trades": "trade_date > $d",
    "fees": "fee_date > $d",
    "balances": "as_of_date > $d",
    "cash_flows": "flow_date > $d",
}


@pytest.mark.parametrize("load_date_offset", [0, -40])
def test_future_is_relative_to_the_load_date(tmp_path, load_date_offset):
    """Exactly the rows dated after the load date are quarantined as future_date."""
    landing = make_landing(tmp_path / "landing", customers=80, months=3)
    load_date = LOAD_DATE + dt.timedelta(days=load_date_offset)
    build(landing, tmp_path / "warehouse.duckdb", "marts", load_date=load_date)
    found = dict(
        query(
            tmp_path / "warehouse.duckdb",
            "select source_table, count(*) from audit.quarantine "
            "where list_contains(string_split(rules, ','), 'future_date') group by all",
        )
    )
    with duckdb.connect() as con:
        expected = {
            table: con.execute(
                f"select count(*) from read_csv('{landing}/{table}.csv') "
                f"where {condition.replace('$d', repr(load_date.isoformat()))}"
            ).fetchone()[0]
            for table, condition in FUTURE_DATES.items()
        }
    assert found == {table: n for table, n in expected.items() if n}
    assert bool(found) == (load_date_offset < 0)


def test_values_are_read_strictly_and_kept_exactly(tmp_path):
    landing = make_landing(tmp_path / "landing", customers=60, months=3)
    with duckdb.connect() as con:
        trades = f"read_csv('{landing}/trades.csv', all_varchar = true)"
        first = con.execute(f"select trade_id from {trades} limit 5").fetchall()
        ids = [row[0] for row in first]
        edits = {
            ids[0]: "price = '12.345678'",
            ids[1]: "trade_date = '24-01-05'",
            ids[2]: "trade_date = '2024-1-5'",
            ids[3]: "symbol = chr(9)",
            ids[4]: "amount = '1_000'",
        }
        con.execute(f"create table t as select * from {trades}")
        for trade_id, assignment in edits.items():
            con.execute(f"update t set {assignment} where trade_id = '{trade_id}'")
        con.execute(f"copy t to '{landing}/trades.csv' (header)")
        accounts = f"{landing}/accounts.csv"
        con.execute(f"create table a as select * from read_csv('{accounts}', all_varchar = true)")
        con.execute("update a set birth_year = birth_year || '.0' where birth_year is not null")
        con.execute(f"copy a to '{accounts}' (header)")
    warehouse = build(landing, tmp_path / "warehouse.duckdb", "marts")
    assert query(
        warehouse,
        "select price::varchar from staging.stg_broker__trades where trade_id = ?",
        [ids[0]],
    ) == [("12.3456780000",)]
    rules = dict(
        query(
            warehouse,
            "select json_extract_string(record, 'trade_id'), rule "
            "from audit.quarantine where source_table = 'trades'",
        )
    )
    assert rules == {
        ids[1]: "invalid_date",
        ids[2]: "invalid_date",
        ids[3]: "missing_value",
        ids[4]: "invalid_number",
    }
    assert query(
        warehouse, "select count(*) from audit.quarantine where source_table = 'accounts'"
    ) == [(0,)]
