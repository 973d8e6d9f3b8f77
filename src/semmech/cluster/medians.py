"""Weighted medians: the mechanistic centres of rate–distortion clustering (METHOD §5).

The lower weighted median (first sorted value whose cumulative weight reaches half the total)
minimises Σ_n w_n |x_n − m| in every column, which is what makes the median centre update a
descent step for the L1 distortion. Two numba kernels compute it: a weighted quickselect over
a member set, and a walk along a per-row order computed once per prompt.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import torch

__all__ = ["weighted_median", "weighted_median_rows", "weighted_median_sorted", "argsort_rows"]


def weighted_median(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Column-wise lower weighted median of ``X`` (n × d) with weights ``w`` (n,).

    The lower weighted median (first sorted value whose cumulative weight reaches half the
    total) minimises Σ_n w_n |x_n − m| in every column, which is what makes the median
    centre update a descent step for the L1 distortion.
    """
    X = np.asarray(X, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if X.ndim != 2 or w.shape != (X.shape[0],):
        raise ValueError(
            f"weighted_median: X must be (n, d) and w (n,), got {X.shape} and {w.shape}"
        )
    return weighted_median_rows(np.ascontiguousarray(X.T), w)


def weighted_median_rows(
    XT: np.ndarray, w: np.ndarray, idx: np.ndarray | None = None
) -> np.ndarray:
    """Row-wise lower weighted median of ``XT`` (d × n), over the columns ``idx`` if given
    (weights ``w`` then belong to those columns), without copying the selected columns.

    Linear expected time per row: a weighted quickselect (three-way partition around a
    median-of-three pivot, descending into the side where half the weight is crossed), in
    parallel over rows. Rows are independent, so the result does not depend on the number
    of threads. The transposed layout keeps every row contiguous.
    """
    XT = np.asarray(XT, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    cols = (
        np.arange(XT.shape[1], dtype=np.int64)
        if idx is None
        else np.ascontiguousarray(idx, dtype=np.int64)
    )
    if cols.shape != w.shape:
        raise ValueError(f"weighted median: {cols.shape[0]} columns but {w.shape[0]} weights")
    _check_median_weights(w)
    out = np.empty(XT.shape[0])
    with _numba_threads():
        _weighted_median_kernel(XT, cols, w, out)
    return out


def _check_median_weights(w: np.ndarray) -> None:
    if w.size == 0 or not w.sum() > 0 or (w < 0).any():
        raise ValueError(
            "weighted median needs at least one sample with positive weight and no negative weights"
        )


@numba.njit(cache=True, nogil=True)
def _weighted_select(v: np.ndarray, u: np.ndarray, half: float) -> float:  # pragma: no cover
    """Smallest value x of ``v`` with Σ_{v_i ≤ x} u_i ≥ half; ``v`` and ``u`` are scratch."""
    lo, hi, acc = 0, v.shape[0], 0.0
    while hi - lo > 1:
        a, b, c = v[lo], v[(lo + hi) // 2], v[hi - 1]
        p = max(min(a, b), min(max(a, b), c))
        lt, i, gt = lo, lo, hi
        wl = we = 0.0
        while i < gt:  # three-way partition of [lo, hi) around p
            x = v[i]
            if x < p:
                v[i], v[lt] = v[lt], x
                u[i], u[lt] = u[lt], u[i]
                wl += u[lt]
                lt += 1
                i += 1
            elif x > p:
                gt -= 1
                v[i], v[gt] = v[gt], x
                u[i], u[gt] = u[gt], u[i]
            else:
                we += u[i]
                i += 1
        if lt > lo and acc + wl >= half:
            hi = lt
        elif acc + wl + we >= half or gt == hi:
            return p
        else:
            acc += wl + we
            lo = gt
    return v[lo]


@numba.njit(cache=True, nogil=True, parallel=True)
def _weighted_median_kernel(
    XT: np.ndarray, cols: np.ndarray, w: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover
    m = cols.shape[0]
    d = XT.shape[0]
    half = 0.5 * w.sum()
    block = 64  # rows per task: scratch is allocated once per block, not per row
    for b in numba.prange((d + block - 1) // block):
        v = np.empty(m)
        u = np.empty(m)
        for r in range(b * block, min(d, (b + 1) * block)):
            for i in range(m):
                v[i] = XT[r, cols[i]]
                u[i] = w[i]
            out[r] = _weighted_select(v, u, half)


@numba.njit(cache=True, nogil=True, parallel=True)
def _sorted_median_kernel(
    XT: np.ndarray, order: np.ndarray, w: np.ndarray, half: float, out: np.ndarray
) -> None:  # pragma: no cover
    n = order.shape[1]
    for r in numba.prange(XT.shape[0]):
        o = order[r]
        acc = 0.0
        k = 0
        while k < n - 1:
            acc += w[o[k]]
            if acc >= half:
                break
            k += 1
        out[r] = XT[r, o[k]]


def argsort_rows(XT: np.ndarray, chunk_elems: int = 1 << 22) -> np.ndarray:
    """Per-row ascending order of ``XT`` (d × n) as int32, sorted in chunks of rows so the
    int64 temporaries stay small. Computed once per prompt: every later median is a walk."""
    d, n = XT.shape
    order = np.empty((d, n), dtype=np.int32)
    step = max(1, chunk_elems // max(n, 1))
    for r0 in range(0, d, step):
        order[r0 : r0 + step] = np.argsort(XT[r0 : r0 + step], axis=1)
    return order


def weighted_median_sorted(XT: np.ndarray, order: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise lower weighted median of ``XT`` (d × N) given its row order
    (:func:`argsort_rows`) and weights ``w`` over all N columns (zero for non-members).

    One walk along each row's sorted order until half the weight is reached: O(N) per row
    with no data-dependent branches to mispredict, so a centre of any member set costs one
    light pass once the order is known.
    """
    w = np.ascontiguousarray(w, dtype=np.float64)
    if w.shape != (XT.shape[1],) or order.shape != XT.shape:
        raise ValueError(f"weighted median: XT {XT.shape}, order {order.shape}, w {w.shape}")
    _check_median_weights(w)
    out = np.empty(XT.shape[0])
    with _numba_threads():
        _sorted_median_kernel(XT, order, w, 0.5 * w.sum(), out)
    return out


class _numba_threads:
    """Run numba's parallel loops on as many threads as torch may use (Snakemake's
    ``threads:`` reaches both through :func:`semmech.logs.job_logging`).

    numba's OpenMP layer and torch share one libgomp, so numba.set_num_threads also changes
    torch's thread count; torch's is restored on exit (else a one-thread job would run torch
    on every core after its first median)."""

    def __enter__(self) -> None:
        self._torch = torch.get_num_threads()
        self._old = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self._torch, numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc: Any) -> None:
        numba.set_num_threads(self._old)
        torch.set_num_threads(self._torch)
