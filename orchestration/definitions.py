"""The Dagster code location: ``dagster dev -m orchestration.definitions`` (``make dev``).

``tiering_job`` materialises everything from the raw files to the published
tiers, fitting the model on the graded month; ``scoring_job`` does the same
but scores the month with the last fitted model, in SQL, without a refit. A
monthly schedule and a sensor on ``TIERS_RAW_DIR`` start ``tiering_job``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    sensor,
)
from dagster_dbt import DbtCliResource

from orchestration.assets import (
    TiersResource,
    customer_assignments,
    dbt_project,
    grading_gates,
    published_warehouse,
    raw_files,
    staging_models,
    tier_model,
    tier_models,
    warehouse_models,
)
from orchestration.config import Settings

tiering_job = define_asset_job(
    "tiering_job",
    selection=AssetSelection.all(),
    description="Raw files -> staging and marts -> model fit -> tiers -> published warehouse "
    "and snapshot.",
)

scoring_job = define_asset_job(
    "scoring_job",
    selection=AssetSelection.all() - AssetSelection.assets(tier_model, customer_assignments),
    description="As tiering_job, but the month is scored in SQL with the last fitted model "
    "(no refit): for new customers between refits.",
)

monthly_schedule = ScheduleDefinition(
    name="monthly_after_month_end",
    job=tiering_job,
    cron_schedule="0 6 2 * *",  # 06:00 on the 2nd: the month before is complete
    default_status=DefaultScheduleStatus.STOPPED,
)


def landing_fingerprint(raw_dir: Path) -> str:
    """Names, sizes and modification times of every file in the landing folder."""
    digest = hashlib.sha256()
    for path in sorted(p for p in raw_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(raw_dir)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@sensor(job=tiering_job, minimum_interval_seconds=300, default_status=DefaultSensorStatus.STOPPED)
def new_raw_files(context: SensorEvaluationContext):
    """Start a run when the files in TIERS_RAW_DIR change (new, replaced or removed)."""
    raw_dir = Settings.from_env().raw_dir
    if not raw_dir.is_dir():
        return SkipReason(f"{raw_dir} is not a folder")
    fingerprint = landing_fingerprint(raw_dir)
    if fingerprint == context.cursor:
        return SkipReason("no new files")
    context.update_cursor(fingerprint)
    return RunRequest(run_key=fingerprint)


def make_definitions(tiers: TiersResource | None = None) -> Definitions:
    """The code location; ``tiers`` overrides the settings read from the environment."""
    return Definitions(
        assets=[
            raw_files,
            staging_models,
            warehouse_models,
            tier_model,
            customer_assignments,
            tier_models,
            published_warehouse,
        ],
        asset_checks=[grading_gates],
        jobs=[tiering_job, scoring_job],
        schedules=[monthly_schedule],
        sensors=[new_raw_files],
        resources={
            # the dbt of this environment, found without relying on PATH
            "dbt": DbtCliResource(
                project_dir=dbt_project, dbt_executable=str(Path(sys.executable).with_name("dbt"))
            ),
            "tiers": tiers or TiersResource(),
        },
    )


defs = make_definitions()
