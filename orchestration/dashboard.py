"""The tier dashboard: one self-contained HTML page per published run.

``build_dashboard`` reads the published warehouse read-only and writes
``tiers-<run id>.html`` (and a copy, ``latest.html``): tier sizes and realised
revenue over time, the migration matrix of the latest month-end, the tier
profiles, managers' books against capacity and the early-warning list. The
charts are inline SVG drawn by matplotlib, their text as DejaVu glyph paths, so
the page needs no script, font, stylesheet or network: it opens in any browser
and can be mailed. A section whose tables a warehouse lacks (one built before
the service desk marts) or that has no rows says so instead of a chart.

``python -m orchestration.dashboard [--warehouse PATH] [--out DIR]`` builds it
for ``TIERS_WAREHOUSE`` into ``dashboard/`` beside the warehouse.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import io
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from ml import TIERS
from orchestration import charts
from orchestration.config import ConfigError, Settings

LOAD_STATUS_COLOURS = {"over": "#d62728", "within": "#1f78b4", "under": "#9ecae1"}
#: load_status in the order a branch manager reads them, with what each means.
LOAD_STATUSES = {
    "over": "the plans ask for more hours than the manager has",
    "within": "within capacity",
    "under": "under half the capacity used (the manager_underload_share dbt var)",
    "not_listed": "a manager the managers file does not list (no capacity known)",
    "unassigned": "customers without a manager, one row per branch",
}
SIGNAL_LABELS = {
    "gone_quiet": "gone quiet",
    "falling": "falling",
    "gone_quiet,falling": "gone quiet and falling",
}
TOP_MANAGERS = 20
TOP_AT_RISK = 50


@dataclass(frozen=True)
class Section:
    """One part of the page: a heading and its HTML (caption, chart or note, tables)."""

    anchor: str
    title: str
    body: str


def build_dashboard(warehouse: Path, out_dir: Path) -> Path:
    """Write ``out_dir/tiers-<run id>.html`` for the published ``warehouse`` and copy it
    to ``out_dir/latest.html``; return the run's file.

    The run id is ``audit.publication``'s, else the file's modification time (UTC,
    ``yyyymmddThhmmssZ``) for a warehouse published before that table existed.
    """
    with duckdb.connect(str(warehouse), read_only=True) as con:
        run_id = _run_id(con, warehouse)
        latest = (
            con.execute("select max(as_of_date) from tiers.tier_profiles").fetchone()[0]
            if _has_table(con, "tiers.tier_profiles")
            else None
        )
        sections = [
            _tiers_over_time(con),
            _migrations(con),
            _profiles(con, latest),
            _manager_books(con, latest),
            _customers_at_risk(con, latest),
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"tiers-{run_id}.html"
    page.write_text(_page(warehouse, run_id, latest, sections), encoding="utf-8")
    # replaced in one rename, so a reader of latest.html never sees half a page
    staged = out_dir / ".latest.html.tmp"
    shutil.copyfile(page, staged)
    os.replace(staged, out_dir / "latest.html")
    return page


def _run_id(con: duckdb.DuckDBPyConnection, warehouse: Path) -> str:
    if _has_table(con, "audit.publication"):
        row = con.execute("select run_id from audit.publication").fetchone()
        if row is not None:
            return row[0]
    modified = dt.datetime.fromtimestamp(warehouse.stat().st_mtime, tz=dt.UTC)
    return modified.strftime("%Y%m%dT%H%M%SZ")


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    schema, table = name.split(".")
    return (
        con.execute(
            "select count(*) from information_schema.tables where table_schema = ? "
            "and table_name = ?",
            [schema, table],
        ).fetchone()[0]
        > 0
    )


def _missing(table: str) -> str:
    if table.startswith("marts."):
        return _note(
            f"This warehouse has no {table}: it was built before the service desk marts. "
            "The next run adds them; python -m orchestration run --backfill fills every "
            "month-end."
        )
    return _note(f"This warehouse has no {table}: no month-end has been graded yet.")


# --- the sections --------------------------------------------------------------------


def _tiers_over_time(con: duckdb.DuckDBPyConnection) -> Section:
    anchor, title = "tiers-over-time", "Tier sizes and revenue over time"
    if not _has_table(con, "tiers.tier_profiles"):
        return Section(anchor, title, _missing("tiers.tier_profiles"))
    profiles = con.execute(
        "select as_of_date, tier, customers, revenue from tiers.tier_profiles order by as_of_date"
    ).df()
    if profiles.empty:
        return Section(anchor, title, _note("tiers.tier_profiles has no rows yet."))
    fig = charts.tier_sizes_figure(profiles)
    caption = _caption(
        "How many customers each tier held at each graded month-end (left), and the "
        "revenue they brought over the trailing window (12 months by default): commission "
        "net of rebates plus margin interest (right). A customer changes tier only after "
        "two months in a new one, so the lines move slowly."
    )
    return Section(anchor, title, caption + _svg(fig, anchor, title))


def _migrations(con: duckdb.DuckDBPyConnection) -> Section:
    anchor, title = "migrations", "Who moved between tiers"
    if not _has_table(con, "tiers.customer_tier_history"):
        return Section(anchor, title, _missing("tiers.customer_tier_history"))
    month_ends = [
        row[0]
        for row in con.execute(
            "select distinct as_of_date from tiers.customer_tier_history "
            "order by as_of_date desc limit 2"
        ).fetchall()
    ]
    if len(month_ends) < 2:
        return Section(
            anchor, title, _note("The migrations need two graded month-ends; this has fewer.")
        )
    latest, previous = month_ends
    moves = con.execute(
        """
        select before.tier as previous_tier, after.tier as latest_tier, count(*) as customers
        from (select customer_id, tier from tiers.customer_tier_history
              where as_of_date = $previous) as before
        full join (select customer_id, tier from tiers.customer_tier_history
                   where as_of_date = $latest) as after
            using (customer_id)
        group by all
        """,
        {"previous": previous, "latest": latest},
    ).df()
    graded_both = moves.dropna(subset=["previous_tier", "latest_tier"])
    matrix = (
        graded_both.pivot_table(
            index="previous_tier", columns="latest_tier", values="customers", aggfunc="sum"
        )
        .reindex(index=list(TIERS), columns=list(TIERS))
        .fillna(0)
        .astype(int)
    )
    joined = int(moves.loc[moves["previous_tier"].isna(), "customers"].sum())
    left = int(moves.loc[moves["latest_tier"].isna(), "customers"].sum())
    fig = charts.migration_figure(matrix, previous, latest)
    caption = _caption(
        f"Each row is the customers of a tier at {previous}; the columns say which tier "
        f"they are in at {latest}. The diagonal stayed; right of it moved to a lower tier, "
        f"left of it to a higher one. Colour: the share of the row. Not in the matrix: "
        f"{joined:,} customers graded for the first time at {latest}, {left:,} graded at "
        f"{previous} but not at {latest}."
    )
    return Section(anchor, title, caption + _svg(fig, anchor, f"{title}, {previous} to {latest}"))


def _profiles(con: duckdb.DuckDBPyConnection, latest: dt.date | None) -> Section:
    anchor, title = "profiles", "What sets the tiers apart"
    if latest is None:
        return Section(anchor, title, _missing("tiers.tier_profiles"))
    profiles = con.execute(
        "select * from tiers.tier_profiles where as_of_date = ? and customers > 0", [latest]
    ).df()
    fig = charts.profiles_figure(profiles)
    empty = [tier for tier in TIERS if tier not in set(profiles["tier"])]
    caption = _caption(
        f"The average customer of each tier at {latest}, indicator by indicator, against "
        "the other tiers: red above the tiers' average, blue below, in standard deviations "
        "across the tiers. recency_days counts the days since the last trade, so red there "
        "means quiet." + (f" No customer is in {', '.join(empty)} (blank rows)." if empty else "")
    )
    return Section(anchor, title, caption + _svg(fig, anchor, f"{title} at {latest}"))


def _manager_books(con: duckdb.DuckDBPyConnection, latest: dt.date | None) -> Section:
    anchor, title = "manager-books", "Managers' books against capacity"
    if not _has_table(con, "marts.manager_books"):
        return Section(anchor, title, _missing("marts.manager_books"))
    if latest is None:
        return Section(anchor, title, _missing("tiers.tier_profiles"))
    statuses = con.execute(
        """
        select load_status, count(*) as books, cast(sum(customers) as bigint) as customers
        from marts.manager_books where as_of_date = ? group by load_status
        """,
        [latest],
    ).df()
    if statuses.empty:
        return Section(anchor, title, _note(f"marts.manager_books has no rows for {latest}."))
    statuses["order"] = statuses["load_status"].map(list(LOAD_STATUSES).index)
    status_table = _table(
        ["load status", "books", "customers", "meaning"],
        [
            (status, f"{books:,}", f"{customers:,}", LOAD_STATUSES.get(status, ""))
            for status, books, customers in statuses.sort_values("order")[
                ["load_status", "books", "customers"]
            ].itertuples(index=False)
        ],
        numeric=(1, 2),
    )
    busiest = con.execute(
        """
        select manager_id, branch_id, required_hours_per_month, capacity_hours_per_month,
               capacity_used_share, load_status
        from marts.manager_books
        where as_of_date = ? and is_listed and capacity_used_share is not null
        order by capacity_used_share desc, manager_id
        limit ?
        """,
        [latest, TOP_MANAGERS],
    ).df()
    if busiest.empty:
        chart = _note(
            "No manager is listed in the managers file, so no book can be set against a "
            "capacity. Land a managers file (docs/data-contract.md) to see the loads."
        )
    else:
        busiest = busiest.iloc[::-1]  # the busiest at the top
        fig = Figure(figsize=(9, 1.2 + 0.3 * len(busiest)), layout="constrained")
        axes = fig.subplots()
        axes.barh(
            [
                f"{manager} ({branch})"
                for manager, branch in zip(busiest["manager_id"], busiest["branch_id"], strict=True)
            ],
            busiest["capacity_used_share"],
            color=[LOAD_STATUS_COLOURS.get(status, "#cccccc") for status in busiest["load_status"]],
        )
        for row, (share, required, capacity) in enumerate(
            busiest[
                ["capacity_used_share", "required_hours_per_month", "capacity_hours_per_month"]
            ].itertuples(index=False)
        ):
            axes.text(share, row, f" {required:,.0f} of {capacity:,.0f} h", va="center", fontsize=8)
        axes.axvline(1, color="black", linestyle="--", linewidth=1)
        axes.margins(x=0.12)
        axes.xaxis.set_major_formatter(PercentFormatter(1))
        axes.set_xlabel("Contact hours the plans ask for, as a share of the manager's capacity")
        axes.grid(axis="x", alpha=0.3)
        axes.legend(
            handles=[
                Patch(color=colour, label=status)
                for status, colour in LOAD_STATUS_COLOURS.items()
                if status in set(busiest["load_status"])
            ],
            loc="lower right",
        )
        chart = _caption(
            f"The {len(busiest)} listed managers whose books ask the most of their time at "
            f"{latest}: the contact hours their customers' service plans ask for a month, "
            "against the hours the manager has. Past the dashed line the manager is over "
            "capacity; marts.manager_reassignments proposes the moves."
        ) + _svg(fig, anchor, f"{title} at {latest}")
    counts = _caption(f"Books by load status at {latest}:") + status_table
    return Section(anchor, title, chart + counts)


def _customers_at_risk(con: duckdb.DuckDBPyConnection, latest: dt.date | None) -> Section:
    anchor, title = "at-risk", "Customers at risk of going dormant"
    if not _has_table(con, "marts.customers_at_risk"):
        return Section(anchor, title, _missing("marts.customers_at_risk"))
    if latest is None:
        return Section(anchor, title, _missing("tiers.tier_profiles"))
    by_signal = con.execute(
        """
        select signals, tier, count(*) as customers
        from marts.customers_at_risk where as_of_date = ? group by all
        """,
        [latest],
    ).df()
    if by_signal.empty:
        return Section(anchor, title, _note(f"No customer is flagged at risk at {latest}."))
    total = int(by_signal["customers"].sum())
    counts = (
        by_signal.pivot_table(index="signals", columns="tier", values="customers", aggfunc="sum")
        .reindex(columns=[tier for tier in TIERS if tier in set(by_signal["tier"])])
        .fillna(0)
    )
    counts = counts.reindex(
        [signals for signals in SIGNAL_LABELS if signals in counts.index]
        + [signals for signals in counts.index if signals not in SIGNAL_LABELS]
    )
    fig = Figure(figsize=(9, 1.4 + 0.45 * len(counts)), layout="constrained")
    axes = fig.subplots()
    labels = [SIGNAL_LABELS.get(signal, signal) for signal in counts.index][::-1]
    left = np.zeros(len(counts))
    for tier in counts.columns:
        values = counts[tier].to_numpy()[::-1]
        colour = charts.TIER_COLOURS.get(tier, "#cccccc")
        axes.barh(labels, values, left=left, color=colour, label=tier)
        left += values
    for row, customers in enumerate(left):
        axes.text(customers, row, f" {customers:,.0f}", va="center", fontsize=9)
    axes.set_xlabel("Customers")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.margins(x=0.1)
    fig.legend(loc="outside right upper")
    nearest = con.execute(
        """
        select customer_id, tier, signals, recency_days, months_until_dormant
        from marts.customers_at_risk where as_of_date = ?
        order by months_until_dormant nulls last, customer_id
        limit ?
        """,
        [latest, TOP_AT_RISK],
    ).fetchall()
    caption = _caption(
        f"Customers at risk at {latest}: {total:,}. Gone quiet: no trade for months, "
        "far longer than the customer's usual gap between trades. Falling: trades and net "
        "assets fell at each of the last three month-ends. Bars: customers per signal, by tier."
    )
    table_caption = _caption(
        ("All of them" if len(nearest) == total else f"The {len(nearest)} nearest to dormancy")
        + ", soonest first: months until dormant is how many months until the sleeping rule "
        "applies at the current pace."
    )
    table = _table(
        ["customer", "tier", "signals", "days since last trade", "months until dormant"],
        [
            (
                customer,
                tier,
                SIGNAL_LABELS.get(signals, signals),
                "" if recency is None else f"{recency:,}",
                "" if months is None else f"{months:,}",
            )
            for customer, tier, signals, recency, months in nearest
        ],
        numeric=(3, 4),
    )
    return Section(
        anchor,
        title,
        caption + _svg(fig, anchor, f"{title} at {latest}") + table_caption + table,
    )


# --- HTML ----------------------------------------------------------------------------


def _svg(fig: Figure, chart_id: str, label: str) -> str:
    """``fig`` as an inline ``<svg>`` element, labelled for screen readers."""
    buffer = io.StringIO()
    # no metadata: it names matplotlib's web site and the date, and the page stays
    # the same for the same warehouse
    fig.savefig(
        buffer,
        format="svg",
        metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
    )
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # the XML prolog and doctype are not HTML
    svg = re.sub(r' xmlns(:\w+)?="[^"]*"', "", svg)  # HTML puts <svg> in its namespace itself
    # inline SVGs share the page's ids, and every chart has a "figure_1" and glyphs
    # of the same name: prefix them so a reference finds its own chart's
    svg = re.sub(r'id="([^"]+)"', rf'id="{chart_id}-\1"', svg)
    svg = re.sub(r'(href="#|url\(#)', rf"\1{chart_id}-", svg)
    return svg.replace("<svg", f'<svg role="img" aria-label="{html.escape(label)}"', 1)


def _caption(text: str) -> str:
    return f'<p class="caption">{html.escape(text)}</p>\n'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>\n'


def _table(headers: list[str], rows: list[tuple], numeric: tuple[int, ...] = ()) -> str:
    def cell(tag: str, index: int, value) -> str:
        align = ' class="num"' if index in numeric else ""
        return f"<{tag}{align}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, header) for i, header in enumerate(headers))
    body = "\n".join(
        "<tr>" + "".join(cell("td", i, value) for i, value in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"


STYLE = """
body { font-family: "DejaVu Sans", Verdana, sans-serif; color: #222; margin: 0 auto;
       max-width: 1120px; padding: 1em 1.5em; line-height: 1.4; }
header { border-bottom: 1px solid #ccc; margin-bottom: 1em; }
header p { color: #555; margin-top: 0; }
code { font-size: 0.95em; }
section { margin-bottom: 2.5em; }
svg { display: block; max-width: 100%; height: auto; margin: 0.5em 0; }
.caption { max-width: 60em; }
.note { background: #f6f6f6; border-left: 4px solid #bbb; padding: 0.6em 1em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
th { background: #f2f2f2; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
nav a { margin-right: 1em; }
"""


def _page(warehouse: Path, run_id: str, latest: dt.date | None, sections: list[Section]) -> str:
    as_of = f"as of {latest}" if latest else "(no graded month-end)"
    title = f"Customer tiers {as_of}"
    nav = " ".join(
        f'<a href="#{section.anchor}">{html.escape(section.title)}</a>' for section in sections
    )
    body = "\n".join(
        f'<section id="{section.anchor}">\n<h2>{html.escape(section.title)}</h2>\n'
        f"{section.body}</section>"
        for section in sections
    )
    # the empty icon keeps a browser from asking for a favicon.ico beside the file
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<p>Warehouse <code>{html.escape(str(warehouse))}</code> · run <code>{html.escape(run_id)}</code>
 · latest graded month-end <strong>{html.escape(str(latest or "none"))}</strong></p>
<nav>{nav}</nav>
</header>
{body}
</body>
</html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.dashboard",
        description="Write the tier dashboard of the published warehouse: one HTML file "
        "per run, and latest.html.",
    )
    parser.add_argument(
        "--warehouse",
        type=Path,
        metavar="PATH",
        help="the published DuckDB file (default: TIERS_WAREHOUSE, else data/warehouse.duckdb)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="where to write (default: dashboard/ beside it)"
    )
    args = parser.parse_args(argv)
    try:
        warehouse = args.warehouse or Settings.from_env().warehouse
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    warehouse = warehouse.expanduser().resolve()
    if not warehouse.is_file():
        print(
            f"No warehouse at {warehouse}: run make run first, or pass --warehouse.",
            file=sys.stderr,
        )
        return 2
    print(build_dashboard(warehouse, args.out or warehouse.parent / "dashboard"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
