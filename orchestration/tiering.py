"""Grade one month: read ``marts.customer_indicators``, fit ``ml/``, write the ``tiers`` schema.

Plain functions over an open DuckDB connection (the run's build file); the
Dagster assets in :mod:`orchestration.assets` call :func:`grade`.

Re-running a month gives identical tables: the model is warm-started from the
stored model of the latest *earlier* month (never from this month's own earlier
run), the grading id is a digest of the inputs and settings, and every
month-keyed table replaces that month's rows instead of appending.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import duckdb
import pandas as pd

from ml import ALL_INDICATORS, INDICATOR_COLUMNS, MODEL_TABLES, NamingRules, TieringModel
from orchestration import tier_tables
from orchestration.config import ConfigError


@dataclass(frozen=True)
class GradingSettings:
    """What a grading run may change; defaults are the library's."""

    n_clusters: int = 6
    n_factors: int | None = None  # None: eigenvalue > 1
    random_state: int = 0
    indicator_columns: tuple[str, ...] = INDICATOR_COLUMNS
    dormant_min_recency_days: float | None = 365.0
    dormant_min_tenure_months: float = 12.0
    #: NamingRules thresholds to change, e.g. (("vip_min_value", 1.2),)
    naming: tuple[tuple[str, float], ...] = ()

    def naming_rules(self) -> NamingRules:
        known = {f.name for f in fields(NamingRules)}
        unknown = sorted(name for name, _ in self.naming if name not in known)
        if unknown:
            raise ConfigError(f"unknown naming rule thresholds {unknown}; known: {sorted(known)}")
        return NamingRules(**dict(self.naming))

    def model(self) -> TieringModel:
        return TieringModel(
            columns=self.indicator_columns,
            n_factors=self.n_factors,
            n_clusters=self.n_clusters,
            random_state=self.random_state,
            dormant_min_recency_days=self.dormant_min_recency_days,
            dormant_min_tenure_months=self.dormant_min_tenure_months,
            naming=self.naming_rules(),
        )


@dataclass
class Grading:
    """The outcome of :func:`grade`: the grading id, its month, the model, its inputs
    and the tables written."""

    grading_id: str
    as_of: dt.date
    model: TieringModel
    indicators: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


#: The columns BI and SQL users rely on, by table, with their DuckDB types. Columns
#: may be added (factor scores, drivers), never removed or retyped.
CONTRACT: dict[str, dict[str, str]] = {
    "customer_tiers": {
        "customer_id": "VARCHAR",
        "as_of_date": "DATE",
        "tier": "VARCHAR",
        "tier_rank": "BIGINT",
        "tier_name": "VARCHAR",
        "model_tier": "VARCHAR",
        "segment": "BIGINT",
        "is_override": "BOOLEAN",
        "reason": "VARCHAR",
        "factor_1": "DOUBLE",
        "run_id": "VARCHAR",
    },
    "tier_profiles": {
        "as_of_date": "DATE",
        "tier": "VARCHAR",
        "customers": "BIGINT",
        "share": "DOUBLE",
        "revenue": "DOUBLE",
    },
    "tier_migrations": {
        "as_of_date": "DATE",
        "from_tier": "VARCHAR",
        "to_tier": "VARCHAR",
        "customers": "BIGINT",
    },
    "service_plans": {
        "tier": "VARCHAR",
        "manager_level": "VARCHAR",
        "contact_frequency": "VARCHAR",
        "service_time_share": "DOUBLE",
    },
    "model_runs": {
        "run_id": "VARCHAR",
        "as_of_date": "DATE",
        "kmo": "DOUBLE",
        "bartlett_p_value": "DOUBLE",
        "variance_explained": "DOUBLE",
        "n_factors": "BIGINT",
        "k": "BIGINT",
        "silhouette": "DOUBLE",
    },
}

#: Rules on the rows: each query returns the offending rows' count.
RULES: dict[str, str] = {
    "customer_id unique and not null": """
        select count(*) - count(distinct customer_id) + count(*) filter (where customer_id is null)
        from tiers.customer_tiers""",
    "tier and model_tier are tier codes": """
        select count(*) from tiers.customer_tiers
        where tier not in ('vip', 'potential', 'ordinary_a', 'ordinary_b', 'free', 'sleeping')
           or model_tier not in ('vip', 'potential', 'ordinary_a', 'ordinary_b', 'free',
                                 'sleeping')""",
    "tier_rank matches tier": """
        select count(*) from tiers.customer_tiers
        where tier_rank <> list_position(
            ['vip', 'potential', 'ordinary_a', 'ordinary_b', 'free', 'sleeping'], tier)""",
    "one as_of_date in customer_tiers": """
        select greatest(count(distinct as_of_date) - 1, 0) from tiers.customer_tiers""",
    "history has one row per customer and month": """
        select count(*) - count(distinct (customer_id, as_of_date))
        from tiers.customer_tier_history""",
    "profiles count every graded customer": """
        select count(*) from (
            select as_of_date, sum(customers) as n from tiers.tier_profiles group by all
        ) as p
        join (
            select as_of_date, count(*) as n from tiers.customer_tier_history group by all
        ) as h using (as_of_date)
        where p.n <> h.n""",
}


def contract_violations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """What in the ``tiers`` schema breaks :data:`CONTRACT` or :data:`RULES`; empty when fine."""
    problems = []
    columns = {
        (table, column): dtype
        for table, column, dtype in con.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_schema = 'tiers'"
        ).fetchall()
    }
    for table, expected in CONTRACT.items():
        for column, dtype in expected.items():
            actual = columns.get((table, column))
            if actual != dtype:
                problems.append(f"tiers.{table}.{column}: expected {dtype}, found {actual}")
    for rule, sql in RULES.items():
        (bad,) = con.execute(sql).fetchall()[0]
        if bad:
            problems.append(f"{rule}: {bad} rows break it")
    return problems


def graded_months(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    rows = con.execute(
        "select distinct as_of_date from marts.customer_indicators order by 1"
    ).fetchall()
    return [r[0] for r in rows]


def resolve_as_of(con: duckdb.DuckDBPyConnection, as_of: dt.date | None) -> dt.date:
    """``as_of`` if the marts hold it, else the latest month-end they hold (the default)."""
    months = graded_months(con)
    if not months:
        raise ConfigError(
            "marts.customer_indicators holds no month-end: the data covers no complete month"
        )
    if as_of is None:
        return months[-1]
    if as_of not in months:
        raise ConfigError(
            f"TIERS_AS_OF={as_of} is not a month-end the data covers ({months[0]} to {months[-1]})"
        )
    return as_of


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
    )


def previous_model(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> TieringModel | None:
    """The stored model of the latest month before ``as_of``, or None."""
    if not _table_exists(con, "tiers", "model_params"):
        return None
    (month,) = con.execute(
        "select max(as_of_date) from tiers.model_params where as_of_date < ?", [as_of]
    ).fetchall()[0]
    if month is None:
        return None
    tables = {
        name: con.execute(
            f"select * exclude (run_id, as_of_date) from tiers.{name} where as_of_date = ?",
            [month],
        ).df()
        for name in MODEL_TABLES
    }
    return TieringModel.from_tables(tables)


def grading_id(indicators: pd.DataFrame, settings: GradingSettings, *inputs: bytes) -> str:
    """A digest of what determines the grading: same inputs and settings, same id."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(indicators, index=False).to_numpy().tobytes())
    digest.update(json.dumps(asdict(settings), sort_keys=True, default=str).encode())
    for data in inputs:
        digest.update(data)
    return digest.hexdigest()[:16]


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> None:
    """Execute a statement to completion (DuckDB 2 refuses new work while a result is open)."""
    con.execute(sql, params or []).fetchall()


def replace_month(
    con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame, as_of: dt.date
) -> None:
    """Make ``tiers.<table>``'s rows for ``as_of`` exactly ``rows`` (adding new columns)."""
    con.register("_rows", rows)
    try:
        if not _table_exists(con, "tiers", table):
            _run(con, f"create table tiers.{table} as select * from _rows")
            return
        existing = {
            r[0]
            for r in con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'tiers' and table_name = ?",
                [table],
            ).fetchall()
        }
        described = con.execute("describe select * from _rows").fetchall()
        for name, dtype, *_ in described:
            if name not in existing:
                _run(con, f'alter table tiers.{table} add column "{name}" {dtype}')
        _run(con, f"delete from tiers.{table} where as_of_date = ?", [as_of])
        _run(con, f"insert into tiers.{table} by name select * from _rows")
    finally:
        con.unregister("_rows")


def replace_table(con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame) -> None:
    con.register("_rows", rows)
    try:
        _run(con, f"create or replace table tiers.{table} as select * from _rows")
    finally:
        con.unregister("_rows")


def grade(
    con: duckdb.DuckDBPyConnection,
    as_of: dt.date | None,
    settings: GradingSettings,
    *,
    plans_path: Path = tier_tables.SERVICE_PLANS_PATH,
    overrides_path: Path | None = None,
    orchestrator_run_id: str = "",
) -> Grading:
    """Grade the customers of ``as_of`` (default: the latest month-end) into ``tiers``."""
    started = dt.datetime.now(dt.UTC)
    as_of = resolve_as_of(con, as_of)
    plans = tier_tables.load_service_plans(plans_path)
    columns = ", ".join(ALL_INDICATORS)
    indicators = con.execute(
        f"select customer_id, {columns} from marts.customer_indicators "
        "where as_of_date = ? order by customer_id",
        [as_of],
    ).df()
    (window_months,) = con.execute(
        "select max(window_months) from marts.customer_indicators where as_of_date = ?", [as_of]
    ).fetchall()[0]

    previous = previous_model(con, as_of)
    run_id = grading_id(
        indicators,
        settings,
        plans_path.read_bytes(),
        overrides_path.read_bytes() if overrides_path else b"",
        previous.to_tables()["model_params"].to_json().encode() if previous else b"",
    )
    model = settings.model().fit(indicators, previous=previous)
    assigned = model.assign(indicators)

    overrides = tier_tables.load_overrides(overrides_path, as_of, assigned["customer_id"])
    current = tier_tables.customer_tiers(assigned, overrides.valid, as_of, run_id, plans=plans)

    _run(con, "create schema if not exists tiers")
    replace_month(con, "customer_tier_history", current, as_of)
    (prior,) = con.execute(
        "select max(as_of_date) from tiers.customer_tier_history where as_of_date < ?", [as_of]
    ).fetchall()[0]
    previous_tiers = (
        con.execute(
            "select customer_id, tier from tiers.customer_tier_history where as_of_date = ?",
            [prior],
        ).df()
        if prior
        else None
    )
    tables = {
        "customer_tier_history": current,
        "tier_profiles": tier_tables.tier_profiles(current, indicators, as_of),
        "tier_migrations": tier_tables.tier_migrations(previous_tiers, current, prior, as_of),
        "override_audit": tier_tables.override_audit(current, overrides.rejected, as_of, run_id),
    }
    for name in ("tier_profiles", "tier_migrations", "override_audit"):
        replace_month(con, name, tables[name], as_of)
    for name, frame in tier_tables.model_tables(model, run_id, as_of).items():
        replace_month(con, name, frame, as_of)
        tables[name] = frame
    params = {
        **asdict(settings),
        "orchestrator_run_id": orchestrator_run_id,
        "service_plans": str(plans_path),
        "overrides": str(overrides_path or ""),
    }
    run_row = tier_tables.model_run_row(
        model,
        run_id,
        as_of,
        int(window_months),
        len(indicators),
        params,
        started,
        dt.datetime.now(dt.UTC),
    )
    replace_month(con, "model_runs", run_row, as_of)
    tables["model_runs"] = run_row
    replace_table(con, "service_plans", plans)
    tables["service_plans"] = plans
    # the latest grading: the newest month in the history, whichever month this run graded
    _run(
        con,
        "create or replace table tiers.customer_tiers as "
        "select * from tiers.customer_tier_history "
        "where as_of_date = (select max(as_of_date) from tiers.customer_tier_history)",
    )
    tables["customer_tiers"] = current
    return Grading(run_id, as_of, model, indicators, tables)
