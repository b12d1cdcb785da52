"""What the CLI prints while a run goes: a line per finished step, the full log in a file.

Dagster's events and dbt's output (about 1,700 lines for the sample) go to
``<warehouse dir>/logs/run-<UTC time>.log``; the terminal gets one progress line
per step (elapsed time, the step, its duration, what it materialised) and then
the summary. ``--verbose`` prints everything as it happens instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

#: log files kept per warehouse folder; older ones are deleted when a run starts
KEEP_LOGS = 20


def log_file(warehouse: Path, now: dt.datetime | None = None) -> Path:
    """A new log file's path for a run on ``warehouse``; prunes the old ones."""
    folder = warehouse.parent / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    logs = sorted(folder.glob("run-*.log"))
    for old in logs[: max(0, len(logs) - (KEEP_LOGS - 1))]:
        old.unlink(missing_ok=True)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return folder / f"run-{stamp}.log"


class Progress:
    """An event listener (``DagsterInstance.add_event_listener``) that prints a line
    when a step ends: elapsed time since the run started, the step, how long it took,
    the assets it materialised, the checks it ran and the rows it landed."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.started = time.monotonic()
        self.steps: dict[str, dict[str, Any]] = {}

    def __call__(self, entry: Any) -> None:
        event = entry.dagster_event
        if event is None or event.step_key is None:
            return
        step = self.steps.setdefault(
            event.step_key, {"start": time.monotonic(), "assets": 0, "checks": 0, "rows": 0}
        )
        kind = event.event_type_value
        if kind == "STEP_START":  # (events planned for the step come before it)
            step["start"] = time.monotonic()
        elif kind == "ASSET_MATERIALIZATION":
            step["assets"] += 1
            rows = event.event_specific_data.materialization.metadata.get("rows")
            if rows is not None and isinstance(rows.value, int):
                step["rows"] += rows.value
        elif kind == "ASSET_CHECK_EVALUATION":
            step["checks"] += 1
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            self.out.write(self.line(event.step_key, step, kind == "STEP_SUCCESS") + "\n")
            self.out.flush()

    def line(self, name: str, step: dict[str, Any], succeeded: bool) -> str:
        now = time.monotonic()
        elapsed = int(now - self.started)
        done = [_count(step["assets"], "asset")] if step["assets"] else []
        done += [_count(step["checks"], "check")] if step["checks"] else []
        done += [f"{_count(step['rows'], 'row')} landed"] if step["rows"] else []
        what = f" ({', '.join(done)})" if done else ""
        outcome = f"done in {now - step['start']:.1f} s" if succeeded else "FAILED"
        return f"[{elapsed // 60:2d}:{elapsed % 60:02d}] {name:<28} {outcome}{what}"


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


@contextlib.contextmanager
def quiet(log: Path | None) -> Iterator[IO[str]]:
    """Send what the run prints (dbt's output, Dagster's events, warnings) to ``log``;
    yields the terminal's stdout for progress lines. ``log=None``: print everything."""
    terminal = sys.stdout
    if log is None:
        yield terminal
        return
    with (
        open(log, "w", encoding="utf-8") as handle,
        contextlib.redirect_stdout(handle),
        contextlib.redirect_stderr(handle),
    ):
        yield terminal
