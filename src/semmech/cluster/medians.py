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

__all__ = [
    "weighted_median",
    "weighted_median_rows",
    "weighted_median_sorted",
    "weighted_median_sorted_groups",
    "argsort_rows",
    "rank_rows",
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


@numba.njit(cache=True, nogil=True, parallel=True)
def _sorted_groups_kernel(
    XT: np.ndarray, order: np.ndarray, W: np.ndarray, half: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover
    """Walks of several weight vectors (rows of W, zero outside each set), two per pass:
    each accumulates exactly what its own single walk would."""
    n = order.shape[1]
    d = XT.shape[0]
    G = half.shape[0]
    for r in numba.prange(d):
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
def _ranked_groups_kernel(
    XT: np.ndarray,
    order: np.ndarray,
    rankT: np.ndarray,
    w: np.ndarray,
    cols: np.ndarray,
    starts: np.ndarray,
    half: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover
    """Each set's members sorted by their rank in the row order: the walk's additions
    without walking past the non-members. ``rankT`` is samples × rows, so a block of rows
    reads each member's ranks contiguously."""
    n = order.shape[1]
    d = XT.shape[0]
    G = half.shape[0]
    block = 64
    for b in numba.prange((d + block - 1) // block):
        r0 = b * block
        r1 = min(d, r0 + block)
        keys = np.empty(cols.shape[0], dtype=np.int64)
        who = np.empty(cols.shape[0], dtype=np.int64)
        for g in range(G):
            lo, hi = starts[g], starts[g + 1]
            m = hi - lo
            ranks = np.empty((m, r1 - r0), dtype=np.int64)
            for i in range(m):
                ranks[i, :] = rankT[cols[lo + i], r0:r1]
            for r in range(r0, r1):
                for i in range(m):  # insertion sort: sets sent here are small
                    key = ranks[i, r - r0]
                    j = i
                    while j > 0 and keys[j - 1] > key:
                        keys[j] = keys[j - 1]
                        who[j] = who[j - 1]
                        j -= 1
                    keys[j] = key
                    who[j] = cols[lo + i]
                acc = 0.0
                hit = -1
                for i in range(m):
                    if keys[i] >= n - 1:
                        break
                    acc += w[who[i]]
                    if acc >= half[g]:
                        hit = who[i]
                        break
                if hit < 0:  # a walk that never reaches half ends at the last position
                    hit = order[r, n - 1]
                out[g, r] = XT[r, hit]


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


# Relative cost of sorting one rank against one step of a walk (measured; only speed depends
# on it, both give the same bits).
RANK_SORT_COST = 1.0


def rank_rows(order: np.ndarray) -> np.ndarray:
    """The inverse of :func:`argsort_rows`, transposed: ``rankT[order[r, k], r] = k``
    (samples × rows)."""
    d, n = order.shape
    rankT = np.empty((n, d), dtype=order.dtype)
    rankT[order, np.arange(d)[:, None]] = np.arange(n, dtype=order.dtype)[None, :]
    return rankT


def weighted_median_sorted_groups(
    XT: np.ndarray,
    order: np.ndarray,
    w: np.ndarray,
    members: list[np.ndarray],
    rankT: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`weighted_median_sorted` of several disjoint member sets in one walk.

    ``w`` holds the weights of all N columns and ``members`` lists disjoint index sets; row
    g of the result is, bit for bit, ``weighted_median_sorted(XT, order, w_g)`` with
    ``w_g`` equal to ``w`` on ``members[g]`` and zero elsewhere: each set accumulates the
    same weights in the same order (the zeros a single walk adds change nothing) against the
    same half total, and the walk along a row stops once every set has reached its half.

    With ``rankT`` (:func:`rank_rows`) a set of m members is not walked to but sorted by rank,
    O(m log m) instead of O(N) per row: the same additions in the same order, so the same
    bits. Sets choose whichever is cheaper.
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
    sizes = np.array([idx.size for idx in members], dtype=np.int64)
    if rankT is None:
        ranked = np.zeros(len(members), dtype=bool)
    else:  # sorting m ranks costs about m log m against a walk of ~N steps
        ranked = sizes * np.log2(np.maximum(sizes, 2)) * RANK_SORT_COST < n
    with _numba_threads():
        if ranked.any():
            sel = np.nonzero(ranked)[0]
            cols = np.concatenate([members[g] for g in sel]).astype(np.int64)
            starts = np.concatenate([[0], np.cumsum(sizes[sel])]).astype(np.int64)
            sub = np.empty((sel.size, XT.shape[0]))
            _ranked_groups_kernel(XT, order, rankT, w, cols, starts, half[sel], sub)
            out[sel] = sub
        if not ranked.all():
            sel = np.nonzero(~ranked)[0]
            sub = np.empty((sel.size, XT.shape[0]))
            _sorted_groups_kernel(XT, order, W[sel], half[sel], sub)
            out[sel] = sub
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
