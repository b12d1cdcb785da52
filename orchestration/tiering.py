"""What needs Python in the grading: fit the model, write its tables and Python's assignments.

Plain functions over an open DuckDB connection (the run's build file); the
Dagster assets in :mod:`orchestration.assets` call them. Everything else of the
``tiers`` schema (the SQL scorer, the history with hysteresis and overrides,
profiles, migrations) is built by dbt from what is written here
(``dbt_project/models/tiers/``), and :func:`evaluate_gates` judges the result.

Tables written, each keyed by the month-end fitted (``as_of_date``) and the fit
(``run_id``), a re-run replacing that month's rows:

- ``tiers.model_*``: :meth:`ml.TieringModel.to_tables`;
- ``tiers.model_runs``: one row per fit, its quality, settings and gates;
- ``tiers.model_k_diagnostics``: k = 2..10 on a sample, for the latest month-end
  a run grades (a person judges k on the month they read; a backfill of 24
  month-ends would pay for them 24 times);
- ``tiers.customer_assignments``: :meth:`ml.TieringModel.assign` of every
  customer of the month (segment, model tier, factor scores, drivers).

Re-fitting a month gives identical tables: the model is warm-started from the
stored model of the latest *earlier* month (never from this month's own earlier
fit) and the run id is a digest of the inputs and settings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from ml import ALL_INDICATORS, MODEL_TABLES, TIERS, NamingRules, TieringModel
from orchestration.config import ConfigError

#: A fitted model's parameters, as ``TieringModel`` defaults them.
MODEL_DEFAULTS = TieringModel().get_params()

#: Customers the k diagnostics are computed on (a fixed sample beyond this), and
#: how many of them the silhouettes are computed on: the silhouette compares every
#: pair, and on 10,000 customers nine of them took 7 of the 8 s of the diagnostics.
K_DIAGNOSTICS_SAMPLE = 20_000
K_DIAGNOSTICS_SILHOUETTE_SAMPLE = 5_000
K_DIAGNOSTICS_RANGE = range(2, 11)

#: ``model_runs`` quality columns, read from ``TieringModel.quality_``.
RUN_QUALITY_METRICS = (
    "kmo",
    "bartlett_statistic",
    "bartlett_p_value",
    "variance_explained",
    "silhouette",
    "calinski_harabasz",
    "davies_bouldin",
    "inertia",
    "n_clustered",
    "n_dormant_rule",
    "discriminant_agreement",
    "names_differing_from_rules",
)

#: Columns of ``TieringModel.assign`` that ``tiers.customer_assignments`` keeps (a
#: whitelist, so a personal-data column in the input never reaches the tier tables):
#: these, then ``factor_1`` .. ``factor_m``.
ASSIGNMENT_COLUMNS = (
    "segment",
    "model_tier",
    "tier_rank",
    "driver_1",
    "driver_1_z",
    "driver_2",
    "driver_2_z",
    "driver_3",
    "driver_3_z",
    "nearest_other_tier",
    "distance_to_other_tier",
    "reason",
)


# ------------------------------------------------------------------ the months


def graded_months(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """The month-ends ``marts.customer_indicators`` holds, in order."""
    rows = con.execute(
        "select distinct as_of_date from marts.customer_indicators order by 1"
    ).fetchall()
    return [r[0] for r in rows]


def history_months(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """The month-ends ``tiers.customer_tier_history`` holds, in order (none before a grading)."""
    if not table_exists(con, "tiers", "customer_tier_history"):
        return []
    rows = con.execute(
        "select distinct as_of_date from tiers.customer_tier_history order by 1"
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


#: ``grade_from`` meaning the first month-end the marts hold (``run --backfill``).
FIRST_MONTH = "first"


def grading_range(
    con: duckdb.DuckDBPyConnection,
    as_of: dt.date | None = None,
    grade_from: dt.date | str | None = None,
) -> list[dt.date]:
    """The month-ends a run grades, in order, so that the history always equals what
    grading every month-end one by one, in order, gives.

    - It ends at ``as_of`` (default: the latest month-end the marts hold), or at the
      latest month-end already graded when that is later: re-grading a month
      re-grades every month after it.
    - It starts at the first month-end up to ``as_of`` not graded yet (a new
      warehouse: the first month-end of all) or at the first graded month-end the
      latest load changed (:func:`changed_months`), whichever is earlier, and at
      ``as_of`` at the latest (nothing new: the latest month-end is graded again). ``grade_from``
      (a month-end the marts hold, or :data:`FIRST_MONTH`) starts it there, or
      earlier where those say so.
    """
    months = graded_months(con)
    upper = resolve_as_of(con, as_of)
    graded = set(history_months(con)) & set(months)
    end = max([upper, *graded])
    # the first month-end not graded yet, and the graded ones this load changed
    # (late or corrected data): a run always re-grades from the earliest of them
    pending = [m for m in months if m <= upper and m not in graded]
    pending += [m for m in changed_months(con) if m in graded]
    if grade_from == FIRST_MONTH:
        start = months[0]
    elif grade_from is not None:
        if grade_from not in months:
            raise ConfigError(
                f"TIERS_GRADE_FROM={grade_from} is not a month-end the data covers "
                f"({months[0]} to {months[-1]})"
            )
        if grade_from > end:
            raise ConfigError(
                f"TIERS_GRADE_FROM={grade_from} is after the latest month-end to grade, {end}"
            )
        start = min([grade_from, *pending])
    else:
        start = min([*pending, upper])
    return [m for m in months if start <= m <= end]


def changed_months(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """The month-ends whose rows the latest load changed (``audit.load_months``;
    marts.customer_indicators rebuilt them), in order."""
    if not (table_exists(con, "audit", "load_months") and table_exists(con, "raw", "latest_load")):
        return []
    rows = con.execute(
        """select distinct months.as_of_date from audit.load_months as months
           inner join raw.latest_load as load on months.load_id = load.load_id
           where months.is_changed order by 1"""
    ).fetchall()
    return [r[0] for r in rows]


def record_grading(
    con: duckdb.DuckDBPyConnection, orchestrator_run_id: str, months: list[dt.date]
) -> None:
    """Write the month-ends an orchestrator run grades to ``tiers.grading_runs`` (one row
    each), so every step of the run grades the same ones and the summary can name them."""
    rows = pd.DataFrame(
        {
            "orchestrator_run_id": pd.Series([orchestrator_run_id] * len(months), dtype="str"),
            "as_of_date": pd.Series(months, dtype="date32[pyarrow]"),
            "recorded_at": pd.Timestamp(dt.datetime.now(dt.UTC)),
        }
    )
    con.execute("create schema if not exists tiers").fetchall()
    con.register("_rows", rows)
    try:
        if not table_exists(con, "tiers", "grading_runs"):
            _run(con, "create table tiers.grading_runs as select * from _rows")
        else:
            _run(
                con,
                "delete from tiers.grading_runs where orchestrator_run_id = ?",
                [orchestrator_run_id],
            )
            _run(con, "insert into tiers.grading_runs by name select * from _rows")
    finally:
        con.unregister("_rows")


def recorded_grading(con: duckdb.DuckDBPyConnection, orchestrator_run_id: str) -> list[dt.date]:
    """The month-ends :func:`record_grading` wrote for the run, in order (none if it did not)."""
    if not table_exists(con, "tiers", "grading_runs"):
        return []
    rows = con.execute(
        "select as_of_date from tiers.grading_runs where orchestrator_run_id = ? order by 1",
        [orchestrator_run_id],
    ).fetchall()
    return [r[0] for r in rows]


def read_indicators(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pd.DataFrame:
    columns = ", ".join(ALL_INDICATORS)
    return con.execute(
        f"select customer_id, {columns} from marts.customer_indicators "
        "where as_of_date = ? order by customer_id",
        [as_of],
    ).df()


# ------------------------------------------------------------------ the fit sample

#: Customers a month-end's K-means starts are drawn on when it has more than this
#: (``TieringModel.fit``'s ``sample``); a smaller month-end is fitted on all of them.
FIT_SAMPLE_SIZE = 300_000

#: Deciles of average assets a stratum spans (times traded in the window or not).
FIT_SAMPLE_ASSET_GROUPS = 10


def fit_sample_query(as_of: dt.date, size: int, *, seed: int = 0) -> str:
    """SQL for the stratified sample of ``as_of``'s customers, one ``customer_id`` per row.

    Strata: the deciles of ``avg_assets`` times whether the customer traded in the
    window. Each stratum gives its share of ``size`` (rounded), its customers taken in
    the order of ``md5(customer_id || ':' || seed)``: the same customers for the same
    book, whatever order the rows are stored in, on any engine and version (DuckDB's
    ``hash`` may change between releases; ``md5`` is the same hex text in DuckDB
    and Spark). The dormant-rule customers are drawn like the others; the fit then
    leaves them out, so K-means starts on fewer than ``size`` customers.
    """
    if size < 1:
        raise ConfigError(f"the fit sample needs at least one customer, not {size}")
    month = f"date '{as_of.isoformat()}'"
    return f"""
with month as (
    select
        customer_id,
        ntile({FIT_SAMPLE_ASSET_GROUPS}) over (
            order by coalesce(avg_assets, 0), customer_id
        ) as assets_group,
        coalesce(trade_count, 0) > 0 as traded,
        count(*) over () as customers
    from marts.customer_indicators
    where as_of_date = {month}
),

drawn as (
    select
        customer_id,
        customers,
        count(*) over (partition by assets_group, traded) as stratum_customers,
        row_number() over (
            partition by assets_group, traded
            order by md5(concat(customer_id, ':{int(seed)}')), customer_id
        ) as draw
    from month
)

select customer_id
from drawn
where draw <= round(stratum_customers * {int(size)} / customers)
order by customer_id
"""


def draw_fit_sample(con: duckdb.DuckDBPyConnection, as_of: dt.date, size: int) -> list[str]:
    """:func:`fit_sample_query` run on ``con`` (DuckDB)."""
    return [row[0] for row in con.execute(fit_sample_query(as_of, size)).fetchall()]


# ------------------------------------------------------------------ the model


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    (count,) = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()[0]
    return bool(count)


def stored_model(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, *, before: bool = False
) -> tuple[TieringModel, str, dt.date] | None:
    """The stored model of the latest month-end up to ``as_of`` (strictly before it with
    ``before``), with its run id and month; None when there is none."""
    if not table_exists(con, "tiers", "model_params"):
        return None
    comparison = "<" if before else "<="
    (month,) = con.execute(
        f"select max(as_of_date) from tiers.model_params where as_of_date {comparison} ?",
        [as_of],
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
    (run_id,) = con.execute(
        "select max(run_id) from tiers.model_params where as_of_date = ?", [month]
    ).fetchall()[0]
    return TieringModel.from_tables(tables), run_id, month


def grading_id(indicators: pd.DataFrame, params: dict[str, Any], *inputs: bytes) -> str:
    """A digest of what determines the fit: same inputs and settings, same id."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(indicators, index=False).to_numpy().tobytes())
    digest.update(json.dumps(params, sort_keys=True, default=_json_text).encode())
    for data in inputs:
        digest.update(data)
    return digest.hexdigest()[:16]


@dataclass
class Fit:
    """The outcome of :func:`fit_month`."""

    run_id: str
    as_of: dt.date
    model: TieringModel
    indicators: pd.DataFrame
    k_diagnostics: pd.DataFrame | None  # None: not diagnosed (fit_month's ``diagnose``)


def fit_month(
    con: duckdb.DuckDBPyConnection,
    as_of: dt.date,
    model: TieringModel,
    *,
    orchestrator_run_id: str = "",
    diagnose: bool = True,
    fit_sample_size: int | None = FIT_SAMPLE_SIZE,
    draw_sample: Callable[[dt.date, int], list[str]] | None = None,
) -> Fit:
    """Fit ``model`` on the customers of ``as_of`` and write ``tiers.model_*``,
    ``model_runs`` and, with ``diagnose``, ``model_k_diagnostics`` for that month
    (without it, the month's earlier diagnostics, of another fit, are removed).

    Warm-started from the stored model of the latest earlier month. When the month
    has more than ``fit_sample_size`` customers (None: never), K-means starts on the
    stratified sample of that many that ``draw_sample(as_of, size)`` draws (default:
    :func:`draw_fit_sample` on ``con``; the Spark build draws it in Spark), less its
    dormant-rule customers. The run id covers the size of a sample drawn (None
    when none was). The gates columns of ``model_runs`` start empty;
    :func:`record_gates` fills them.
    """
    started = dt.datetime.now(dt.UTC)
    indicators = read_indicators(con, as_of)
    (window_months,) = con.execute(
        "select max(window_months) from marts.customer_indicators where as_of_date = ?", [as_of]
    ).fetchall()[0]
    previous = stored_model(con, as_of, before=True)
    sample = None
    if fit_sample_size is not None and len(indicators) > fit_sample_size:
        sample = (draw_sample or partial(draw_fit_sample, con))(as_of, fit_sample_size)
    params = {
        **model.get_params(),
        "naming": model.naming.to_dict(),
        "fit_sample_size": None if sample is None else fit_sample_size,
    }
    run_id = grading_id(
        indicators,
        params,
        previous[0].to_tables()["model_params"].to_json().encode() if previous else b"",
    )
    model.fit(indicators, previous=previous[0] if previous else None, sample=sample)
    diagnostics = k_diagnostics(model, indicators) if diagnose else None

    con.execute("create schema if not exists tiers").fetchall()
    for name, table in model.to_tables().items():
        replace_month(con, name, keyed(table, run_id, as_of), as_of)
    if diagnostics is not None:
        replace_month(con, "model_k_diagnostics", keyed(diagnostics, run_id, as_of), as_of)
    elif table_exists(con, "tiers", "model_k_diagnostics"):
        _run(con, "delete from tiers.model_k_diagnostics where as_of_date = ?", [as_of])
    run = model_run_row(
        model,
        run_id,
        as_of,
        int(window_months),
        len(indicators),
        {**params, "orchestrator_run_id": orchestrator_run_id},
        started,
        dt.datetime.now(dt.UTC),
    )
    replace_month(con, "model_runs", run, as_of)
    return Fit(run_id, as_of, model, indicators, diagnostics)


def assign_month(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pd.DataFrame:
    """Python's assignment of every customer of ``as_of`` with the model fitted on that
    month, written to ``tiers.customer_assignments`` (the month's rows replaced)."""
    stored = stored_model(con, as_of)
    if stored is None or stored[2] != as_of:
        raise ConfigError(f"no model was fitted on {as_of}: run the grading with a fit first")
    model, run_id, _ = stored
    indicators = read_indicators(con, as_of)
    assigned = model.assign(indicators).rename(columns={"tier": "model_tier"})
    factors = sorted(
        (c for c in assigned.columns if c.startswith("factor_")), key=lambda c: int(c[7:])
    )
    rows = assigned.reindex(columns=["customer_id", *ASSIGNMENT_COLUMNS, *factors])
    for column in ("driver_1", "driver_2", "driver_3", "nearest_other_tier", "reason"):
        rows[column] = rows[column].astype("str")
    rows.insert(1, "as_of_date", pd.Timestamp(as_of).date())
    rows["as_of_date"] = rows["as_of_date"].astype("date32[pyarrow]")
    rows["run_id"] = run_id
    rows["run_id"] = rows["run_id"].astype("str")
    replace_month(con, "customer_assignments", rows, as_of)
    return rows


def k_diagnostics(model: TieringModel, indicators: pd.DataFrame) -> pd.DataFrame:
    """``model.diagnose_k`` for k = 2..10 on a seeded sample of at most
    :data:`K_DIAGNOSTICS_SAMPLE` customers (in customer_id order), the silhouettes
    on :data:`K_DIAGNOSTICS_SILHOUETTE_SAMPLE` of them."""
    sample = indicators
    if len(sample) > K_DIAGNOSTICS_SAMPLE:
        sample = sample.sample(n=K_DIAGNOSTICS_SAMPLE, random_state=0)
    table = model.diagnose_k(
        sample.sort_values("customer_id"), K_DIAGNOSTICS_RANGE, K_DIAGNOSTICS_SILHOUETTE_SAMPLE
    )
    return table.sort_values("k").reset_index(drop=True)


def model_run_row(
    model: TieringModel,
    run_id: str,
    as_of: dt.date,
    window_months: int,
    n_customers: int,
    params: dict[str, Any],
    started_at: dt.datetime,
    finished_at: dt.datetime,
) -> pd.DataFrame:
    """One ``tiers.model_runs`` row: the fit, its choices and quality (``quality_``;
    NaN where the model does not report a metric), its settings as JSON text, and
    ``gates_failed`` ('' until the gates are judged) and ``accepted_by_operator``."""
    quality = getattr(model, "quality_", {}) or {}
    row = {
        "run_id": run_id,
        "as_of_date": as_of,
        "started_at": pd.Timestamp(started_at),
        "finished_at": pd.Timestamp(finished_at),
        "n_customers": int(n_customers),
        "window_months": int(window_months),
        "k": len(model.segments_),
        "kmeans_k": len(model.segmenter_.segment_ids_),
        "n_factors": int(model.factor_model_.n_factors_),
        "factor_count_rule": str(model.factor_model_.selection_),
        "extraction": str(model.factor_model_.extraction),
        "gates_failed": "",
        "accepted_by_operator": False,
        **{metric: float(quality.get(metric, np.nan)) for metric in RUN_QUALITY_METRICS},
        "indicator_columns": ",".join(model.columns_),
        "params": json.dumps(params, sort_keys=True, default=_json_text),
    }
    out = pd.DataFrame([row])
    out["as_of_date"] = out["as_of_date"].astype("date32[pyarrow]")
    return out


def _json_text(value: Any) -> Any:
    """JSON fallback for the values a run configuration holds beyond JSON's own types."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot store parameter value {value!r} as JSON")


# ----------------------------------------------------------------- the tables


def keyed(table: pd.DataFrame, run_id: str, as_of: dt.date) -> pd.DataFrame:
    """``table`` with ``run_id`` and ``as_of_date`` (date) as its first columns."""
    out = table.reset_index(drop=True)
    out.insert(0, "as_of_date", pd.Series([as_of] * len(out), dtype="date32[pyarrow]"))
    out.insert(0, "run_id", pd.Series([run_id] * len(out), dtype="str"))
    return out


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> None:
    """Execute a statement to completion (DuckDB 2 refuses new work while a result is open)."""
    con.execute(sql, params or []).fetchall()


def replace_month(
    con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame, as_of: dt.date
) -> None:
    """Make ``tiers.<table>``'s rows for ``as_of`` exactly ``rows`` (adding new columns)."""
    con.register("_rows", rows)
    try:
        if not table_exists(con, "tiers", table):
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
        for name, dtype, *_ in con.execute("describe select * from _rows").fetchall():
            if name not in existing:
                _run(con, f'alter table tiers.{table} add column "{name}" {dtype}')
        _run(con, f"delete from tiers.{table} where as_of_date = ?", [as_of])
        _run(con, f"insert into tiers.{table} by name select * from _rows")
    finally:
        con.unregister("_rows")


# --------------------------------------------------- warehouses of earlier versions


def upgrade_tier_tables(con: duckdb.DuckDBPyConnection, manifest: dict) -> list[str]:
    """Bring ``tiers`` tables written before the tiers schema moved into dbt to the dbt
    models' contracts, keeping their months; returns the tables changed.

    Those tables were written by Python with the same rows; an incremental model refuses
    a table whose columns differ from its contract. Only that layout is changed (a
    history with factor scores, an audit with a run id): a table dbt built and a later
    contract changed is left for dbt to refuse. Each incremental ``tiers`` model's
    table is rebuilt with exactly its contract's columns (a column it lacked is NULL, an
    extra one goes), and Python's assignments of the months graded then are kept in
    ``tiers.customer_assignments`` from the old history's model columns (segment, model
    tier, factor scores, drivers). The old ``marts.tier_activity_by_branch``, now
    built in ``tiers``, is dropped.
    """
    existing: dict[str, list[str]] = {}
    for table, column in con.execute(
        "select table_name, column_name from information_schema.columns "
        "where table_schema = 'tiers' order by table_name, ordinal_position"
    ).fetchall():
        existing.setdefault(table, []).append(column)
    changed = []
    history = existing.get("customer_tier_history", [])
    # the Python tier tables' marks: factor scores in the history, run_id in the audit
    python_layout = any(c.startswith("factor_") for c in history) or "run_id" in existing.get(
        "override_audit", []
    )
    if any(column.startswith("factor_") for column in history):
        factors = [c for c in history if c.startswith("factor_")]
        explanation = ("driver_", "nearest_other_tier", "distance_to_other_tier")
        drivers = [c for c in ASSIGNMENT_COLUMNS if c.startswith(explanation) and c in history]
        codes = ", ".join(f"'{tier}'" for tier in TIERS)
        kept = con.execute(
            f"""select customer_id, as_of_date, segment, model_tier,
                   list_position([{codes}], model_tier)::bigint as tier_rank,
                   {"".join(f"{c}, " for c in drivers)}
                   case when reason not like 'override:%' and reason not like 'hysteresis:%'
                        then reason end as reason,
                   {"".join(f"{c}, " for c in factors)}run_id
            from tiers.customer_tier_history"""
        ).df()
        assigned = (
            {
                r[0]
                for r in con.execute(
                    "select distinct as_of_date from tiers.customer_assignments"
                ).fetchall()
            }
            if "customer_assignments" in existing
            else set()
        )
        kept["as_of_date"] = kept["as_of_date"].dt.date.astype("date32[pyarrow]")
        for month, rows in kept.groupby("as_of_date"):
            if month not in assigned:
                replace_month(con, "customer_assignments", rows, month)
        changed.append("customer_assignments")
    if not python_layout:
        return changed  # a contract change of a dbt-built table is dbt's to refuse
    stale = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'marts' and table_name = 'tier_activity_by_branch'"
    ).fetchall()[0][0]
    if stale:  # moved to the tiers schema
        _run(con, "drop table marts.tier_activity_by_branch")
        changed.append("marts.tier_activity_by_branch")
    for node in manifest["nodes"].values():
        if (
            node["resource_type"] != "model"
            or node["schema"] != "tiers"
            or node["config"]["materialized"] != "incremental"
            or node["name"] not in existing
        ):
            continue
        columns = {name: column["data_type"] for name, column in node["columns"].items()}
        if existing[node["name"]] == list(columns):
            continue
        had = set(existing[node["name"]])
        select = ", ".join(
            f"cast({name if name in had else 'null'} as {dtype}) as {name}"
            for name, dtype in columns.items()
        )
        _run(
            con,
            f"create or replace table tiers.{node['name']} as select {select} "
            f"from tiers.{node['name']}",
        )
        changed.append(node["name"])
    return changed


# ------------------------------------------------------------------- the gates


@dataclass(frozen=True)
class GateSettings:
    """The gates a grading must pass before it is published, and the operator's say.

    ``max_vip_share`` None: the naming's ``vip_max_share`` of the model used.
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


#: The gates, in the order they are evaluated and reported.
GATES = ("kmo_adequate", "smallest_segment_share", "vip_share", "changed_tier_share")


def evaluate_gates(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, gates: GateSettings
) -> tuple[str, list[GateResult]]:
    """The model run that scored ``as_of`` and the gates of that month's grading, read
    from the tables dbt built (every gate, passed or not, in :data:`GATES` order).

    - ``kmo_adequate``: the model's KMO (``model_quality``) at least ``min_kmo``;
    - ``smallest_segment_share``: every K-means segment of the model holds at
      least ``min_segment_share`` of the month's scored customers (in a month the
      model was fitted on, its fitted shares; in a month scored with an earlier
      month's model, this month's);
    - ``vip_share``: the published ``vip`` tier holds at most ``max_vip_share``
      of the month's customers (default: the naming's ``vip_max_share``);
    - ``changed_tier_share``: of the customers graded this month and the
      previous graded month, at most ``max_changed_share`` have a different
      published tier (0 when there is no month before). Its metadata also gives
      ``model_changed_share``, the same share for the model tiers, which
      hysteresis holds back: a reshuffle shows there the month it happens.

    A value that cannot be computed (a NaN KMO) fails its gate.
    """
    (run_id,) = con.execute(
        "select max(run_id) from tiers.customer_tier_history where as_of_date = ?", [as_of]
    ).fetchall()[0]
    if run_id is None:
        raise ConfigError(f"tiers.customer_tier_history holds no customer as of {as_of}")
    quality = dict(
        con.execute(
            "select metric, value from tiers.model_quality where run_id = ?", [run_id]
        ).fetchall()
    )
    # DuckDB stores the NaN of a KMO that cannot be computed as NULL
    kmo = float("nan") if quality.get("kmo") is None else float(quality["kmo"])
    shares = [
        r[0]
        for r in con.execute(
            """select coalesce(count(scores.customer_id), 0)
                      / (select count(*) from tiers.customer_scores where as_of_date = $2)
               from tiers.model_segments as segments
               left join tiers.customer_scores as scores
                   on scores.segment = segments.segment and scores.as_of_date = $2
               where segments.run_id = $1 and segments.source = 'kmeans'
               group by segments.segment""",
            [run_id, as_of],
        ).fetchall()
    ]
    smallest = float(min(shares)) if shares else float("nan")
    (naming,) = con.execute(
        "select value from tiers.model_params where run_id = ? and name = 'naming'", [run_id]
    ).fetchall()[0]
    max_vip = (
        NamingRules.from_dict(json.loads(naming)).vip_max_share
        if gates.max_vip_share is None
        else gates.max_vip_share
    )
    customers, vip = con.execute(
        "select count(*), count(*) filter (where tier = 'vip') "
        "from tiers.customer_tier_history where as_of_date = ?",
        [as_of],
    ).fetchall()[0]
    vip_share = vip / customers if customers else 0.0
    compared, moved, model_moved = con.execute(
        """
        with before as (
            select customer_id, tier, model_tier from tiers.customer_tier_history
            where as_of_date = (select max(as_of_date) from tiers.customer_tier_history
                                where as_of_date < $1)
        )
        select count(*), count(*) filter (where now.tier <> before.tier),
               count(*) filter (where now.model_tier <> before.model_tier)
        from tiers.customer_tier_history as now
        inner join before using (customer_id)
        where now.as_of_date = $1""",
        [as_of],
    ).fetchall()[0]
    changed = moved / compared if compared else 0.0
    return run_id, [
        GateResult(
            "kmo_adequate", bool(kmo >= gates.min_kmo), kmo, gates.min_kmo, "kmo >= min_kmo"
        ),
        GateResult(
            "smallest_segment_share",
            bool(smallest >= gates.min_segment_share),
            smallest,
            gates.min_segment_share,
            "smallest K-means segment share >= min_segment_share",
            {"kmeans_segments": float(len(shares))},
        ),
        GateResult(
            "vip_share",
            bool(vip_share <= max_vip),
            float(vip_share),
            float(max_vip),
            "published vip share <= max_vip_share",
            {"vip_customers": float(vip)},
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
                **({"model_changed_share": model_moved / compared} if compared else {}),
            },
        ),
    ]


def record_gates(
    con: duckdb.DuckDBPyConnection, run_id: str, failed: list[str], accepted: bool
) -> None:
    """Write a grading's failed gates and the operator's acceptance into its ``model_runs`` row."""
    _run(
        con,
        "update tiers.model_runs set gates_failed = ?, accepted_by_operator = ? where run_id = ?",
        [",".join(failed), accepted, run_id],
    )
