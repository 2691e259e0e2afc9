"""Figures for estimator comparisons: curves with their spread over seeds, and bar charts.

Drawn with matplotlib's file-only backend (no display needed), written as PNG and also returned
as (H, W, 3) uint8 arrays for TensorBoard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: the renderer's machines have no display
    import matplotlib.pyplot as plt

    return plt


def palette(names: Sequence[str]) -> dict[str, str]:
    """A colour per name, in order: pass the same to every figure so that one estimator has
    one colour throughout."""
    return {n: COLOURS[i % len(COLOURS)] for i, n in enumerate(names)}


def curves(series: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str,
           title: str, hline: float | None = None, colours: dict[str, str] | None = None):
    """One line per name: ``series[name] = (x, y)`` with y of shape (seeds, len(x)); the line is
    the mean over seeds and the band spans their minimum to maximum."""
    plt = _pyplot()
    colours = colours or palette(list(series))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, (x, y) in series.items():
        y = np.atleast_2d(np.asarray(y, dtype=float))
        c = colours.get(name, "black")
        ax.plot(x, y.mean(0), color=c, lw=1.6, label=f"{name} (n={len(y)})")
        if len(y) > 1:
            ax.fill_between(x, y.min(0), y.max(0), color=c, alpha=0.18, lw=0)
    if hline is not None:
        ax.axhline(hline, color="black", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def bars(panels: Sequence[tuple[str, dict[str, Sequence[float]], bool]], title: str = "",
         colours: dict[str, str] | None = None):
    """Side-by-side horizontal bar charts: each panel is (label, {name: values over seeds},
    log scale); a bar is the mean, its whisker the minimum to maximum, dots the seeds."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.45 * max(
        (len(v) for _, v, _ in panels), default=1) + 1.4), dpi=120, squeeze=False)
    for ax, (label, values, log) in zip(axes[0], panels):
        names = [n for n, v in values.items() if len(_finite(v))]
        cs = colours or palette(list(values))
        for i, n in enumerate(names):
            v = _finite(values[n])
            mean = np.exp(np.log(v).mean()) if log else v.mean()  # geometric mean on a log axis
            c = cs.get(n, "black")
            ax.barh(i, mean, color=c, alpha=0.75)
            if len(v) > 1:
                ax.plot([v.min(), v.max()], [i, i], color="black", lw=1.2)
            ax.plot(v, np.full(len(v), i), "o", color="black", ms=2.5)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _finite(v: Sequence[float] | None) -> np.ndarray:
    a = np.asarray([x for x in (v or []) if x is not None], dtype=float)
    return a[np.isfinite(a)]


def save(fig, path: str | Path) -> np.ndarray:
    """Write ``fig`` as a PNG (via a temporary file, so a reader never sees half of one), close
    it, and return its pixels (H, W, 3) uint8."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    plt.close(fig)
    return rgb
