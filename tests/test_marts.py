"""The marts on generated data: month-ends, reconciliation with the facts, increments.

Formulas are pinned by the dbt unit tests beside the models (hand-computed
inputs); here the marts are checked as a whole against the rows they summarise.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import duckdb
import pytest

from benchmarks.reference import compare_indicators, indicators_duckdb
from tests.conftest import END, LOAD_DATE, build, dbt, make_landing, query


def month_ends(first: dt.date, last: dt.date) -> list[dt.date]:
    ends, year, month = [], first.year, first.month
    while (year, month) <= (last.year, last.month):
        nxt = dt.date(year + month // 12, month % 12 + 1, 1)
        ends.append(nxt - dt.timedelta(days=1))
        year, month = nxt.year, nxt.month
    return ends


def test_every_month_end_of_the_data_is_built(clean_warehouse):
    first_day = query(
        clean_warehouse,
        "select min(d) from (select min(trade_date) d from marts.fct_trades "
        "union all select min(fee_date) from marts.fct_fees "
        "union all select min(as_of_date) from staging.stg_broker__balances)",
    )[0][0]
    built = [
        r[0]
        for r in query(
            clean_warehouse,
            "select distinct as_of_date from marts.customer_indicators order by 1",
        )
    ]
    assert built == month_ends(first_day, END)


def test_window_sums_reconcile_with_the_facts(clean_warehouse):
    """Σ over customers of each window sum = the same sum over the fact rows in the window."""
    ((as_of, start),) = query(
        clean_warehouse,
        "select max(as_of_date), max(window_start_date) from marts.customer_indicators",
    )
    window = [start, as_of]
    indicators = query(
        clean_warehouse,
        "select sum(trade_count), sum(trading_volume), sum(commission_contribution), "
        "sum(margin_interest), sum(net_inflow), sum(interest_contribution), "
        "sum(realised_revenue) from marts.customer_indicators "
        "where as_of_date = ?",
        [as_of],
    )[0]
    facts = query(
        clean_warehouse,
        "select (select count(*) from marts.fct_trades where trade_date between $1 and $2), "
        "(select sum(amount)::double from marts.fct_trades where trade_date between $1 and $2), "
        "(select sum(amount)::double from marts.fct_fees "
        " where fee_type = 'commission' and fee_date between $1 and $2), "
        "(select sum(amount)::double from marts.fct_fees "
        " where fee_type = 'margin_interest' and fee_date between $1 and $2), "
        "(select sum(signed_amount)::double from staging.stg_broker__cash_flows "
        " where flow_date between $1 and $2), "
        # interest_contribution is the margin interest charged, and realised revenue the
        # revenue fees: no imputed cash spread in either
        "(select sum(amount)::double from marts.fct_fees "
        " where fee_type = 'margin_interest' and fee_date between $1 and $2), "
        "(select sum(revenue_amount)::double from marts.fct_fees "
        " where fee_date between $1 and $2)",
        window,
    )[0]
    assert indicators[0] == facts[0] > 0
    assert indicators[1:] == pytest.approx(facts[1:], rel=1e-9)


def test_monthly_activity_reconciles_with_the_facts(clean_warehouse):
    (activity,) = query(
        clean_warehouse,
        "select sum(trade_count), sum(revenue), sum(pass_through_fees) "
        "from marts.fct_customer_monthly_activity",
    )
    (facts,) = query(
        clean_warehouse,
        "select (select count(*) from marts.fct_trades), "
        "(select sum(revenue_amount)::double from marts.fct_fees), "
        "(select sum(amount)::double from marts.fct_fees where fee_category = 'pass_through')",
    )
    assert activity[0] == facts[0]
    assert activity[1:] == pytest.approx(facts[1:], rel=1e-9)


def test_every_customer_with_an_open_account_is_graded(clean_warehouse):
    missing = query(
        clean_warehouse,
        "select customer_id from marts.dim_customers where open_account_count > 0 "
        "except select customer_id from marts.customer_indicators "
        "where as_of_date = (select max(as_of_date) from marts.customer_indicators)",
    )
    assert missing == []


def test_a_dormant_customer_gets_the_recency_cap(clean_warehouse):
    rows = query(
        clean_warehouse,
        "select distinct recency_days, as_of_date - window_start_date + 2 "
        "from marts.customer_indicators where trade_count = 0 and is_full_window",
    )
    assert rows and all(recency == cap for recency, cap in rows)


def test_personal_data_stays_in_dim_customers(clean_warehouse):
    columns = {
        (table, column)
        for table, column in query(
            clean_warehouse,
            "select table_name, column_name from information_schema.columns "
            "where table_schema = 'marts'",
        )
    }
    personal = {(t, c) for t, c in columns if c in ("birth_year", "gender")}
    assert personal == {("dim_customers", "birth_year"), ("dim_customers", "gender")}


def test_dirty_input_reaches_no_mart(dirty_warehouse):
    """Quarantined rows count nowhere: the marts hold accepted rows only, once each."""
    (counts,) = query(
        dirty_warehouse,
        "select (select count(*) from marts.fct_trades), "
        "(select count(*) from staging.stg_broker__trades), "
        "(select sum(trade_count) from marts.fct_customer_monthly_activity), "
        "(select count(*) from marts.customer_indicators where not isfinite(avg_assets) "
        " or not isfinite(coalesce(turnover_rate, 0)) or not isfinite(coalesce(return_rate, 0)))",
    )
    assert counts[0] == counts[1] == counts[2]
    assert counts[3] == 0


MARK = 10**9


@pytest.fixture(scope="module")
def two_loads(tmp_path_factory):
    """The same landing folder loaded mid-October (October incomplete), then in November."""
    root = tmp_path_factory.mktemp("increment")
    landing = make_landing(root / "landing", customers=150, months=6)
    warehouse = root / "wh" / "warehouse.duckdb"
    build(landing, warehouse, "marts", load_date=dt.date(2026, 10, 15))
    first = query(warehouse, "select max(as_of_date) from marts.customer_indicators")
    # Mark a built month-end within the data tests' rules (trade_count is reconciled
    # with fct_trades, trading_volume is not): an incremental run must leave it alone.
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            f"update marts.customer_indicators set trading_volume = trading_volume + {MARK} "
            "where as_of_date = date '2026-09-30'"
        )
    build(landing, warehouse, "marts", load_date=dt.date(2026, 11, 21))
    return landing, warehouse, first[0][0]


def test_an_incremental_run_adds_only_the_new_month_end(two_loads):
    _, warehouse, first_last = two_loads
    assert first_last == dt.date(2026, 9, 30)
    per_month = dict(
        query(
            warehouse,
            "select as_of_date, min(trading_volume) from marts.customer_indicators group by 1",
        )
    )
    assert max(per_month) == dt.date(2026, 10, 31)
    assert per_month[dt.date(2026, 9, 30)] >= MARK  # kept, not recomputed
    assert per_month[dt.date(2026, 10, 31)] < MARK


def test_an_incremental_run_equals_a_full_rebuild(two_loads, tmp_path):
    landing, warehouse, _ = two_loads
    full = build(landing, tmp_path / "warehouse.duckdb", "marts", load_date=dt.date(2026, 11, 21))
    latest = (
        "select * from marts.customer_indicators where as_of_date = date '2026-10-31' order by 1"
    )
    assert query(warehouse, latest) == query(full, latest)
    # the customer-months (incremental by the months a load touched) too, every month
    activity = "select * from marts.fct_customer_monthly_activity order by all"
    assert query(warehouse, activity) == query(full, activity)
    # and a full refresh recomputes the month-end the test marked
    build(landing, warehouse, "marts", load_date=dt.date(2026, 11, 21), full_refresh=True)
    marked = f"select count(*) from marts.customer_indicators where trading_volume >= {MARK}"
    assert query(warehouse, marked) == [(0,)]


def test_a_customer_who_opened_after_the_last_month_end_gets_every_month(tmp_path):
    """A customer whose first account opens in October, loaded mid-October: keyed then,
    but in no month-end before October. Once October is built, the customer-months
    hold every month of the spine for them, as a full build does (the marts show the
    months from the opening on)."""
    landing = make_landing(tmp_path / "landing", customers=60, months=4)
    accounts = (landing / "accounts.csv").read_text().splitlines()
    first = accounts[1].split(",")
    first[0], first[1], first[2], first[3] = "A999999991", "C99999991", "2026-10-05", ""
    (landing / "accounts.csv").write_text("\n".join([*accounts, ",".join(first)]) + "\n")
    warehouse = build(landing, tmp_path / "wh" / "warehouse.duckdb", "marts",
                      load_date=dt.date(2026, 10, 15))  # fmt: skip
    months = (
        "select count(*) from intermediate.int_customer_months "
        "inner join intermediate.int_customer_keys using (customer_key) where customer_id = ?"
    )
    assert query(warehouse, months, ["C99999991"]) == [(0,)]
    build(landing, warehouse, "marts", load_date=dt.date(2026, 11, 21))
    full = build(landing, tmp_path / "full" / "warehouse.duckdb", "marts",
                 load_date=dt.date(2026, 11, 21))  # fmt: skip
    assert query(full, months, ["C99999991"])[0][0] > 1  # from the first reporting month
    assert query(warehouse, months, ["C99999991"]) == query(full, months, ["C99999991"])
    activity = "select * from marts.fct_customer_monthly_activity order by all"
    assert query(warehouse, activity) == query(full, activity)


def test_customer_months_of_a_warehouse_without_stable_keys_are_built_again(two_loads, tmp_path):
    """A warehouse built before int_customer_keys numbered its customer-months afresh
    on every build: the first run that builds the keys builds every month again."""
    landing, warehouse, _ = two_loads
    older = tmp_path / "older" / "warehouse.duckdb"
    older.parent.mkdir()
    shutil.copyfile(warehouse, older)
    with duckdb.connect(str(older)) as con:
        con.execute("drop table intermediate.int_customer_keys")
        con.execute("update intermediate.int_customer_months set customer_key = customer_key + 7")
    build(landing, older, "marts", load_date=dt.date(2026, 11, 21))
    full = build(landing, tmp_path / "full" / "warehouse.duckdb", "marts",
                 load_date=dt.date(2026, 11, 21))  # fmt: skip
    activity = "select * from marts.fct_customer_monthly_activity order by all"
    assert query(older, activity) == query(full, activity)
    count = "select count(*) from intermediate.int_customer_months"
    assert query(older, count) == query(full, count)


def test_docs_describe_every_mart_column(clean_warehouse, tmp_path):
    """`dbt docs generate` runs offline, and every column built in marts has a description."""
    warehouse = tmp_path / clean_warehouse.name  # dbt opens it read-write
    shutil.copyfile(clean_warehouse, warehouse)
    target = tmp_path / "target"
    args = ["docs", "generate", "--target-path", str(target)]
    done = dbt(warehouse, *args)
    assert done.returncode == 0, done.stdout[-2000:]
    manifest = json.loads((target / "manifest.json").read_text())["nodes"]
    catalog = json.loads((target / "catalog.json").read_text())["nodes"]
    marts = {key: node for key, node in catalog.items() if node["metadata"]["schema"] == "marts"}
    assert {node["metadata"]["name"] for node in marts.values()} >= {
        "customer_indicators",
        "dim_customers",
        "fct_trades",
        "fct_fees",
        "fct_customer_monthly_activity",
    }
    undocumented = [
        f"{node['metadata']['name']}.{column}"
        for key, node in marts.items()
        for column in node["columns"]
        if not manifest[key]["columns"].get(column, {}).get("description", "").strip()
    ]
    assert undocumented == []


def test_marts_equal_an_independent_computation_from_the_raw_files(clean_landing, clean_warehouse):
    """Every customer, month-end and indicator: dbt vs a hand-written query on the raw files."""
    expected = indicators_duckdb(clean_landing, LOAD_DATE)
    with duckdb.connect(str(clean_warehouse), read_only=True) as con:
        actual = con.execute(
            f"select {', '.join(expected.columns)} from marts.customer_indicators"
        ).df()
    assert len(actual) == len(expected) > 0
    assert compare_indicators(expected, actual) == []


def test_a_table_that_stops_early_holds_the_later_month_ends_back(clean_landing, tmp_path):
    """Fees that stop on 2026-09-12 cover August, not September: the marts end at
    August although the other tables reach October, and the summary says which table
    holds the month-ends back."""
    from orchestration.report import summary

    landing = tmp_path / "landing"
    shutil.copytree(clean_landing, landing)
    fees = landing / "fees.csv"
    with duckdb.connect() as con:
        kept = con.execute(
            f"select * from read_csv('{fees}', all_varchar = true) where fee_date <= '2026-09-12'"
        ).df()
    kept.to_csv(fees, index=False)
    (last_fee,) = (kept["fee_date"].max(),)
    warehouse = build(landing, tmp_path / "warehouse.duckdb", "marts")
    assert query(warehouse, "select max(as_of_date) from marts.customer_indicators") == [
        (dt.date(2026, 8, 31),)
    ]
    text = summary(warehouse)
    assert (
        f"Held back: month-ends after 2026-08-31 are not built, as fees has data only to "
        f"{last_fee} (the other tables reach 2026-10-31" in text
    )
