"""The ``tiers`` schema's tables, shaped from a fitted model and a month of indicators.

Pure functions: DataFrames (and two small config files) in, DataFrames out; no
Dagster, no DuckDB connection. The caller writes the frames to the warehouse.

============================  ==================================================
table                         built by
============================  ==================================================
``service_plans``             :func:`load_service_plans` (``config/service_plans.yml``)
``customer_tiers``            :func:`customer_tiers` (``assign``, hysteresis, overrides)
``customer_tier_history``     :func:`history_upsert` of ``customer_tiers`` rows
``tier_profiles``             :func:`tier_profiles`
``tier_migrations``           :func:`tier_migrations`
overrides audit               :func:`load_overrides` then :func:`override_audit`
``model_runs``                :func:`model_run_row`
``model_k_diagnostics``       :func:`k_diagnostics_table` (``TieringModel.diagnose_k``)
``model_*``                   :func:`model_tables`
============================  ==================================================

Conventions of every frame returned here, so the same inputs give identical
frames and DuckDB reads each column as one SQL type:

- text: pandas ``str`` dtype (VARCHAR); missing text is NaN, which DuckDB stores
  as NULL;
- dates (``as_of_date``, ``from_as_of_date``, ``override_valid_until``,
  ``valid_until`` of the valid overrides): pyarrow ``date32`` (``DATE_DTYPE``),
  missing is ``pd.NA``; DuckDB reads DATE even when every value is missing or
  the frame is empty (an object column of ``datetime.date`` would then become
  DuckDB's NULL type). Date columns read back from DuckDB (``datetime64``) or
  given as ``datetime.date`` / ISO text are accepted wherever a frame comes in;
- counts and ranks: int64; booleans: bool; amounts, shares, scores: float64,
  where NaN means "no value" (a mean over no customers, a metric the model does
  not report) and is written as NULL, never as a NaN a reader has to filter;
- rows sorted by the table's key, index 0..n-1.

Amounts are in the reporting currency of ``marts.customer_indicators``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from ml import ALL_INDICATORS, TIER_RANK, TIERS, TieringModel
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
_PLAN_TEXT_FIELDS = ("display_name", "manager_level", "contact_frequency", "description")
SHARE_TOLERANCE = 1e-9

OVERRIDE_COLUMNS = ("customer_id", "tier", "reason", "valid_until")
_REJECTED_OVERRIDE_COLUMNS = (*OVERRIDE_COLUMNS, "source_line", "record", "rejection")

DATE_DTYPE = pd.ArrowDtype(pa.date32())
DATE_COLUMNS = ("as_of_date", "from_as_of_date", "override_valid_until")
#: Realised revenue: commission net of rebates plus margin interest charged (the
#: mart's ``realised_revenue``; ``imputed_cash_spread`` is notional and left out).
REVENUE_INDICATORS = ("commission_contribution", "interest_contribution")

#: ``model_runs`` quality columns, read from ``TieringModel.quality_``.
RUN_QUALITY_METRICS = (
    "kmo",
    "bartlett_statistic",
    "bartlett_p_value",
    "variance_explained",
    "silhouette",
    "calinski_harabasz",
    "davies_bouldin",
    "inertia",
    "n_clustered",
    "n_dormant_rule",
    "discriminant_agreement",
    "names_differing_from_rules",
)

# Columns of TieringModel.assign that customer_tiers carries: a whitelist, so a
# personal-data column in the input can never reach the tier tables.
_FACTOR = re.compile(r"factor_(\d+)")
_EXPLANATION = re.compile(r"driver_(\d+)(_z)?")
_NEAREST = ("nearest_other_tier", "distance_to_other_tier")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


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
    """The ``tiers.service_plans`` table from the business-edited YAML file.

    Returns one row per tier, ordered by ``tier_rank``: ``tier`` (code),
    ``tier_rank`` (int, 1 = vip .. 6 = sleeping), ``display_name``,
    ``manager_level``, ``contact_frequency`` (text), ``contacts_per_year``
    (float, planned contacts per customer and year), ``service_time_share``
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
        rows.append({"tier": code, **plan})
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
    out["service_time_share"] = out["service_time_share"].astype(np.float64)
    out["plan_version"] = str(version).strip()
    columns = ["tier", "tier_rank", *PLAN_FIELDS[:-1], "plan_version", "description"]
    out = out[columns].sort_values("tier_rank").reset_index(drop=True)
    for column in ("tier", *_PLAN_TEXT_FIELDS, "plan_version"):
        out[column] = out[column].astype("str").str.strip()
    return out


def _plan_problems(plan: dict) -> list[str]:
    problems = []
    missing = [field for field in PLAN_FIELDS if plan.get(field) is None]
    if missing:
        problems.append(f"fields missing: {missing}")
    unknown = sorted(str(field) for field in set(plan) - set(PLAN_FIELDS))
    if unknown:
        problems.append(f"unknown fields {unknown} (allowed: {', '.join(PLAN_FIELDS)})")
    for field in _PLAN_TEXT_FIELDS:
        value = plan.get(field)
        if value is not None and not str(value).strip():
            problems.append(f"{field} is empty")
    contacts = plan.get("contacts_per_year")
    if contacts is not None and not (_is_number(contacts) and contacts >= 0):
        problems.append(f"contacts_per_year must be a number >= 0, not {contacts!r}")
    share = plan.get("service_time_share")
    if share is not None and not (_is_number(share) and 0 <= share <= 1):
        problems.append(
            f"service_time_share must be a number between 0 and 1 (0.30 = 30 %), not {share!r}"
        )
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------- overrides


class Overrides(NamedTuple):
    """Tier overrides read for one as-of date.

    ``valid``: the overrides in force, one per customer: ``customer_id``,
    ``tier`` (code), ``reason``, ``valid_until`` (date, NA = no end),
    ``source_line`` (int, line in the file).

    ``rejected``: every other row of the file: ``customer_id``, ``tier``,
    ``reason``, ``valid_until`` (text as written, stripped; NaN when empty),
    ``source_line``, ``record`` (JSON text of the row's original fields: an
    object by column name, or an array when the field count is wrong) and
    ``rejection`` (every problem found, ``; ``-separated).
    """

    valid: pd.DataFrame
    rejected: pd.DataFrame


def load_overrides(path: str | Path | None, as_of: dt.date, customers: Iterable[str]) -> Overrides:
    """Read the CRM team's tier overrides (CSV) for the month ending ``as_of``.

    The file: UTF-8 (a BOM is fine), comma-separated, a header row with at least
    ``customer_id``, ``tier``, ``reason``, ``valid_until`` (names matched without
    regard to case or surrounding spaces; extra columns ignored). ``tier`` is a
    tier code (case-insensitive); ``valid_until`` is ``YYYY-MM-DD`` or empty for
    no end, and an override is in force up to and including that day. Lines
    that are entirely empty are skipped.

    ``customers`` are the ids graded this month (e.g. ``assigned["customer_id"]``).

    Bad rows never stop the run and never vanish: each goes to ``rejected``
    with its reasons. A row is rejected when its field count differs from the
    header's, ``customer_id`` or ``reason`` is empty, the tier code is unknown,
    ``valid_until`` is not a date, it expired before ``as_of``, the customer is
    not graded this month, or more than one row for the customer would be in
    force (then none of them is applied; an expired row does not count, a row
    whose date cannot be read does).

    ``path`` None (no overrides configured) gives two empty frames. A file that
    cannot be read, is empty or lacks a required column raises
    :class:`ConfigError` naming the file and the column.
    """
    as_of = _as_date(as_of)
    if path is None:
        return Overrides(_valid_frame([]), _rejected_frame([]))
    path = Path(path)
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
        if len(fields) != len(header):
            rows.append(
                {
                    **dict.fromkeys(OVERRIDE_COLUMNS, ""),
                    "source_line": line,
                    "record": json.dumps(fields, ensure_ascii=False),
                    "problems": [
                        f"{len(fields)} fields where the header has {len(header)} "
                        "(a comma in an unquoted reason?)"
                    ],
                    "until": None,
                    "in_force": False,
                }
            )
            continue
        row = {column: fields[position[column]].strip() for column in OVERRIDE_COLUMNS}
        row["tier"] = row["tier"].lower()
        problems, until = _override_problems(row)
        expired = until is not None and until < as_of
        if expired:
            problems.append(f"expired on {until.isoformat()}")
        rows.append(
            {
                **row,
                "source_line": line,
                "record": json.dumps(dict(zip(header, fields, strict=True)), ensure_ascii=False),
                "problems": problems,
                "until": until,
                "in_force": bool(row["customer_id"]) and not expired,
            }
        )

    in_force = [row for row in rows if row["in_force"]]
    by_customer: dict[str, list[int]] = {}
    for row in in_force:
        by_customer.setdefault(row["customer_id"], []).append(row["source_line"])
    graded = {str(customer) for customer in customers}
    for row in in_force:
        lines_of_customer = by_customer[row["customer_id"]]
        if len(lines_of_customer) > 1:
            row["problems"].append(
                f"duplicate customer_id: lines {', '.join(map(str, lines_of_customer))} "
                "are all in force, none is applied"
            )
        if row["customer_id"] not in graded:
            row["problems"].append(f"customer not graded as of {as_of.isoformat()}")

    return Overrides(
        _valid_frame([row for row in rows if not row["problems"]]),
        _rejected_frame(
            [{**row, "rejection": "; ".join(row["problems"])} for row in rows if row["problems"]]
        ),
    )


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


def _override_problems(row: dict[str, str]) -> tuple[list[str], dt.date | None]:
    """Problems of one override row on its own, and its parsed ``valid_until``."""
    problems = []
    if not row["customer_id"]:
        problems.append("missing customer_id")
    if row["tier"] not in TIER_RANK:
        problems.append(f"unknown tier code {row['tier']!r} (allowed: {', '.join(TIERS)})")
    if not row["reason"]:
        problems.append("missing reason")
    until = None
    if row["valid_until"]:
        try:
            if not _ISO_DATE.fullmatch(row["valid_until"]):
                raise ValueError
            until = dt.date.fromisoformat(row["valid_until"])
        except ValueError:
            problems.append(f"valid_until {row['valid_until']!r} is not a date (YYYY-MM-DD)")
    return problems, until


def _valid_frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "customer_id": pd.Series([row["customer_id"] for row in rows], dtype="str"),
            "tier": pd.Series([row["tier"] for row in rows], dtype="str"),
            "reason": pd.Series([row["reason"] for row in rows], dtype="str"),
            "valid_until": pd.Series([row["until"] for row in rows], dtype=DATE_DTYPE),
            "source_line": pd.Series([row["source_line"] for row in rows], dtype=np.int64),
        }
    )
    return out.sort_values("customer_id", kind="stable").reset_index(drop=True)


def _rejected_frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            column: pd.Series([row[column] for row in rows], dtype="str").replace("", np.nan)
            for column in _REJECTED_OVERRIDE_COLUMNS
            if column != "source_line"
        }
    )
    out.insert(4, "source_line", pd.Series([row["source_line"] for row in rows], dtype=np.int64))
    return out.sort_values("source_line", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- customer tiers


def customer_tiers(
    assigned: pd.DataFrame,
    overrides: pd.DataFrame | None,
    as_of: dt.date,
    run_id: str,
    *,
    plans: pd.DataFrame,
    hysteresis: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The ``tiers.customer_tiers`` rows for one month: model tiers, hysteresis, overrides.

    Parameters
    ----------
    assigned : DataFrame
        ``TieringModel.assign(indicators)``: ``customer_id``, ``segment``,
        ``tier``, ``tier_rank``, ``factor_1`` .. and optionally the explanation
        columns and ``reason``. Other columns are not carried (so personal data
        in the input cannot reach the output).
    overrides : DataFrame or None
        ``load_overrides(...).valid``: ``customer_id``, ``tier``, ``reason``,
        ``valid_until``; at most one row per customer, every customer graded.
    plans : DataFrame
        :func:`load_service_plans` output, for ``tier_name``.
    hysteresis : DataFrame or None
        ``ml.apply_hysteresis`` of ``assigned``'s tiers: ``customer_id``,
        ``tier`` (published before overrides), ``pending_tier``,
        ``pending_months``; one row per customer of ``assigned``. None
        publishes the model tiers (nothing pending).

    Returns
    -------
    One row per customer, sorted by ``customer_id``:
    ``customer_id``, ``as_of_date`` (date), ``tier`` (published code: the
    override's, else ``hysteresis_tier``), ``tier_rank`` (int, 1 = vip .. 6 =
    sleeping), ``tier_name`` (display name of ``tier``), ``model_tier`` (the
    model's code this month), ``hysteresis_tier`` (the model tier after
    hysteresis, before overrides), ``pending_tier`` (the model tier waiting to
    be published, NaN when none), ``pending_months`` (int, months it has
    waited), ``segment`` (int, 0 = dormant rule), ``is_override`` (bool),
    ``override_reason`` (text or NaN), ``override_valid_until`` (date, NA = no
    end or no override), ``reason`` (``override:<reason>``; else
    ``hysteresis:pending_tier=<code>|pending_months=<n>`` when hysteresis
    holds the published tier; else the model's reason, e.g.
    ``segment=4|avg_assets=+2.31|...``),
    ``factor_1`` .. ``factor_m`` (float, regression factor scores),
    ``driver_1`` .., ``driver_1_z`` .., ``nearest_other_tier``,
    ``distance_to_other_tier`` when ``assigned`` has them (about the model
    tier), ``run_id``.
    """
    as_of = _as_date(as_of)
    base = assigned.reset_index(drop=True)
    if not base["customer_id"].is_monotonic_increasing:
        base = base.sort_values("customer_id", kind="stable").reset_index(drop=True)
    ids = pd.Index(base["customer_id"].astype("str"), name="customer_id")
    if not ids.is_unique:
        raise ValueError("assigned has more than one row for a customer")
    model_codes = _tier_codes(base["tier"], "assigned")
    reason = (
        base["reason"].to_numpy(dtype=object)
        if "reason" in base
        else ("segment=" + base["segment"].astype("str")).to_numpy(dtype=object)
    ).copy()
    if hysteresis is None:
        held_codes = model_codes.copy()
        pending_tier = pd.Series(np.nan, index=range(len(base)), dtype="str")
        pending_months = np.zeros(len(base), dtype=np.int64)
    else:
        published = hysteresis.set_index(hysteresis["customer_id"].astype("str"))
        if not published.index.is_unique or not published.index.sort_values().equals(
            ids.sort_values()
        ):
            raise ValueError("hysteresis must have exactly one row per customer of assigned")
        published = published.reindex(ids)
        held_codes = _tier_codes(published["tier"], "hysteresis")
        pending_tier = published["pending_tier"].astype("str").reset_index(drop=True)
        pending_months = published["pending_months"].to_numpy(dtype=np.int64)
        held = held_codes != model_codes
        reason[held] = (
            "hysteresis:pending_tier="
            + pending_tier[held].to_numpy(dtype=object)
            + "|pending_months="
            + pending_months[held].astype(str).astype(object)
        )
    codes = held_codes.copy()
    is_override = np.zeros(len(base), dtype=bool)
    override_reason = np.full(len(base), None, dtype=object)
    override_until = np.full(len(base), None, dtype=object)

    ov = _valid_frame([]) if overrides is None else overrides.reset_index(drop=True)
    if len(ov):
        if ov["customer_id"].duplicated().any():
            raise ValueError("overrides have more than one row for a customer; use load_overrides")
        rows = ids.get_indexer(ov["customer_id"].astype("str"))
        if (rows < 0).any():
            raise ValueError(
                f"overrides for customers not in assigned: "
                f"{ov.loc[rows < 0, 'customer_id'].head().tolist()}; "
                "pass the graded customers to load_overrides"
            )
        codes[rows] = _tier_codes(ov["tier"], "overrides")
        is_override[rows] = True
        override_reason[rows] = ov["reason"].to_numpy(dtype=object)
        override_until[rows] = _date_column(ov["valid_until"]).to_numpy(dtype=object)
        reason[rows] = ("override:" + ov["reason"].astype("str")).to_numpy(dtype=object)

    tier_names = plans.set_index("tier")["display_name"].reindex(list(TIERS))
    out = pd.DataFrame(
        {
            "customer_id": pd.Series(ids, dtype="str"),
            "as_of_date": _constant_date(as_of, len(base)),
            "tier": _from_codes(codes, TIERS),
            "tier_rank": _RANKS[codes],
            "tier_name": _from_codes(codes, tier_names.tolist()),
            "model_tier": _from_codes(model_codes, TIERS),
            "hysteresis_tier": _from_codes(held_codes, TIERS),
            "pending_tier": pending_tier,
            "pending_months": pending_months,
            "segment": base["segment"].to_numpy(dtype=np.int64),
            "is_override": is_override,
            "override_reason": pd.Series(override_reason, dtype="str"),
            "override_valid_until": pd.Series(override_until, dtype=DATE_DTYPE),
            "reason": pd.Series(reason, dtype="str"),
        }
    )
    for column in _model_columns(base.columns):
        out[column] = base[column]
    out["run_id"] = pd.Series([run_id] * len(out), dtype="str")
    return out


_RANKS = np.array([TIER_RANK[tier] for tier in TIERS], dtype=np.int64)


def _tier_codes(tiers: pd.Series, what: str) -> np.ndarray:
    """Positions in ``TIERS`` of tier codes (so rank = position + 1); unknown codes raise."""
    codes = pd.Categorical(tiers, categories=TIERS).codes
    if (codes < 0).any():
        unknown = sorted(set(tiers[codes < 0].astype("str").fillna("<missing>")))
        raise ValueError(f"{what}: unknown or missing tier codes {unknown}")
    return codes.astype(np.int64)


def _from_codes(codes: np.ndarray, labels: Iterable[str]) -> pd.Series:
    return pd.Series(np.asarray(list(labels), dtype=object)[codes], dtype="str")


def _model_columns(columns: Iterable[str]) -> list[str]:
    """Factor and explanation columns of ``assign``, in a fixed order."""
    columns = [str(c) for c in columns]
    factors = sorted((c for c in columns if _FACTOR.fullmatch(c)), key=_number_in)
    drivers = sorted(
        (c for c in columns if _EXPLANATION.fullmatch(c)), key=lambda c: (_number_in(c), c)
    )
    return [*factors, *drivers, *(c for c in _NEAREST if c in columns)]


def _number_in(column: str) -> int:
    return int(re.search(r"\d+", column).group())


# ---------------------------------------------------------------- override audit


def override_audit(
    tiers: pd.DataFrame, rejected: pd.DataFrame | None, as_of: dt.date, run_id: str
) -> pd.DataFrame:
    """One row per override considered this month, applied or not (the audit table).

    Parameters
    ----------
    tiers : DataFrame
        :func:`customer_tiers` output: its ``is_override`` rows are the applied
        overrides, and its ``model_tier`` gives the model tier of rejected
        requests for graded customers.
    rejected : DataFrame or None
        ``load_overrides(...).rejected``.

    Returns
    -------
    Sorted by ``customer_id`` (missing last) and ``source_line``:
    ``as_of_date`` (date), ``customer_id``, ``requested_tier``, ``model_tier``
    (NaN for a customer not graded), ``applied`` (bool), ``reason`` (the CRM
    team's), ``valid_until`` (text: ISO date or as written; NaN = no end),
    ``rejection`` (NaN when applied), ``source_line`` (nullable Int64, line in
    the overrides file; missing for applied rows, found by ``customer_id``),
    ``run_id``.
    """
    as_of = _as_date(as_of)
    applied = tiers[tiers["is_override"]]
    until = _date_column(applied["override_valid_until"])
    done = pd.DataFrame(
        {
            "customer_id": applied["customer_id"].astype("str"),
            "requested_tier": applied["tier"].astype("str"),
            "model_tier": applied["model_tier"].astype("str"),
            "applied": True,
            "reason": applied["override_reason"].astype("str"),
            "valid_until": pd.Series(
                [None if pd.isna(d) else d.isoformat() for d in until],
                index=applied.index,
                dtype="str",
            ),
            "rejection": pd.Series(np.nan, index=applied.index, dtype="str"),
            "source_line": pd.Series(pd.NA, index=applied.index, dtype="Int64"),
        }
    )
    rejected = _rejected_frame([]) if rejected is None else rejected
    model_tier = tiers.set_index(tiers["customer_id"].astype("str"))["model_tier"]
    refused = pd.DataFrame(
        {
            "customer_id": rejected["customer_id"].astype("str"),
            "requested_tier": rejected["tier"].astype("str"),
            "model_tier": rejected["customer_id"].map(model_tier).astype("str"),
            "applied": False,
            "reason": rejected["reason"].astype("str"),
            "valid_until": rejected["valid_until"].astype("str"),
            "rejection": rejected["rejection"].astype("str"),
            "source_line": rejected["source_line"].astype("Int64"),
        }
    )
    frames = [frame for frame in (done, refused) if len(frame)]
    out = pd.concat(frames, ignore_index=True) if frames else done.iloc[:0]
    out = out.sort_values(
        ["customer_id", "source_line"], na_position="last", kind="stable"
    ).reset_index(drop=True)
    out["applied"] = out["applied"].astype(bool)
    out["source_line"] = out["source_line"].astype("Int64")
    out.insert(0, "as_of_date", _constant_date(as_of, len(out)))
    out["run_id"] = pd.Series([run_id] * len(out), dtype="str")
    return out


# ----------------------------------------------------------------- tier profiles


def tier_profiles(
    customer_tiers: pd.DataFrame, indicators: pd.DataFrame, as_of: dt.date
) -> pd.DataFrame:
    """Per tier and month: size, share, mean indicators and revenue (``tiers.tier_profiles``).

    Parameters
    ----------
    customer_tiers : DataFrame
        :func:`customer_tiers` output (``customer_id``, ``tier``); profiles are
        of the published tier, after overrides. Rows of other months (an
        ``as_of_date`` column) are left out.
    indicators : DataFrame
        ``marts.customer_indicators`` rows, ``customer_id`` as a column or the
        index; rows of other months are left out. Must hold every graded
        customer and ``avg_assets``, ``commission_contribution``,
        ``interest_contribution``.

    Returns
    -------
    Six rows, one per tier code, by ``tier_rank`` (a tier without customers
    included): ``as_of_date`` (date), ``tier``, ``tier_rank`` (int),
    ``customers`` (int), ``share`` (float, of graded customers),
    ``mean_<indicator>`` for every column of ``ml.ALL_INDICATORS`` in
    ``indicators`` (float, in that indicator's unit; a missing value is left
    out of the mean; NaN for a tier without customers), ``revenue`` (float,
    currency: realised revenue over the window, commission plus margin interest
    charged, never the imputed spread on idle cash),
    ``revenue_share`` (float, of all graded customers' revenue; NaN if that is
    0), ``total_avg_assets`` (float, currency: sum of ``avg_assets``). Sums over
    no customers are 0.
    """
    as_of = _as_date(as_of)
    tiers = _of_month(customer_tiers, as_of)[["customer_id", "tier"]]
    data = _of_month(indicators, as_of)
    if "customer_id" not in data.columns:
        data = data.rename_axis("customer_id").reset_index()
    needed = ["avg_assets", *REVENUE_INDICATORS]
    missing = [column for column in needed if column not in data.columns]
    if missing:
        raise KeyError(f"indicators lack {missing}")
    present = [column for column in ALL_INDICATORS if column in data.columns]
    merged = tiers.astype({"customer_id": "str"}).merge(
        data[["customer_id", *present]].astype({"customer_id": "str"}),
        on="customer_id",
        how="left",
        validate="one_to_one",
        indicator=True,
    )
    ungraded = int((merged["_merge"] == "left_only").sum())
    if ungraded:
        raise ValueError(f"{ungraded} graded customers have no indicator row as of {as_of}")
    _tier_codes(merged["tier"], "customer_tiers")
    merged["revenue"] = merged[list(REVENUE_INDICATORS)].sum(axis=1, min_count=0)

    by_tier = merged.groupby("tier", sort=False)
    order = pd.Index(TIERS, name="tier")
    customers = by_tier.size().reindex(order, fill_value=0).astype(np.int64)
    means = by_tier[present].mean().reindex(order).astype(np.float64)
    sums = by_tier[["revenue", "avg_assets"]].sum().reindex(order, fill_value=0.0)
    total_customers = int(customers.sum())
    total_revenue = float(sums["revenue"].sum())

    out = pd.DataFrame(
        {
            "as_of_date": _constant_date(as_of, len(order)),
            "tier": pd.Series(TIERS, dtype="str"),
            "tier_rank": np.array([TIER_RANK[t] for t in TIERS], dtype=np.int64),
            "customers": customers.to_numpy(),
            "share": customers.to_numpy() / total_customers if total_customers else np.nan,
        }
    )
    for column in present:
        out[f"mean_{column}"] = means[column].to_numpy(np.float64)
    out["revenue"] = sums["revenue"].to_numpy(np.float64)
    out["revenue_share"] = out["revenue"] / total_revenue if total_revenue else np.nan
    out["total_avg_assets"] = sums["avg_assets"].to_numpy(np.float64)
    return out.astype({"share": np.float64, "revenue_share": np.float64})


def _of_month(frame: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    if "as_of_date" not in frame.columns:
        return frame
    return frame[(_date_column(frame["as_of_date"]) == as_of).fillna(False).to_numpy(bool)]


# ---------------------------------------------------------------- tier migrations

_FROM_ORDER = {tier: i for i, tier in enumerate((*TIERS, "new"))}
_TO_ORDER = {tier: i for i, tier in enumerate((*TIERS, "gone"))}


def tier_migrations(
    previous_tiers: pd.DataFrame | None,
    current_tiers: pd.DataFrame,
    from_as_of: dt.date | None,
    to_as_of: dt.date,
) -> pd.DataFrame:
    """Customers moving between published tiers from one month to the next.

    Parameters
    ----------
    previous_tiers, current_tiers : DataFrame with ``customer_id``, ``tier``
        Published tiers (after overrides) of the two months, e.g. from
        ``customer_tier_history``; ``previous_tiers`` None or empty for the
        first month.

    Returns
    -------
    One row per (from_tier, to_tier) pair with at least one customer, ordered
    by from tier then to tier (tier rank, then new / gone):
    ``from_as_of_date`` (date, NA when there is no previous month),
    ``as_of_date`` (date), ``from_tier`` (code or ``new`` for a customer graded
    only this month), ``to_tier`` (code or ``gone`` for a customer no longer
    graded), ``movement`` (``up`` = towards vip, ``down``, ``same``, ``new``,
    ``gone``), ``customers`` (int). The counts sum to the customers of either
    month.
    """
    to_as_of = _as_date(to_as_of)
    from_as_of = None if from_as_of is None else _as_date(from_as_of)
    current = current_tiers[["customer_id", "tier"]].astype({"customer_id": "str"})
    if previous_tiers is None or previous_tiers.empty:
        previous = pd.DataFrame({"customer_id": pd.Series(dtype="str"), "tier": []})
    else:
        previous = previous_tiers[["customer_id", "tier"]].astype({"customer_id": "str"})
    merged = previous.rename(columns={"tier": "from_tier"}).merge(
        current.rename(columns={"tier": "to_tier"}),
        on="customer_id",
        how="outer",
        validate="one_to_one",
    )
    merged["from_tier"] = merged["from_tier"].astype("str").fillna("new")
    merged["to_tier"] = merged["to_tier"].astype("str").fillna("gone")
    counts = merged.groupby(["from_tier", "to_tier"]).size().rename("customers").reset_index()
    counts = counts.sort_values(
        ["from_tier", "to_tier"],
        key=lambda s: s.map(_FROM_ORDER if s.name == "from_tier" else _TO_ORDER),
        kind="stable",
    ).reset_index(drop=True)

    from_rank = counts["from_tier"].map(TIER_RANK)
    to_rank = counts["to_tier"].map(TIER_RANK)
    movement = np.select(
        [
            counts["from_tier"] == "new",
            counts["to_tier"] == "gone",
            to_rank < from_rank,
            to_rank > from_rank,
        ],
        ["new", "gone", "up", "down"],
        default="same",
    )
    return pd.DataFrame(
        {
            "from_as_of_date": pd.Series([from_as_of] * len(counts), dtype=DATE_DTYPE),
            "as_of_date": _constant_date(to_as_of, len(counts)),
            "from_tier": counts["from_tier"].astype("str"),
            "to_tier": counts["to_tier"].astype("str"),
            "movement": pd.Series(movement, dtype="str"),
            "customers": counts["customers"].astype(np.int64),
        }
    )


# ---------------------------------------------------------------------- model runs


def model_run_row(
    model: TieringModel,
    run_id: str,
    as_of: dt.date,
    window_months: int,
    n_customers: int,
    params: Mapping[str, Any],
    started_at: dt.datetime,
    finished_at: dt.datetime,
    *,
    gates_failed: Iterable[str] = (),
    accepted_by_operator: bool = False,
) -> pd.DataFrame:
    """One ``tiers.model_runs`` row describing a fitted (or loaded) model's run.

    Returns one row: ``run_id``, ``as_of_date`` (date), ``started_at``,
    ``finished_at`` (timestamps as given, tz kept), ``n_customers``,
    ``window_months``, ``k`` (segments in all, the dormant rule's included),
    ``kmeans_k`` (segments K-means fitted), ``n_factors`` (ints),
    ``factor_count_rule`` (which rule set the number of factors, e.g.
    ``parallel``, ``kaiser``, ``fixed``), ``extraction``
    (``principal_components`` or ``principal_axis``), ``gates_failed``
    (comma-separated names of the gates the grading failed, ``''`` when
    none), ``accepted_by_operator`` (bool: gates failed and an operator
    accepted the grading, so it was published), then from ``model.quality_``
    (float, NaN when the
    model does not report it): ``kmo``, ``bartlett_statistic``,
    ``bartlett_p_value``, ``variance_explained`` (share 0-1 of the indicators'
    variance the retained factors explain), ``silhouette``,
    ``calinski_harabasz``, ``davies_bouldin``, ``inertia``, ``n_clustered``,
    ``n_dormant_rule``, ``discriminant_agreement``,
    ``names_differing_from_rules``; ``indicator_columns`` (comma-separated, in
    model order) and ``params`` (JSON text, sorted keys, of ``params``; dates
    and paths as text).
    """
    quality = getattr(model, "quality_", {}) or {}
    row = {
        "run_id": run_id,
        "as_of_date": _as_date(as_of),
        "started_at": pd.Timestamp(started_at),
        "finished_at": pd.Timestamp(finished_at),
        "n_customers": int(n_customers),
        "window_months": int(window_months),
        "k": len(model.segments_),
        "kmeans_k": len(model.segmenter_.segment_ids_),
        "n_factors": int(model.factor_model_.n_factors_),
        "factor_count_rule": str(model.factor_model_.selection_),
        "extraction": str(model.factor_model_.extraction),
        "gates_failed": ",".join(gates_failed),
        "accepted_by_operator": bool(accepted_by_operator),
        **{metric: float(quality.get(metric, np.nan)) for metric in RUN_QUALITY_METRICS},
        "indicator_columns": ",".join(model.columns_),
        "params": json.dumps(dict(params), sort_keys=True, default=_json_text),
    }
    out = pd.DataFrame([row])
    out["as_of_date"] = _constant_date(row["as_of_date"], 1)
    for column in (
        "run_id",
        "factor_count_rule",
        "extraction",
        "gates_failed",
        "indicator_columns",
        "params",
    ):
        out[column] = out[column].astype("str")
    for column in ("n_customers", "window_months", "k", "kmeans_k", "n_factors"):
        out[column] = out[column].astype(np.int64)
    out["accepted_by_operator"] = out["accepted_by_operator"].astype(bool)
    return out.astype({metric: np.float64 for metric in RUN_QUALITY_METRICS})


def _json_text(value: Any) -> Any:
    """JSON fallback for the values a run configuration holds beyond JSON's own types."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot store parameter value {value!r} as JSON")


def model_tables(model: TieringModel, run_id: str, as_of: dt.date) -> dict[str, pd.DataFrame]:
    """``model.to_tables()`` with ``run_id`` and ``as_of_date`` (date) as the first columns.

    Keys and the other columns are those of :meth:`ml.TieringModel.to_tables`
    (``model_params``, ``model_indicators``, ... ``model_quality``).
    """
    as_of = _as_date(as_of)
    out = {}
    for name, table in model.to_tables().items():
        table = table.reset_index(drop=True)
        table.insert(0, "as_of_date", _constant_date(as_of, len(table)))
        table.insert(0, "run_id", pd.Series([run_id] * len(table), dtype="str"))
        out[name] = table
    return out


#: ``tiers.model_k_diagnostics`` columns after ``as_of_date`` and ``run_id``.
K_DIAGNOSTICS_COLUMNS = (
    "k",
    "kmeans_k",
    "inertia",
    "silhouette",
    "calinski_harabasz",
    "davies_bouldin",
    "stability",
    "n_iter",
)


def k_diagnostics_table(diagnostics: pd.DataFrame, run_id: str, as_of: dt.date) -> pd.DataFrame:
    """``tiers.model_k_diagnostics`` rows: ``TieringModel.diagnose_k`` for one graded month.

    Returns one row per k, by k: ``as_of_date`` (date), ``run_id``, ``k``
    (segments in all, the dormant rule's included, as ``model_runs.k``),
    ``kmeans_k`` (segments K-means fits), ``inertia``, ``silhouette``,
    ``calinski_harabasz``, ``davies_bouldin``, ``stability`` (floats, NaN
    where not computable; see :func:`ml.k_diagnostics`), ``n_iter`` (int).
    """
    as_of = _as_date(as_of)
    table = diagnostics.sort_values("k").reset_index(drop=True)
    out = pd.DataFrame(
        {
            "as_of_date": _constant_date(as_of, len(table)),
            "run_id": pd.Series([run_id] * len(table), dtype="str"),
        }
    )
    for column in K_DIAGNOSTICS_COLUMNS:
        values = table[column].to_numpy()
        out[column] = values.astype(
            np.int64 if column in ("k", "kmeans_k", "n_iter") else np.float64
        )
    return out


# ------------------------------------------------------------------------ history


def history_upsert(history: pd.DataFrame | None, new_rows: pd.DataFrame) -> pd.DataFrame:
    """``history`` with every month in ``new_rows`` replaced by ``new_rows``.

    Rows of ``history`` whose ``as_of_date`` occurs in ``new_rows`` are dropped
    and ``new_rows`` added, so re-running a month gives the same history and no
    duplicates. Columns: those of ``new_rows``, then any only ``history`` has
    (missing for the new rows). Date columns (``as_of_date`` and the others in
    ``DATE_COLUMNS``) come out as ``date32`` whatever form they came in (e.g.
    ``datetime64`` when the history was read back from DuckDB). Sorted by
    ``as_of_date`` then ``customer_id`` when there is one (else the rows of a
    month keep their order).

    For a large history the same operation in SQL (delete the months, insert
    the rows, in one transaction) avoids reading the history into memory.
    """
    if "as_of_date" not in new_rows.columns:
        raise KeyError("new_rows need an as_of_date column")
    new = _normalise_dates(new_rows)
    frames = [new]
    if history is not None and len(history):
        old = _normalise_dates(history)
        frames.insert(0, old[~old["as_of_date"].isin(set(new["as_of_date"]))])
    columns = [*new.columns, *(c for c in frames[0].columns if c not in new.columns)]
    frames = [frame for frame in frames if len(frame)] or [new]
    out = pd.concat(frames, ignore_index=True).reindex(columns=columns)
    keys = ["as_of_date", *(["customer_id"] if "customer_id" in out.columns else [])]
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def _normalise_dates(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index(drop=True)
    for column in DATE_COLUMNS:
        if column in out.columns:
            out[column] = _date_column(out[column])
    return out


# -------------------------------------------------------------------------- dates


def _as_date(value: dt.date | dt.datetime | str) -> dt.date:
    """A date from a date, a datetime / Timestamp (its day) or ``YYYY-MM-DD`` text."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return pd.Timestamp(value).date()


def _date_column(values: pd.Series) -> pd.Series:
    """``values`` (dates, timestamps or ISO text) as a ``date32`` column, NA when missing."""
    if values.dtype == DATE_DTYPE:
        return values
    stamps = pd.to_datetime(values)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_localize(None)
    days = pa.array(stamps.dt.floor("D"), from_pandas=True).cast(pa.date32())
    return pd.Series(pd.arrays.ArrowExtensionArray(days), index=values.index)


def _constant_date(day: dt.date, n: int) -> pd.Series:
    days = pa.array(np.full(n, np.datetime64(day, "D"))).cast(pa.date32())
    return pd.Series(pd.arrays.ArrowExtensionArray(days))
