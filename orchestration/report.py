"""The short report ``python -m orchestration run`` prints after a run: the load and the tiers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb


def summary(warehouse: Path) -> str:
    """A short text report of the published warehouse's latest load."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        counts = con.execute("""select source_table, files, raw_rows, accepted_rows,
                                       quarantined_rows, load_id
                                from audit.load_reconciliation order by source_table""").fetchall()
        rules = con.execute("""select rule, count(*) from audit.quarantine
                               group by rule order by count(*) desc, rule""").fetchall()
        first, last = con.execute("""select min(as_of_date), max(as_of_date)
                                     from staging.stg_broker__balances""").fetchall()[0]
        month_ends, latest, graded = con.execute("""
            select count(distinct as_of_date), max(as_of_date),
                   count(*) filter (where as_of_date = (select max(as_of_date)
                                                        from marts.customer_indicators))
            from marts.customer_indicators""").fetchall()[0]
        # month-ends an earlier load built that this one changed (late or corrected rows)
        late = con.execute("""
            select months.as_of_date from audit.load_months as months
            where months.load_id = (select max(load_id) from audit.load_reconciliation)
                and months.is_changed and not months.is_new
                and months.as_of_date <= (select max(as_of_date) from marts.customer_indicators)
            order by 1""").fetchall()
        # tables whose data stops before the others': they hold later month-ends back
        coverage = con.execute("""
            select source_table, last_date, covered_through,
                   max(covered_through) over () as others_through
            from intermediate.int_table_coverage
            where covered_through is not null
            order by source_table""").fetchall()
    lagging = [row for row in coverage if row[2] < row[3]]
    lines = [
        f"Warehouse {warehouse} (load {counts[0][5] if counts else '-'})",
        f"{'table':<12}{'files':>6}{'raw rows':>13}{'accepted':>13}{'quarantined':>13}",
    ]
    lines += [f"{t:<12}{f:>6}{r:>13,}{a:>13,}{q:>13,}" for t, f, r, a, q, _ in counts]
    lines.append(
        "Quarantined by rule: "
        + (", ".join(f"{rule} {n:,}" for rule, n in rules) or "none")
        + " (details: audit.quarantine)"
    )
    if first is not None:
        lines.append(f"Balance snapshots cover {first} to {last}")
    if latest is not None:
        lines.append(
            f"Indicators: {month_ends} month-ends up to {latest}, "
            f"{graded:,} customers as of {latest} (marts.customer_indicators)"
        )
    if lagging:
        lines.append(
            f"Held back: month-ends after {min(row[2] for row in lagging)} are not built, as "
            + ", ".join(f"{table} has data only to {last}" for table, last, _, _ in lagging)
            + f" (the other tables reach {lagging[0][3]}; details: "
            "intermediate.int_table_coverage)"
        )
    if late:
        lines.append(
            f"Late or corrected rows changed {len(late)} month-end(s) built before "
            f"({late[0][0]} to {late[-1][0]}): rebuilt from {late[0][0]} on "
            "(details: audit.load_months)"
        )
    return "\n".join(lines)


def tier_summary(warehouse: Path, graded_now: list[dt.date] | None = None) -> str:
    """The latest grading in the published warehouse: tier sizes and model quality.

    ``graded_now``: the month-ends the run graded (``tiers.grading_runs``), named first.
    """
    with duckdb.connect(str(warehouse), read_only=True) as con:
        sizes = con.execute("""select tier, count(*), count(*) filter (where is_override)
                               from tiers.customer_tiers group by tier
                               order by min(tier_rank)""").fetchall()
        as_of, run_id, kmo, factors, k, silhouette, gates_failed, accepted = con.execute("""
            select as_of_date, run_id, kmo, n_factors, k, silhouette, gates_failed,
                   accepted_by_operator
            from tiers.model_runs
            where run_id = (select max(run_id) from tiers.customer_tiers)""").fetchall()[0]
        earlier_failed = (
            con.execute(
                """select as_of_date, gates_failed from tiers.model_runs
                   where as_of_date in (select unnest($1::date[])) and as_of_date < $2
                       and gates_failed <> ''
                   order by as_of_date""",
                [graded_now, graded_now[-1]],
            ).fetchall()
            if graded_now
            else []
        )
        held, graded = con.execute("""select count(*) filter (where hysteresis_tier <> model_tier),
                                        max(as_of_date)
                                 from tiers.customer_tiers""").fetchall()[0]
    total = sum(n for _, n, _ in sizes) or 1
    lines = []
    if graded_now:
        lines.append(
            f"This run graded month-end {graded_now[0]}"
            if len(graded_now) == 1
            else f"This run graded {len(graded_now)} month-ends, {graded_now[0]} to "
            f"{graded_now[-1]}, in order"
        )
    lines += [
        f"Tiers as of {graded} (model {run_id} fitted on {as_of}; KMO {kmo:.2f}, "
        f"{factors} factors, k = {k}, silhouette {silhouette:.2f})",
        f"{'tier':<12}{'customers':>11}{'share':>8}{'overrides':>11}",
    ]
    lines += [f"{t:<12}{n:>11,}{n / total:>8.1%}{o:>11,}" for t, n, o in sizes]
    lines.append(f"Held in their published tier by hysteresis: {held:,}")
    if earlier_failed:
        lines.append(
            f"Gates failed in {len(earlier_failed)} earlier month-end(s) graded now (only the "
            "latest blocks; tiers.model_runs.gates_failed): "
            + ", ".join(f"{month} {failed}" for month, failed in earlier_failed[:5])
            + (", ..." if len(earlier_failed) > 5 else "")
        )
    if gates_failed and accepted:
        lines.append(f"Gates failed and accepted by the operator: {gates_failed}")
    lines.append("Details: tiers.customer_tiers, tiers.tier_profiles, tiers.model_runs")
    return "\n".join(lines)
