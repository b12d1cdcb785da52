"""Headless entry point for scripts and cron: ``python -m orchestration run``."""

from __future__ import annotations

import argparse
import sys

from orchestration.config import ConfigError, Settings
from orchestration.landing import LandingError
from orchestration.pipeline import PipelineError, run, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser(
        "run",
        help="land TIERS_RAW_DIR, build the warehouse, publish it to "
        "TIERS_WAREHOUSE and print a summary",
    )
    run_parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild every month-end from scratch instead of adding only new ones "
        "(needed after changing the window_months or cash_spread_rate dbt vars)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        print(f"Landing {settings.raw_dir} -> {settings.warehouse}", flush=True)
        result = run(settings, full_refresh=args.full_refresh)
    except (ConfigError, LandingError) as error:
        print(f"error: {error}\nNothing was published.", file=sys.stderr)
        return 2
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary(result.warehouse))
    return 0


if __name__ == "__main__":
    sys.exit(main())
