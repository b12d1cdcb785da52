"""Dagster's SQLite run storage without a disk flush per event.

A run of this job records about 400 events before its first step (every asset
and asset check it plans) and one per check result after. Dagster's SQLite
storage opens a connection per event, commits and closes it, and SQLite's
defaults flush to disk at the commit and again at the checkpoint on close: on
this project's machine that was 50 ms an event, 20 s before the first step of
a run and as much again within it (measured with py-spy). ``synchronous`` is a
setting of each connection, so this sets it on every SQLite connection that
SQLAlchemy opens in the process (only Dagster's storage uses SQLite here).

With ``OFF`` (the default, ``TIERS_DAGSTER_SQLITE_SYNC``) SQLite hands its
writes to the operating system without waiting for the disk. A crash of the
process loses nothing; a power cut or a crash of the machine during a run may
damage the run history in ``DAGSTER_HOME`` (never the warehouse, which DuckDB
writes and syncs itself). ``FULL`` restores SQLite's default.
"""

from __future__ import annotations

import os
import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine

from orchestration.config import ConfigError

SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def sync_mode(environ=os.environ) -> str:
    """``TIERS_DAGSTER_SQLITE_SYNC``, else ``OFF``."""
    mode = (environ.get("TIERS_DAGSTER_SQLITE_SYNC") or "OFF").strip().upper()
    if mode not in SYNC_MODES:
        raise ConfigError(
            f"TIERS_DAGSTER_SQLITE_SYNC={environ['TIERS_DAGSTER_SQLITE_SYNC']!r}: expected one "
            f"of {', '.join(SYNC_MODES)}"
        )
    return mode


SYNC_MODE = sync_mode()


@event.listens_for(Engine, "connect")
def _set_sync_mode(connection, _record) -> None:
    if isinstance(connection, sqlite3.Connection):
        connection.execute(f"PRAGMA synchronous={SYNC_MODE}")
