"""Metrics shared by the analysis stages.

Sections (add new ones below, each self-contained):
  1. Partitions     — entropy of a weighted partition, D_γ, ARI with noise as a group.
  2. Silhouettes    — per-view silhouette and the cross-view silhouette table (METHOD §8).
  3. Rate matching  — pick the baseline partition whose rate H is closest to RD's (METHOD §6),
                      and RD's win rate on D_γ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, silhouette_score

__all__ = [
    "partition_entropy",
    "d_gamma",
    "ari",
    "n_groups",
    "silhouette",
    "cross_view_silhouette",
    "rate_match",
    "win_rate",
]

# --------------------------------------------------------------------------------------
# 1. Partitions


def partition_entropy(labels: Sequence[int], weights: Sequence[float] | None = None) -> float:
    """H(C) = −Σ_c P̄_c ln P̄_c in nats, with P̄_c the weight share of group c."""
    labels = np.asarray(labels)
    w = np.ones(labels.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if not w.sum() > 0:
        raise ValueError("partition_entropy: the weights sum to zero")
    _, inv = np.unique(labels, return_inverse=True)
    mass = np.bincount(inv, weights=w) / w.sum()
    mass = mass[mass > 0]
    return max(float(-(mass * np.log(mass)).sum()), 0.0)


def d_gamma(D_e: float | np.ndarray, D_a: float | np.ndarray, gamma: float | np.ndarray):
    """D_γ = γ D_e + (1 − γ) D_a, the view-balanced distortion methods are compared on."""
    return np.asarray(gamma) * D_e + (1.0 - np.asarray(gamma)) * D_a


def ari(a: Sequence[int], b: Sequence[int]) -> float:
    """Adjusted Rand index; HDBSCAN's noise label −1 counts as one group of its own."""
    return float(adjusted_rand_score(np.asarray(a), np.asarray(b)))


def n_groups(labels: Sequence[int]) -> int:
    return int(np.unique(np.asarray(labels)).size)


# --------------------------------------------------------------------------------------
# 2. Silhouettes


def silhouette(X: np.ndarray, labels: Sequence[int], metric: str = "euclidean") -> float:
    """Mean silhouette of ``labels`` in the view ``X``; NaN where it is undefined
    (fewer than 2 groups, or as many groups as samples)."""
    labels = np.asarray(labels)
    k = n_groups(labels)
    if k < 2 or k >= labels.shape[0]:
        return float("nan")
    return float(silhouette_score(X, labels, metric=metric))


def cross_view_silhouette(
    views: Mapping[str, tuple[np.ndarray, str]], partitions: Iterable[Mapping[str, object]]
) -> pd.DataFrame:
    """Score every partition in every view.

    ``views``: name -> (matrix, metric), e.g. {"semantic": (E, "euclidean"),
    "mechanistic": (Ã, "manhattan")}. ``partitions``: dicts with a "labels" entry and any
    descriptive keys (method, K, beta, gamma, ...), which become columns; one column
    ``silhouette_<view>`` per view is added.
    """
    rows = []
    for part in partitions:
        labels = np.asarray(part["labels"])
        row = {k: v for k, v in part.items() if k != "labels"}
        for name, (X, metric) in views.items():
            row[f"silhouette_{name}"] = silhouette(X, labels, metric)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# 3. Rate matching


def rate_match(
    target_H: float, candidates: pd.DataFrame, h_col: str = "H", k_col: str = "K"
) -> int:
    """Index (label) of the candidate row whose rate is closest to ``target_H``; ties go to
    the smaller K, then to the earlier row, so the choice is deterministic."""
    if candidates.empty:
        raise ValueError("rate_match: no candidate partitions")
    gap = (candidates[h_col] - float(target_H)).abs().to_numpy()
    order = np.lexsort((np.arange(len(candidates)), candidates[k_col].to_numpy(), gap))
    return candidates.index[order[0]]


def win_rate(rd: np.ndarray, others: Sequence[np.ndarray], rtol: float = 1e-9) -> dict[str, float]:
    """Fractions of settings in which RD's D_γ is strictly lowest, tied for lowest (within
    ``rtol``: e.g. K = 1 everywhere gives identical partitions), or beaten."""
    rd = np.asarray(rd, dtype=np.float64)
    if rd.size == 0:
        return {"win": math.nan, "tie": math.nan, "loss": math.nan}
    best_other = np.min(np.stack([np.asarray(o, dtype=np.float64) for o in others]), axis=0)
    tol = rtol * np.maximum(np.abs(rd), np.abs(best_other))
    tie = np.abs(rd - best_other) <= tol
    win = (rd < best_other) & ~tie
    return {"win": float(win.mean()), "tie": float(tie.mean()), "loss": float((~win & ~tie).mean())}
