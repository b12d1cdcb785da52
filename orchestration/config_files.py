"""Land the two business-edited config files as raw tables for dbt.

=============================  ===============================  ========================
file                           raw table                        dbt model
=============================  ===============================  ========================
``config/service_plans.yml``   ``raw.service_plans``            ``tiers.service_plans``
tier overrides (CSV)           ``raw.tier_overrides``           ``tiers.override_audit``
=============================  ===============================  ========================

Like :mod:`orchestration.landing`, this module judges whole files only and
raises :class:`~orchestration.config.ConfigError` naming the file (and the
column) before anything is written. The service plans are small and all of a
piece, so every problem in them is a file problem: :func:`load_service_plans`
checks the whole file. The overrides' lines are judged in dbt
(``stg_crm__tier_overrides``, then ``override_audit`` for the month graded):
:func:`land_overrides` keeps every data line, as written.

Both tables are replaced on every run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import yaml

from ml import TIER_RANK, TIERS
from orchestration.config import REPO_ROOT, ConfigError

SERVICE_PLANS_PATH = REPO_ROOT / "config" / "service_plans.yml"

PLAN_FIELDS = (
    "display_name",
    "manager_level",
    "contact_frequency",
    "contacts_per_year",
    "service_time_share",
    "description",
)
#: Fields a plan may leave out, with the value then used.
OPTIONAL_PLAN_FIELDS = {"hours_per_contact": 1.0}
_PLAN_TEXT_FIELDS = ("display_name", "manager_level", "contact_frequency", "description")
SHARE_TOLERANCE = 1e-9

#: ``raw.service_plans``: column and DuckDB type, in the order of ``load_service_plans``.
SERVICE_PLAN_COLUMNS = {
    "tier": "varchar",
    "tier_rank": "bigint",
    "display_name": "varchar",
    "manager_level": "varchar",
    "contact_frequency": "varchar",
    "contacts_per_year": "double",
    "hours_per_contact": "double",
    "service_time_share": "double",
    "plan_version": "varchar",
    "description": "varchar",
}

#: Columns the overrides file's header must have (matched trimmed, any case).
OVERRIDE_COLUMNS = ("customer_id", "tier", "reason", "valid_until")
#: ``raw.tier_overrides``: column and DuckDB type.
RAW_OVERRIDE_COLUMNS = {
    **dict.fromkeys(OVERRIDE_COLUMNS, "varchar"),
    "source_line": "bigint",
    "field_count": "bigint",
    "header_field_count": "bigint",
    "record": "varchar",
}


# ----------------------------------------------------------------- service plans


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key twice in a mapping (PyYAML keeps the last one)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"key {key!r} appears twice",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_service_plans(path: str | Path = SERVICE_PLANS_PATH) -> pd.DataFrame:
    """The service plans of the business-edited YAML file, checked.

    Returns one row per tier, ordered by ``tier_rank``: ``tier`` (code),
    ``tier_rank`` (int, 1 = vip .. 6 = sleeping), ``display_name``,
    ``manager_level``, ``contact_frequency`` (text), ``contacts_per_year``
    (float, planned contacts per customer and year), ``hours_per_contact``
    (float, a manager's hours per contact; 1 when left out), ``service_time_share``
    (float 0-1, share of the managers' service time; the six sum to 1),
    ``plan_version`` (the file's ``version``), ``description``.

    Raises :class:`ConfigError` naming the file and every problem found: file
    unreadable or not YAML, a tier code missing, unknown or given twice, a field
    missing, empty, unknown or of the wrong type, a share outside [0, 1], or
    shares not summing to 1 (within 1e-9).
    """
    path = Path(path)
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as error:
        raise ConfigError(f"service plans {path}: cannot read the file ({error})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"service plans {path}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"service plans {path}: not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("tiers"), dict):
        raise ConfigError(
            f"service plans {path}: expected a 'version' and a 'tiers' mapping with one "
            f"entry per tier code ({', '.join(TIERS)})"
        )

    problems = []
    unknown_keys = sorted(map(str, set(document) - {"version", "tiers"}))
    if unknown_keys:
        problems.append(f"unknown top-level keys {unknown_keys} (allowed: version, tiers)")
    version = document.get("version")
    if version is None or not str(version).strip():
        problems.append("'version' is missing (e.g. version: \"2026-11\")")
    plans = document["tiers"]
    unknown = sorted(str(code) for code in plans if code not in TIER_RANK)
    if unknown:
        problems.append(f"unknown tier codes {unknown} (allowed: {', '.join(TIERS)})")
    missing = [code for code in TIERS if code not in plans]
    if missing:
        problems.append(f"tier codes missing: {missing}")

    rows = []
    for code in (code for code in TIERS if code in plans):
        plan = plans[code]
        if not isinstance(plan, dict):
            problems.append(f"tier {code}: expected the fields {', '.join(PLAN_FIELDS)}")
            continue
        problems += [f"tier {code}: {problem}" for problem in _plan_problems(plan)]
        rows.append({"tier": code, **OPTIONAL_PLAN_FIELDS, **plan})
    shares = [row.get("service_time_share") for row in rows]
    if not problems:
        total = math.fsum(shares)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            problems.append(f"service_time_share values sum to {total:.10g}, not 1")
    if problems:
        raise ConfigError(f"service plans {path}: " + "; ".join(problems))

    out = pd.DataFrame(rows)
    out["tier_rank"] = out["tier"].map(TIER_RANK).astype(np.int64)
    out["contacts_per_year"] = out["contacts_per_year"].astype(np.float64)
    out["hours_per_contact"] = out["hours_per_contact"].astype(np.float64)
    out["service_time_share"] = out["service_time_share"].astype(np.float64)
    out["plan_version"] = str(version).strip()
    out = out[list(SERVICE_PLAN_COLUMNS)].sort_values("tier_rank").reset_index(drop=True)
    for column in ("tier", *_PLAN_TEXT_FIELDS, "plan_version"):
        out[column] = out[column].astype("str").str.strip()
    return out


def _plan_problems(plan: dict) -> list[str]:
    problems = []
    missing = [field for field in PLAN_FIELDS if plan.get(field) is None]
    if missing:
        problems.append(f"fields missing: {missing}")
    allowed = (*PLAN_FIELDS, *OPTIONAL_PLAN_FIELDS)
    unknown = sorted(str(field) for field in set(plan) - set(allowed))
    if unknown:
        problems.append(f"unknown fields {unknown} (allowed: {', '.join(allowed)})")
    for field in _PLAN_TEXT_FIELDS:
        value = plan.get(field)
        if value is not None and not str(value).strip():
            problems.append(f"{field} is empty")
    contacts = plan.get("contacts_per_year")
    if contacts is not None and not (_is_number(contacts) and contacts >= 0):
        problems.append(f"contacts_per_year must be a number >= 0, not {contacts!r}")
    hours = plan.get("hours_per_contact")
    if hours is not None and not (_is_number(hours) and hours >= 0):
        problems.append(f"hours_per_contact must be a number of hours >= 0, not {hours!r}")
    share = plan.get("service_time_share")
    if share is not None and not (_is_number(share) and 0 <= share <= 1):
        problems.append(
            f"service_time_share must be a number between 0 and 1 (0.30 = 30 %), not {share!r}"
        )
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def land_service_plans(
    con: duckdb.DuckDBPyConnection, path: str | Path = SERVICE_PLANS_PATH
) -> pd.DataFrame:
    """Check the service plans file and replace ``raw.service_plans`` with its rows.

    Returns :func:`load_service_plans`'s frame (the rows written); raises its
    :class:`ConfigError` before writing anything.
    """
    plans = load_service_plans(path)
    _replace_table(con, "service_plans", SERVICE_PLAN_COLUMNS, plans)
    return plans


# --------------------------------------------------------------------- overrides


def land_overrides(con: duckdb.DuckDBPyConnection, path: str | Path | None) -> int:
    """Replace ``raw.tier_overrides`` with every data line of the CRM team's overrides file.

    The file: UTF-8 (a BOM is fine), comma-separated, a header row with at least
    ``customer_id``, ``tier``, ``reason``, ``valid_until`` (names matched without
    regard to case or surrounding spaces; extra columns are ignored). Lines that
    are entirely empty are skipped; every other line becomes one row, whatever
    it holds: the four columns as written (untrimmed; NULL for a line whose
    field count differs from the header's), ``source_line`` (line number in the
    file, the header being line 1), ``field_count`` and ``header_field_count``,
    and ``record`` (JSON text of the line's fields: an object by header name,
    or an array when the field count is wrong). The rows are judged in dbt
    (``stg_crm__tier_overrides``, ``override_audit``).

    ``path`` None (no overrides configured) gives an empty table. A file that
    cannot be read, is not UTF-8, is empty, lacks a required column or names a
    column twice raises :class:`ConfigError` naming the file and the column,
    before anything is written. Returns the number of rows written.
    """
    rows = [] if path is None else _override_rows(Path(path))
    frame = pd.DataFrame(rows, columns=list(RAW_OVERRIDE_COLUMNS))
    _replace_table(con, "tier_overrides", RAW_OVERRIDE_COLUMNS, frame)
    return len(frame)


def _override_rows(path: Path) -> list[dict[str, Any]]:
    header, lines = _read_csv(path)
    missing = [column for column in OVERRIDE_COLUMNS if column not in header]
    if missing:
        raise ConfigError(
            f"tier overrides {path}: missing column(s) {', '.join(missing)} "
            f"(the header must have {', '.join(OVERRIDE_COLUMNS)})"
        )
    position = {column: header.index(column) for column in OVERRIDE_COLUMNS}
    rows = []
    for line, fields in lines:
        fits = len(fields) == len(header)
        rows.append(
            {
                **{
                    column: fields[position[column]] if fits else None
                    for column in OVERRIDE_COLUMNS
                },
                "source_line": line,
                "field_count": len(fields),
                "header_field_count": len(header),
                "record": json.dumps(
                    dict(zip(header, fields, strict=True)) if fits else fields,
                    ensure_ascii=False,
                ),
            }
        )
    return rows


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(normalised header, [(line number, fields)]) of a CSV file, blank lines skipped."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, fields) for fields in reader]
    except OSError as error:
        raise ConfigError(f"tier overrides {path}: cannot read the file ({error})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"tier overrides {path}: not UTF-8 text") from None
    except csv.Error as error:
        raise ConfigError(f"tier overrides {path}: not a readable CSV file ({error})") from None
    rows = [(line, fields) for line, fields in rows if any(field.strip() for field in fields)]
    if not rows:
        raise ConfigError(
            f"tier overrides {path}: the file is empty; it needs at least the header "
            f"{','.join(OVERRIDE_COLUMNS)}"
        )
    header = [name.strip().lower() for name in rows[0][1]]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ConfigError(f"tier overrides {path}: column(s) {', '.join(repeated)} appear twice")
    return header, rows[1:]


# ------------------------------------------------------------------------ shared


def _replace_table(
    con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, str], frame: pd.DataFrame
) -> None:
    """``raw.<table>`` replaced by ``frame``, each column cast to its declared type."""
    con.execute("create schema if not exists raw")
    con.register("config_file_rows", frame)
    try:
        selected = ", ".join(f"cast({name} as {kind}) as {name}" for name, kind in columns.items())
        con.execute(
            f"create or replace table raw.{table} as select {selected} from config_file_rows"
        )
    finally:
        con.unregister("config_file_rows")
