"""The drift plot: per score and platform, the bin shares of the reference, the previous and the monitored snapshot."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from propensity.stages.monitor.histograms import Histogram
from propensity.stages.monitor.reference import SCORE_VARIABLES, Reference


def _shares(h: Histogram) -> np.ndarray:
    counts = np.asarray([*h.counts, h.null_count], dtype=np.float64)
    return counts / max(counts.sum(), 1.0)


def drift_figure(reference: Reference, found: dict[tuple[object, str, str], Histogram], snapshot_date: date,
                 previous: date | None, rows: pd.DataFrame) -> Figure:
    """One panel per score (row) and platform (column): shares per fixed bin, PSI in the title."""
    platforms = sorted({p for p, _ in reference.bins})
    fig = Figure(figsize=(4.2 * max(len(platforms), 1), 3.2 * len(SCORE_VARIABLES)), dpi=80)
    fig.suptitle(f"{reference.model_name} v{reference.model_version}: scores at {snapshot_date} vs reference"
                 f" {reference.snapshot}" + (f" and {previous}" if previous else ""))
    for i, variable in enumerate(SCORE_VARIABLES):
        for j, platform in enumerate(platforms):
            ax = fig.add_subplot(len(SCORE_VARIABLES), max(len(platforms), 1), i * len(platforms) + j + 1)
            bins = reference.bins.get((platform, variable))
            if bins is None:
                continue
            x = np.arange(len(bins.histogram.counts) + 1)
            ax.step(x, _shares(bins.histogram), where="mid", label=f"reference {reference.snapshot}")
            if previous is not None and (previous, platform, variable) in found:
                ax.step(x, _shares(found[(previous, platform, variable)]), where="mid", label=str(previous))
            if (snapshot_date, platform, variable) in found:
                ax.step(x, _shares(found[(snapshot_date, platform, variable)]), where="mid", linewidth=2,
                        label=str(snapshot_date))
            psis = rows[(rows["platform"] == platform) & (rows["variable"] == variable)]
            ax.set_title(f"{variable} on {platform}: PSI " + ", ".join(
                f"{r.comparison} {r.psi:.3f}" for r in psis.itertuples()), fontsize=8)
            ax.set_xlabel("reference quantile bin (last: NULL)", fontsize=7)
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
