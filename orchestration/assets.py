"""The job as Dagster assets: land the raw files, build dbt, grade with ``ml/``, publish.

Every asset of a run works on the run's build file (a copy of the published
warehouse under ``.build/<run id>/``); the last asset, ``published_warehouse``,
moves it over ``TIERS_WAREHOUSE`` and writes the Parquet snapshot. A run that
fails anywhere leaves the published warehouse untouched.
"""

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping
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
    AssetSpec,
    Config,
    ConfigurableResource,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from ml import TIERS
from orchestration import publish
from orchestration.config import DBT_PROJECT_DIR, Settings, parse_as_of
from orchestration.landing import CONTRACT, discover, land
from orchestration.pipeline import INGESTION, TIER_REPORTING, new_load_id, warehouse_vars
from orchestration.tier_tables import load_service_plans
from orchestration.tiering import (
    DEFAULT_HYSTERESIS_PATIENCE,
    MODEL_DEFAULTS,
    GateResult,
    GateSettings,
    Grading,
    GradingSettings,
    contract_violations,
    grade,
)

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()

RAW_TABLES = tuple(CONTRACT)
TIER_TABLES = (
    "customer_tiers",
    "customer_tier_history",
    "tier_profiles",
    "tier_migrations",
    "service_plans",
    "model_runs",
    "override_audit",
    "model_k_diagnostics",
    "model",
)
CONTRACT_CHECK = "tier_table_contract"


class TiersResource(ConfigurableResource):
    """Where things are: the environment's settings (``TIERS_*`` variables)."""

    raw_dir: str = Field(default_factory=lambda: str(Settings.from_env().raw_dir))
    warehouse: str = Field(default_factory=lambda: str(Settings.from_env().warehouse))
    as_of: str | None = Field(default_factory=lambda: os.environ.get("TIERS_AS_OF") or None)
    overrides: str | None = Field(default_factory=lambda: os.environ.get("TIERS_OVERRIDES") or None)
    service_plans: str = Field(default_factory=lambda: str(Settings.from_env().service_plans))
    load_date: str | None = None  # YYYY-MM-DD; default: today

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


#: Run tag: start from an empty warehouse and rebuild every month-end.
FULL_REFRESH_TAG = "tiers/full_refresh"


def is_full_refresh(context: AssetExecutionContext) -> bool:
    return context.run.tags.get(FULL_REFRESH_TAG) == "true"


class GradingConfig(Config):
    """Run configuration of the grading, with the library's defaults, and its gates.

    A failed gate stops the run before anything is published, unless
    ``accept_gates`` is set: then the failed gates are logged as warnings,
    recorded in ``tiers.model_runs`` and the grading is published.
    """

    n_clusters: int = 6
    n_factors: int | None = None  # None: factor_selection chooses
    factor_selection: str = MODEL_DEFAULTS["factor_selection"]  # "parallel" or "kaiser"
    extraction: str = MODEL_DEFAULTS["extraction"]  # or "principal_axis"
    min_salient_loadings: int = MODEL_DEFAULTS["min_salient_loadings"]
    random_state: int = 0
    dormant_min_recency_days: float | None = 365.0
    dormant_min_tenure_months: float = 12.0
    # NamingRules thresholds to change (ml/naming.py), e.g. {"vip_max_share": 0.08}
    naming_thresholds: dict[str, float] = {}
    # months in a new model tier before the published tier moves; 1 = no hysteresis
    hysteresis_patience: int = DEFAULT_HYSTERESIS_PATIENCE
    min_kmo: float = GateSettings.min_kmo  # gate: KMO at least this
    min_segment_share: float = GateSettings.min_segment_share  # gate: every K-means segment
    max_vip_share: float | None = None  # gate: published vip share; None: naming's vip_max_share
    max_changed_share: float = GateSettings.max_changed_share  # gate: published tier changed
    accept_gates: bool = False  # publish although gates failed (recorded in model_runs)

    def grading(self) -> GradingSettings:
        return GradingSettings(
            n_clusters=self.n_clusters,
            n_factors=self.n_factors,
            factor_selection=self.factor_selection,
            extraction=self.extraction,
            min_salient_loadings=self.min_salient_loadings,
            random_state=self.random_state,
            dormant_min_recency_days=self.dormant_min_recency_days,
            dormant_min_tenure_months=self.dormant_min_tenure_months,
            naming=tuple(sorted(self.naming_thresholds.items())),
            hysteresis_patience=self.hysteresis_patience,
        )

    def gates(self) -> GateSettings:
        return GateSettings(
            min_kmo=self.min_kmo,
            min_segment_share=self.min_segment_share,
            max_vip_share=self.max_vip_share,
            max_changed_share=self.max_changed_share,
            accept=self.accept_gates,
        )


class IndicatorConfig(Config):
    """The indicators' dbt vars (dbt_project.yml has the same defaults)."""

    window_months: int = 12  # trailing window; changing it needs a full refresh
    cash_spread_rate: float = 0.015  # annual spread on idle cash
    reporting_currency: str = "CNY"

    def dbt_vars(self) -> dict[str, Any]:
        """The vars set to something other than their default (dbt_project.yml has those).

        With the defaults, every dbt call of a run passes the same ``--vars``, so the
        later calls reuse the first one's parse (see :func:`dbt_target_path`).
        """
        defaults = type(self)().model_dump()
        return {name: value for name, value in self.model_dump().items() if value != defaults[name]}


class Translator(DagsterDbtTranslator):
    """dbt models keyed ``<schema>/<name>``, sources ``raw/<table>`` or ``tiers/<table>``."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            schema = "raw" if dbt_resource_props["source_name"] == "broker" else "tiers"
            return AssetKey([schema, dbt_resource_props["name"]])
        return AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return dbt_resource_props["fqn"][1] if len(dbt_resource_props["fqn"]) > 2 else "dbt"


@contextlib.contextmanager
def warehouse_env(path: Path) -> Iterator[None]:
    """Point dbt's profile at the run's build file, with DuckDB's memory limit, for one call."""
    values = warehouse_vars(path)
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def dbt_target_path(context: AssetExecutionContext) -> Path:
    """One dbt target folder for all the dbt calls of a run.

    dagster-dbt gives each call a folder of its own, so each would parse the whole
    project again (seconds each); in one folder, a call with the same vars and
    profile (the run's build file) reuses the previous call's partial parse. The
    folder's ``dbt.log`` holds every call; ``run_results.json`` is the last one's.
    """
    return DBT_PROJECT_DIR / "target" / f"run-{context.run.run_id}"


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
    specs=[AssetSpec(AssetKey(["raw", table]), group_name="raw") for table in RAW_TABLES],
    description="Check the files of TIERS_RAW_DIR that are new or changed and hand them to "
    "the staging models (raw.<table> views, all text).",
)
def raw_files(context: AssetExecutionContext, tiers: TiersResource):
    settings = tiers.settings()
    # tiering reads the service plans after the whole build: a broken file stops the run now
    load_service_plans(settings.service_plans)
    files = discover(settings.raw_dir)  # whole-file problems stop the run here
    build = publish.start_build(settings.warehouse, context.run.run_id, is_full_refresh(context))
    with duckdb.connect(str(build)) as con:
        landed = land(con, files, new_load_id())
    for table in RAW_TABLES:
        yield MaterializeResult(
            asset_key=AssetKey(["raw", table]),
            metadata={
                "rows": sum(f.rows for f in landed if f.table == table),
                "malformed lines": sum(f.malformed_rows for f in landed if f.table == table),
                "build": str(build),
            },
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
    args = dbt_args("build", tiers.day_of_load(), is_full_refresh(context))
    with warehouse_env(tiers.build(context.run.run_id)):
        yield from dbt.cli(args, context=context, target_path=dbt_target_path(context)).stream()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    exclude=f"{INGESTION} {TIER_REPORTING}",
    dagster_dbt_translator=Translator(),
)
def warehouse_models(
    context: AssetExecutionContext,
    dbt: DbtCliResource,
    tiers: TiersResource,
    config: IndicatorConfig,
):
    """Intermediate models and marts: `dbt build` (tests become asset checks)."""
    args = dbt_args("build", tiers.day_of_load(), is_full_refresh(context), config.dbt_vars())
    with warehouse_env(tiers.build(context.run.run_id)):
        yield from dbt.cli(args, context=context, target_path=dbt_target_path(context)).stream()


@multi_asset(
    specs=[
        AssetSpec(
            AssetKey(["tiers", table]),
            group_name="tiers",
            deps=[AssetKey(["marts", "customer_indicators"])],
        )
        for table in TIER_TABLES
    ],
    check_specs=[
        *[
            AssetCheckSpec(
                name,
                asset=AssetKey(["tiers", "customer_tiers"]),
                blocking=True,
                description=description,
            )
            for name, description in (
                ("kmo_adequate", "Gate: the model's KMO is at least min_kmo."),
                (
                    "smallest_segment_share",
                    "Gate: every K-means segment holds at least min_segment_share of the book.",
                ),
                (
                    "vip_share",
                    "Gate: the published vip tier holds at most max_vip_share of the book "
                    "(default: the naming's vip_max_share).",
                ),
                (
                    "changed_tier_share",
                    "Gate: at most max_changed_share of the customers graded this month and "
                    "the month before changed published tier.",
                ),
            )
        ],
        AssetCheckSpec(
            CONTRACT_CHECK,
            asset=AssetKey(["tiers", "customer_tiers"]),
            blocking=True,
            description="Columns and types of the tier tables, tier codes, one row per "
            "customer, profiles counting every graded customer. No operator can accept "
            "a broken contract.",
        ),
    ],
    description="Grade the month's customers with ml/ and write the tiers schema. A failed "
    "gate or contract stops the run here, before anything is published.",
)
def tier_tables(context: AssetExecutionContext, config: GradingConfig, tiers: TiersResource):
    settings = tiers.settings()
    with duckdb.connect(str(tiers.build(context.run.run_id))) as con:
        result = grade(
            con,
            settings.as_of,
            config.grading(),
            gates=config.gates(),
            plans_path=settings.service_plans,
            overrides_path=settings.overrides,
            orchestrator_run_id=context.run.run_id,
        )
        violations = contract_violations(con)
    tables = result.tables
    current = tables["customer_tiers"]
    profiles = tables["tier_profiles"]
    migrations = tables["tier_migrations"]
    quality = result.model.quality_
    sizes = current.groupby("tier").size().reindex(list(TIERS), fill_value=0)
    held = int((current["hysteresis_tier"] != current["model_tier"]).sum())
    common = {"as_of_date": str(result.as_of), "grading_id": result.grading_id}
    k_markdown = MetadataValue.md(_k_markdown(tables["model_k_diagnostics"]))
    metadata = {
        "customer_tiers": {
            **common,
            "customers": len(current),
            "overrides": int(current["is_override"].sum()),
            "held by hysteresis": held,
            "tier sizes": MetadataValue.md(sizes.rename("customers").to_frame().to_markdown()),
        },
        "tier_profiles": {**common, "profile": MetadataValue.md(_profile_markdown(profiles))},
        "tier_migrations": {
            **common,
            "migration matrix": MetadataValue.md(_migration_markdown(migrations)),
        },
        "model_runs": {
            **common,
            "k diagnostics": k_markdown,
            "gates failed": ",".join(g.name for g in result.failed_gates),
            "accepted by operator": result.accepted_by_operator,
            **{
                key: float(quality[key])
                for key in ("kmo", "bartlett_p_value", "silhouette")
                if key in quality
            },
        },
        "model_k_diagnostics": {**common, "k diagnostics": k_markdown},
    }
    for table in TIER_TABLES:
        yield MaterializeResult(
            asset_key=AssetKey(["tiers", table]), metadata=metadata.get(table, common)
        )
    blocked = bool(result.failed_gates) and not result.accepted_by_operator
    for gate in result.gates:
        yield _gate_check(gate, blocked)
    yield AssetCheckResult(
        asset_key=AssetKey(["tiers", "customer_tiers"]),
        check_name=CONTRACT_CHECK,
        passed=not violations,
        severity=AssetCheckSeverity.ERROR,
        metadata={"violations": MetadataValue.md("\n".join(f"- {v}" for v in violations))}
        if violations
        else {},
    )
    for gate in result.failed_gates if result.accepted_by_operator else ():
        context.log.warning(f"gate failed, accepted by the operator: {gate.describe()}")
    if blocked or violations:
        raise Failure(
            description=gate_failure_message(result, violations),
            metadata={
                "gates failed": ",".join(g.name for g in result.failed_gates),
                "contract violations": len(violations),
            },
        )


def gate_failure_message(result: Grading, violations: list[str]) -> str:
    """Why a grading is not published: each failed gate with its value and threshold."""
    lines = []
    if result.failed_gates and not result.accepted_by_operator:
        lines.append(
            f"The grading of {result.as_of} failed {len(result.failed_gates)} gate(s): "
            + "; ".join(gate.describe() for gate in result.failed_gates)
            + ". To publish it anyway, accept it: run config accept_gates: true "
            "(python -m orchestration run --accept-grading)."
        )
    if violations:
        lines.append("The tier tables break their contract: " + "; ".join(violations) + ".")
    return " ".join(lines)


def _gate_check(gate: GateResult, blocked: bool) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=AssetKey(["tiers", "customer_tiers"]),
        check_name=gate.name,
        passed=gate.passed,
        # an accepted failure does not block: a warning
        severity=AssetCheckSeverity.ERROR if blocked or gate.passed else AssetCheckSeverity.WARN,
        description=gate.describe(),
        metadata={
            "value": gate.value,
            "threshold": gate.threshold,
            "rule": gate.rule,
            "accepted_by_operator": not gate.passed and not blocked,
            **gate.metadata,
        },
    )


def _k_markdown(diagnostics: pd.DataFrame) -> str:
    """tiers.model_k_diagnostics of the month (k = 2..10) as a table."""
    table = diagnostics.drop(columns=["as_of_date", "run_id"])
    return table.round(4).to_markdown(index=False)


def _profile_markdown(profiles: pd.DataFrame) -> str:
    columns = [c for c in profiles.columns if c.startswith("mean_")]
    table = profiles.set_index("tier")[["customers", "share", "revenue", *columns]]
    return table.round(3).to_markdown()


def _migration_markdown(migrations: pd.DataFrame) -> str:
    if migrations.empty:
        return "no customers"
    matrix = migrations.pivot_table(
        index="from_tier", columns="to_tier", values="customers", aggfunc="sum", fill_value=0
    )
    return matrix.to_markdown()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select=TIER_REPORTING,
    dagster_dbt_translator=Translator(),
    name="tier_reporting_models",
)
def tier_reporting_models(
    context: AssetExecutionContext, dbt: DbtCliResource, tiers: TiersResource
):
    """dbt models on the tier tables (activity by branch and tier)."""
    with warehouse_env(tiers.build(context.run.run_id)):
        args = dbt_args("build", tiers.day_of_load())
        yield from dbt.cli(args, context=context, target_path=dbt_target_path(context)).stream()


@asset(
    key=AssetKey(["published_warehouse"]),
    group_name="publish",
    deps=[
        *[AssetKey(["tiers", table]) for table in TIER_TABLES],
        AssetKey(["marts", "tier_activity_by_branch"]),
    ],
    description="Move the run's build over TIERS_WAREHOUSE and write the Parquet snapshot.",
)
def published_warehouse(context: AssetExecutionContext, tiers: TiersResource) -> MaterializeResult:
    warehouse = Path(tiers.warehouse)
    publish.publish(tiers.build(context.run.run_id), warehouse)
    folder = publish.write_snapshot(warehouse, publish.snapshot_root(warehouse), context.run.run_id)
    return MaterializeResult(
        metadata={"warehouse": str(warehouse), "snapshot": MetadataValue.path(str(folder))}
    )
