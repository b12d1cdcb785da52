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
from orchestration.tiering import GradingSettings, contract_violations, grade

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
    "model",
)


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
    """Run configuration of the grading, with the library's defaults."""

    n_clusters: int = 6
    n_factors: int | None = None  # None: every factor with eigenvalue > 1
    random_state: int = 0
    dormant_min_recency_days: float | None = 365.0
    dormant_min_tenure_months: float = 12.0
    # NamingRules thresholds to change (ml/naming.py), e.g. {"vip_min_value": 1.2}
    naming_thresholds: dict[str, float] = {}
    min_kmo: float = 0.6  # KMO below this: the check warns (below 0.5 it fails)
    min_segment_share: float = 0.01  # smallest tier share below this: warning
    max_changed_share: float = 0.25  # share of customers changing tier: warn above, fail above 2x


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
        AssetCheckSpec("kmo_adequate", asset=AssetKey(["tiers", "customer_tiers"])),
        AssetCheckSpec("smallest_segment_share", asset=AssetKey(["tiers", "customer_tiers"])),
        AssetCheckSpec("changed_tier_share", asset=AssetKey(["tiers", "customer_tiers"])),
        AssetCheckSpec(
            "tier_table_contract",
            asset=AssetKey(["tiers", "customer_tiers"]),
            blocking=True,  # a broken contract stops the run before publishing
            description="Columns and types of the tier tables, tier codes, one row per "
            "customer, profiles counting every graded customer.",
        ),
    ],
    description="Grade the month's customers with ml/ and write the tiers schema.",
)
def tier_tables(context: AssetExecutionContext, config: GradingConfig, tiers: TiersResource):
    settings = tiers.settings()
    grading = GradingSettings(
        n_clusters=config.n_clusters,
        n_factors=config.n_factors,
        random_state=config.random_state,
        dormant_min_recency_days=config.dormant_min_recency_days,
        dormant_min_tenure_months=config.dormant_min_tenure_months,
        naming=tuple(sorted(config.naming_thresholds.items())),
    )
    with duckdb.connect(str(tiers.build(context.run.run_id))) as con:
        result = grade(
            con,
            settings.as_of,
            grading,
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
    common = {"as_of_date": str(result.as_of), "grading_id": result.grading_id}
    metadata = {
        "customer_tiers": {
            **common,
            "customers": len(current),
            "overrides": int(current["is_override"].sum()),
            "tier sizes": MetadataValue.md(sizes.rename("customers").to_frame().to_markdown()),
        },
        "tier_profiles": {**common, "profile": MetadataValue.md(_profile_markdown(profiles))},
        "tier_migrations": {
            **common,
            "migration matrix": MetadataValue.md(_migration_markdown(migrations)),
        },
        "model_runs": {
            **common,
            "k diagnostics": MetadataValue.md(_k_markdown(result)),
            **{
                key: float(quality[key])
                for key in ("kmo", "bartlett_p_value", "silhouette")
                if key in quality
            },
        },
    }
    for table in TIER_TABLES:
        yield MaterializeResult(
            asset_key=AssetKey(["tiers", table]), metadata=metadata.get(table, common)
        )
    yield from _model_checks(config, quality, current, migrations)
    yield AssetCheckResult(
        asset_key=AssetKey(["tiers", "customer_tiers"]),
        check_name="tier_table_contract",
        passed=not violations,
        severity=AssetCheckSeverity.ERROR,
        metadata={"violations": MetadataValue.md("\n".join(f"- {v}" for v in violations))}
        if violations
        else {},
    )


#: Customers the k diagnostics are computed on (a fixed sample beyond this), and
#: how many of them the silhouettes are computed on: the silhouette compares every
#: pair, and on 10,000 customers nine of them took 7 of the 8 s of the diagnostics.
K_DIAGNOSTICS_SAMPLE = 20_000
K_DIAGNOSTICS_SILHOUETTE_SAMPLE = 5_000


def _k_markdown(result) -> str:
    """Inertia, silhouette, Calinski-Harabasz and Davies-Bouldin for k = 2..10."""
    indicators = result.indicators
    if len(indicators) > K_DIAGNOSTICS_SAMPLE:
        indicators = indicators.sample(n=K_DIAGNOSTICS_SAMPLE, random_state=0)
    table = result.model.diagnose_k(
        indicators.sort_values("customer_id"), range(2, 11), K_DIAGNOSTICS_SILHOUETTE_SAMPLE
    )
    return table.round(4).to_markdown(index=False)


def _model_checks(
    config: GradingConfig, quality: Mapping[str, float], current: pd.DataFrame, migrations
) -> Iterator[AssetCheckResult]:
    key = AssetKey(["tiers", "customer_tiers"])
    kmo = float(quality.get("kmo", float("nan")))
    yield AssetCheckResult(
        asset_key=key,
        check_name="kmo_adequate",
        passed=bool(kmo >= config.min_kmo),
        severity=AssetCheckSeverity.WARN if kmo >= 0.5 else AssetCheckSeverity.ERROR,
        metadata={"kmo": kmo, "threshold": config.min_kmo},
    )
    shares = current.groupby("model_tier").size() / max(len(current), 1)
    smallest = float(shares.min()) if len(shares) else 0.0
    yield AssetCheckResult(
        asset_key=key,
        check_name="smallest_segment_share",
        passed=smallest >= config.min_segment_share,
        severity=AssetCheckSeverity.WARN,
        metadata={"smallest_share": smallest, "threshold": config.min_segment_share},
    )
    stayed = migrations[migrations["movement"].isin(["same", "up", "down"])]
    moved = stayed.loc[stayed["from_tier"] != stayed["to_tier"], "customers"].sum()
    changed = float(moved / stayed["customers"].sum()) if len(stayed) else 0.0
    yield AssetCheckResult(
        asset_key=key,
        check_name="changed_tier_share",
        passed=changed <= config.max_changed_share,
        severity=AssetCheckSeverity.WARN
        if changed <= 2 * config.max_changed_share
        else AssetCheckSeverity.ERROR,
        metadata={
            "changed_share": changed,
            "threshold": config.max_changed_share,
            "customers_compared": int(stayed["customers"].sum()) if len(stayed) else 0,
        },
    )


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
