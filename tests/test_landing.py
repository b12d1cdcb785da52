"""Whole-file problems stop the load with a message naming the file (and the column)."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from orchestration.config import ConfigError, VolumeBounds
from orchestration.landing import CONTRACT, LandingError, check_volumes, discover, land
from tests.conftest import make_landing


@pytest.fixture
def landing(tmp_path):
    return make_landing(tmp_path / "landing", customers=60, months=4)


def rewrite_header(path, old, new):
    text = path.read_text(encoding="utf-8")
    header, rest = text.split("\n", 1)
    path.write_text(header.replace(old, new) + "\n" + rest, encoding="utf-8")


def landed(folder):
    con = duckdb.connect()
    land(con, discover(folder), "test")
    return con


def test_missing_required_table_is_named(landing):
    (landing / "fees.csv").unlink()
    with pytest.raises(LandingError, match=r"required table 'fees' is missing"):
        discover(landing)


@pytest.mark.parametrize("table", ["cash_flows", "managers"])
def test_optional_table_may_be_absent(landing, table):
    (landing / f"{table}.csv").unlink()
    con = landed(landing)
    assert con.execute(f"select count(*) from raw.{table}").fetchone() == (0,)


def test_missing_required_column_names_file_and_column(landing):
    rewrite_header(landing / "trades.csv", ",amount", ",amount_cny")
    with pytest.raises(LandingError) as error:
        discover(landing)
    assert "trades.csv" in str(error.value)
    assert "'amount'" in str(error.value)


def test_missing_column_in_parquet_part_is_named(tmp_path):
    folder = make_landing(tmp_path / "pq", customers=60, months=4, fmt="parquet", parts=2)
    part = folder / "balances" / "part-00001.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"copy (select * exclude (cash) from read_parquet('{part}')) "
            f"to '{part}.tmp' (format parquet)"
        )
    part.with_name(part.name + ".tmp").replace(part)
    with pytest.raises(LandingError, match=r"part-00001\.parquet: required column 'cash' missing"):
        discover(folder)


def test_optional_column_may_be_absent_and_extra_columns_are_ignored(landing):
    with duckdb.connect() as con:
        path = landing / "balances.csv"
        con.execute(
            f"copy (select 'x' as note, * exclude (margin_debt) from read_csv('{path}', "
            f"all_varchar = true)) to '{path}.tmp' (header)"
        )
    (landing / "balances.csv.tmp").replace(landing / "balances.csv")
    con = landed(landing)
    columns = [r[0] for r in con.execute("describe raw.balances").fetchall()]
    assert "note" not in columns
    assert con.execute(
        "select count(*) from raw.balances where margin_debt is not null"
    ).fetchone() == (0,)


def test_header_names_match_in_any_case_and_order(landing):
    path = landing / "cash_flows.csv"
    with duckdb.connect() as con:
        con.execute(
            f'copy (select amount as " AMOUNT ", direction as Direction, flow_date, '
            f"account_id, flow_id from read_csv('{path}', all_varchar = true)) "
            f"to '{path}.tmp' (header)"
        )
        expected = con.execute(f"select sum(amount::double) from read_csv('{path}')").fetchone()
    (landing / "cash_flows.csv.tmp").replace(path)
    con = landed(landing)
    assert con.execute("select sum(amount::double) from raw.cash_flows").fetchone() == expected


def test_duplicate_column_in_header_is_named(landing):
    rewrite_header(landing / "accounts.csv", "branch_id", "account_id")
    with pytest.raises(LandingError, match=r"accounts\.csv: column 'account_id' appears more"):
        discover(landing)


def test_empty_file_is_named(landing):
    (landing / "accounts.csv").write_bytes(b"")
    with pytest.raises(LandingError, match=r"accounts\.csv is empty"):
        discover(landing)


def test_header_only_file_lands_zero_rows(landing):
    path = landing / "cash_flows.csv"
    path.write_text(path.read_text(encoding="utf-8").split("\n", 1)[0] + "\n", encoding="utf-8")
    assert landed(landing).execute("select count(*) from raw.cash_flows").fetchone() == (0,)


def test_non_utf8_file_is_named(landing):
    path = landing / "accounts.csv"
    text = path.read_text(encoding="utf-8").replace("B00", "营业部", 1)
    path.write_bytes(text.encode("gbk"))
    with pytest.raises(LandingError, match=r"accounts\.csv is not UTF-8 encoded \(first bad line"):
        landed(landing)


def test_non_utf8_header_is_named(landing):
    path = landing / "trades.csv"
    path.write_bytes("交易编号,".encode("gbk") + path.read_bytes())
    with pytest.raises(LandingError, match=r"trades\.csv is not UTF-8 encoded \(header row"):
        discover(landing)


def test_unreadable_parquet_is_named(tmp_path):
    folder = make_landing(tmp_path / "pq", customers=60, months=4, fmt="parquet")
    (folder / "fees.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(LandingError, match=r"fees\.parquet cannot be read as Parquet"):
        discover(folder)


def test_a_table_given_twice_is_refused(landing):
    (landing / "trades").mkdir()
    shutil.copy(landing / "trades.csv", landing / "trades" / "part-0.csv")
    with pytest.raises(LandingError, match=r"table 'trades' is given more than once"):
        discover(landing)


def test_folder_without_parts_is_refused(landing):
    (landing / "fees.csv").unlink()
    (landing / "fees").mkdir()
    (landing / "fees" / "_README.txt").write_text("nothing here")
    with pytest.raises(LandingError, match=r"holds no \.csv or \.parquet part files"):
        discover(landing)


def test_missing_landing_folder_is_named(tmp_path):
    with pytest.raises(LandingError, match=r"does not exist.*TIERS_RAW_DIR"):
        discover(tmp_path / "nowhere")


def test_mixed_formats_in_one_folder_are_all_read(tmp_path):
    folder = make_landing(tmp_path / "mixed", customers=60, months=4, parts=2)
    part = folder / "trades" / "part-00001.csv"
    with duckdb.connect() as con:
        expected = con.execute(f"select count(*) from read_csv('{folder}/trades/*.csv')").fetchone()
        con.execute(
            f"copy (select * from read_csv('{part}')) to "
            f"'{part.with_suffix('.parquet')}' (format parquet)"
        )
    part.unlink()
    con = landed(folder)
    assert con.execute("select count(*) from raw.trades").fetchone() == expected
    assert con.execute("select count(distinct _source_file) from raw.trades").fetchone() == (2,)


def test_parquet_timestamps_in_date_columns_become_dates(tmp_path):
    folder = make_landing(tmp_path / "pq", customers=60, months=4, fmt="parquet")
    path = folder / "cash_flows.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"copy (select * replace (flow_date::timestamp as flow_date) "
            f"from read_parquet('{path}')) to '{path}.tmp' (format parquet)"
        )
    path.with_name(path.name + ".tmp").replace(path)
    con = landed(folder)
    assert con.execute(
        "select count(*) from raw.cash_flows where not "
        "regexp_full_match(flow_date, '\\d{4}-\\d{2}-\\d{2}')"
    ).fetchone() == (0,)


def test_files_starting_with_underscore_or_unknown_tables_are_ignored(landing):
    (landing / "notes.csv").write_text("a,b\n1,2\n")
    files = discover(landing)
    assert {f.table for f in files} == set(CONTRACT)


def test_unclosed_quote_stops_the_load_instead_of_swallowing_rows(landing):
    path = landing / "trades.csv"
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[5] = _quote_symbol(lines[5], '"{}')  # a quote that never closes
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(LandingError, match=r"trades\.csv: a quoted value opened at"):
        landed(landing)


def test_stray_quotes_that_pair_up_across_lines_stop_the_load(landing):
    path = landing / "trades.csv"
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[5] = _quote_symbol(lines[5], '"{}')
    lines[9] = _quote_symbol(lines[9], '{}"')
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(LandingError, match=r"runs over a line break"):
        landed(landing)


def test_stray_quotes_deep_in_a_later_part_stop_the_load(landing):
    # the quotes lie past the first 16 MB read of the third part, which is read
    # ahead while the first parts are checked
    header, *rows = (landing / "trades.csv").read_text(encoding="utf-8").strip().split("\n")
    (landing / "trades.csv").unlink()
    (landing / "trades").mkdir()
    for part in ("a", "b"):
        (landing / "trades" / f"{part}.csv").write_text(
            "\n".join([header, *rows]) + "\n", encoding="utf-8"
        )
    padding = rows * (17_000_000 // len("\n".join(rows)) + 1)
    opened, closed = _quote_symbol(rows[0], '"{}'), _quote_symbol(rows[4], '{}"')
    (landing / "trades" / "c.csv").write_text(
        "\n".join([header, *padding, opened, *rows[1:4], closed]) + "\n", encoding="utf-8"
    )
    with pytest.raises(LandingError, match=r"trades/c\.csv: a quoted value opened at"):
        landed(landing)


def _quote_symbol(line, pattern):
    fields = line.split(",")
    fields[3] = pattern.format(fields[3])
    return ",".join(fields)


def test_parts_that_would_be_skipped_stop_the_load(tmp_path):
    folder = make_landing(tmp_path / "parts", customers=60, months=4, parts=2)
    (folder / "trades" / "part-00001.csv").rename(folder / "trades" / "part-00001.csv.gz")
    with pytest.raises(LandingError, match=r"not \.csv or \.parquet part files: part-00001\.csv"):
        discover(folder)


def test_part_extensions_match_in_any_case(tmp_path):
    folder = make_landing(tmp_path / "parts", customers=60, months=4, parts=2)
    (folder / "fees" / "part-00001.csv").rename(folder / "fees" / "part-00001.CSV")
    assert sum(f.table == "fees" for f in discover(folder)) == 2


def test_old_mac_line_endings_fail_cleanly(landing):
    path = landing / "accounts.csv"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    with pytest.raises(LandingError, match=r"accounts\.csv"):
        landed(landing)


def test_a_file_cut_mid_line_stops_the_load(landing):
    """A truncated or half-copied file is a whole-file fault, not one malformed row."""
    path = landing / "trades.csv"
    data = path.read_bytes()
    cut = data.rindex(b",", 0, len(data) // 2)  # mid-line, half the file gone
    path.write_bytes(data[:cut])
    with pytest.raises(LandingError, match=r"trades\.csv ends in a cut line \(line \d+"):
        landed(landing)


def test_a_file_without_a_final_line_break_is_whole(landing):
    path = landing / "trades.csv"
    whole = landed(landing).execute("select count(*) from raw.trades").fetchone()[0]
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    con = landed(landing)
    assert con.execute("select count(*) from raw.trades").fetchone()[0] == whole
    assert con.execute("select count(*) from raw.malformed_rows").fetchone()[0] == 0


def test_a_table_halved_since_the_last_load_stops_the_load(landing):
    con = landed(landing)
    path = landing / "trades.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    before = len(lines) - 1
    path.write_text("".join(lines[: 1 + before // 2]), encoding="utf-8")  # whole lines
    with pytest.raises(LandingError) as error:
        land(con, discover(landing), "second")
    message = str(error.value)
    assert f"trades has {before // 2:,} rows against {before:,} after the last load" in message
    assert f"(trades.csv {before:,} -> {before // 2:,})" in message
    assert "TIERS_MAX_ROW_DROP=0.2" in message


def test_a_real_shrink_lands_once_the_bound_is_raised(landing):
    con = landed(landing)
    path = landing / "trades.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
    land(con, discover(landing), "second", VolumeBounds(max_row_drop=1))
    assert con.execute("select count(*) from raw.trades").fetchone()[0] == len(lines) // 2 - 1


def test_volume_bounds_per_table():
    previous = {
        ("trades", "a.csv"): (600, 0),
        ("trades", "b.csv"): (400, 0),
        ("fees", "f.csv"): (100, 1),
    }
    bounds = VolumeBounds(max_row_drop=0.2, max_malformed_jump=0.01)
    # a vanished part: 40% of trades gone; the message says which file
    with pytest.raises(
        LandingError, match=r"trades has 600 rows against 1,000 .*\(b\.csv 400 -> gone\)"
    ):
        check_volumes(
            previous, {("trades", "a.csv"): (600, 0), ("fees", "f.csv"): (100, 1)}, bounds
        )
    # within the bound, and a table that grew, pass; so does a first load
    check_volumes(previous, {("trades", "a.csv"): (810, 0), ("fees", "f.csv"): (500, 1)}, bounds)
    check_volumes({}, {("trades", "a.csv"): (5, 0)}, bounds)
    # the malformed share of fees jumps from 1% to 10%
    rows = {("trades", "a.csv"): (600, 0), ("trades", "b.csv"): (400, 0)}
    with pytest.raises(
        LandingError, match=r"fees: 10\.0% of its lines are malformed against 1\.0%"
    ):
        check_volumes(previous, {**rows, ("fees", "f.csv"): (90, 10)}, bounds)


@pytest.mark.parametrize("text", ["-0.1", "1.5", "half"])
def test_volume_bounds_must_be_shares(text):
    with pytest.raises(ConfigError, match="TIERS_MAX_ROW_DROP"):
        VolumeBounds.from_env({"TIERS_MAX_ROW_DROP": text})
