"""What ``hotspots evaluate`` prints and writes: the table, the JSON summary,
the CSV per period and the PAI plot."""

from __future__ import annotations

import csv
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from rich.table import Table

from streamer.core.accuracy import Backtest


def pct(p: float) -> str:
    """A coverage as a percentage: 0.01 -> "1%"."""
    return f"{p * 100:g}%"


def table_of(
    result: Backtest,
    title: str,
    periods: np.ndarray[Any, np.dtype[np.bool_]] | None = None,
    names: list[str] | None = None,
) -> Table:
    """Mean hit rate / PAI / PEI per method (rows) and coverage (columns)."""
    means = result.means(periods)
    table = Table(title=title)
    table.add_column("method")
    for p, a in zip(result.coverages, result.sizes, strict=True):
        for head in ("hit", "PAI", "PEI"):
            table.add_column(f"{pct(p)} ({a})\n{head}", justify="right")
    for name in names if names is not None else list(result.methods):
        row = [name]
        for p in result.coverages:
            m = means[name][p]
            row += [f"{m['hit_rate']:.1%}", f"{m['pai']:.2f}", f"{m['pei']:.2f}"]
        table.add_row(*row)
    return table


def summary_of(
    result: Backtest,
    names: list[str],
    periods: np.ndarray[Any, np.dtype[np.bool_]] | None = None,
) -> list[dict[str, Any]]:
    """The JSON summary: per method and coverage, mean hit rate, PAI, PEI."""
    means = result.means(periods)
    return [
        {
            "method": name,
            "coverages": [
                {
                    "coverage": p,
                    "cells": a,
                    "hit_rate": round(means[name][p]["hit_rate"], 6),
                    "pai": round(means[name][p]["pai"], 6),
                    "pei": round(means[name][p]["pei"], 6),
                }
                for p, a in zip(result.coverages, result.sizes, strict=True)
            ],
        }
        for name in names
    ]


def write_csv(result: Backtest, names: list[str], zone: ZoneInfo, path: str) -> None:
    """One row per method, coverage and evaluated period."""
    starts = [datetime.fromtimestamp(t, zone).isoformat() for t in result.period_start_s]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                *("method", "coverage", "cells", "period_start", "events", "captured", "best"),
                *("hit_rate", "pai", "pei"),
            ]
        )
        for name in names:
            m = result.methods.index(name)
            for s, (p, a) in enumerate(zip(result.coverages, result.sizes, strict=True)):
                for k, start in enumerate(starts):
                    writer.writerow(
                        [
                            name,
                            p,
                            a,
                            start,
                            int(result.events[k]),
                            round(result.captured[m, k, s]),
                            round(result.best[m, k, s]),
                            f"{result.hit_rate[m, k, s]:.6f}",
                            f"{result.pai[m, k, s]:.6f}",
                            f"{result.pei[m, k, s]:.6f}",
                        ]
                    )


def write_png(
    result: Backtest,
    names: list[str],
    path: str,
    title: str,
    periods: np.ndarray[Any, np.dtype[np.bool_]] | None = None,
) -> None:
    """PAI against coverage, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = result.means(periods)
    fig, ax = plt.subplots(figsize=(8, 5))
    xs = [p * 100 for p in result.coverages]
    for name in names:
        style = "-" if name.startswith(("engine", "tuned")) else "--"
        ax.plot(
            xs, [means[name][p]["pai"] for p in result.coverages], style, marker="o", label=name
        )
    ax.set_xscale("log")
    ax.set_xticks(xs, [pct(p) for p in result.coverages])
    ax.set_xlabel("share of the study area flagged")
    ax.set_ylabel("mean PAI")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
