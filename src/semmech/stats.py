"""Small, dependency-free statistics for the steering metrics and tables (METHOD §7).

Each function returns NaN where the statistic is undefined (fewer than two points, or a
constant input) instead of warning, so per-cluster metrics can be averaged with ``nanmean``
and a degenerate cluster is visible as a missing value rather than a misleading 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["rankdata", "pearson", "spearman", "slope", "bootstrap_ci"]


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def rankdata(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (what Spearman's ρ needs)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.arange(1, x.size + 1, dtype=np.float64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r over the finite pairs; NaN for < 2 pairs or a constant side."""
    x, y = _pair(x, y)
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(dx @ dx) * float(dy @ dy))
    # A side that is constant up to rounding has no direction to correlate with.
    scale = max(float(np.abs(x).max()), 1e-300) * max(float(np.abs(y).max()), 1e-300)
    if not den > 1e-12 * scale * x.size:
        return math.nan
    return float(np.clip(float(dx @ dy) / den, -1.0, 1.0))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (Pearson's r of average ranks); NaN where Pearson's would be."""
    x, y = _pair(x, y)
    if x.size < 2:
        return math.nan
    return pearson(rankdata(x), rankdata(y))


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y on x (with intercept); NaN if x is constant."""
    x, y = _pair(x, y)
    if x.size < 2:
        return math.nan
    dx = x - x.mean()
    den = float(dx @ dx)
    if not den > 0:
        return math.nan
    return float(dx @ (y - y.mean())) / den


def bootstrap_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile-bootstrap 95% interval of the mean of the finite ``values`` (``n_boot``
    resamples drawn from ``rng``); NaN for no finite value, the value itself for one."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    if values.size == 1:
        return float(values[0]), float(values[0])
    idx = rng.integers(0, values.size, size=(int(n_boot), values.size))
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)
