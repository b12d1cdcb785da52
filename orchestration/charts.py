"""The grading's charts, drawn with matplotlib from the tier tables' rows.

One figure per question a person asks of a grading: how big the tiers are over
time, who moved between tiers, what sets the tiers apart, and how many segments
the data supports (the k diagnostics). The tier dashboard
(:mod:`orchestration.dashboard`) embeds them as SVG; Dagster's metadata as PNG
(:func:`png_markdown`). Figures are built with matplotlib's object API, without
pyplot, so nothing global is left open.
"""

from __future__ import annotations

import base64
import datetime as dt
import io

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from ml import TIERS

#: One colour per tier, the same in every chart.
TIER_COLOURS = {
    "vip": "#6a3d9a",
    "potential": "#1b9e77",
    "ordinary_a": "#1f78b4",
    "ordinary_b": "#80b1d3",
    "free": "#fdb462",
    "sleeping": "#999999",
}


def tier_sizes_figure(profiles: pd.DataFrame) -> Figure:
    """Customers (left) and realised revenue (right) per tier over the month-ends.

    ``profiles``: rows of ``tiers.tier_profiles`` with ``as_of_date``, ``tier``,
    ``customers`` and ``revenue``.
    """
    fig = Figure(figsize=(11, 4), layout="constrained")
    sizes, revenue = fig.subplots(1, 2)
    for tier in TIERS:
        rows = profiles[profiles["tier"] == tier]
        style = {"color": TIER_COLOURS[tier], "marker": "o", "markersize": 3, "label": tier}
        sizes.plot(rows["as_of_date"], rows["customers"], **style)
        revenue.plot(rows["as_of_date"], rows["revenue"], **style)
    sizes.set_title("Customers per tier")
    revenue.set_title("Realised revenue per tier (reporting currency)")
    for axes in (sizes, revenue):
        locator = AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    fig.legend(*sizes.get_legend_handles_labels(), loc="outside right upper")
    return fig


def migration_figure(matrix: pd.DataFrame, previous: dt.date, latest: dt.date) -> Figure:
    """Customers per (tier at ``previous``, tier at ``latest``), coloured by row share.

    ``matrix``: customers, tiers in ``TIERS`` order on both axes (rows: before).
    """
    row_totals = matrix.sum(axis=1).to_numpy()[:, None]
    shares = np.divide(
        matrix.to_numpy(), row_totals, out=np.zeros(matrix.shape), where=row_totals > 0
    )
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    axes = fig.subplots()
    image = axes.imshow(shares, cmap="Blues", norm=Normalize(0, 1))
    for (row, column), customers in np.ndenumerate(matrix.to_numpy()):
        axes.text(
            column,
            row,
            f"{customers:,}",
            ha="center",
            va="center",
            fontsize=9,
            color="white" if shares[row, column] > 0.5 else "black",
        )
    tier_ticks(axes, x=True, y=True)
    axes.set_xlabel(f"Tier at {latest}")
    axes.set_ylabel(f"Tier at {previous}")
    fig.colorbar(image, ax=axes, label="Share of the row's customers", format=PercentFormatter(1))
    return fig


def profiles_figure(profiles: pd.DataFrame) -> Figure:
    """Each tier's mean indicators as z-scores across the tiers (a heatmap).

    ``profiles``: one month-end's rows of ``tiers.tier_profiles`` (``tier`` and the
    ``mean_<indicator>`` columns); a tier without customers is a blank row.
    """
    means = profiles.set_index("tier").filter(like="mean_").reindex(list(TIERS))
    means.columns = [column.removeprefix("mean_") for column in means.columns]
    # each indicator on its own scale: how far a tier's mean sits from the tiers' average
    spread = means.std(ddof=0).replace(0, np.nan)
    scores = ((means - means.mean()) / spread).fillna(0).where(means.notna())

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots()
    image = axes.imshow(scores.to_numpy(), cmap="RdBu_r", norm=Normalize(-2.5, 2.5), aspect="auto")
    for (row, column), score in np.ndenumerate(scores.to_numpy()):
        if not np.isnan(score):
            axes.text(
                column,
                row,
                f"{score:+.1f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if abs(score) > 1.6 else "black",
            )
    axes.set_xticks(range(len(scores.columns)), scores.columns, rotation=40, ha="right")
    tier_ticks(axes, x=False, y=True)
    fig.colorbar(image, ax=axes, label="Standard deviations across the tiers")
    return fig


def k_diagnostics_figure(diagnostics: pd.DataFrame) -> Figure:
    """The elbow (inertia) and the silhouette against k, with the stability if known.

    ``diagnostics``: one fit's rows of ``tiers.model_k_diagnostics`` (``k``,
    ``inertia``, ``silhouette`` and optionally ``stability``).
    """
    rows = diagnostics.sort_values("k")
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    elbow, quality = fig.subplots(1, 2)
    elbow.plot(rows["k"], rows["inertia"], marker="o", color="#1f78b4")
    elbow.set_title("Elbow: K-means inertia")
    elbow.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    quality.plot(rows["k"], rows["silhouette"], marker="o", color="#1b9e77", label="silhouette")
    if "stability" in rows and rows["stability"].notna().any():
        quality.plot(rows["k"], rows["stability"], marker="s", color="#6a3d9a", label="stability")
    quality.set_title("Silhouette and stability (higher is better)")
    quality.legend(loc="best")
    for axes in (elbow, quality):
        axes.set_xlabel("k (segments, the dormant one included)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    return fig


def tier_ticks(axes, *, x: bool, y: bool) -> None:
    """Label an axis with the tier codes, in ``TIERS`` order."""
    if x:
        axes.set_xticks(range(len(TIERS)), TIERS, rotation=30, ha="right")
    if y:
        axes.set_yticks(range(len(TIERS)), TIERS)


def png_markdown(fig: Figure, alt: str) -> str:
    """``fig`` as a Markdown image with the PNG inline, as Dagster's metadata shows it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"
