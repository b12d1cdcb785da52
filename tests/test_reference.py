"""The reference implementations of docs/indicators.md in ``benchmarks/reference.py``.

A tiny hand-written landing folder with every value worked out by hand, then the two
references against each other on the shipped sample.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from benchmarks.reference import (
    INDICATOR_COLUMNS,
    compare_indicators,
    indicators_duckdb,
    indicators_pandas,
)

REFERENCES = {"duckdb": indicators_duckdb, "pandas": indicators_pandas}
SAMPLE = Path(__file__).resolve().parents[1] / "seeds" / "sample"
SAMPLE_LOAD_DATE = dt.date(2026, 11, 21)

# Data from 2023-12-01 to 2024-04-05. The load is on 2024-04-10, so April is incomplete
# and the month-ends are 2023-12-31, 2024-01-31, 2024-02-29 and 2024-03-31.
LOAD_DATE = dt.date(2024, 4, 10)
MONTH_ENDS = [
    dt.date(2023, 12, 31),
    dt.date(2024, 1, 31),
    dt.date(2024, 2, 29),
    dt.date(2024, 3, 31),
]

# C1: two accounts, A2 (margin) closes 2024-01-20 in the middle of windows.
# C2: no balances.  C3: no trades.  C4: zero assets.  C5: opens in March 2024.
# C6: its only account closed 2022-12-15, before every window: never present.
# 0007: a text id that looks like a number; its account closes 2023-12-20, so it drops
#       out at 2024-03-31 with a 3-month window.
TINY = {
    "accounts": """\
account_id,customer_id,open_date,close_date,account_type,branch_id,customer_type,birth_year,gender,risk_level,manager_id
A1,C1,2020-05-10,,cash,B001,individual,1980,M,C3,M0001
A2,C1,2021-01-15,2024-01-20,margin,B001,individual,1980,M,C3,M0001
A3,C2,2022-03-01,,cash,B002,,,,,
A4,C3,2019-01-01,,cash,B002,institution,,U,C2,
A5,C4,2023-06-01,,cash,B003,individual,1990,F,,
A6,C5,2024-03-10,,cash,B003,individual,2000,F,C1,
A7,C6,2015-01-01,2022-12-15,cash,B001,individual,1960,M,C4,
A8,0007,2018-01-01,2023-12-20,cash,B004,individual,1970,F,C3,
""",
    "trades": """\
trade_id,account_id,trade_date,symbol,asset_class,side,quantity,price,amount
T01,A1,2023-12-05,600001,stock,B,100,10,1000.00
T02,A2,2023-12-05,10000001,option,S,1,500,500.00
T03,A1,2024-01-10,510001,fund,B,1000,2,2000.00
T04,A2,2024-01-18,600001,stock,S,30,10,300.00
T05,A1,2024-03-20,110001,bond,B,40,100,4000.00
T06,A1,2024-04-03,600001,stock,B,1000,9.999,9999.00
T07,A3,2024-02-29,600002,stock,B,150,10,1500.00
T08,A3,2024-02-29,600002,stock,S,50,10,500.00
T09,A5,2024-01-05,600003,stock,B,10,10,100.00
T10,A6,2024-03-15,510002,fund,B,800,1,800.00
T11,A8,2023-12-01,600004,stock,S,250,10,2500.00
""",
    "fees": """\
fee_id,account_id,fee_date,fee_type,amount,trade_id
F01,A1,2023-12-05,commission,5.00,T01
F02,A2,2023-12-05,commission,5.00,T02
F03,A1,2024-01-10,commission,5.00,T03
F04,A1,2024-01-10,stamp_duty,1.00,T03
F05,A2,2024-01-18,commission,5.00,T04
F06,A2,2024-01-20,margin_interest,12.50,
F07,A2,2023-12-31,margin_interest,10.00,
F08,A1,2024-02-10,commission,-3.00,
F09,A1,2024-03-20,commission,6.00,T05
F10,A3,2024-02-29,commission,5.00,T07
F11,A3,2024-02-29,commission,5.00,T08
F12,A5,2024-01-05,commission,5.00,T09
F13,A6,2024-03-15,commission,5.00,T10
F14,A8,2023-12-01,commission,5.00,T11
F15,A8,2023-12-01,transfer_fee,0.05,T11
""",
    "balances": """\
account_id,as_of_date,cash,market_value,margin_debt
A1,2023-12-31,1000,9000,
A2,2023-12-31,500,4500,2000
A2,2024-01-20,0,0,0
A1,2024-01-31,1200,9800,
A1,2024-02-15,1300,9700,
A1,2024-02-29,1400,10600,
A1,2024-03-31,1500,11500,
A1,2024-04-05,100,100,
A4,2023-12-31,50000,0,
A4,2024-01-31,50000,0,
A4,2024-02-29,40000,0,
A4,2024-03-31,40000,0,
A5,2023-12-31,0,0,
A5,2024-01-31,0,0,
A5,2024-02-29,0,0,
A5,2024-03-31,0,0,
A6,2024-03-31,200,800,
A8,2023-12-20,0,0,
""",
    "cash_flows": """\
flow_id,account_id,flow_date,direction,amount
CF1,A1,2024-01-05,in,1000
CF2,A1,2024-03-10,out,500
CF3,A3,2024-02-01,in,3000
CF4,A4,2024-02-10,out,10000
CF5,A6,2024-03-12,in,1000
CF6,A8,2023-12-15,out,2500
""",
}

N = None  # null
D = dt.date
S = 0.015 / 12  # the default spread of 1.5 % a year, per month present
# Worked by hand for W = 3 months and the default spread. interest_contribution is the
# margin interest charged; realised_revenue adds the commission; imputed_cash_spread =
# avg_cash x S x present_months (months with a snapshot), which is never revenue.
# C1's snapshot dates (net, cash, gross, debt): 12-31 (13000, 1500, 15000, 2000),
# 01-20 (0, 0, 0, 0), 01-31 (11000, 1200, 11000, 0), 02-15 (11000, 1300, 11000, 0),
# 02-29 (12000, 1400, 12000, 0), 03-31 (13000, 1500, 13000, 0); 04-05 is after every as-of.
# Columns in INDICATOR_COLUMNS order:
# customer, as_of, window_start, full, avg_assets, avg_cash, commission, margin_interest,
# interest_contribution, realised_revenue, present_months, imputed_cash_spread, volume,
# net_inflow, trades, active_days, turnover, recency, tenure, active_month_share, breadth,
# margin_usage, start_net, end_net, return_rate
# fmt: off
EXPECTED_W3 = [
    # present in December only (one zero snapshot): no spread
    ("0007", D(2023, 12, 31), D(2023, 10, 1), False, 0, 0, 5, 0, 0, 5, 1, 0, 2500, -2500, 1,
     1, N, 30, 71, 1 / 3, 1, N, 0, 0, N),  # Dietz base 0 - 2500 / 2 < 0
    ("0007", D(2024, 1, 31), D(2023, 11, 1), False, 0, 0, 5, 0, 0, 5, 1, 0, 2500, -2500, 1,
     1, N, 61, 72, 1 / 3, 1, N, 0, 0, N),
    ("0007", D(2024, 2, 29), D(2023, 12, 1), True, 0, 0, 5, 0, 0, 5, 1, 0, 2500, -2500, 1,
     1, N, 90, 73, 1 / 3, 1, N, 0, 0, N),
    # two trades on one day in two accounts; start 0 and no inflow: Dietz base 0;
    # present 1 month of 3 (December): the spread covers that month only
    ("C1", D(2023, 12, 31), D(2023, 10, 1), False, 13000, 1500, 10, 10, 10, 20, 1, 1500 * S,
     1500, 0, 2, 1, 1500 / 13000, 26, 43, 1 / 3, 2, 2000 / 15000, 0, 13000, N),
    ("C1", D(2024, 1, 31), D(2023, 11, 1), False, 24000 / 3, 2700 / 3, 20, 22.5, 22.5, 42.5,
     2, 900 * S * 2, 3800, 1000, 4, 3, 3800 / 8000, 13, 44, 2 / 3, 3, 2000 / 26000,
     0, 11000, (11000 - 1000) / 500),
    # the rebate of 3 on 02-10
    ("C1", D(2024, 2, 29), D(2023, 12, 1), True, 47000 / 5, 5400 / 5, 17, 22.5, 22.5, 39.5,
     3, 1080 * S * 3, 3800, 1000, 4, 3, 3800 / 9400, 42, 45, 2 / 3, 3, 2000 / 49000,
     0, 12000, (12000 - 1000) / 500),
    # A2's trades and debt have left the window; start = the 12-31 snapshot
    ("C1", D(2024, 3, 31), D(2024, 1, 1), True, 47000 / 5, 5400 / 5, 13, 12.5, 12.5, 25.5,
     3, 1080 * S * 3, 6300, 500, 3, 3, 6300 / 9400, 11, 46, 2 / 3, 3, 0,
     13000, 13000, (13000 - 13000 - 500) / (13000 + 250)),
    ("C2", D(2023, 12, 31), D(2023, 10, 1), False, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, N,
     93, 21, 0, 0, N, 0, N, N),
    ("C2", D(2024, 1, 31), D(2023, 11, 1), False, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, N,
     93, 22, 0, 0, N, 0, N, N),
    ("C2", D(2024, 2, 29), D(2023, 12, 1), True, 0, 0, 10, 0, 0, 10, 0, 0, 2000, 3000, 2, 1, N,
     0, 23, 1 / 3, 1, N, 0, N, N),
    ("C2", D(2024, 3, 31), D(2024, 1, 1), True, 0, 0, 10, 0, 0, 10, 0, 0, 2000, 3000, 2, 1, N,
     31, 24, 1 / 3, 1, N, 0, N, N),
    # cash only, no revenue: the spread grows with the months present, 1, 2, then 3
    ("C3", D(2023, 12, 31), D(2023, 10, 1), False, 50000, 50000, 0, 0, 0, 0, 1, 62.5, 0, 0,
     0, 0, 0, 93, 59, 0, 0, 0, 0, 50000, N),
    ("C3", D(2024, 1, 31), D(2023, 11, 1), False, 50000, 50000, 0, 0, 0, 0, 2, 125, 0, 0,
     0, 0, 0, 93, 60, 0, 0, 0, 0, 50000, N),
    ("C3", D(2024, 2, 29), D(2023, 12, 1), True, 140000 / 3, 140000 / 3, 0, 0, 0, 0, 3, 175, 0,
     -10000, 0, 0, 0, 92, 61, 0, 0, 0, 0, 40000, N),  # Dietz base 0 - 10000 / 2 < 0
    ("C3", D(2024, 3, 31), D(2024, 1, 1), True, 130000 / 3, 130000 / 3, 0, 0, 0, 0, 3, 162.5, 0,
     -10000, 0, 0, 0, 92, 62, 0, 0, 0, 50000, 40000, 0),
    # zero snapshots still count as present
    ("C4", D(2023, 12, 31), D(2023, 10, 1), False, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, N,
     93, 6, 0, 0, N, 0, 0, N),
    ("C4", D(2024, 1, 31), D(2023, 11, 1), False, 0, 0, 5, 0, 0, 5, 2, 0, 100, 0, 1, 1, N,
     26, 7, 1 / 3, 1, N, 0, 0, N),
    ("C4", D(2024, 2, 29), D(2023, 12, 1), True, 0, 0, 5, 0, 0, 5, 3, 0, 100, 0, 1, 1, N,
     55, 8, 1 / 3, 1, N, 0, 0, N),
    ("C4", D(2024, 3, 31), D(2024, 1, 1), True, 0, 0, 5, 0, 0, 5, 3, 0, 100, 0, 1, 1, N,
     86, 9, 1 / 3, 1, N, 0, 0, N),
    # opened in March: one month's spread, 200 x 0.015 / 12 (a full window's: 0.75)
    ("C5", D(2024, 3, 31), D(2024, 1, 1), True, 1000, 200, 5, 0, 0, 5, 1, 0.25, 800, 1000, 1,
     1, 0.8, 16, 0, 1 / 3, 1, 0, 0, 1000, 0),
]
# fmt: on


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(INDICATOR_COLUMNS))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    for table, text in TINY.items():
        (folder / f"{table}.csv").write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", REFERENCES)
def test_three_month_window_matches_the_hand_computed_values(tiny, name):
    result = REFERENCES[name](tiny, LOAD_DATE, window_months=3)
    assert list(result.columns) == list(INDICATOR_COLUMNS)
    keys = list(zip(result["customer_id"], result["as_of_date"].dt.date, strict=True))
    assert keys == sorted(keys)
    assert sorted({as_of for _, as_of in keys}) == MONTH_ENDS
    assert compare_indicators(frame(EXPECTED_W3), result, rtol=1e-12, atol=0) == []


@pytest.mark.parametrize("name", REFERENCES)
def test_result_types(tiny, name):
    result = REFERENCES[name](tiny, LOAD_DATE, window_months=3)
    assert result["customer_id"].map(type).eq(str).all()
    assert result["as_of_date"].dtype.kind == "M"
    assert result["is_full_window"].dtype == bool
    for column in ("trade_count", "active_days", "present_months", "recency_days", "tenure_months"):
        assert result[column].dtype.kind == "i", column
    assert result["avg_assets"].dtype == "float64"


@pytest.mark.parametrize("name", REFERENCES)
def test_twelve_month_window(tiny, name):
    result = REFERENCES[name](tiny, LOAD_DATE).set_index(["customer_id", "as_of_date"])
    # C6 closed before every window; 0007's closing (2023-12-20) is inside all of them
    assert sorted(set(result.index.get_level_values(0))) == ["0007", "C1", "C2", "C3", "C4", "C5"]
    assert len(result) == 4 * 5 + 1
    assert not result["is_full_window"].any()  # the data starts in December 2023
    c3 = result.loc["C3"]
    assert c3["window_start_date"].dt.date.tolist() == [
        D(2023, 1, 1),
        D(2023, 2, 1),
        D(2023, 3, 1),
        D(2023, 4, 1),
    ]
    # no trade: days in the window + 1; the windows from March 2023 hold 29 February 2024
    assert c3["recency_days"].tolist() == [366, 366, 367, 367]
    assert result.loc[("C2", "2024-01-31"), "recency_days"] == 366
    c1 = result.loc[("C1", "2024-03-31")]
    assert (c1["trade_count"], c1["active_days"], c1["product_breadth"]) == (5, 4, 4)
    assert c1["trading_volume"] == 7800
    assert c1["active_month_share"] == pytest.approx(3 / 12)
    assert c1["commission_contribution"] == pytest.approx(23)
    assert c1["avg_assets"] == pytest.approx(60000 / 6)
    assert c1["interest_contribution"] == c1["margin_interest"] == pytest.approx(22.5)
    assert c1["realised_revenue"] == pytest.approx(23 + 22.5)
    # snapshots in December to March: 4 months present of the 12, a third of a year
    assert c1["present_months"] == 4
    assert c1["imputed_cash_spread"] == pytest.approx(6900 / 6 * 0.015 * 4 / 12)
    assert c1["margin_usage"] == pytest.approx(2000 / 62000)
    assert c1["return_rate"] == pytest.approx((13000 - 500) / 250)
    late = result.loc[("0007", "2024-03-31")]
    assert (late["recency_days"], late["tenure_months"]) == (121, 74)
    assert late["active_month_share"] == pytest.approx(1 / 12)


@pytest.mark.parametrize("name", REFERENCES)
def test_given_month_ends_and_spread(tiny, name):
    every = REFERENCES[name](tiny, LOAD_DATE, window_months=3, cash_spread_rate=0.03)
    one = REFERENCES[name](
        tiny, LOAD_DATE, window_months=3, cash_spread_rate=0.03, as_of_dates=[D(2024, 2, 29)]
    )
    assert (one["as_of_date"] == pd.Timestamp(2024, 2, 29)).all()
    assert compare_indicators(every[every["as_of_date"] == "2024-02-29"], one, atol=0) == []
    c3 = one.set_index("customer_id").loc["C3"]
    assert c3["imputed_cash_spread"] == pytest.approx(140000 / 3 * 0.03 * 3 / 12)
    assert c3["interest_contribution"] == 0  # the spread is not revenue
    with pytest.raises(ValueError, match="month-ends"):
        REFERENCES[name](tiny, LOAD_DATE, as_of_dates=[D(2024, 2, 28)])


@pytest.mark.parametrize("name", REFERENCES)
def test_load_date_decides_whether_the_last_month_counts(tiny, name):
    on_last_day = REFERENCES[name](tiny, dt.date(2024, 4, 30), window_months=3)
    assert on_last_day["as_of_date"].max() == pd.Timestamp(2024, 3, 31)
    result = REFERENCES[name](tiny, dt.date(2024, 5, 1), window_months=3)
    assert result["as_of_date"].max() == pd.Timestamp(2024, 4, 30)
    c1 = result.set_index(["customer_id", "as_of_date"]).loc[("C1", "2024-04-30")]
    assert (c1["trade_count"], c1["end_net_assets"]) == (2, 200)  # T05, T06; the 04-05 snapshot


@pytest.mark.parametrize("name", REFERENCES)
def test_parts_parquet_and_no_cash_flows(tiny, tmp_path, name):
    """Part folders, Parquet files and an absent cash_flows table read the same rows."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny, moved)
    with duckdb.connect() as con:
        (moved / "trades").mkdir()
        source = f"read_csv('{tiny / 'trades.csv'}', all_varchar = true)"
        con.execute(f"copy (from {source} limit 5) to '{moved / 'trades' / 'a.csv'}'")
        con.execute(f"copy (from {source} offset 5) to '{moved / 'trades' / 'b.parquet'}'")
        (moved / "trades.csv").unlink()
        # typed Parquet, amounts as DECIMAL like the generator writes them
        con.execute(
            f"copy (select * replace (amount::decimal(18, 2) as amount) "
            f"from read_csv('{tiny / 'fees.csv'}')) to '{moved / 'fees.parquet'}'"
        )
        (moved / "fees.csv").unlink()
    expected = REFERENCES[name](tiny, LOAD_DATE, window_months=3)
    assert compare_indicators(expected, REFERENCES[name](moved, LOAD_DATE, 3), atol=0) == []

    (moved / "cash_flows.csv").unlink()
    result = REFERENCES[name](moved, LOAD_DATE, window_months=3)
    assert (result["net_inflow"] == 0).all()
    c1 = result.set_index(["customer_id", "as_of_date"]).loc[("C1", "2024-03-31")]
    assert c1["return_rate"] == 0  # (13000 - 13000 - 0) / 13000


@pytest.fixture(scope="module")
def sample_results() -> dict[str, pd.DataFrame]:
    return {name: reference(SAMPLE, SAMPLE_LOAD_DATE) for name, reference in REFERENCES.items()}


def test_references_agree_on_the_sample(sample_results):
    duck, plain = sample_results["duckdb"], sample_results["pandas"]
    assert compare_indicators(duck, plain, rtol=1e-9) == []
    months = sorted(duck["as_of_date"].dt.date.unique())
    assert (months[0], months[-1], len(months)) == (D(2024, 11, 30), D(2026, 10, 31), 24)
    assert duck["customer_id"].nunique() == 2000
    money_and_counts = [
        "avg_assets",
        "avg_cash",
        "commission_contribution",
        "interest_contribution",
        "realised_revenue",
        "present_months",
        "imputed_cash_spread",
        "trading_volume",
        "net_inflow",
        "trade_count",
        "recency_days",
        "start_net_assets",
    ]
    assert duck[money_and_counts].notna().all().all()
    # the sample exercises both sides of every null rule
    for column in ("turnover_rate", "margin_usage", "end_net_assets", "return_rate"):
        assert duck[column].notna().any() and duck[column].isna().any(), column
