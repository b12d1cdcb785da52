"""Headless entry point for scripts and cron: ``python -m orchestration run``.

Runs Dagster's ``tiering_job`` in-process with the environment's configuration
(``TIERS_*`` variables), prints a short summary and exits 0; exits 2 when the
input or the configuration is unusable and 1 when a later step fails, a gate of
the grading included (unless the operator accepts the grading with
``--accept-grading`` or ``TIERS_ACCEPT_GRADING=1``). Either way nothing is
published.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import duckdb
import yaml

from orchestration import publish, runlock, runlog
from orchestration.config import (
    ConfigError,
    Settings,
    VolumeBounds,
    parse_flag,
    parse_grade_from,
    prepare_manifest,
)
from orchestration.landing import LandingError
from orchestration.report import summary, tier_summary
from orchestration.tiering import recorded_grading

#: Errors that mean "the input or the configuration is unusable": exit code 2.
INPUT_ERRORS = {ConfigError.__name__, LandingError.__name__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser(
        "run",
        help="run the tiering job: land TIERS_RAW_DIR, build the marts, grade, publish "
        "to TIERS_WAREHOUSE and print a summary",
    )
    run_parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild every month-end from scratch instead of adding only new ones "
        "(needed after changing the window_months or cash_spread_rate dbt vars)",
    )
    run_parser.add_argument(
        "--timings",
        type=Path,
        metavar="FILE",
        help="write each step's start and end time (Unix seconds) to FILE as JSON",
    )
    run_parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="Dagster run configuration (YAML, as in the launchpad), e.g. the grading's "
        "model settings under ops: tier_model: config:, gate thresholds under "
        "ops: grading_gates: config:, hysteresis_patience under ops: tier_models: config:",
    )
    run_parser.add_argument(
        "--accept-grading",
        action="store_true",
        help="publish the grading even if gates fail (KMO, segment size, VIP share, tier "
        "changes); the failed gates are logged and recorded in tiers.model_runs "
        "(also TIERS_ACCEPT_GRADING=1)",
    )
    run_parser.add_argument(
        "--score-only",
        action="store_true",
        help="grade the month with the last fitted model, scored in SQL, without a refit "
        "(runs scoring_job)",
    )
    run_parser.add_argument(
        "--from",
        dest="grade_from",
        metavar="YYYY-MM",
        help="re-grade from this month-end on, through the latest graded (also "
        "TIERS_GRADE_FROM); by default a run grades the month-ends not graded yet",
    )
    run_parser.add_argument(
        "--backfill",
        action="store_true",
        help="re-grade every month-end the marts hold, in order (with --from: from that "
        "month-end on)",
    )
    run_parser.add_argument(
        "--verbose",
        action="store_true",
        help="print Dagster's events and dbt's output as they happen (by default they go "
        "to the run's log file, <warehouse folder>/logs/, and a line per step is printed)",
    )
    args = parser.parse_args(argv)
    try:
        if args.backfill or args.grade_from:
            # read by the tiers resource (orchestration.assets.TiersResource)
            os.environ["TIERS_GRADE_FROM"] = args.grade_from or "first"
        parse_grade_from(os.environ.get("TIERS_GRADE_FROM"))
        settings = Settings.from_env()
        VolumeBounds.from_env()  # checked before the build, read again by raw_files
        publish.storage_version()
        config = run_config(args.config, args.accept_grading or parse_flag("TIERS_ACCEPT_GRADING"))
        prepare_manifest()
    except ConfigError as error:
        print(f"error: {error}\nNothing was published.", file=sys.stderr)
        return 2
    from dagster import DagsterInstance, validate_run_config
    from dagster._core.errors import DagsterInvalidConfigError

    from orchestration.assets import FULL_REFRESH_TAG  # imports read the dbt manifest
    from orchestration.definitions import defs

    job = defs.resolve_job_def("scoring_job" if args.score_only else "tiering_job")
    try:
        validate_run_config(job, config)
    except DagsterInvalidConfigError as error:
        reasons = "; ".join(e.message for e in error.errors) or str(error)
        if "tier_tables" in (config.get("ops") or {}):
            reasons += (
                " (the tier_tables op is gone: model settings are under tier_model, "
                "hysteresis_patience under tier_models, gates under grading_gates)"
            )
        print(
            f"error: the run configuration is invalid: {reasons}\nNothing was published.",
            file=sys.stderr,
        )
        return 2
    print(f"Running {job.name}: {settings.raw_dir} -> {settings.warehouse}", flush=True)
    owner = f"a CLI run ({' '.join(sys.argv[1:]) or 'run'})"
    try:
        runlock.claim(settings.warehouse, owner)
    except runlock.RunLockBusy as error:
        print(f"error: {error}.", file=sys.stderr)
        return 2
    try:
        # DAGSTER_HOME (`make run` sets the one `make dev` uses): the run, its
        # materialisations and checks are recorded where the UI shows them
        instance = (
            DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
        )
        log = None if args.verbose else runlog.log_file(settings.warehouse)
        if log:
            print(f"Log: {log}", flush=True)
        run_id = str(uuid.uuid4())  # known before the run, for the listener
        with runlog.quiet(log) as terminal:
            if log:
                instance.add_event_listener(run_id, runlog.Progress(terminal))
            result = job.execute_in_process(
                run_config=config,
                instance=instance,
                run_id=run_id,
                tags={FULL_REFRESH_TAG: "true"} if args.full_refresh else {},
                raise_on_error=False,
            )
    finally:
        runlock.release(settings.warehouse, owner)
    if args.timings:
        write_timings(instance, result, args.timings)
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        errors = [e.step_failure_data.error for e in failures if e.step_failure_data.error]
        root = [cause for error in errors for cause in _chain(error)]
        kinds = {cause.cls_name for cause in root}
        # a dagster.Failure (a gate) carries its reason as the description
        described = [
            e.step_failure_data.user_failure_data.description
            for e in failures
            if e.step_failure_data.user_failure_data
            and e.step_failure_data.user_failure_data.description
        ]
        message = "; ".join(described or [c.message.strip() for c in root[-1:]])
        message = message or "the job failed"
        step = failures[0].step_key if failures else "?"
        trace = f"; the trace is in {log}" if log else ""
        print(
            f"error in step {step}: {message}\nNothing was published; "
            f"{settings.warehouse} is as it was{trace}.",
            file=sys.stderr,
        )
        return 2 if kinds & INPUT_ERRORS else 1
    print(summary(settings.warehouse))
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        graded_now = recorded_grading(con, result.run_id)
    print(tier_summary(settings.warehouse, graded_now))
    return 0


def run_config(path: Path | None, accept_grading: bool) -> dict[str, Any]:
    """The job's run configuration: ``path``'s YAML (if given), with the operator's acceptance.

    Raises :class:`ConfigError` when the file cannot be read or is not a mapping.
    """
    config: dict[str, Any] = {}
    if path is not None:
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ConfigError(f"run configuration {path}: cannot read it ({error})") from None
        if not isinstance(config, dict):
            raise ConfigError(f"run configuration {path}: expected a mapping (ops: ...)")
    if accept_grading:
        ops = config.setdefault("ops", {})
        grading = ops.setdefault("grading_gates", {}).setdefault("config", {})
        grading["accept_gates"] = True
    return config


def write_timings(instance, result, path: Path) -> None:
    """Each step's start and end (Unix seconds) from the run's event log, as JSON."""
    steps: dict[str, dict[str, float]] = {}
    for record in instance.all_logs(result.run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            steps[event.step_key] = {"start": record.timestamp}
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps.setdefault(event.step_key, {})["end"] = record.timestamp
    path.write_text(
        json.dumps(
            {
                "run_id": result.run_id,
                "success": result.success,
                "steps": [{"step": key, **times} for key, times in steps.items()],
            },
            indent=2,
        )
    )


def _chain(error):
    """The error and its causes, outermost first."""
    while error is not None:
        yield error
        error = error.cause


if __name__ == "__main__":
    sys.exit(main())
