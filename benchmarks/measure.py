"""Run one contender in its own process and measure its wall time and memory.

Memory is the resident set (RSS) of the process and all its descendants (dbt
runs as a child of the job), sampled every ``SAMPLE_SECONDS``; a peak is the
largest sample. RSS counts a page shared by two processes twice, so a tree's
figure can only err high. The kernel's ``ru_maxrss`` of the child (the largest
single process of the tree) is kept beside it as a cross-check; Linux starts a
forked child's count at its parent's size (here the bench's, a few hundred MB),
so it too can only err high.

The job's steps (from ``python -m orchestration run --timings``) are attributed
to stages, and each stage gets the wall time of its steps and the largest
sample taken inside them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.05

#: The stage each step of ``tiering_job`` belongs to, in the order they run.
STAGE_OF_STEP = {
    "raw_files": "ingestion",
    "staging_models": "ingestion",
    "warehouse_models": "dbt build",
    "tier_model": "tiering",
    "tiers__customer_assignments": "tiering",
    "tier_models": "tiering",
    "grading_gates": "tiering",
    "published_warehouse": "publish",
}
STAGES = ("ingestion", "dbt build", "tiering", "publish")
#: Ingestion and the marts together: the work the reference contenders also do.
MARTS = "ingestion + dbt build"
#: Outside every step: interpreter start, imports, Dagster's set-up and tear-down.
OVERHEAD = "overhead"
WHOLE_JOB = "whole job"


@dataclass
class Measured:
    """One finished process: when it ran, its memory samples and how it ended."""

    start: float  # Unix seconds, like the job's step times
    end: float
    samples: list[tuple[float, int]]  # (Unix seconds, RSS bytes of the process tree)
    returncode: int
    max_rss_single_bytes: int  # ru_maxrss: the largest single process of the tree
    stopped: str | None = None  # why the bench killed it: "timed out", "over the memory cap"

    @property
    def wall_s(self) -> float:
        return self.end - self.start

    @property
    def peak_bytes(self) -> int | None:
        return max((rss for _, rss in self.samples), default=None)


@dataclass(frozen=True)
class Figure:
    """Wall time and peak memory of one stage (or of a whole run)."""

    wall_s: float
    peak_bytes: int | None  # None: no sample fell inside (a step shorter than a sample)


@dataclass
class StepWindow:
    step: str
    start: float
    end: float


@dataclass
class Summary:
    """Median figures of repeated runs of the same thing."""

    wall_s: float
    peak_bytes: int | None
    repeats: int
    walls_s: list[float] = field(default_factory=list)


def run_measured(
    command: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    timeout_s: float | None = None,
    memory_cap_bytes: int | None = None,
) -> Measured:
    """Run ``command`` to its end (output to ``log``), sampling its tree's memory.

    Past ``timeout_s`` or ``memory_cap_bytes`` the whole process group is killed
    and ``stopped`` says why.
    """
    with log.open("wb") as output:
        start = time.time()
        child = subprocess.Popen(
            command, env=dict(env), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        root = psutil.Process(child.pid)
        samples: list[tuple[float, int]] = []
        stopped = None
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        while pid == 0:
            now, rss = time.time(), tree_rss(root)
            samples.append((now, rss))
            if timeout_s is not None and now - start > timeout_s:
                stopped = "timed out"
            elif memory_cap_bytes is not None and rss > memory_cap_bytes:
                stopped = "over the memory cap"
            if stopped:
                os.killpg(child.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(SAMPLE_SECONDS)
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        end = time.time()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Measured(
        start=start,
        end=end,
        samples=samples,
        returncode=child.returncode,
        max_rss_single_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
        stopped=stopped,
    )


def tree_rss(root: psutil.Process) -> int:
    """RSS of ``root`` and all its descendants, in bytes; 0 once it has exited."""
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # exited between the listing and the reading
            total += process.memory_info().rss
    return total


def step_windows(timings: Mapping) -> list[StepWindow]:
    """The steps of a ``--timings`` file; an unknown step is an error, not a silent gap."""
    windows = []
    for step in timings["steps"]:
        if step["step"] not in STAGE_OF_STEP:
            raise ValueError(
                f"the job has a step {step['step']!r} that no stage claims; "
                "add it to STAGE_OF_STEP in benchmarks/measure.py"
            )
        windows.append(StepWindow(step["step"], step["start"], step.get("end", step["start"])))
    return windows


def stage_figures(measured: Measured, windows: Sequence[StepWindow]) -> dict[str, Figure]:
    """Wall time and peak memory per stage, for ingestion + marts, overhead and whole job.

    A stage's wall time is the sum of its steps' durations, its peak the largest
    sample inside them; the overhead is the rest of the process's life.
    """
    figures = {}
    for stage in STAGES:
        mine = [w for w in windows if STAGE_OF_STEP[w.step] == stage]
        if mine:
            figures[stage] = Figure(
                wall_s=sum(w.end - w.start for w in mine),
                peak_bytes=peak_inside(measured.samples, mine),
            )
    marts = [w for w in windows if STAGE_OF_STEP[w.step] in ("ingestion", "dbt build")]
    figures[MARTS] = Figure(
        wall_s=sum(w.end - w.start for w in marts),
        peak_bytes=peak_inside(measured.samples, marts),
    )
    in_steps = sum(w.end - w.start for w in windows)
    outside = [(t, rss) for t, rss in measured.samples if not inside(t, windows)]
    figures[OVERHEAD] = Figure(
        wall_s=measured.wall_s - in_steps,
        peak_bytes=max((rss for _, rss in outside), default=None),
    )
    figures[WHOLE_JOB] = Figure(measured.wall_s, measured.peak_bytes)
    return figures


def inside(moment: float, windows: Sequence[StepWindow]) -> bool:
    return any(w.start <= moment <= w.end for w in windows)


def peak_inside(samples: Sequence[tuple[float, int]], windows: Sequence[StepWindow]) -> int | None:
    return max((rss for t, rss in samples if inside(t, windows)), default=None)


def summarise(figures: Sequence[Figure]) -> Summary:
    """Medians over repeated runs; peaks over the runs that have one."""
    peaks = [f.peak_bytes for f in figures if f.peak_bytes is not None]
    return Summary(
        wall_s=statistics.median(f.wall_s for f in figures),
        peak_bytes=int(statistics.median(peaks)) if peaks else None,
        repeats=len(figures),
        walls_s=[f.wall_s for f in figures],
    )
