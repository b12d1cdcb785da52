"""The same dbt project on Spark (dbt-spark, local session) gives DuckDB's warehouse.

Both engines build from one staged landing (``orchestration.spark.stage``): Spark
from the staged Parquet, DuckDB from the landing's own views over the files. Each
engine's marts are then graded by the product's grading code, reading that
engine's indicators, and the tiers and service desk models are built on it. Every
compared table must hold the same rows: the same keys, text and dates equal,
numbers within 1e-9 relative, the same tiers. Two books: the committed sample
(clean) and a generated dirty book, whose planted bad rows (every quarantine rule,
duplicate keys among them) must land in ``audit.quarantine`` alike.

Run by ``make test-spark`` (needs the ``spark`` extra and Java); ``make test`` leaves
it out (marker ``spark``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import math
import shutil
from pathlib import Path

import duckdb
import pytest

pytest.importorskip("pyspark")

from orchestration import spark as engine  # noqa: E402
from orchestration.config import REPO_ROOT, ConfigError  # noqa: E402
from orchestration.tiering import FIT_SAMPLE_ASSET_GROUPS, draw_fit_sample  # noqa: E402
from tests.conftest import LOAD_DATE, dbt, make_landing  # noqa: E402

pytestmark = pytest.mark.spark

#: Each compared table with the columns that identify a row.
TABLES = {
    "marts.customer_indicators": ("customer_id", "as_of_date"),
    "marts.dim_customers": ("customer_id",),
    "marts.fct_customer_monthly_activity": ("customer_id", "month_start"),
    "marts.fct_trades": ("trade_id",),
    "marts.fct_fees": ("fee_id",),
    "audit.quarantine": ("source_table", "source_file", "source_row", "source_line"),
    "audit.load_reconciliation": ("source_table",),
    "audit.load_months": ("month_start",),
    "staging.stg_broker__accounts": ("account_id",),
    "staging.stg_broker__balances": ("account_id", "as_of_date"),
    "staging.stg_broker__cash_flows": ("flow_id",),
    "staging.stg_broker__managers": ("manager_id",),
    "tiers.customer_tiers": ("customer_id",),
    "tiers.customer_tier_history": ("customer_id", "as_of_date"),
    "tiers.customer_scores": ("customer_id", "as_of_date"),
    "tiers.customer_factor_scores": ("customer_id", "as_of_date", "factor"),
    "tiers.tier_profiles": ("as_of_date", "tier"),
    "tiers.tier_migrations": ("as_of_date", "from_tier", "to_tier"),
    "tiers.tier_activity_by_branch": ("as_of_date", "branch_id", "tier"),
    "tiers.service_plans": ("tier",),
    "marts.customer_service_book": ("customer_id", "as_of_date"),
    "marts.tier_suitability_matrix": ("as_of_date", "tier", "suitability_grade"),
    "marts.manager_books": ("as_of_date", "manager_id", "branch_id"),
    "marts.manager_reassignments": ("as_of_date", "customer_id"),
    "marts.customers_at_risk": ("customer_id", "as_of_date"),
}
#: Columns that differ by design: the engines' hash functions, the time of the build,
#: the fit's id (a digest of the indicators' bits, which differ in the last digits).
ENGINE_COLUMNS = {"fingerprint", "loaded_at", "run_id", "model_run_id"}
RELATIVE_TOLERANCE = 1e-9
#: The sample's later month-ends (2,000 customers) are fitted on a sample of this many
FIT_SAMPLE_SIZE = 800


def _value(value):
    """A value as both engines' drivers can agree on it."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _value(value.item())
    return value


def _rows(columns: list[str], rows, keys: tuple[str, ...]) -> dict[tuple, dict]:
    keyed = {}
    for row in rows:
        record = {c: _value(v) for c, v in zip(columns, row, strict=True)}
        key = tuple(record[k] for k in keys)
        assert key not in keyed, f"key {key} twice"
        keyed[key] = record
    return keyed


def _same(left, right) -> bool:
    if isinstance(left, int | float) and isinstance(right, int | float):
        if isinstance(left, bool) or isinstance(right, bool):
            return left == right
        return math.isclose(left, right, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12)
    return left == right


def compare(duck: Path, spark, table: str, keys: tuple[str, ...]) -> int:
    """Assert ``table`` holds the same rows on both engines; returns the row count."""
    with duckdb.connect(str(duck), read_only=True) as con:
        result = con.execute(f"select * from {table}")
        duck_columns = [d[0] for d in result.description]
        duck_rows = _rows(duck_columns, result.fetchall(), keys)
    frame = spark.table(table)
    spark_rows = _rows(frame.columns, frame.collect(), keys)
    assert set(frame.columns) == set(duck_columns), table
    assert spark_rows.keys() == duck_rows.keys(), (
        f"{table}: only DuckDB {sorted(duck_rows.keys() - spark_rows.keys())[:5]}, "
        f"only Spark {sorted(spark_rows.keys() - duck_rows.keys())[:5]}"
    )
    differences = [
        (key, column, duck_row[column], spark_rows[key][column])
        for key, duck_row in duck_rows.items()
        for column in duck_columns
        if column not in ENGINE_COLUMNS and not _same(duck_row[column], spark_rows[key][column])
    ]
    assert not differences, f"{table}: {len(differences)} values differ, e.g. {differences[:5]}"
    return len(duck_rows)


def build_both(raw_dir: Path, work: Path, tiers: bool = True):
    """Spark's build of ``raw_dir`` (its session) and DuckDB's, from one staged landing;
    with ``tiers`` False, up to the marts and the audit. A month-end of more than
    :data:`FIT_SAMPLE_SIZE` customers is fitted on a sample, which each engine draws."""
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    spark = engine.build(
        raw_dir,
        work / "spark",
        LOAD_DATE,
        unit_tests=False,
        tiers=tiers,
        fit_sample_size=FIT_SAMPLE_SIZE,
    )
    duck = work / "duck" / "warehouse.duckdb"
    duck.parent.mkdir()
    shutil.copy(work / "spark" / "stage" / "landing.duckdb", duck)
    run_id = "duckdb-reference"
    dbt_vars = {"orchestrator_run_id": run_id}
    layers = ["--select", *engine.WAREHOUSE_LAYERS, "--exclude", *engine.TIER_LAYERS]
    no_unit_tests = ["--exclude-resource-type", "unit_test"]
    done = dbt(duck, "build", *layers, "--indirect-selection", "cautious", *no_unit_tests)
    assert done.returncode == 0, done.stdout[-3000:]
    if not tiers:
        return spark, duck
    with duckdb.connect(str(duck)) as con:  # DuckDB's own marts, graded alike
        engine.grade_every_month(con, run_id, fit_sample_size=FIT_SAMPLE_SIZE)
    done = dbt(duck, "build", "--select", *engine.TIER_LAYERS, *no_unit_tests, dbt_vars=dbt_vars)
    assert done.returncode == 0, done.stdout[-3000:]
    return spark, duck


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return build_both(REPO_ROOT / "seeds" / "sample", tmp_path_factory.mktemp("spark_sample"))


@pytest.mark.parametrize("table", TABLES)
def test_the_sample_builds_alike_on_both_engines(sample, table):
    spark, duck = sample
    rows = compare(duck, spark, table, TABLES[table])
    if table.startswith(("marts.", "tiers.")):
        assert rows > 0


def test_spark_draws_the_fit_sample_duckdb_draws(sample):
    spark, duck = sample
    with duckdb.connect(str(duck), read_only=True) as con:
        (as_of,) = con.execute("select max(as_of_date) from marts.customer_indicators").fetchone()
        in_duckdb = draw_fit_sample(con, as_of, FIT_SAMPLE_SIZE)
        (customers,) = con.execute(
            "select count(*) from marts.customer_indicators where as_of_date = ?", [as_of]
        ).fetchone()
    in_spark = engine.draw_fit_sample_in_spark(spark, as_of, FIT_SAMPLE_SIZE)
    # the month-end was graded on this sample, on both engines
    assert customers > FIT_SAMPLE_SIZE
    assert abs(len(in_spark) - FIT_SAMPLE_SIZE) <= FIT_SAMPLE_ASSET_GROUPS
    assert in_spark == in_duckdb
    spark_grading = duck.parents[1] / "spark" / "stage" / "grading.duckdb"
    started_on = []
    for warehouse in (duck, spark_grading):
        with duckdb.connect(str(warehouse), read_only=True) as con:
            started_on.append(
                dict(
                    con.execute(
                        "select metric, value from tiers.model_quality where as_of_date = ? "
                        "and metric in ('n_kmeans_sample', 'n_clustered')",
                        [as_of],
                    ).fetchall()
                )
            )
    assert started_on[0] == started_on[1]
    assert started_on[0]["n_kmeans_sample"] < started_on[0]["n_clustered"]


# After the sample's tests (file order): a build replaces Spark's databases in the
# process's one session.
def test_a_dirty_book_is_quarantined_alike(tmp_path_factory):
    work = tmp_path_factory.mktemp("spark_dirty")
    raw = make_landing(work / "raw", customers=300, months=13, seed=23, parts=2, dirty=True)
    spark, duck = build_both(raw, work, tiers=False)
    quarantined = compare(duck, spark, "audit.quarantine", TABLES["audit.quarantine"])
    rules = {
        rule
        for (rules,) in duckdb.connect(str(duck), read_only=True)
        .execute("select distinct rules from audit.quarantine")
        .fetchall()
        for rule in rules.split(",")
    }
    # the planted rows break every rule, the Spark-only duplicate judgement among them
    assert {"duplicate_key", "orphan_account", "invalid_date", "malformed_line"} <= rules
    assert quarantined > 0
    for table in ("audit.load_reconciliation", "marts.customer_indicators", "marts.fct_trades"):
        compare(duck, spark, table, TABLES[table])


def test_a_half_copied_file_stops_the_spark_build_naming_it(tmp_path, monkeypatch, capsys):
    raw = make_landing(tmp_path / "raw", customers=50, months=3, seed=5)
    trades = raw / "trades.csv"
    data = trades.read_bytes()
    trades.write_bytes(data[: data.rindex(b",", 0, len(data) // 2)])  # cut mid-line
    monkeypatch.setenv("TIERS_RAW_DIR", str(raw))
    assert engine.main(["--dir", str(tmp_path / "spark")]) == 2  # the input is unusable
    error = capsys.readouterr().err
    assert "trades.csv ends in a cut line" in error
    assert not (tmp_path / "spark" / "warehouse").exists()  # nothing was built


def test_the_cli_hands_the_fit_sample_size_to_the_build(tmp_path, monkeypatch, capsys):
    passed = []

    def stop(*args, **kwargs):
        passed.append(kwargs["fit_sample_size"])
        raise ConfigError("stopped before building")

    monkeypatch.setattr(engine, "build", stop)
    for option in ([], ["--fit-sample-size", "5000"], ["--fit-sample-size", "0"]):
        assert engine.main(["--dir", str(tmp_path), *option]) == 2
    assert passed == [engine.FIT_SAMPLE_SIZE, 5000, None]
    assert "stopped before building" in capsys.readouterr().err
