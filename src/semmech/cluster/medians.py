"""Weighted medians: the mechanistic centres of rate–distortion clustering (METHOD §5).

The lower weighted median (first sorted value whose cumulative weight reaches half the total)
minimises Σ_n w_n |x_n − m| in every column, which is what makes the median centre update a
descent step for the L1 distortion. Two numba kernels compute it: a weighted quickselect over
a member set, and a walk along a per-row order computed once per prompt.
"""

from __future__ import annotations

import sys
from typing import Any

import numba
import numpy as np

__all__ = [
    "weighted_median",
    "weighted_median_rows",
    "weighted_median_sorted",
    "weighted_median_sorted_groups",
    "argsort_rows",
    "parallel_threads",
    "use_threads",
]


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
    if use_threads(XT.shape[0] * cols.shape[0]):
        with parallel_threads():
            _select_parallel(XT, cols, w, out)
    else:
        _select_serial(XT, cols, w, out)
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


@numba.njit(cache=True, nogil=True)
def _select_rows(
    XT: np.ndarray, cols: np.ndarray, w: np.ndarray, half: float, out: np.ndarray, r0: int, r1: int
) -> None:  # pragma: no cover
    m = cols.shape[0]
    v = np.empty(m)  # scratch, allocated once per block of rows
    u = np.empty(m)
    for r in range(r0, r1):
        for i in range(m):
            v[i] = XT[r, cols[i]]
            u[i] = w[i]
        out[r] = _weighted_select(v, u, half)


@numba.njit(cache=True, nogil=True)
def _half_total(w: np.ndarray) -> float:  # pragma: no cover
    """Half the total weight, summed in index order (whatever the number of threads)."""
    total = 0.0
    for x in w:
        total += x
    return 0.5 * total


@numba.njit(cache=True, nogil=True)
def _select_serial(XT: np.ndarray, cols: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    _select_rows(XT, cols, w, _half_total(w), out, 0, XT.shape[0])  # pragma: no cover


@numba.njit(cache=True, nogil=True, parallel=True)
def _select_parallel(
    XT: np.ndarray, cols: np.ndarray, w: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover
    d = XT.shape[0]
    half = _half_total(w)
    block = 64
    for b in numba.prange((d + block - 1) // block):
        _select_rows(XT, cols, w, half, out, b * block, min(d, (b + 1) * block))


@numba.njit(cache=True, nogil=True)
def _walk_rows(
    XT: np.ndarray, order: np.ndarray, w: np.ndarray, half: float, out: np.ndarray, r0: int, r1: int
) -> None:  # pragma: no cover
    n = order.shape[1]
    for r in range(r0, r1):
        o = order[r]
        acc = 0.0
        k = 0
        while k < n - 1:
            acc += w[o[k]]
            if acc >= half:
                break
            k += 1
        out[r] = XT[r, o[k]]


@numba.njit(cache=True, nogil=True, parallel=True)
def _walk_parallel(
    XT: np.ndarray, order: np.ndarray, w: np.ndarray, half: float, out: np.ndarray
) -> None:  # pragma: no cover
    d = XT.shape[0]
    block = 64
    for b in numba.prange((d + block - 1) // block):
        _walk_rows(XT, order, w, half, out, b * block, min(d, (b + 1) * block))


@numba.njit(cache=True, nogil=True)
def _walk_pairs_rows(
    XT: np.ndarray,
    order: np.ndarray,
    W: np.ndarray,
    half: np.ndarray,
    out: np.ndarray,
    r0: int,
    r1: int,
) -> None:  # pragma: no cover
    """Walks of several weight vectors (rows of W, zero outside each set), two per pass:
    each accumulates exactly what its own single walk would."""
    n = order.shape[1]
    G = half.shape[0]
    for r in range(r0, r1):
        o = order[r]
        for g in range(0, G, 2):
            w0 = W[g]
            h0 = half[g]
            two = g + 1 < G
            w1 = W[g + 1] if two else W[g]
            h1 = half[g + 1] if two else half[g]
            a0 = 0.0
            a1 = 0.0
            k0 = n - 1
            k1 = n - 1 if two else 0
            k = 0
            while k < n - 1:
                i = o[k]
                if k0 == n - 1:
                    a0 += w0[i]
                    if a0 >= h0:
                        k0 = k
                if k1 == n - 1:
                    a1 += w1[i]
                    if a1 >= h1:
                        k1 = k
                if k0 < n - 1 and k1 < n - 1:
                    break
                k += 1
            out[g, r] = XT[r, o[k0]]
            if two:
                out[g + 1, r] = XT[r, o[k1]]


@numba.njit(cache=True, nogil=True, parallel=True)
def _walk_pairs_parallel(
    XT: np.ndarray, order: np.ndarray, W: np.ndarray, half: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover
    d = XT.shape[0]
    block = 64
    for b in numba.prange((d + block - 1) // block):
        _walk_pairs_rows(XT, order, W, half, out, b * block, min(d, (b + 1) * block))


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
    half = 0.5 * w.sum()
    if use_threads(XT.size // 2):
        with parallel_threads():
            _walk_parallel(XT, order, w, half, out)
    else:
        _walk_rows(XT, order, w, half, out, 0, XT.shape[0])
    return out


def weighted_median_sorted_groups(
    XT: np.ndarray,
    order: np.ndarray,
    w: np.ndarray,
    members: list[np.ndarray],
) -> np.ndarray:
    """:func:`weighted_median_sorted` of several disjoint member sets in one walk.

    ``w`` holds the weights of all N columns and ``members`` lists disjoint index sets; row
    g of the result is, bit for bit, ``weighted_median_sorted(XT, order, w_g)`` with
    ``w_g`` equal to ``w`` on ``members[g]`` and zero elsewhere: each set accumulates the
    same weights in the same order (the zeros a single walk adds change nothing) against the
    same half total, and the walk along a row stops once every set has reached its half.
    """
    w = np.ascontiguousarray(w, dtype=np.float64)
    n = XT.shape[1]
    if w.shape != (n,) or order.shape != XT.shape:
        raise ValueError(f"weighted median: XT {XT.shape}, order {order.shape}, w {w.shape}")
    W = np.zeros((len(members), n))
    half = np.empty(len(members))
    for g, idx in enumerate(members):
        W[g, idx] = w[idx]
        _check_median_weights(W[g])
        half[g] = 0.5 * W[g].sum()  # the half total a single walk would use, same rounding
    out = np.empty((len(members), XT.shape[0]))
    if use_threads(XT.size // 2 * ((len(members) + 1) // 2)):
        with parallel_threads():
            _walk_pairs_parallel(XT, order, W, half, out)
    elif len(members):
        _walk_pairs_rows(XT, order, W, half, out, 0, XT.shape[0])
    return out


# Below this much work (element operations) a kernel runs in the calling thread: starting a
# parallel region costs tens of microseconds on an idle machine and milliseconds on a loaded
# one, more than a small median or distance pass takes.
PARALLEL_MIN_WORK = 1 << 22


def use_threads(work: int) -> bool:
    """Whether a kernel with this much work should run on several threads (results never
    depend on it: every kernel's rows are independent)."""
    return work >= PARALLEL_MIN_WORK and _thread_budget() > 1


def _thread_budget() -> int:
    """Threads a kernel may use: torch's count when torch is loaded (a model job, or a test
    that sets it), else numba's own (which :func:`semmech.logs.set_threads` sets in a job).
    torch is looked up, not imported: clustering does not need it."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else numba.get_num_threads()


class parallel_threads:
    """Run numba's parallel loops on as many threads as the job may use.

    numba's OpenMP layer and torch share one libgomp, so numba.set_num_threads also changes
    torch's thread count; when torch is loaded its count is restored on exit (else a
    one-thread job would run torch on every core after its first median)."""

    def __enter__(self) -> None:
        self._torch = sys.modules.get("torch")
        self._torch_threads = self._torch.get_num_threads() if self._torch is not None else 0
        self._old = numba.get_num_threads()
        numba.set_num_threads(max(1, min(_thread_budget(), numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc: Any) -> None:
        numba.set_num_threads(self._old)
        if self._torch is not None:
            self._torch.set_num_threads(self._torch_threads)
