"""One reference contender in a process of its own, for the benchmark to measure.

``python -m benchmarks.contender {duckdb,pandas} RAW_DIR --load-date D [--as-of D]
--result FILE`` computes the indicators with ``benchmarks/reference.py`` and writes
to FILE how long the computation took (imports excluded, as the job's stages
exclude its start-up) and what it produced. Exit 3 on ``MemoryError``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from benchmarks.reference import indicators_duckdb, indicators_pandas

CONTENDERS = {"duckdb": indicators_duckdb, "pandas": indicators_pandas}
OUT_OF_MEMORY_EXIT = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contender")
    parser.add_argument("contender", choices=sorted(CONTENDERS))
    parser.add_argument("raw_dir", type=Path, help="landing folder")
    parser.add_argument("--load-date", type=dt.date.fromisoformat, required=True)
    parser.add_argument(
        "--as-of",
        type=dt.date.fromisoformat,
        action="append",
        help="month-end to compute (repeatable); default: every month-end the data covers",
    )
    parser.add_argument("--window-months", type=int, default=12)
    parser.add_argument("--cash-spread-rate", type=float, default=0.015)
    parser.add_argument("--result", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)

    started = time.time()
    try:
        indicators = CONTENDERS[args.contender](
            args.raw_dir,
            args.load_date,
            window_months=args.window_months,
            cash_spread_rate=args.cash_spread_rate,
            as_of_dates=args.as_of,
        )
    except MemoryError:
        args.result.write_text(json.dumps({"error": "out of memory"}))
        return OUT_OF_MEMORY_EXIT
    ended = time.time()
    result = {
        "start": started,
        "end": ended,
        "rows": len(indicators),
        "month_ends": int(indicators["as_of_date"].nunique()),
    }
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
