"""The synthetic data generator: contract conformance, realism rules, determinism, --dirty."""

from __future__ import annotations

import csv

import duckdb
import pytest

from orchestration.landing import CONTRACT
from seeds.dirty import PLANTS
from seeds.generate import (
    CUSTOMER_TYPES,
    MIN_COMMISSION,
    MONTH_COLUMNS,
    generate,
    main,
    month_ends,
)
from tests.conftest import END, make_landing, tree_digest

RULE_CODES = {
    "missing_value",
    "invalid_date",
    "invalid_number",
    "invalid_value",
    "out_of_range",
    "close_before_open",
    "future_date",
    "orphan_account",
    "duplicate_key",
    "malformed_line",
}


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    return make_landing(tmp_path_factory.mktemp("gen"), customers=1500, months=24)


@pytest.fixture(scope="module")
def con(landing):
    con = duckdb.connect()
    for table in CONTRACT:
        con.execute(f"create view {table} as select * from read_csv('{landing / table}.csv')")
    con.execute(f"create view truth as select * from read_csv('{landing / '_truth.csv'}')")
    yield con
    con.close()


def scalar(con, sql):
    return con.execute(sql).fetchone()[0]


def test_files_have_exactly_the_contract_columns(landing):
    for table, contract in CONTRACT.items():
        with (landing / f"{table}.csv").open(encoding="utf-8") as handle:
            header = next(csv.reader(handle))
        assert set(header) == set(contract.columns), table


def test_keys_are_unique_and_every_account_id_exists(con):
    assert scalar(con, "select count(*) - count(distinct account_id) from accounts") == 0
    for table, key in [
        ("trades", "trade_id"),
        ("fees", "fee_id"),
        ("cash_flows", "flow_id"),
        ("balances", "account_id || as_of_date"),
    ]:
        assert scalar(con, f"select count(*) - count(distinct {key}) from {table}") == 0, table
        assert (
            scalar(
                con,
                f"select count(*) from {table} where account_id not in "
                "(select account_id from accounts)",
            )
            == 0
        ), table


def test_values_are_inside_the_contract_domains(con):
    checks = {
        "accounts": "account_type not in ('cash', 'margin') or close_date < open_date "
        "or gender not in ('M', 'F', 'U') or customer_type not in "
        "('individual', 'institution') or risk_level not in ('C1','C2','C3','C4','C5')",
        "trades": "asset_class not in ('stock', 'fund', 'bond', 'option', 'other') "
        "or side not in ('B', 'S') or quantity <= 0 or price <= 0 or amount <= 0",
        "fees": "fee_type not in ('commission', 'margin_interest', 'stamp_duty', 'transfer_fee', "
        "'exchange_fee', 'other')",
        "balances": "cash < 0 or market_value < 0 or margin_debt < 0",
        "cash_flows": "direction not in ('in', 'out') or amount <= 0",
    }
    for table, broken in checks.items():
        assert scalar(con, f"select count(*) from {table} where {broken}") == 0, table


def test_no_date_after_the_end_date(con):
    for table, column in [
        ("trades", "trade_date"),
        ("fees", "fee_date"),
        ("balances", "as_of_date"),
        ("cash_flows", "flow_date"),
        ("accounts", "open_date"),
    ]:
        assert scalar(con, f"select max({column}) from {table}") <= END, table


def test_balances_are_month_end_snapshots_of_open_accounts(con):
    assert (
        scalar(con, "select count(*) from balances where as_of_date <> last_day(as_of_date)") == 0
    )
    assert (
        scalar(
            con,
            """select count(*) from balances join accounts using (account_id)
                          where as_of_date < open_date or as_of_date >= close_date""",
        )
        == 0
    )


def test_fees_follow_the_broker_rules(con):
    # commission has a minimum per trade; VIP rebates are the only negative commissions
    assert (
        scalar(
            con,
            f"""select count(*) from fees where fee_type = 'commission'
                           and trade_id is not null and amount < {MIN_COMMISSION}""",
        )
        == 0
    )
    assert (
        scalar(
            con,
            "select count(*) from fees where fee_type = 'commission' "
            "and amount < 0 and trade_id is not null",
        )
        == 0
    )
    # stamp duty only on stock sells
    assert (
        scalar(
            con,
            """select count(*) from fees join trades using (trade_id)
                          where fee_type = 'stamp_duty'
                          and (trades.side <> 'S' or trades.asset_class <> 'stock')""",
        )
        == 0
    )
    # margin interest only on margin accounts
    assert (
        scalar(
            con,
            """select count(*) from fees join accounts using (account_id)
                          where fee_type = 'margin_interest' and account_type <> 'margin'""",
        )
        == 0
    )
    assert (
        scalar(
            con,
            "select count(*) from balances join accounts using (account_id) "
            "where margin_debt > 0 and account_type <> 'margin'",
        )
        == 0
    )


def test_latent_types_behave_as_documented(con):
    per_type = {
        row[0]: row[1:]
        for row in con.execute("""
        with customer as (
            select a.customer_id,
                   max(t.trade_date) as last_trade,
                   count(t.trade_id) as trades,
                   min(a.open_date) as first_open
            from accounts a left join trades t using (account_id)
            group by a.customer_id
        ), assets as (
            select a.customer_id, sum(cash + market_value - coalesce(margin_debt, 0)) as net
            from balances b join accounts a using (account_id)
            where as_of_date = (select max(as_of_date) from balances)
            group by a.customer_id
        )
        select latent_type,
               median(coalesce(net, 0)),
               avg(trades),
               max(last_trade),
               min(first_open)
        from truth join customer using (customer_id) left join assets using (customer_id)
        group by latent_type""").fetchall()
    }
    assert set(per_type) == {t.name for t in CUSTOMER_TYPES}
    median_assets = {k: v[0] for k, v in per_type.items()}
    mean_trades = {k: v[1] for k, v in per_type.items()}
    assert max(median_assets, key=median_assets.get) == "vip"
    assert max(mean_trades, key=mean_trades.get) == "active_trader"
    # dormant customers stopped trading over a year before the end
    assert per_type["dormant"][2] is None or (END - per_type["dormant"][2]).days > 365
    # potential customers are new: every one opened within the last year
    assert (END - per_type["potential"][3]).days < 366
    assert median_assets["potential"] > median_assets["ordinary"]


def test_truth_lists_every_customer_once(con):
    assert scalar(con, "select count(*) from truth") == scalar(
        con, "select count(distinct customer_id) from accounts"
    )
    assert (
        scalar(
            con,
            "select count(*) from truth where customer_id not in "
            "(select customer_id from accounts)",
        )
        == 0
    )


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = tree_digest(make_landing(tmp_path / "a", customers=300, seed=3))
    again = tree_digest(make_landing(tmp_path / "b", customers=300, seed=3))
    other = tree_digest(make_landing(tmp_path / "c", customers=300, seed=4))
    assert first == again
    assert first["trades.csv"] != other["trades.csv"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_parts_hold_the_same_rows_as_one_file(tmp_path, fmt):
    single = make_landing(tmp_path / "single", customers=300, fmt=fmt)
    parts = make_landing(tmp_path / "parts", customers=300, fmt=fmt, parts=3)
    with duckdb.connect() as con:
        reader = "read_parquet" if fmt == "parquet" else "read_csv"
        for table in CONTRACT:
            assert len(list((parts / table).glob(f"part-*.{fmt}"))) == 3
            one = f"select * from {reader}('{single / table}.{fmt}')"
            many = f"select * from {reader}('{parts / table}/*.{fmt}')"
            assert scalar(con, f"select count(*) from ({one} except all {many})") == 0, table
            assert scalar(con, f"select count(*) from ({many} except all {one})") == 0, table


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_monthly_files_hold_each_row_in_its_month_and_the_same_rows(tmp_path, fmt):
    single = make_landing(tmp_path / "single", customers=300, fmt=fmt)
    monthly = tmp_path / "monthly"
    generate(monthly, 300, 14, END, 7, fmt, monthly_files=True)
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    assert (monthly / f"accounts.{fmt}").read_bytes() == (single / f"accounts.{fmt}").read_bytes()
    with duckdb.connect() as con:
        for table, column in MONTH_COLUMNS.items():
            files = sorted((monthly / table).iterdir())
            assert [f.name for f in files] == [f"{m}.{fmt}" for m in months(END, 14)], table
            for path in files:
                outside = scalar(
                    con,
                    f"select count(*) from {reader}('{path}') "
                    f"where strftime({column}::date, '%Y-%m') <> '{path.stem}'",
                )
                assert outside == 0, path
            one = f"select * from {reader}('{single / table}.{fmt}')"
            many = f"select * from {reader}('{monthly / table}/*.{fmt}')"
            assert scalar(con, f"select count(*) from ({one} except all {many})") == 0, table
            assert scalar(con, f"select count(*) from ({many} except all {one})") == 0, table


def months(end, count):
    """The ``YYYY-MM`` names of the ``count`` months ending with ``end``'s."""
    return [str(day)[:7] for day in month_ends(end, count)]


def test_monthly_files_and_parts_do_not_mix(tmp_path):
    with pytest.raises(ValueError, match="monthly"):
        generate(tmp_path, 10, 3, END, 7, parts=2, monthly_files=True)


def test_dirty_manifest_lists_every_planted_row_and_every_rule(tmp_path):
    clean = make_landing(tmp_path / "clean", customers=300)
    dirty = make_landing(tmp_path / "dirty", customers=300, dirty=True)
    with (dirty / "_dirty_manifest.csv").open(encoding="utf-8") as handle:
        manifest = list(csv.DictReader(handle))
    assert {row["rule"] for row in manifest} == RULE_CODES
    with duckdb.connect() as con:
        for table in CONTRACT:
            planted = [r for r in manifest if r["source_table"] == table]
            added = scalar(
                con,
                f"select count(*) from read_csv('{dirty / table}.csv', "
                "all_varchar = true, ignore_errors = true)",
            ) - scalar(
                con, f"select count(*) from read_csv('{clean / table}.csv', all_varchar = true)"
            )
            rows = len([r for r in planted if r["rule"] != "malformed_line"])
            assert added == rows == len(PLANTS[table]), table


def test_cli_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "--dirty" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--customers", "0", "--out", "/nonexistent/never"])
    assert done.value.code == 2


def test_mix_plants_the_types_in_the_shares_asked(tmp_path):
    out = tmp_path / "mix"
    generate(out, 1_000, 14, END, 5, mix={"vip": 1, "dormant": 3})
    truth = duckdb.sql(f"select * from read_csv('{out / '_truth.csv'}')").df()
    assert set(truth["latent_type"]) == {"vip", "dormant"}
    assert 0.70 <= (truth["latent_type"] == "dormant").mean() <= 0.80
    with pytest.raises(ValueError, match="unknown customer types"):
        generate(tmp_path / "bad", 100, 14, END, 5, mix={"whale": 1})
    with pytest.raises(SystemExit) as done:
        main(["--mix", "vip", "--out", str(tmp_path / "cli")])
    assert done.value.code == 2
