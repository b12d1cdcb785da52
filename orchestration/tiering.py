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
import numpy as np
import pandas as pd

from ml import (
    ALL_INDICATORS,
    INDICATOR_COLUMNS,
    MODEL_TABLES,
    NamingRules,
    TieringModel,
    apply_hysteresis,
)
from orchestration import tier_tables
from orchestration.config import ConfigError

#: TieringModel's defaults, for the settings that keep the library's.
MODEL_DEFAULTS = TieringModel().get_params()
#: Consecutive months in a new model tier before a customer's published tier moves.
DEFAULT_HYSTERESIS_PATIENCE = 2
#: A customer absent from the latest month-ends keeps their published tier's state
#: for this many months back.
HYSTERESIS_MAX_GAP_MONTHS = 3

#: Customers the k diagnostics are computed on (a fixed sample beyond this), and
#: how many of them the silhouettes are computed on: the silhouette compares every
#: pair, and on 10,000 customers nine of them took 7 of the 8 s of the diagnostics.
K_DIAGNOSTICS_SAMPLE = 20_000
K_DIAGNOSTICS_SILHOUETTE_SAMPLE = 5_000
K_DIAGNOSTICS_RANGE = range(2, 11)


@dataclass(frozen=True)
class GradingSettings:
    """What a grading run may change; defaults are the library's."""

    n_clusters: int = 6
    n_factors: int | None = None  # None: factor_selection chooses
    factor_selection: str = MODEL_DEFAULTS["factor_selection"]  # "parallel" or "kaiser"
    extraction: str = MODEL_DEFAULTS["extraction"]  # "principal_components" or "principal_axis"
    min_salient_loadings: int = MODEL_DEFAULTS["min_salient_loadings"]
    random_state: int = 0
    indicator_columns: tuple[str, ...] = INDICATOR_COLUMNS
    dormant_min_recency_days: float | None = 365.0
    dormant_min_tenure_months: float = 12.0
    #: NamingRules thresholds to change, e.g. (("vip_min_value", 1.2),)
    naming: tuple[tuple[str, float], ...] = ()
    #: months in a new model tier before the published tier moves; 1 = no hysteresis
    hysteresis_patience: int = DEFAULT_HYSTERESIS_PATIENCE

    def __post_init__(self) -> None:
        patience = self.hysteresis_patience
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(
                f"hysteresis_patience must be a whole number of months >= 1 (1 = off), "
                f"not {patience!r}"
            )

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
            factor_selection=self.factor_selection,
            extraction=self.extraction,
            min_salient_loadings=self.min_salient_loadings,
            n_clusters=self.n_clusters,
            random_state=self.random_state,
            dormant_min_recency_days=self.dormant_min_recency_days,
            dormant_min_tenure_months=self.dormant_min_tenure_months,
            naming=self.naming_rules(),
        )


@dataclass(frozen=True)
class GateSettings:
    """The gates a grading must pass before it is published, and the operator's say.

    ``max_vip_share`` None: the naming's ``vip_max_share`` (``NamingRules``).
    ``accept``: publish even when gates fail (they are then recorded in
    ``model_runs`` as accepted by the operator).
    """

    min_kmo: float = 0.6
    min_segment_share: float = 0.01
    max_vip_share: float | None = None
    max_changed_share: float = 0.25
    accept: bool = False


@dataclass(frozen=True)
class GateResult:
    """One gate of a grading: ``value`` against ``threshold``."""

    name: str
    passed: bool
    value: float
    threshold: float
    rule: str  # what must hold, e.g. "kmo >= min_kmo"
    metadata: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """E.g. ``kmo_adequate: 0.52, must be kmo >= min_kmo = 0.6``."""
        return f"{self.name}: {self.value:.4g}, must be {self.rule} = {self.threshold:.4g}"


def evaluate_gates(
    model: TieringModel,
    current: pd.DataFrame,
    migrations: pd.DataFrame,
    gates: GateSettings,
    naming: NamingRules,
    previous_model_tiers: pd.DataFrame | None = None,
) -> list[GateResult]:
    """The gates of one grading, in a fixed order (every gate, passed or not).

    - ``kmo_adequate``: the model's KMO (``quality_["kmo"]``) at least ``min_kmo``;
    - ``smallest_segment_share``: every K-means segment holds at least
      ``min_segment_share`` of the graded customers (the dormant rule's segment
      is not a K-means segment);
    - ``vip_share``: the published ``vip`` tier holds at most ``max_vip_share``
      of the graded customers (default: ``naming.vip_max_share``);
    - ``changed_tier_share``: of the customers graded this month and the month
      before, at most ``max_changed_share`` have a different published tier
      (0 when there is no month before). Its metadata also gives
      ``model_changed_share``, the same share for the model's raw tiers
      (``previous_model_tiers``: customer_id, model_tier of the month before),
      which hysteresis holds back: a reshuffle shows there the month it happens.

    A value that cannot be computed (a NaN KMO) fails its gate.
    """
    kmo = float(model.quality_.get("kmo", float("nan")))
    segments = model.segments_
    kmeans = segments.loc[segments["source"] == "kmeans", "share"]
    smallest = float(kmeans.min()) if len(kmeans) else float("nan")
    vip_share = float((current["tier"] == "vip").mean()) if len(current) else 0.0
    max_vip = naming.vip_max_share if gates.max_vip_share is None else gates.max_vip_share
    stayed = migrations[migrations["movement"].isin(["same", "up", "down"])]
    compared = int(stayed["customers"].sum())
    moved = int(stayed.loc[stayed["from_tier"] != stayed["to_tier"], "customers"].sum())
    changed = moved / compared if compared else 0.0
    model_changed = float("nan")
    if previous_model_tiers is not None and len(previous_model_tiers):
        both = current[["customer_id", "model_tier"]].merge(
            previous_model_tiers, on="customer_id", suffixes=("", "_before")
        )
        if len(both):
            model_changed = float((both["model_tier"] != both["model_tier_before"]).mean())
    return [
        GateResult(
            "kmo_adequate", bool(kmo >= gates.min_kmo), kmo, gates.min_kmo, "kmo >= min_kmo"
        ),
        GateResult(
            "smallest_segment_share",
            bool(smallest >= gates.min_segment_share),
            smallest,
            gates.min_segment_share,
            "smallest K-means segment share >= min_segment_share",
            {"kmeans_segments": float(len(kmeans))},
        ),
        GateResult(
            "vip_share",
            bool(vip_share <= max_vip),
            vip_share,
            float(max_vip),
            "published vip share <= max_vip_share",
            {"vip_customers": float((current["tier"] == "vip").sum())},
        ),
        GateResult(
            "changed_tier_share",
            bool(changed <= gates.max_changed_share),
            float(changed),
            gates.max_changed_share,
            "share of customers whose published tier changed <= max_changed_share",
            {
                "customers_compared": float(compared),
                "customers_changed": float(moved),
                # omitted in the first graded month
                **({} if np.isnan(model_changed) else {"model_changed_share": model_changed}),
            },
        ),
    ]


@dataclass
class Grading:
    """The outcome of :func:`grade`: the grading id, its month, the model, its inputs,
    the tables written and the gates."""

    grading_id: str
    as_of: dt.date
    model: TieringModel
    indicators: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    accepted_by_operator: bool = False

    @property
    def failed_gates(self) -> list[GateResult]:
        return [gate for gate in self.gates if not gate.passed]


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
        "hysteresis_tier": "VARCHAR",
        "pending_tier": "VARCHAR",
        "pending_months": "BIGINT",
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
        "factor_count_rule": "VARCHAR",
        "extraction": "VARCHAR",
        "gates_failed": "VARCHAR",
        "accepted_by_operator": "BOOLEAN",
    },
    "model_k_diagnostics": {
        "as_of_date": "DATE",
        "run_id": "VARCHAR",
        "k": "BIGINT",
        "kmeans_k": "BIGINT",
        "inertia": "DOUBLE",
        "silhouette": "DOUBLE",
        "calinski_harabasz": "DOUBLE",
        "davies_bouldin": "DOUBLE",
        "stability": "DOUBLE",
    },
}

#: Rules on the rows: each query returns the offending rows' count.
RULES: dict[str, str] = {
    "customer_id unique and not null": """
        select count(*) - count(distinct customer_id) + count(*) filter (where customer_id is null)
        from tiers.customer_tiers""",
    "tier, model_tier, hysteresis_tier and pending_tier are tier codes": """
        select count(*) from tiers.customer_tiers
        where not list_has_all(
            ['vip', 'potential', 'ordinary_a', 'ordinary_b', 'free', 'sleeping'],
            [tier, model_tier, hysteresis_tier, coalesce(pending_tier, 'vip')])""",
    "pending tier differs from the published one": """
        select count(*) from tiers.customer_tiers
        where pending_tier = hysteresis_tier
           or (pending_tier is null) <> (pending_months = 0)""",
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


def previous_published(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> dt.date | None:
    """The latest month before ``as_of`` in ``tiers.customer_tier_history``, or None."""
    if not _table_exists(con, "tiers", "customer_tier_history"):
        return None
    (prior,) = con.execute(
        "select max(as_of_date) from tiers.customer_tier_history where as_of_date < ?", [as_of]
    ).fetchall()[0]
    return prior


def hysteresis_state(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pd.DataFrame | None:
    """Each customer's published tier before overrides and pending state, for hysteresis.

    The customer's latest row of ``tiers.customer_tier_history`` before ``as_of``
    and at most :data:`HYSTERESIS_MAX_GAP_MONTHS` months before it, so a customer
    missing from one month-end (a late file, a closed-and-reopened account) keeps
    their tier's protection. A history written before hysteresis existed has no
    ``hysteresis_tier``: its ``model_tier`` was then the published tier before
    overrides.
    """
    if not _table_exists(con, "tiers", "customer_tier_history"):
        return None
    columns = {
        r[0]
        for r in con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'tiers' and table_name = 'customer_tier_history'"
        ).fetchall()
    }
    tier = "coalesce(hysteresis_tier, model_tier)" if "hysteresis_tier" in columns else "model_tier"
    pending = (
        "pending_tier, coalesce(pending_months, 0) as pending_months"
        if {"pending_tier", "pending_months"} <= columns
        else "null::varchar as pending_tier, 0 as pending_months"
    )
    state = con.execute(
        f"select customer_id, {tier} as tier, {pending} from tiers.customer_tier_history "
        "where as_of_date < ? "
        f"and as_of_date >= ?::date - interval {HYSTERESIS_MAX_GAP_MONTHS} month "
        "qualify row_number() over (partition by customer_id order by as_of_date desc) = 1 "
        "order by customer_id",
        [as_of, as_of],
    ).df()
    return state if len(state) else None


def k_diagnostics(model: TieringModel, indicators: pd.DataFrame) -> pd.DataFrame:
    """``model.diagnose_k`` for k = 2..10 on a seeded sample of at most
    :data:`K_DIAGNOSTICS_SAMPLE` customers (in customer_id order), the silhouettes
    on :data:`K_DIAGNOSTICS_SILHOUETTE_SAMPLE` of them."""
    sample = indicators
    if len(sample) > K_DIAGNOSTICS_SAMPLE:
        sample = sample.sample(n=K_DIAGNOSTICS_SAMPLE, random_state=0)
    return model.diagnose_k(
        sample.sort_values("customer_id"), K_DIAGNOSTICS_RANGE, K_DIAGNOSTICS_SILHOUETTE_SAMPLE
    )


def grade(
    con: duckdb.DuckDBPyConnection,
    as_of: dt.date | None,
    settings: GradingSettings,
    *,
    gates: GateSettings | None = None,
    plans_path: Path = tier_tables.SERVICE_PLANS_PATH,
    overrides_path: Path | None = None,
    orchestrator_run_id: str = "",
) -> Grading:
    """Grade the customers of ``as_of`` (default: the latest month-end) into ``tiers``.

    The published tier is the model's after hysteresis (state read from the
    latest earlier month of the history), overrides winning. The gates are
    evaluated and recorded in ``model_runs``; they do not stop this function:
    the caller decides, from :attr:`Grading.failed_gates` and
    :attr:`Grading.accepted_by_operator`, whether the build may be published.
    """
    gates = gates or GateSettings()
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
    prior = previous_published(con, as_of)
    state = hysteresis_state(con, as_of)
    run_id = grading_id(
        indicators,
        settings,
        plans_path.read_bytes(),
        overrides_path.read_bytes() if overrides_path else b"",
        previous.to_tables()["model_params"].to_json().encode() if previous else b"",
        state.to_json().encode() if state is not None else b"",
    )
    model = settings.model().fit(indicators, previous=previous)
    assigned = model.assign(indicators)
    published = apply_hysteresis(
        assigned[["customer_id", "tier"]], state, settings.hysteresis_patience
    )

    overrides = tier_tables.load_overrides(overrides_path, as_of, assigned["customer_id"])
    current = tier_tables.customer_tiers(
        assigned, overrides.valid, as_of, run_id, plans=plans, hysteresis=published
    )
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
        "model_k_diagnostics": tier_tables.k_diagnostics_table(
            k_diagnostics(model, indicators), run_id, as_of
        ),
    }
    previous_model_tiers = (
        con.execute(
            "select customer_id, model_tier from tiers.customer_tier_history where as_of_date = ?",
            [prior],
        ).df()
        if prior
        else None
    )
    results = evaluate_gates(
        model,
        current,
        tables["tier_migrations"],
        gates,
        settings.naming_rules(),
        previous_model_tiers,
    )
    failed = [gate.name for gate in results if not gate.passed]
    accepted = bool(failed) and gates.accept

    _run(con, "create schema if not exists tiers")
    for name in (
        "customer_tier_history",
        "tier_profiles",
        "tier_migrations",
        "override_audit",
        "model_k_diagnostics",
    ):
        replace_month(con, name, tables[name], as_of)
    for name, frame in tier_tables.model_tables(model, run_id, as_of).items():
        replace_month(con, name, frame, as_of)
        tables[name] = frame
    params = {
        **asdict(settings),
        "gates": asdict(gates),
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
        gates_failed=failed,
        accepted_by_operator=accepted,
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
    return Grading(run_id, as_of, model, indicators, tables, results, accepted)
