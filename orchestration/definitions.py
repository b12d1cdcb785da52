"""The Dagster code location: ``dagster dev -m orchestration.definitions`` (``make dev``).

``tiering_job`` materialises everything from the raw files to the published
tiers, fitting the model on the graded month; ``scoring_job`` does the same
but scores the month with the last fitted model, in SQL, without a refit. A
monthly schedule and a sensor on ``TIERS_RAW_DIR`` start ``tiering_job``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
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
    in_process_executor,
    sensor,
)
from dagster_dbt import DbtCliResource

from orchestration.assets import (
    FINGERPRINT_TAG,
    TiersResource,
    customer_assignments,
    dbt_project,
    graded_month_ends,
    grading_gates,
    published_warehouse,
    raw_files,
    staging_models,
    tier_model,
    tier_models,
    warehouse_models,
)
from orchestration.config import Settings, sensor_settle_seconds
from orchestration.landing import landing_fingerprint

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


@dataclass(frozen=True)
class SensorDecision:
    cursor: str  # JSON: {"requested": last run's fingerprint, "seen": fingerprint, "since": t}
    run_for: str | None  # the fingerprint to request a run for, None to wait
    reason: str


def decide(cursor: str | None, fingerprint: str, now: float, settle: float) -> SensorDecision:
    """What the sensor does on a tick (a pure function, tested on its own).

    A fingerprint the folder has not shown before starts a wait; a run is requested
    only once the same fingerprint has been seen for ``settle`` seconds, so a file
    that is still growing (a copy in progress) never triggers one. A folder back to
    the fingerprint of the last run requested asks for nothing.
    """
    state = json.loads(cursor) if cursor and cursor.startswith("{") else {"requested": cursor}
    requested = state.get("requested")
    if fingerprint == requested:
        return SensorDecision(json.dumps({"requested": requested}), None, "no new files")
    if state.get("seen") != fingerprint:
        waiting = {"requested": requested, "seen": fingerprint, "since": now}
        return SensorDecision(
            json.dumps(waiting),
            None,
            f"the landing folder changed: waiting until it is unchanged for {settle:g} s",
        )
    if now - state["since"] < settle:
        return SensorDecision(
            json.dumps(state),
            None,
            f"the landing folder has been unchanged for {now - state['since']:.0f} s of "
            f"{settle:g} s",
        )
    return SensorDecision(json.dumps({"requested": fingerprint}), fingerprint, "files settled")


@sensor(job=tiering_job, minimum_interval_seconds=300, default_status=DefaultSensorStatus.STOPPED)
def new_raw_files(context: SensorEvaluationContext):
    """Start a run when the files in TIERS_RAW_DIR changed and then stayed unchanged
    for TIERS_SENSOR_SETTLE_SECONDS (new, replaced or removed files). The run checks
    that the folder still has the fingerprint it was asked for."""
    raw_dir = Settings.from_env().raw_dir
    if not raw_dir.is_dir():
        return SkipReason(f"{raw_dir} is not a folder")
    fingerprint = landing_fingerprint(raw_dir)
    decision = decide(context.cursor, fingerprint, time.time(), sensor_settle_seconds())
    context.update_cursor(decision.cursor)
    if decision.run_for is None:
        return SkipReason(decision.reason)
    return RunRequest(run_key=decision.run_for, tags={FINGERPRINT_TAG: decision.run_for})


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
            graded_month_ends,
        ],
        asset_checks=[grading_gates],
        jobs=[tiering_job, scoring_job],
        schedules=[monthly_schedule],
        sensors=[new_raw_files],
        # every step in the run's own process: no start-up per step, and the run
        # lock taken by the first step is held until the publish (runlock)
        executor=in_process_executor,
        resources={
            # the dbt of this environment, found without relying on PATH
            "dbt": DbtCliResource(
                project_dir=dbt_project, dbt_executable=str(Path(sys.executable).with_name("dbt"))
            ),
            "tiers": tiers or TiersResource(),
        },
    )


defs = make_definitions()
