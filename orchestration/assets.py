"""The job as Dagster assets: land the raw files, build dbt, fit the model, score, publish.

Every asset of a run works on the run's build file (a copy of the published
warehouse under ``.build/<run id>/``); the last asset, ``published_warehouse``,
moves it over ``TIERS_WAREHOUSE`` and writes the Parquet snapshot. A run that
fails anywhere leaves the published warehouse untouched.

The grading, by asset:

- ``tiers/model_*`` (with ``model_runs``, ``model_k_diagnostics``): the model
  fitted on the month's indicators (:func:`orchestration.tiering.fit_month`);
- ``tiers/customer_assignments``: its predictions in Python, with each
  customer's drivers (:func:`orchestration.tiering.assign_month`);
- the dbt models of ``dbt_project/models/tiers``: the SQL scorer
  (``customer_scores``, which must equal Python's assignments), the history
  with hysteresis and overrides, ``customer_tiers``, profiles and migrations;
- the ``grading_gates`` checks on ``tiers/customer_tiers``: a failed gate stops
  the run before the publish unless the operator accepts it.

``scoring_job`` leaves out the first two: it grades a month with the last model
fitted, in SQL alone.
"""

import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    Config,
    ConfigurableResource,
    DagsterRun,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
    multi_asset_check,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from ml import MODEL_TABLES, TIERS, NamingRules, TieringModel
from orchestration import (
    charts,
    config_files,
    dagster_storage,  # noqa: F401  (SQLite run history: no flush per event)
    publish,
    runlock,
)
from orchestration.config import (
    DBT_PROJECT_DIR,
    ConfigError,
    Settings,
    VolumeBounds,
    duckdb_memory_limit,
    parse_as_of,
    parse_grade_from,
)
from orchestration.landing import CONTRACT, discover, land, landing_fingerprint, new_load_id
from orchestration.tiering import (
    FIT_SAMPLE_SIZE,
    GATES,
    MODEL_DEFAULTS,
    GateResult,
    GateSettings,
    assign_month,
    evaluate_gates,
    fit_month,
    grading_range,
    record_gates,
    record_grading,
    recorded_grading,
    table_exists,
    upgrade_tier_tables,
)

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()

RAW_TABLES = tuple(CONTRACT)
#: Config files landed beside the raw tables (orchestration.config_files).
CONFIG_TABLES = ("service_plans", "tier_overrides")
#: dbt models that type and judge the landed rows (staging, quarantine, reconciliation).
INGESTION = "staging audit"
#: dbt models built on what the model assets write: the tiers schema, and the
#: service desk's marts on the tier history.
TIER_MODELS = "path:models/tiers path:models/service_desk"
#: Schemas the Parquet snapshot holds: what BI reads.
SNAPSHOT_SCHEMAS = ("tiers", "marts")
#: Tables the model asset writes (one set of rows per fitted month-end).
FIT_TABLES = (*MODEL_TABLES, "model_runs", "model_k_diagnostics")
#: Every graded month-end is a partition, added when a publish first holds it.
MONTH_ENDS = DynamicPartitionsDefinition(name="month_end")
#: The published grading of each month-end: one partition per month-end, materialised
#: by the publish of every run that graded it (its tier sizes and the run). Runs are
#: not launched per partition: which month-ends a run grades is known only once it has
#: landed the files (late data, completeness; docs/operations.md), and each month's
#: grading depends on the one before it (warm start, hysteresis), so a run grades a
#: range in order and this asset shows what each month-end got.
graded_month_ends = AssetSpec(
    AssetKey(["tiers", "graded_month_ends"]),
    partitions_def=MONTH_ENDS,
    group_name="tiers",
    deps=[AssetKey(["published_warehouse"])],
    description="Each graded month-end as a partition: materialised by the publish of the "
    "runs that graded it, with its tier sizes. Re-grade from the launchpad with the tag "
    "tiers/grade_from=YYYY-MM, or python -m orchestration run --from YYYY-MM / --backfill.",
)


class TiersResource(ConfigurableResource):
    """Where things are: the environment's settings (``TIERS_*`` variables), read once."""

    raw_dir: str = Field(default_factory=lambda: str(Settings.from_env().raw_dir))
    warehouse: str = Field(default_factory=lambda: str(Settings.from_env().warehouse))
    as_of: str | None = Field(default_factory=lambda: os.environ.get("TIERS_AS_OF") or None)
    # re-grade from this month (YYYY-MM) onward; "first": every month-end (a backfill)
    grade_from: str | None = Field(
        default_factory=lambda: os.environ.get("TIERS_GRADE_FROM") or None
    )
    overrides: str | None = Field(default_factory=lambda: os.environ.get("TIERS_OVERRIDES") or None)
    service_plans: str = Field(default_factory=lambda: str(Settings.from_env().service_plans))
    load_date: str | None = None  # YYYY-MM-DD; default: today
    # DuckDB's memory limit in dbt: TIERS_DUCKDB_MEMORY_LIMIT, else half the RAM, at most 5 GB
    memory_limit: str = Field(default_factory=duckdb_memory_limit)

    def settings(self) -> Settings:
        return Settings(
            Path(self.raw_dir),
            Path(self.warehouse),
            parse_as_of(self.as_of),
            Path(self.overrides) if self.overrides else None,
            Path(self.service_plans),
        )

    def build(self, run_id: str) -> Path:
        return publish.run_build_path(Path(self.warehouse), run_id)

    def day_of_load(self) -> dt.date:
        return dt.date.fromisoformat(self.load_date) if self.load_date else dt.date.today()

    def dbt_vars(self, run_id: str) -> dict[str, str]:
        """The vars of every dbt call of the run: the run's build file and DuckDB's
        memory limit, which the profile reads, and the run, whose month-ends to grade
        the tier models read from ``tiers.grading_runs`` (macros/grading_months.sql)."""
        return {
            "warehouse": str(self.build(run_id)),
            "duckdb_memory_limit": self.memory_limit,
            "orchestrator_run_id": run_id,
        }

    def grading_months(self, run: DagsterRun) -> list[dt.date]:
        """The month-ends this run grades, in order (:func:`tiering.grading_range`),
        resolved by the run's first grading step and recorded for the steps after it.
        The run tag ``tiers/grade_from`` (a backfill from the UI) wins over grade_from."""
        with duckdb.connect(str(self.build(run.run_id))) as con:
            months = recorded_grading(con, run.run_id)
            if not months:
                grade_from = run.tags.get(GRADE_FROM_TAG) or self.grade_from
                months = grading_range(con, self.settings().as_of, parse_grade_from(grade_from))
                record_grading(con, run.run_id, months)
            return months


#: Run tag of a sensor's run: the landing folder's fingerprint when the run was asked for.
FINGERPRINT_TAG = "tiers/landing_fingerprint"

#: Run tag: start from an empty warehouse and rebuild every month-end.
FULL_REFRESH_TAG = "tiers/full_refresh"

#: Run tag: re-grade from this month-end (YYYY-MM; "first": every one), as TIERS_GRADE_FROM.
GRADE_FROM_TAG = "tiers/grade_from"


def is_full_refresh(context: AssetExecutionContext) -> bool:
    return context.run.tags.get(FULL_REFRESH_TAG) == "true"


class GradingConfig(Config):
    """Run configuration of the model fit; every default is ``TieringModel``'s."""

    n_clusters: int = MODEL_DEFAULTS["n_clusters"]
    n_factors: int | None = MODEL_DEFAULTS["n_factors"]  # None: factor_selection chooses
    factor_selection: str = MODEL_DEFAULTS["factor_selection"]  # "parallel" or "kaiser"
    extraction: str = MODEL_DEFAULTS["extraction"]  # or "principal_axis"
    min_salient_loadings: int = MODEL_DEFAULTS["min_salient_loadings"]
    random_state: int = MODEL_DEFAULTS["random_state"]
    dormant_min_recency_days: float | None = MODEL_DEFAULTS["dormant_min_recency_days"]
    dormant_min_tenure_months: float = MODEL_DEFAULTS["dormant_min_tenure_months"]
    # NamingRules thresholds to change (ml/naming.py), e.g. {"vip_max_share": 0.08}
    naming_thresholds: dict[str, float] = {}
    # a month-end with more customers starts K-means on a stratified sample of this
    # many, less its dormant-rule customers (None: never); see
    # orchestration.tiering.fit_sample_query
    fit_sample_size: int | None = FIT_SAMPLE_SIZE

    def model(self) -> TieringModel:
        known = set(NamingRules.__dataclass_fields__)
        unknown = sorted(set(self.naming_thresholds) - known)
        if unknown:
            raise ConfigError(f"unknown naming rule thresholds {unknown}; known: {sorted(known)}")
        params = self.model_dump(exclude={"naming_thresholds", "fit_sample_size"})
        return TieringModel(**params, naming=NamingRules(**self.naming_thresholds))


class GateConfig(Config):
    """The gates a grading must pass before it is published (``GateSettings`` defaults).

    A failed gate stops the run before anything is published, unless
    ``accept_gates`` is set: then the failed gates are logged as warnings,
    recorded in ``tiers.model_runs`` and the grading is published.
    """

    min_kmo: float = GateSettings.min_kmo
    min_segment_share: float = GateSettings.min_segment_share
    max_vip_share: float | None = None  # None: the naming's vip_max_share
    max_changed_share: float = GateSettings.max_changed_share
    accept_gates: bool = False

    def settings(self) -> GateSettings:
        return GateSettings(
            self.min_kmo,
            self.min_segment_share,
            self.max_vip_share,
            self.max_changed_share,
            self.accept_gates,
        )


class DbtVarsConfig(Config):
    """dbt vars as run configuration; the defaults are dbt_project.yml's (a test checks)."""

    def dbt_vars(self) -> dict[str, Any]:
        """The vars set to something other than their default (dbt_project.yml has those).

        With the defaults, the dbt calls of a run pass the same ``--vars``, so the
        later ones reuse the first one's parse (see :func:`dbt_target_path`); the tier
        models read the month-ends to grade from the run's rows of ``tiers.grading_runs``.
        """
        defaults = type(self)().model_dump()
        return {name: value for name, value in self.model_dump().items() if value != defaults[name]}


class IndicatorConfig(DbtVarsConfig):
    """The indicators' dbt vars."""

    window_months: int = 12  # trailing window; changing it needs a full refresh
    cash_spread_rate: float = 0.015  # annual spread on idle cash
    reporting_currency: str = "CNY"
    # a table covers a month-end when its latest date is at most this many days before it
    completeness_grace_days: int = 7


class TierConfig(DbtVarsConfig):
    """The tier models' dbt vars."""

    # months in a new model tier before the published tier moves; 1 = no hysteresis
    hysteresis_patience: int = 2


class Translator(DagsterDbtTranslator):
    """dbt models and sources keyed ``<schema>/<name>`` (``raw/trades``, ``tiers/model_runs``)."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        return AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return dbt_resource_props["fqn"][1] if len(dbt_resource_props["fqn"]) > 2 else "dbt"


def dbt_target_path(context: AssetExecutionContext) -> Path:
    """One dbt target folder for all the dbt calls of a run.

    dagster-dbt gives each call a folder of its own, so each would parse the whole
    project again (seconds each); in one folder, a call with the same vars and
    profile (the run's build file) reuses the previous call's partial parse. The
    folder's ``dbt.log`` holds every call; ``run_results.json`` is the last one's.
    """
    return DBT_PROJECT_DIR / "target" / f"run-{context.run.run_id}"


#: dbt target folders of earlier runs kept (for their dbt.log and run_results.json)
KEEP_DBT_TARGETS = 10


def prune_dbt_targets(keep: int, younger_than: float = 6 * 3600) -> None:
    """Delete the dbt target folders of runs beyond the newest ``keep``; a folder
    written to in the last ``younger_than`` seconds (a run on another warehouse) stays."""
    folders = sorted(
        (max(path.stat().st_mtime for path in (folder, *folder.glob("*.log"))), folder)
        for folder in (DBT_PROJECT_DIR / "target").glob("run-*")
        if folder.is_dir()
    )
    for mtime, folder in folders[: max(0, len(folders) - keep)]:
        if time.time() - mtime > younger_than:
            shutil.rmtree(folder, ignore_errors=True)


def dbt_args(
    command: str,
    load_date: dt.date,
    full_refresh: bool = False,
    dbt_vars: Mapping[str, Any] | None = None,
) -> list[str]:
    """The dbt CLI arguments of a run (a pure function, tested on its own).

    dbt's unit tests check the models' logic on fixed inputs; they run in `make
    test` (CI), not in every production run.
    """
    variables = {"load_date": load_date.isoformat(), **(dbt_vars or {})}
    args = [command, "--vars", json.dumps(variables, sort_keys=True)]
    if command == "build":
        args += ["--exclude-resource-type", "unit_test"]
    return [*args, "--full-refresh"] if full_refresh else args


@multi_asset(
    specs=[
        AssetSpec(AssetKey(["raw", table]), group_name="raw")
        for table in (*RAW_TABLES, *CONFIG_TABLES)
    ],
    description="Check the files of TIERS_RAW_DIR that are new or changed and hand them to "
    "the staging models (raw.<table> views, all text); land the service plans and the "
    "tier overrides (TIERS_SERVICE_PLANS, TIERS_OVERRIDES).",
)
def raw_files(context: AssetExecutionContext, tiers: TiersResource):
    settings = tiers.settings()
    if settings.as_of and settings.as_of >= tiers.day_of_load():
        # checked before the build: no data can cover a month not over yet
        raise ConfigError(
            f"TIERS_AS_OF={settings.as_of} is not over on the day of the load, "
            f"{tiers.day_of_load()}: a month-end is graded once it has passed"
        )
    asked_for = context.run.tags.get(FINGERPRINT_TAG)
    if asked_for and landing_fingerprint(settings.raw_dir) != asked_for:
        raise Failure(
            description=f"the files in {settings.raw_dir} changed after the sensor asked for "
            "this run (a copy still in progress?): nothing was landed; the sensor asks for a "
            "new run once they stay unchanged"
        )
    # the config files are checked first: a broken one stops the run before the build
    bounds = VolumeBounds.from_env()
    plans = config_files.load_service_plans(settings.service_plans)
    files = discover(settings.raw_dir)  # whole-file problems stop the run here
    try:
        # held until the publish step (the jobs run every step in this process)
        runlock.claim(settings.warehouse, f"Dagster run {context.run.run_id}")
    except runlock.RunLockBusy as error:
        raise Failure(description=str(error)) from None
    prune_dbt_targets(keep=KEEP_DBT_TARGETS)
    build = publish.start_build(
        settings.warehouse,
        context.run.run_id,
        is_full_refresh(context),
        publish.storage_version(),
    )
    with duckdb.connect(str(build)) as con:
        landed = land(con, files, new_load_id(), bounds)
        config_files.land_service_plans(con, settings.service_plans)
        overrides = config_files.land_overrides(con, settings.overrides)
    for table in RAW_TABLES:
        yield MaterializeResult(
            asset_key=AssetKey(["raw", table]),
            metadata={
                "rows": sum(f.rows for f in landed if f.table == table),
                "malformed lines": sum(f.malformed_rows for f in landed if f.table == table),
                "build": str(build),
            },
        )
    yield MaterializeResult(
        asset_key=AssetKey(["raw", "service_plans"]),
        metadata={"tiers": len(plans), "file": str(settings.service_plans)},
    )
    yield MaterializeResult(
        asset_key=AssetKey(["raw", "tier_overrides"]),
        metadata={"lines": overrides, "file": str(settings.overrides or "")},
    )


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select=INGESTION,
    dagster_dbt_translator=Translator(),
    name="staging_models",
)
def staging_models(context: AssetExecutionContext, dbt: DbtCliResource, tiers: TiersResource):
    """Type and judge the landed rows: staging, quarantine and reconciliation (`dbt build`)."""
    variables = tiers.dbt_vars(context.run.run_id)
    args = dbt_args("build", tiers.day_of_load(), is_full_refresh(context), variables)
    yield from dbt.cli(args, context=context, target_path=dbt_target_path(context)).stream()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    exclude=f"{INGESTION} {TIER_MODELS}",
    dagster_dbt_translator=Translator(),
)
def warehouse_models(
    context: AssetExecutionContext,
    dbt: DbtCliResource,
    tiers: TiersResource,
    config: IndicatorConfig,
):
    """Intermediate models and marts: `dbt build` (tests become asset checks)."""
    variables = {**tiers.dbt_vars(context.run.run_id), **config.dbt_vars()}
    args = dbt_args("build", tiers.day_of_load(), is_full_refresh(context), variables)
    yield from dbt.cli(args, context=context, target_path=dbt_target_path(context)).stream()


@multi_asset(
    specs=[
        AssetSpec(
            AssetKey(["tiers", table]),
            group_name="tiers",
            deps=[AssetKey(["marts", "customer_indicators"])],
        )
        for table in FIT_TABLES
    ],
    description="Fit the tiering model (factor analysis, then K-means, then naming) on the "
    "month's indicators, warm-started from the last month's, and store it as tables.",
)
def tier_model(context: AssetExecutionContext, config: GradingConfig, tiers: TiersResource):
    months = tiers.grading_months(context.run)
    with duckdb.connect(str(tiers.build(context.run.run_id))) as con:
        # in order: each month's fit is warm-started from the one before it
        for month in months:
            fit = fit_month(
                con,
                month,
                config.model(),
                orchestrator_run_id=context.run.run_id,
                diagnose=month == months[-1],
                fit_sample_size=config.fit_sample_size,
            )
    context.log.info(
        f"fitted {len(months)} month-end(s), {months[0]} to {months[-1]}; the metadata "
        f"describes the latest"
    )
    as_of = fit.as_of
    quality = fit.model.quality_
    common = {
        "as_of_date": str(as_of),
        "run_id": fit.run_id,
        "month_ends_fitted": len(months),
        "first_month_end_fitted": str(months[0]),
    }
    metadata = {
        "model_runs": {
            **common,
            "customers": len(fit.indicators),
            "kmeans_started_on": int(quality["n_kmeans_sample"]),
            "factors": int(fit.model.factor_model_.n_factors_),
            "segments": len(fit.model.segments_),
            **{
                key: float(quality[key])
                for key in ("kmo", "bartlett_p_value", "silhouette")
                if key in quality
            },
        },
        "model_k_diagnostics": {
            **common,
            "k diagnostics": MetadataValue.md(fit.k_diagnostics.round(4).to_markdown(index=False)),
            "k diagnostics chart": MetadataValue.md(
                charts.png_markdown(
                    charts.k_diagnostics_figure(fit.k_diagnostics), f"k diagnostics, {as_of}"
                )
            ),
        },
        "model_segments": {
            **common,
            "naming": MetadataValue.md(
                fit.model.segments_[["segment", "tier", "share", "rule", "naming_margin"]]
                .round(4)
                .to_markdown(index=False)
            ),
        },
    }
    for table in FIT_TABLES:
        yield MaterializeResult(
            asset_key=AssetKey(["tiers", table]), metadata=metadata.get(table, common)
        )


@asset(
    key=AssetKey(["tiers", "customer_assignments"]),
    group_name="tiers",
    deps=[AssetKey(["tiers", table]) for table in MODEL_TABLES],
    description="The fitted model's predictions in Python: each customer's segment, model "
    "tier, factor scores and drivers. The SQL scorer (tiers.customer_scores) must agree.",
)
def customer_assignments(context: AssetExecutionContext, tiers: TiersResource):
    months = tiers.grading_months(context.run)
    with duckdb.connect(str(tiers.build(context.run.run_id))) as con:
        for month in months:  # one month's rows in memory at a time
            latest = assign_month(con, month)
    sizes = latest.groupby("model_tier").size().rename("customers").to_frame()
    return MaterializeResult(
        metadata={
            "as_of_date": str(months[-1]),
            "month_ends_assigned": len(months),
            "customers": len(latest),
            "model tiers": MetadataValue.md(sizes.to_markdown()),
        }
    )


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select=TIER_MODELS,
    dagster_dbt_translator=Translator(),
    name="tier_models",
)
def tier_models(
    context: AssetExecutionContext, dbt: DbtCliResource, tiers: TiersResource, config: TierConfig
):
    """The tiers schema in dbt: SQL scores, history, customer tiers, profiles, migrations."""
    build = tiers.build(context.run.run_id)
    months = tiers.grading_months(context.run)
    with duckdb.connect(str(build)) as con:
        if (
            not table_exists(con, "tiers", "model_params")
            or not con.execute(
                "select count(*) from tiers.model_params where as_of_date <= ?", [months[0]]
            ).fetchall()[0][0]
        ):
            raise Failure(
                description=f"no tiering model fitted on or before {months[0]}: run "
                "tiering_job (which fits one) before scoring with the last model"
            )
        upgraded = upgrade_tier_tables(con, json.loads(dbt_project.manifest_path.read_text()))
    if upgraded:
        context.log.info(
            f"tiers tables of an earlier version brought to the dbt contracts: "
            f"{', '.join(upgraded)}"
        )
    # the month-ends to grade: the run's rows of tiers.grading_runs (tiers.grading_months)
    variables = {**tiers.dbt_vars(context.run.run_id), **config.dbt_vars()}
    args = dbt_args("build", tiers.day_of_load(), dbt_vars=variables)
    yield from dbt.cli(args, context=context, target_path=dbt_target_path(context)).stream()


@multi_asset_check(
    specs=[
        AssetCheckSpec(
            name,
            asset=AssetKey(["tiers", "customer_tiers"]),
            blocking=True,
            description=description,
        )
        for name, description in zip(
            GATES,
            (
                "Gate: the model's KMO is at least min_kmo.",
                "Gate: every K-means segment holds at least min_segment_share of the book.",
                "Gate: the published vip tier holds at most max_vip_share of the book "
                "(default: the naming's vip_max_share).",
                "Gate: at most max_changed_share of the customers graded this month and "
                "the month before changed published tier.",
            ),
            strict=True,
        )
    ],
    description="The grading's gates, judged on the tables dbt built. A failed gate stops "
    "the run before the publish unless the operator accepts the grading.",
)
def grading_gates(context, config: GateConfig, tiers: TiersResource):
    months = tiers.grading_months(context.run)
    gates = config.settings()
    judged: dict[dt.date, list[GateResult]] = {}
    with duckdb.connect(str(tiers.build(context.run.run_id))) as con:
        for month in months:
            run_id, results = evaluate_gates(con, month, gates)
            failed = [gate.name for gate in results if not gate.passed]
            (fitted,) = con.execute(
                "select count(*) from tiers.model_runs where run_id = ? and as_of_date = ?",
                [run_id, month],
            ).fetchall()[0]
            if fitted:  # a month scored with an earlier month's model leaves that fit's row
                record_gates(con, run_id, failed, bool(failed) and gates.accept)
            judged[month] = results
    # the latest month-end is the one published as the customers' tiers: its gates
    # block; an earlier month-end's failures are recorded and warned of
    latest = months[-1]
    failures = {
        month: [gate for gate in results if not gate.passed]
        for month, results in judged.items()
        if not all(gate.passed for gate in results)
    }
    blocked = latest in failures and not gates.accept
    for index in range(len(GATES)):
        failing = [month for month in months if not judged[month][index].passed]
        # the latest month-end's result, unless only an earlier one failed
        shown = failing[0] if failing and latest not in failing else latest
        gate = judged[shown][index]
        severity = (
            AssetCheckSeverity.ERROR
            if gate.passed or (shown == latest and blocked)
            else AssetCheckSeverity.WARN
        )
        yield _gate_check(gate, shown, failing, severity, accepted=gates.accept)
    for month, failed in failures.items():
        if month == latest and not gates.accept:
            continue
        how = "accepted by the operator" if month == latest else "an earlier month-end, recorded"
        for gate in failed:
            context.log.warning(f"gate failed in {month} ({how}): {gate.describe()}")
    if blocked:
        earlier = [month for month in failures if month != latest]
        raise Failure(
            description=gate_failure_message(latest, failures[latest], earlier),
            metadata={"gates failed": ",".join(gate.name for gate in failures[latest])},
        )


def gate_failure_message(
    as_of: dt.date, failed: list[GateResult], earlier: list[dt.date] = ()
) -> str:
    """Why a grading is not published: each failed gate of the latest graded month-end
    with its value and threshold (and the earlier month-ends that failed one)."""
    return (
        f"The grading of {as_of} failed {len(failed)} gate(s): "
        + "; ".join(gate.describe() for gate in failed)
        + (
            f" (earlier month-ends graded in this run failed gates too: "
            f"{', '.join(str(month) for month in earlier)}; see tiers.model_runs)"
            if earlier
            else ""
        )
        + ". To publish it anyway, accept it: run config accept_gates: true under "
        "ops: grading_gates (python -m orchestration run --accept-grading)."
    )


def _gate_check(
    gate: GateResult,
    month: dt.date,
    failed_months: list[dt.date],
    severity: AssetCheckSeverity,
    accepted: bool,
) -> AssetCheckResult:
    """One gate's check over the month-ends graded: passed when it passed in every one;
    ``gate`` is its result in ``month``. Only an ERROR failure blocks the publish."""
    return AssetCheckResult(
        asset_key=AssetKey(["tiers", "customer_tiers"]),
        check_name=gate.name,
        passed=not failed_months,
        severity=severity,
        description=f"{month}: {gate.describe()}"
        + (f" (failed in {', '.join(map(str, failed_months))})" if failed_months else ""),
        metadata={
            "value": gate.value,
            "threshold": gate.threshold,
            "rule": gate.rule,
            "as_of_date": str(month),
            "month_ends_failed": ",".join(str(m) for m in failed_months),
            "accepted_by_operator": bool(failed_months) and accepted,
            **gate.metadata,
        },
    )


def _published_tier_metadata(warehouse: Path) -> dict[str, Any]:
    """Tier sizes and the latest migration matrix as tables, and as numbers the UI plots
    over runs: each tier's customers and share, the fit's KMO and silhouette, the share
    of customers who changed tier. Nothing for a run that graded nothing."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        if not table_exists(con, "tiers", "customer_tiers"):
            return {}
        sizes = con.execute(
            "select tier, count(*) as customers, count(*) filter (where is_override) as overrides,"
            " count(*) filter (where pending_tier is not null) as held_by_hysteresis "
            "from tiers.customer_tiers group by tier order by min(tier_rank)"
        ).df()
        migrations = con.execute(
            "select from_as_of_date, as_of_date, from_tier, to_tier, customers "
            "from tiers.tier_migrations "
            "where as_of_date = (select max(as_of_date) from tiers.customer_tiers)"
        ).df()
        profiles = con.execute("select * from tiers.tier_profiles order by as_of_date").df()
        # the fit that graded the published month-end (a score-only month: the last one)
        fit = con.execute(
            "select kmo, silhouette from tiers.model_runs "
            "where as_of_date <= (select max(as_of_date) from tiers.customer_tiers) "
            "order by as_of_date desc, run_id desc limit 1"
        ).fetchone()
    matrix = (
        migrations.pivot_table(
            index="from_tier", columns="to_tier", values="customers", aggfunc="sum", fill_value=0
        ).to_markdown()
        if len(migrations)
        else "no customers"
    )
    total = int(sizes["customers"].sum())
    by_tier = dict(zip(sizes["tier"], sizes["customers"], strict=True))
    graded_before = migrations[migrations["from_tier"].isin(TIERS)]
    changed = graded_before.loc[graded_before["from_tier"] != graded_before["to_tier"], "customers"]
    return {
        "customers": total,
        **{f"customers {tier}": int(by_tier.get(tier, 0)) for tier in TIERS},
        **{f"share {tier}": by_tier.get(tier, 0) / total if total else 0.0 for tier in TIERS},
        **(
            {"kmo": float(fit[0]), "silhouette": float(fit[1])}
            if fit and fit[0] is not None and fit[1] is not None
            else {}
        ),
        **(
            {"changed tier share": float(changed.sum() / graded_before["customers"].sum())}
            if len(graded_before)
            else {}
        ),
        "tier sizes": MetadataValue.md(sizes.to_markdown(index=False)),
        "migration matrix": MetadataValue.md(matrix),
        **_grading_charts(profiles, graded_before),
    }


def _grading_charts(profiles: pd.DataFrame, migrations: pd.DataFrame) -> dict[str, Any]:
    """The grading as pictures (PNG in Markdown): tier sizes over time, the latest
    month-end's tier profiles, and its migration matrix when a month-end precedes it."""
    if profiles.empty:
        return {}
    last = profiles["as_of_date"].max()
    latest = pd.Timestamp(last).date()
    shown = {
        "tier sizes chart": charts.png_markdown(
            charts.tier_sizes_figure(profiles), "customers and revenue per tier over time"
        ),
        "tier profiles chart": charts.png_markdown(
            charts.profiles_figure(profiles[profiles["as_of_date"] == last]),
            f"tier profiles at {latest}",
        ),
    }
    if len(migrations):
        previous = pd.Timestamp(migrations["from_as_of_date"].iloc[0]).date()
        matrix = (
            migrations.pivot_table(
                index="from_tier", columns="to_tier", values="customers", aggfunc="sum"
            )
            .reindex(index=list(TIERS), columns=list(TIERS))
            .fillna(0)
            .astype(int)
        )
        shown["migration matrix chart"] = charts.png_markdown(
            charts.migration_figure(matrix, previous, latest), f"migrations to {latest}"
        )
    return {name: MetadataValue.md(image) for name, image in shown.items()}


@asset(
    key=AssetKey(["published_warehouse"]),
    group_name="publish",
    # every layer: a job subset (a selection materialised in the UI, the tests'
    # builds up to the marts) publishes only after the steps it runs
    deps=[
        AssetKey(["audit", "load_reconciliation"]),
        AssetKey(["marts", "customer_indicators"]),
        *[
            AssetKey(["tiers", table])
            for table in (
                "customer_tiers",
                "customer_tier_history",
                "tier_profiles",
                "tier_migrations",
                "override_audit",
                "service_plans",
                "tier_activity_by_branch",
            )
        ],
    ],
    description="Move the run's build over TIERS_WAREHOUSE and write the Parquet snapshot.",
)
def published_warehouse(context: AssetExecutionContext, tiers: TiersResource) -> MaterializeResult:
    warehouse = Path(tiers.warehouse)
    build = tiers.build(context.run.run_id)
    try:  # held since raw_files; taken again if a step process of its own runs this
        runlock.claim(warehouse, f"Dagster run {context.run.run_id}")
    except runlock.RunLockBusy as error:
        raise Failure(description=str(error)) from None
    # a job subset that stops before the marts or the tiers (a selection materialised
    # in the UI) snapshots what it built; the whole job always has both schemas
    with duckdb.connect(str(build), read_only=True) as con:
        schemas = [
            schema
            for schema in SNAPSHOT_SCHEMAS
            if con.execute(
                "select count(*) from information_schema.tables where table_schema = ?", [schema]
            ).fetchall()[0][0]
        ]
    # one publication: the snapshot is written from the build first, then the file
    # is swapped in, then LATEST moves; audit.publication names the run in the file
    run_id = context.run.run_id
    publish.record_publication(build, run_id)
    metadata: dict[str, Any] = {"warehouse": str(warehouse)}
    root = publish.snapshot_root(warehouse)
    if schemas:
        if publish.latest_snapshot(root) != run_id:  # an earlier attempt of this run, cut off
            shutil.rmtree(root / run_id, ignore_errors=True)
        folder = publish.write_snapshot(build, root, run_id, schemas, point=False)
        metadata["snapshot"] = MetadataValue.path(str(folder))
    publish.publish(build, warehouse, publish.storage_version())
    if schemas:
        publish.point_latest(root, run_id)
    runlock.release(warehouse, f"Dagster run {context.run.run_id}")
    _record_graded_month_ends(context, warehouse)
    return MaterializeResult(metadata={**metadata, **_published_tier_metadata(warehouse)})


def _record_graded_month_ends(context: AssetExecutionContext, warehouse: Path) -> None:
    """Materialise the ``graded_month_ends`` partition of each month-end this run graded."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        months = recorded_grading(con, context.run.run_id)
        if not months:
            return
        sizes = con.execute(
            "select as_of_date, tier, count(*) from tiers.customer_tier_history "
            "where as_of_date between ? and ? group by all",
            [months[0], months[-1]],
        ).fetchall()
    keys = [month.isoformat() for month in months]
    known = set(context.instance.get_dynamic_partitions(MONTH_ENDS.name))
    context.instance.add_dynamic_partitions(MONTH_ENDS.name, [k for k in keys if k not in known])
    for month, key in zip(months, keys, strict=True):
        by_tier = {tier: customers for day, tier, customers in sizes if day == month}
        context.log_event(
            AssetMaterialization(
                asset_key=graded_month_ends.key,
                partition=key,
                metadata={
                    "customers": sum(by_tier.values()),
                    **{f"customers {tier}": by_tier.get(tier, 0) for tier in TIERS},
                    "graded in run": context.run.run_id,
                },
            )
        )
