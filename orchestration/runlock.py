"""One run at a time per warehouse, whoever starts it: the CLI, the Dagster UI, the
schedule or the sensor.

A run clears what other runs left under ``.build/`` and replaces the published
file, so two runs on one warehouse would delete each other's builds. Every run
therefore holds an exclusive ``flock`` on ``.<warehouse name>.lock`` beside the
warehouse: the CLI for its whole process, a Dagster run from its first step (the
jobs run their steps in one process) until it has published. The kernel releases
the lock when the process ends, however it ends, so a killed run never leaves a
stale lock. The lock file names its holder, for the message the refused run gives.

Within one process the lock is held once: a Dagster run inside the CLI's process
finds it held and goes on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class RunLockBusy(RuntimeError):
    """Another process is running on this warehouse."""


#: the locks this process holds: lock file -> (open handle, owner it was taken for)
_held: dict[Path, tuple[IO[str], str]] = {}


def lock_path(warehouse: Path) -> Path:
    return warehouse.with_name(f".{warehouse.name}.lock")


def claim(warehouse: Path, owner: str) -> None:
    """Hold the warehouse's run lock for ``owner`` (a run id, "the CLI").

    Does nothing when this process holds it already; raises :class:`RunLockBusy`,
    naming the holder, when another process does.
    """
    path = lock_path(warehouse).absolute()
    if path in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLockBusy(
            f"another run is building {warehouse}: {holder} (lock {path}); nothing was "
            "changed, run again when it has finished"
        ) from None
    since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    handle.truncate(0)
    handle.write(f"{owner}, process {os.getpid()}, since {since}\n")
    handle.flush()
    _held[path] = (handle, owner)


def release(warehouse: Path, owner: str | None = None) -> None:
    """Let the lock go; with ``owner``, only if it was taken for that owner (a run
    releases what it claimed, never the CLI's lock around it)."""
    path = lock_path(warehouse).absolute()
    if path not in _held or (owner is not None and _held[path][1] != owner):
        return
    handle, _ = _held.pop(path)
    handle.truncate(0)
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


@contextlib.contextmanager
def holding(warehouse: Path, owner: str) -> Iterator[None]:
    """Hold the lock for the ``with`` block (:func:`claim`, then :func:`release`)."""
    claim(warehouse, owner)
    try:
        yield
    finally:
        release(warehouse, owner)
