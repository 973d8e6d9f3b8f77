"""The rate–distortion objective's parts (METHOD §5): input checks, the mechanistic
normalisation, the entropy and distortion terms, and the cost of any hard partition.

    L = H(C) + β_e D_e + β_a D_a,        β_e = γβ,  β_a = (1 − γ)β,

with H(C) the entropy of the P-weighted cluster masses, D_e the P-weighted squared Euclidean
distortion of the semantic vectors around their cluster means, and D_a the P-weighted L1
distortion of the normalised attribution signatures around their cluster coordinate-wise
medians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numba
import numpy as np

from .medians import parallel_threads, use_threads, weighted_median

__all__ = [
    "RDInputError",
    "Normalisation",
    "PartitionCost",
    "validate_views",
    "normalise_mechanistic",
    "binary_entropy",
    "mass_entropy",
    "sq_distances",
    "l1_distances",
    "partition_cost",
]


class RDInputError(ValueError):
    """The arrays given to the clustering cannot be clustered (shape, NaN/inf, weights)."""


# --------------------------------------------------------------------------------------
# The entropy and distortion terms


def binary_entropy(alpha: float) -> float:
    """H_b(α) in nats (0 at α ∈ {0, 1})."""
    if alpha <= 0.0 or alpha >= 1.0:
        return 0.0
    return -(alpha * math.log(alpha) + (1.0 - alpha) * math.log(1.0 - alpha))


def mass_entropy(mass: np.ndarray) -> float:
    """H of cluster masses that sum to 1, in nats."""
    m = mass[mass > 0]
    # masses are sums of floats, so one cluster can read 1 + 1e-16: clamp the rounding
    return max(float(-(m * np.log(m)).sum()), 0.0)


def sq_distances(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n × k) through the Gram expansion, clipped at 0."""
    d = (X * X).sum(1)[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0)


def l1_distances(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """L1 distances (n × k), each summed coordinate by coordinate in index order.

    That is the order of ``torch.cdist(p=1)`` on CPU, so the values are the ones it gives,
    bit for bit; a distance depends only on its own row and centre. The kernel runs several
    rows (and two centres) side by side, so it is bound by memory rather than by the latency
    of one long chain of additions (about 2× faster than torch.cdist)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    C = np.ascontiguousarray(C, dtype=np.float64)
    out = np.empty((X.shape[0], C.shape[0]))
    if use_threads(X.size * C.shape[0]):
        with parallel_threads():
            _l1_parallel(X, C, out)
    else:
        _l1_rows(X, C, out, 0, (X.shape[0] + 3) // 4)
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _l1_parallel(X: np.ndarray, C: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    nb = (X.shape[0] + 3) // 4
    step = 16
    for s in numba.prange((nb + step - 1) // step):
        _l1_rows(X, C, out, s * step, min(nb, (s + 1) * step))


@numba.njit(cache=True, nogil=True)
def _l1_rows(
    X: np.ndarray, C: np.ndarray, out: np.ndarray, b0: int, b1: int
) -> None:  # pragma: no cover
    """Rows 4·b0 .. 4·b1 − 1 (blocks of four rows)."""
    n, d = X.shape
    k = C.shape[0]
    for b in range(b0, b1):
        i0 = 4 * b
        j = 0
        while j < k:
            if i0 + 3 < n and j + 1 < k:  # 4 rows × 2 centres: eight independent sums
                a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = 0.0
                for x in range(d):
                    c = C[j, x]
                    e = C[j + 1, x]
                    x0 = X[i0, x]
                    x1 = X[i0 + 1, x]
                    x2 = X[i0 + 2, x]
                    x3 = X[i0 + 3, x]
                    a0 += abs(x0 - c)
                    a1 += abs(x1 - c)
                    a2 += abs(x2 - c)
                    a3 += abs(x3 - c)
                    b0 += abs(x0 - e)
                    b1 += abs(x1 - e)
                    b2 += abs(x2 - e)
                    b3 += abs(x3 - e)
                out[i0, j] = a0
                out[i0 + 1, j] = a1
                out[i0 + 2, j] = a2
                out[i0 + 3, j] = a3
                out[i0, j + 1] = b0
                out[i0 + 1, j + 1] = b1
                out[i0 + 2, j + 1] = b2
                out[i0 + 3, j + 1] = b3
                j += 2
            elif i0 + 3 < n:  # 4 rows × 1 centre
                a0 = a1 = a2 = a3 = 0.0
                for x in range(d):
                    c = C[j, x]
                    a0 += abs(X[i0, x] - c)
                    a1 += abs(X[i0 + 1, x] - c)
                    a2 += abs(X[i0 + 2, x] - c)
                    a3 += abs(X[i0 + 3, x] - c)
                out[i0, j] = a0
                out[i0 + 1, j] = a1
                out[i0 + 2, j] = a2
                out[i0 + 3, j] = a3
                j += 1
            else:  # the last rows
                for i in range(i0, n):
                    a = 0.0
                    for x in range(d):
                        a += abs(X[i, x] - C[j, x])
                    out[i, j] = a
                j += 1


# --------------------------------------------------------------------------------------
# Input validation and the mechanistic normalisation


@dataclass(frozen=True)
class Normalisation:
    """ã = (a − H0) / scale, shared by every configuration of one prompt's sweep."""

    H0: np.ndarray
    scale: float
    A_tilde: np.ndarray


def _where(name: str | None) -> str:
    return f" (prompt {name!r})" if name else ""


def validate_views(
    E: Any, A: Any, sample_weight: Any = None, name: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return float64 copies of (E, A, P) or raise one :class:`RDInputError` naming the problem.

    Checked before any expensive work: 2-D views with matching row counts, at least one
    row and one column, only finite values, non-negative finite weights with positive sum.
    """
    where = _where(name)
    E = np.asarray(E, dtype=np.float64)
    A = np.asarray(A, dtype=np.float64)
    for label, X in (("semantic view E", E), ("mechanistic view A", A)):
        if X.ndim != 2:
            raise RDInputError(f"{label} must be 2-D (samples × dims), got shape {X.shape}{where}")
        if X.shape[1] == 0:
            raise RDInputError(f"{label} has no columns{where}")
    P = (
        np.ones(E.shape[0])
        if sample_weight is None
        else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    )
    if not (E.shape[0] == A.shape[0] == P.shape[0]):
        raise RDInputError(
            f"mismatched row counts: E has {E.shape[0]} rows, A has {A.shape[0]}, "
            f"sample_weight has {P.shape[0]}{where}"
        )
    if E.shape[0] == 0:
        raise RDInputError(f"no samples to cluster{where}")
    for label, X in (("semantic view E", E), ("mechanistic view A", A), ("sample_weight", P)):
        bad = ~np.isfinite(X)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0] if X.ndim == 2 else np.nonzero(bad)[0])
            raise RDInputError(
                f"{label} has {int(bad.sum())} NaN/inf values in {rows.size} rows "
                f"(first rows: {rows[:5].tolist()}){where}"
            )
    if (P < 0).any():
        raise RDInputError(
            f"sample_weight has negative entries (rows {np.nonzero(P < 0)[0][:5].tolist()}){where}"
        )
    if not P.sum() > 0:
        raise RDInputError(f"all sample weights are zero: cluster masses are undefined{where}")
    return E, A, P


def normalise_mechanistic(
    A: np.ndarray, P: np.ndarray, H0: np.ndarray | None = None
) -> Normalisation:
    """H0 = P-weighted coordinate-wise median, s = sqrt(mean_n ||a_n − H0||²) (METHOD §5).

    The scale puts D_a on a per-prefix footing, so one β grid serves every prompt. When all
    signatures are identical s would be 0; it is then set to 1 (ã is 0 either way).
    ``H0`` may be passed when the caller already has that median (the workspace does).
    """
    H0 = weighted_median(A, P) if H0 is None else H0
    dev = A - H0
    s = float(np.sqrt(np.mean(np.einsum("nd,nd->n", dev, dev))))
    if not (s > 0 and np.isfinite(s)):
        s = 1.0
    dev /= s
    return Normalisation(H0=H0, scale=s, A_tilde=dev)


# --------------------------------------------------------------------------------------
# Objective of a given partition (also used for the baselines)


class PartitionCost(NamedTuple):
    K: int
    L: float
    H: float
    D_e: float
    D_a: float


def partition_cost(
    labels: np.ndarray,
    E: np.ndarray,
    A_tilde: np.ndarray,
    P: np.ndarray,
    beta_e: float = 0.0,
    beta_a: float = 0.0,
) -> PartitionCost:
    """H, D_e, D_a (and L for the given β's) of a hard partition with its optimal centres.

    Centres are the P-weighted mean (semantic) and median (mechanistic) of each group, the
    minimisers of the two distortions, so any partition (RD or a baseline) is scored on the
    same footing. Groups whose members all have zero weight contribute nothing.
    """
    labels = np.asarray(labels)
    w = np.asarray(P, dtype=np.float64) / np.sum(P)
    H = D_e = D_a = 0.0
    groups = np.unique(labels)
    K = 0
    for g in groups:
        idx = np.nonzero(labels == g)[0]
        wc = w[idx]
        mc = wc.sum()
        if mc <= 0:
            continue
        K += 1
        H -= mc * math.log(mc)
        mu_e = wc @ E[idx] / mc
        mu_a = weighted_median(A_tilde[idx], wc)
        D_e += float(wc @ ((E[idx] - mu_e) ** 2).sum(1))
        D_a += float(wc @ np.abs(A_tilde[idx] - mu_a).sum(1))
    return PartitionCost(K, H + beta_e * D_e + beta_a * D_a, H, D_e, D_a)
