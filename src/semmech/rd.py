"""Rate–distortion clustering of continuations by meaning and mechanism together (METHOD §5).

The estimator minimises, over hard partitions c(·),

    L = H(C) + β_e D_e + β_a D_a,        β_e = γβ,  β_a = (1 − γ)β,

with H(C) the entropy of the P-weighted cluster masses, D_e the P-weighted squared Euclidean
distortion of the semantic vectors around their cluster means, and D_a the P-weighted L1
distortion of the normalised attribution signatures around their cluster coordinate-wise
medians. K is not given: it emerges from split and merge tests whose acceptance is the exact
change in L, starting from one cluster.

Everything here works on arrays alone (no model), so it can be tested and benchmarked on
synthetic data. ``rd_sweep`` runs the β × γ grid on one :class:`RDWorkspace` (shared
normalisation and exact caches: centres depend only on a member set, split proposals only on
the member set and γ).

Choices where METHOD §5 leaves room (each step still lowers L exactly):
- a round is: assignment (previous masses and centres; ties keep the current cluster), centre
  and mass update, at most one split, at most one merge;
- split candidates are ordered by β_e·Var^e_c + β_a·Var^a_c, the within-cluster mean
  squared / absolute deviation per unit mass; a member set whose split was rejected is not
  proposed again while it is unchanged;
- the merge test evaluates every cluster (members go to their best other cluster under the
  assignment cost, centres fixed) and applies the largest decrease of L;
- the run stops after a round with no accepted split or merge whose change of L is below
  tol·|L|, or after ``max_rounds`` (one split per round, so K ≤ max_rounds + 1).

Layout of ``clusters/{p}.history.parquet``: prompt_id, beta, gamma, step, round, kind
(init | assign | split | merge), L and K after the step, predicted_delta (the ΔL the split or
merge test predicted; 0 for assignments).

Layout of ``clusters/{p}.npz`` (written by :func:`sweep_arrays`):
    H0            (d_a,)       P-weighted coordinate-wise median of the raw signatures
    scale         ()           s = sqrt(mean_n ||a_n − H0||²)   (1.0 when that is 0)
    beta, gamma   (C,)         the configuration of row i of the per-config arrays
    K             (C,)         number of clusters per configuration
    labels        (C, N)       int64 labels, row i = configuration i, column n = sample_idx n
    cfg{i:03d}_centres_e       (K_i, d_e) semantic centres (P-weighted means)
    cfg{i:03d}_centres_a       (K_i, d_a) mechanistic centres in normalised units
                               (P-weighted medians of ã; raw units: H0 + scale · centre)
    cfg{i:03d}_weights         (K_i,)     cluster masses P̄_c
Cluster c of a configuration is row c of its centres; labels are ordered by descending mass.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numba
import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClusterMixin

__all__ = [
    "RDInputError",
    "Normalisation",
    "RDStep",
    "PartitionCost",
    "RateDistortionClustering",
    "RDWorkspace",
    "RDSweepResult",
    "weighted_median",
    "weighted_median_rows",
    "weighted_median_sorted",
    "argsort_rows",
    "normalise_mechanistic",
    "validate_views",
    "partition_cost",
    "binary_entropy",
    "rd_sweep",
    "sweep_arrays",
    "read_prompt_views",
    "cluster_prompt_stage",
    "make_two_view_data",
    "make_signature_like_data",
]


class RDInputError(ValueError):
    """The arrays given to the clustering cannot be clustered (shape, NaN/inf, weights)."""


# --------------------------------------------------------------------------------------
# Small exact building blocks


def weighted_median(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Column-wise lower weighted median of ``X`` (n × d) with weights ``w`` (n,).

    The lower weighted median (first sorted value whose cumulative weight reaches half the
    total) minimises Σ_n w_n |x_n − m| in every column, which is what makes the median
    centre update a descent step for the L1 distortion.
    """
    X = np.asarray(X, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if X.ndim != 2 or w.shape != (X.shape[0],):
        raise ValueError(f"weighted_median: X must be (n, d) and w (n,), got {X.shape} and {w.shape}")
    return weighted_median_rows(np.ascontiguousarray(X.T), w)


def weighted_median_rows(XT: np.ndarray, w: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Row-wise lower weighted median of ``XT`` (d × n), over the columns ``idx`` if given
    (weights ``w`` then belong to those columns), without copying the selected columns.

    Linear expected time per row: a weighted quickselect (three-way partition around a
    median-of-three pivot, descending into the side where half the weight is crossed), in
    parallel over rows. Rows are independent, so the result does not depend on the number
    of threads. The transposed layout keeps every row contiguous.
    """
    XT = np.asarray(XT, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    cols = (np.arange(XT.shape[1], dtype=np.int64) if idx is None
            else np.ascontiguousarray(idx, dtype=np.int64))
    if cols.shape != w.shape:
        raise ValueError(f"weighted median: {cols.shape[0]} columns but {w.shape[0]} weights")
    _check_median_weights(w)
    out = np.empty(XT.shape[0])
    with _numba_threads():
        _weighted_median_kernel(XT, cols, w, out)
    return out


def _check_median_weights(w: np.ndarray) -> None:
    if w.size == 0 or not w.sum() > 0 or (w < 0).any():
        raise ValueError("weighted median needs at least one sample with positive weight "
                         "and no negative weights")


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
def _weighted_median_kernel(XT: np.ndarray, cols: np.ndarray, w: np.ndarray,
                            out: np.ndarray) -> None:  # pragma: no cover
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
def _sorted_median_kernel(XT: np.ndarray, order: np.ndarray, w: np.ndarray, half: float,
                          out: np.ndarray) -> None:  # pragma: no cover
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
        order[r0:r0 + step] = np.argsort(XT[r0:r0 + step], axis=1)
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


def binary_entropy(alpha: float) -> float:
    """H_b(α) in nats (0 at α ∈ {0, 1})."""
    if alpha <= 0.0 or alpha >= 1.0:
        return 0.0
    return -(alpha * math.log(alpha) + (1.0 - alpha) * math.log(1.0 - alpha))


def _entropy(mass: np.ndarray) -> float:
    m = mass[mass > 0]
    # masses are sums of floats, so one cluster can read 1 + 1e-16: clamp the rounding
    return max(float(-(m * np.log(m)).sum()), 0.0)


def _sq_dist(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n × k) through the Gram expansion, clipped at 0."""
    d = (X * X).sum(1)[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _l1_dist(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """L1 distances (n × k); torch.cdist avoids an n × k × d temporary and is ~7× faster."""
    if C.shape[0] == 0:
        return np.zeros((X.shape[0], 0))
    return torch.cdist(torch.from_numpy(X), torch.from_numpy(np.ascontiguousarray(C)), p=1).numpy()


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


def validate_views(E: Any, A: Any, sample_weight: Any = None, name: str | None = None
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
    P = (np.ones(E.shape[0]) if sample_weight is None
         else np.asarray(sample_weight, dtype=np.float64).reshape(-1))
    if not (E.shape[0] == A.shape[0] == P.shape[0]):
        raise RDInputError(
            f"mismatched row counts: E has {E.shape[0]} rows, A has {A.shape[0]}, "
            f"sample_weight has {P.shape[0]}{where}")
    if E.shape[0] == 0:
        raise RDInputError(f"no samples to cluster{where}")
    for label, X in (("semantic view E", E), ("mechanistic view A", A), ("sample_weight", P)):
        bad = ~np.isfinite(X)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0] if X.ndim == 2 else np.nonzero(bad)[0])
            raise RDInputError(
                f"{label} has {int(bad.sum())} NaN/inf values in {rows.size} rows "
                f"(first rows: {rows[:5].tolist()}){where}")
    if (P < 0).any():
        raise RDInputError(f"sample_weight has negative entries (rows {np.nonzero(P < 0)[0][:5].tolist()}){where}")
    if not P.sum() > 0:
        raise RDInputError(f"all sample weights are zero: cluster masses are undefined{where}")
    return E, A, P


def normalise_mechanistic(A: np.ndarray, P: np.ndarray, H0: np.ndarray | None = None
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


def partition_cost(labels: np.ndarray, E: np.ndarray, A_tilde: np.ndarray, P: np.ndarray,
                   beta_e: float = 0.0, beta_a: float = 0.0) -> PartitionCost:
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


# --------------------------------------------------------------------------------------
# The workspace: views of one prompt, their normalisation and exact caches


def _members_key(idx: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(idx, dtype=np.int64).tobytes(), digest_size=16).digest()


@dataclass
class _Centre:
    key: bytes
    mu_e: np.ndarray
    mu_a: np.ndarray
    mass: float
    de: np.ndarray | None = None  # squared Euclidean distance of every sample, lazily
    da: np.ndarray | None = None  # L1 distance of every sample, lazily


@dataclass
class _Proposal:
    """A 2-way split of one member set; it depends on γ and the members only (not β)."""

    left: np.ndarray      # bool over the members: child 1 (keeps the parent's index)
    keys: tuple[bytes, bytes]
    idx: tuple[np.ndarray, np.ndarray]
    dist_e: np.ndarray    # (2,) Σ_{n ∈ child} w_n ||e_n − μ^e_child||²
    dist_a: np.ndarray    # (2,) Σ_{n ∈ child} w_n ||ã_n − μ^a_child||₁


class RDWorkspace:
    """One prompt's validated views, its mechanistic normalisation and exact caches.

    Cluster centres depend only on the member set, and a split proposal only on the member
    set and γ (β scales the joint space uniformly). A sweep therefore shares one workspace
    across all (β, γ): cached values are the values a fresh computation would return, so
    results do not depend on the order in which configurations run.
    """

    def __init__(self, E: Any, A: Any, sample_weight: Any = None, *, name: str | None = None,
                 normalize_semantic_centres: bool = False, cache_mb: float = 256.0):
        E, A, P = validate_views(E, A, sample_weight, name)
        self.name = name
        # ã is a per-coordinate increasing map of a, so one row order serves H0 and every
        # centre; medians then walk contiguous rows of the transposed layout.
        AT = np.ascontiguousarray(A.T)
        self.order = argsort_rows(AT)
        H0 = weighted_median_sorted(AT, self.order, P / P.sum())
        del AT
        self.norm = normalise_mechanistic(A, P, H0=H0)
        self.E = E
        self.At = self.norm.A_tilde
        self.AtT = np.ascontiguousarray(self.At.T)
        self.P = P
        self.w = P / P.sum()
        self.normalize_semantic_centres = bool(normalize_semantic_centres)
        self._centres: OrderedDict[bytes, _Centre] = OrderedDict()
        self._proposals: OrderedDict[tuple, _Proposal | None] = OrderedDict()
        self._budget = float(cache_mb) * 2**20
        self._used = 0

    @property
    def n_samples(self) -> int:
        return int(self.w.shape[0])

    def centre(self, idx: np.ndarray, key: bytes | None = None) -> _Centre:
        """P-weighted mean (semantic) and median (mechanistic) of the members ``idx``."""
        key = _members_key(idx) if key is None else key
        hit = self._centres.get(key)
        if hit is not None:
            self._centres.move_to_end(key)
            return hit
        w = self.w[idx]
        m = float(w.sum())
        mu_e = w @ self.E[idx] / m
        if self.normalize_semantic_centres:
            nrm = np.linalg.norm(mu_e)
            if nrm > 0:
                mu_e = mu_e / nrm
        if 64 * idx.size >= self.n_samples:  # walk the shared order
            w_full = np.zeros(self.n_samples)
            w_full[idx] = w
            mu_a = weighted_median_sorted(self.AtT, self.order, w_full)
        else:  # few members: select among them only
            mu_a = weighted_median_rows(self.AtT, w, idx)
        c = _Centre(key, mu_e, mu_a, m)
        self._store(self._centres, key, c)
        return c

    def distances(self, c: _Centre) -> tuple[np.ndarray, np.ndarray]:
        """Distances of every sample to a centre, computed once per centre."""
        if c.de is None:
            c.de = _sq_dist(self.E, c.mu_e[None])[:, 0]
            c.da = _l1_dist(self.At, c.mu_a[None])[:, 0]
            if self._centres.get(c.key) is c:  # a cached centre just grew
                self._used += c.de.nbytes + c.da.nbytes
                self._trim()
        return c.de, c.da

    @staticmethod
    def _size(value: _Centre | _Proposal | None) -> int:
        if value is None:
            return 64
        if isinstance(value, _Centre):
            arrays = [value.mu_e, value.mu_a, value.de, value.da]
        else:
            arrays = [value.left, *value.idx, value.dist_e, value.dist_a]
        return 64 + sum(a.nbytes for a in arrays if a is not None)

    def _store(self, cache: OrderedDict, key: Any, value: Any) -> None:
        cache[key] = value
        self._used += self._size(value)
        self._trim()

    def _trim(self) -> None:
        """Evict least recently used entries (centres first) beyond the memory budget.
        Evicting only costs recomputation: cached values equal fresh ones."""
        while self._used > self._budget and (len(self._centres) > 1 or self._proposals):
            cache = self._centres if len(self._centres) > 1 else self._proposals
            _, old = cache.popitem(last=False)
            self._used -= self._size(old)

    def propose_split(self, idx: np.ndarray, key: bytes, gamma: float, refine_iter: int,
                      power_iter: int) -> _Proposal | None:
        """A 2-way split of the members ``idx`` (sorted), or None if they cannot be split.

        Principal direction of the joint space [√γ e, √(1−γ) ã] (weighted, centred;
        randomised subspace iteration with a fixed sketch, so it is deterministic), cut at
        the weighted median of the projections, then ``refine_iter`` 2-means rounds under
        the joint distortion γ||·||² + (1−γ)||·||₁ with mean / median centres.
        """
        pkey = (float(gamma), int(refine_iter), int(power_iter), key)
        if pkey in self._proposals:
            return self._proposals[pkey]
        prop = self._propose(idx, float(gamma), int(refine_iter), int(power_iter))
        self._store(self._proposals, pkey, prop)
        return prop

    def _propose(self, idx, gamma, refine_iter, power_iter) -> _Proposal | None:
        everyone = idx.size == self.n_samples
        E = self.E if everyone else self.E[idx]
        At = self.At if everyone else self.At[idx]
        w = self.w[idx]
        Wc = w.sum()
        n = idx.size
        ge, ga = math.sqrt(gamma), math.sqrt(1.0 - gamma)
        sw = np.sqrt(w / Wc)
        me, ma = w @ E / Wc, w @ At / Wc
        # Z = diag(sw) [ge (E − me), ga (A − ma)], applied without forming the centred copy
        def zt(Y):  # Z^T Y, as its two blocks
            SY = sw[:, None] * Y
            tot = SY.sum(0)
            return ge * (E.T @ SY - np.outer(me, tot)), ga * (At.T @ SY - np.outer(ma, tot))

        def z(Ve, Va):  # Z V
            return sw[:, None] * (ge * (E @ Ve - me @ Ve) + ga * (At @ Va - ma @ Va))

        Y = np.random.default_rng(12345).standard_normal((n, min(n, 8)))  # fixed sketch
        for _ in range(power_iter + 1):
            Y = z(*zt(np.linalg.qr(Y)[0]))
        Q = np.linalg.qr(Y)[0]
        Be, Ba = zt(Q)
        u = Q @ np.linalg.eigh(Be.T @ Be + Ba.T @ Ba)[1][:, -1]  # leading left singular vector
        ve, va = zt(u[:, None])
        # project every member (zero-weight ones too) on the joint direction Z^T u
        proj = ge * (E @ ve[:, 0]) + ga * (At @ va[:, 0])
        if not np.ptp(proj) > 0:
            return None
        m = weighted_median(proj[:, None], w)[0]
        left = proj <= m
        if not w[~left].sum() > 0:
            left = proj < m
        if not (w[left].sum() > 0 and w[~left].sum() > 0):
            return None

        def children(lft):
            ids = (idx[lft], idx[~lft])
            keys = (_members_key(ids[0]), _members_key(ids[1]))
            cs = (self.centre(ids[0], keys[0]), self.centre(ids[1], keys[1]))
            de = _sq_dist(E, np.stack([cs[0].mu_e, cs[1].mu_e]))
            da = _l1_dist(At, np.stack([cs[0].mu_a, cs[1].mu_a]))
            return ids, keys, de, da

        ids, keys, de, da = children(left)
        for _ in range(refine_iter):
            cost = gamma * de + (1.0 - gamma) * da
            new = np.where(left, cost[:, 0] <= cost[:, 1], cost[:, 0] < cost[:, 1])  # ties stay
            if np.array_equal(new, left) or not (w[new].sum() > 0 and w[~new].sum() > 0):
                break
            left = new
            ids, keys, de, da = children(left)
        sel = np.stack([left, ~left], axis=1)
        return _Proposal(left=left, keys=keys, idx=ids,
                         dist_e=(w[:, None] * de * sel).sum(0), dist_a=(w[:, None] * da * sel).sum(0))


# --------------------------------------------------------------------------------------
# The estimator


def _dissolve_massless(labels: np.ndarray, w: np.ndarray, cost: np.ndarray, K: int) -> np.ndarray:
    """Move members of clusters that keep only zero-weight samples to their best cluster
    with positive mass: such a cluster has no defined centre, and zero-weight samples do
    not change L wherever they go."""
    mass = np.bincount(labels, weights=w, minlength=K)
    counts = np.bincount(labels, minlength=K)
    massless = (counts > 0) & ~(mass > 0)
    if not massless.any():
        return labels
    c = np.where(mass > 0, cost, np.inf)
    stray = massless[labels]
    labels = labels.copy()
    labels[stray] = np.argmin(c[stray], axis=1)
    return labels


class RDStep(NamedTuple):
    """One step of the descent: L after it, K after it, and for split / merge the ΔL the
    test predicted (the realised ΔL is the difference of consecutive L values)."""

    round: int
    kind: str  # init | assign | split | merge
    L: float
    K: int
    predicted_delta: float


@dataclass
class _State:
    """The partition being descended: labels, centres (by member-set key), masses and the
    distances (de: squared Euclidean, da: L1, both N × K) of every sample to every centre."""

    labels: np.ndarray
    centres: list[_Centre]
    mass: np.ndarray
    de: np.ndarray
    da: np.ndarray
    dirty: np.ndarray  # centre not optimal for its members (receivers of a merge)

    @property
    def K(self) -> int:
        return int(self.mass.shape[0])

    def keep(self, keep: np.ndarray) -> None:
        """Drop clusters (columns) where ``keep`` is False and renumber the labels."""
        self.labels = (np.cumsum(keep) - 1)[self.labels]
        self.centres = [c for c, k in zip(self.centres, keep) if k]
        self.de, self.da, self.dirty = self.de[:, keep], self.da[:, keep], self.dirty[keep]


class RateDistortionClustering(ClusterMixin, BaseEstimator):
    """Entropy-constrained two-view clustering with split and merge tests (METHOD §5).

    Parameters
    ----------
    beta : granularity β (> 0); higher gives more clusters.
    gamma : weight of the semantic view, γ ∈ [0, 1]; β_e = γβ, β_a = (1 − γ)β.
    max_rounds : cap on assign → split → merge rounds.
    tol : stop when a round without an accepted split or merge changes L by < tol · |L|.
    normalize_semantic_centres : renormalise semantic centres to unit length, as the
        authors' code does. Off by default: it breaks the guarantee that L never rises.
    split_refine_iter : 2-means refinement rounds of a split proposal.
    split_power_iter : subspace iterations for the proposal's principal direction.

    Attributes after ``fit``: labels_, n_clusters_, cluster_centers_e_, cluster_centers_a_
    (normalised units; raw units are H0_ + scale_ · centre), cluster_weights_ (masses P̄_c),
    objective_ {L, H, D_e, D_a}, history_ (list of :class:`RDStep`), H0_, scale_,
    n_rounds_, converged_.
    """

    def __init__(self, beta: float = 1.0, gamma: float = 0.5, *, max_rounds: int = 100,
                 tol: float = 1e-3, normalize_semantic_centres: bool = False,
                 split_refine_iter: int = 3, split_power_iter: int = 2):
        self.beta = beta
        self.gamma = gamma
        self.max_rounds = max_rounds
        self.tol = tol
        self.normalize_semantic_centres = normalize_semantic_centres
        self.split_refine_iter = split_refine_iter
        self.split_power_iter = split_power_iter

    # ---- public API -------------------------------------------------------------------
    def fit(self, E: Any, A: Any, sample_weight: Any = None, *, name: str | None = None
            ) -> "RateDistortionClustering":
        """Cluster rows of E (semantic, N × d_e) and A (raw signatures, N × d_a) with
        weights P (default 1). ``name`` (a prompt id) appears in error messages."""
        self._check_params()
        ws = RDWorkspace(E, A, sample_weight, name=name,
                         normalize_semantic_centres=self.normalize_semantic_centres)
        return self.fit_workspace(ws)

    def fit_workspace(self, ws: RDWorkspace) -> "RateDistortionClustering":
        """Fit on a prepared :class:`RDWorkspace` (shared normalisation and caches)."""
        self._check_params()
        if ws.normalize_semantic_centres != bool(self.normalize_semantic_centres):
            raise ValueError("workspace and estimator disagree on normalize_semantic_centres")
        self.H0_ = ws.norm.H0
        self.scale_ = ws.norm.scale
        self._descend(ws)
        return self

    def fit_predict(self, E: Any, A: Any = None, sample_weight: Any = None, **kw) -> np.ndarray:
        return self.fit(E, A, sample_weight, **kw).labels_

    @property
    def beta_e(self) -> float:
        return float(self.gamma) * float(self.beta)

    @property
    def beta_a(self) -> float:
        return (1.0 - float(self.gamma)) * float(self.beta)

    # ---- internals --------------------------------------------------------------------
    def _check_params(self) -> None:
        if not (isinstance(self.beta, (int, float, np.number)) and np.isfinite(self.beta)
                and self.beta > 0):
            raise ValueError(f"beta must be a positive number, got {self.beta!r}")
        if not (0.0 <= float(self.gamma) <= 1.0):
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma!r}")
        if int(self.max_rounds) < 1 or not self.tol > 0:
            raise ValueError("max_rounds must be >= 1 and tol > 0")
        if int(self.split_refine_iter) < 0 or int(self.split_power_iter) < 0:
            raise ValueError("split_refine_iter and split_power_iter must be >= 0")

    def _descend(self, ws: RDWorkspace) -> None:
        """The descent of METHOD §5; every recorded step lowers L (or leaves it)."""
        N = ws.n_samples
        everyone = np.arange(N)
        c0 = ws.centre(everyone)
        de, da = ws.distances(c0)
        st = _State(labels=np.zeros(N, dtype=np.int64), centres=[c0], mass=np.array([1.0]),
                    de=de[:, None].copy(), da=da[:, None].copy(), dirty=np.zeros(1, dtype=bool))
        L = self._objective(ws, st)[0]
        history = [RDStep(0, "init", L, 1, 0.0)]
        rejected: set[bytes] = set()  # member sets whose split this β, γ rejected
        converged = False
        rnd = 0
        for rnd in range(1, int(self.max_rounds) + 1):
            L_start = L
            self._assign(ws, st)
            L = self._objective(ws, st)[0]
            history.append(RDStep(rnd, "assign", L, st.K, 0.0))
            accepted = False
            for kind, step in (("split", self._split), ("merge", self._merge)):
                predicted = step(ws, st, rejected) if kind == "split" else step(ws, st)
                if predicted is not None:
                    L = self._objective(ws, st)[0]
                    history.append(RDStep(rnd, kind, L, st.K, float(predicted)))
                    accepted = True
            if not accepted and abs(L_start - L) <= self.tol * max(abs(L), 1e-300):
                converged = True
                break
        if st.dirty.any():  # a merge in the last round left receiving centres stale
            self._refresh(ws, st, st.dirty)
            L = self._objective(ws, st)[0]
            history.append(RDStep(rnd, "assign", L, st.K, 0.0))
        Lv, H, De, Da = self._objective(ws, st)

        # canonical order: heaviest cluster first, ties by first member
        K = st.K
        first = np.full(K, N)
        np.minimum.at(first, st.labels, everyone)
        order = np.lexsort((first, -st.mass))
        rank = np.empty(K, dtype=np.int64)
        rank[order] = np.arange(K)
        self.labels_ = rank[st.labels]
        self.cluster_centers_e_ = np.stack([st.centres[c].mu_e for c in order])
        self.cluster_centers_a_ = np.stack([st.centres[c].mu_a for c in order])
        self.cluster_weights_ = st.mass[order]
        self.n_clusters_ = int(K)
        self.objective_ = {"L": Lv, "H": H, "D_e": De, "D_a": Da}
        self.history_ = history
        self.n_rounds_ = rnd
        self.converged_ = converged

    def _objective(self, ws: RDWorkspace, st: _State) -> tuple[float, float, float, float]:
        """(L, H, D_e, D_a) of the current state from its cached distances."""
        own = np.arange(st.labels.shape[0]), st.labels
        H = _entropy(st.mass)
        De = float(ws.w @ st.de[own])
        Da = float(ws.w @ st.da[own])
        return H + self.beta_e * De + self.beta_a * Da, H, De, Da

    def _refresh(self, ws: RDWorkspace, st: _State, which: np.ndarray) -> None:
        """Optimal centres (and distance columns) for the clusters in ``which``."""
        for c in np.nonzero(which)[0]:
            centre = ws.centre(np.nonzero(st.labels == c)[0])
            st.centres[c] = centre
            st.de[:, c], st.da[:, c] = ws.distances(centre)
        st.dirty[which] = False

    def _assign(self, ws: RDWorkspace, st: _State) -> None:
        """Steps 2-3: entropy-constrained assignment with the previous masses, then the
        centre and mass update. Members keep their cluster on exact ties."""
        N, K = st.labels.shape[0], st.K
        rows = np.arange(N)
        cost = -np.log(st.mass)[None, :] + self.beta_e * st.de + self.beta_a * st.da
        best = np.argmin(cost, axis=1)
        new = np.where(cost[rows, st.labels] <= cost[rows, best], st.labels, best)
        new = _dissolve_massless(new, ws.w, cost, K)
        changed = st.dirty.copy()
        moved = new != st.labels
        changed[st.labels[moved]] = True
        changed[new[moved]] = True
        st.labels = new
        keep = np.bincount(new, minlength=K) > 0  # empty clusters vanish
        if not keep.all():
            st.keep(keep)
            changed = changed[keep]
        st.mass = np.bincount(st.labels, weights=ws.w, minlength=st.K)
        self._refresh(ws, st, changed)

    def _split(self, ws: RDWorkspace, st: _State, rejected: set[bytes]) -> float | None:
        """Step 4: test clusters by β-weighted spread, largest first; apply the first split
        whose distortion gain exceeds its rate cost P̄_c H_b(α); return its ΔL."""
        be, ba, w = self.beta_e, self.beta_a, ws.w
        N, K = st.labels.shape[0], st.K
        own = np.arange(N), st.labels
        spread = np.bincount(st.labels, weights=w * (be * st.de[own] + ba * st.da[own]),
                             minlength=K) / st.mass
        for c in np.argsort(-spread, kind="stable"):
            idx = np.nonzero(st.labels == c)[0]
            if idx.size < 2:
                continue
            key = _members_key(idx)
            if key in rejected:
                continue
            prop = ws.propose_split(idx, key, float(self.gamma), int(self.split_refine_iter),
                                    int(self.split_power_iter))
            if prop is None:
                rejected.add(key)
                continue
            wi = w[idx]
            gain = (be * (float(wi @ st.de[idx, c]) - prop.dist_e.sum())
                    + ba * (float(wi @ st.da[idx, c]) - prop.dist_a.sum()))
            m1, m2 = float(wi[prop.left].sum()), float(wi[~prop.left].sum())
            rate = (m1 + m2) * binary_entropy(m1 / (m1 + m2))
            if not gain > rate:
                rejected.add(key)
                continue
            st.labels[prop.idx[1]] = K
            c1, c2 = ws.centre(prop.idx[0], prop.keys[0]), ws.centre(prop.idx[1], prop.keys[1])
            st.centres[c] = c1
            st.centres.append(c2)
            st.mass[c] = m1
            st.mass = np.append(st.mass, m2)
            st.de = np.hstack([st.de, np.empty((N, 1))])
            st.da = np.hstack([st.da, np.empty((N, 1))])
            st.de[:, c], st.da[:, c] = ws.distances(c1)
            st.de[:, K], st.da[:, K] = ws.distances(c2)
            st.dirty = np.append(st.dirty, False)
            return rate - gain
        return None

    def _merge(self, ws: RDWorkspace, st: _State) -> float | None:
        """Step 5: dissolve the cluster whose removal lowers L the most, its members going
        to their best other clusters (entropy-constrained cost, current masses, centres
        fixed). Returns the exact ΔL, or None when no dissolution lowers L."""
        if st.K < 2:
            return None
        be, ba, w = self.beta_e, self.beta_a, ws.w
        N, K = st.labels.shape[0], st.K
        rows = np.arange(N)
        dist = be * st.de + ba * st.da
        cost = -np.log(st.mass)[None, :] + dist
        cost[rows, st.labels] = np.inf
        dest = np.argmin(cost, axis=1)  # every sample's best other cluster
        added = w * (dist[rows, dest] - dist[rows, st.labels])
        H_now = _entropy(st.mass)
        best = None
        for c in range(K):
            members = st.labels == c
            new_mass = st.mass + np.bincount(dest[members], weights=w[members], minlength=K)
            new_mass[c] = 0.0
            delta = _entropy(new_mass) - H_now + float(added[members].sum())
            if delta < -1e-12 * max(1.0, H_now) and (best is None or delta < best[1]):
                best = (c, delta)
        if best is None:
            return None
        c, delta = best
        members = st.labels == c
        receivers = np.zeros(K, dtype=bool)
        receivers[np.unique(dest[members])] = True
        st.labels[members] = dest[members]
        st.dirty |= receivers
        keep = np.arange(K) != c
        st.keep(keep)
        st.mass = np.bincount(st.labels, weights=w, minlength=K - 1)
        return delta


# --------------------------------------------------------------------------------------
# The β × γ sweep


@dataclass
class RDSweepResult:
    prompt_id: str
    normalisation: Normalisation
    table: pd.DataFrame                 # prompt_id, beta, gamma, K, L, H, D_e, D_a
    labels: pd.DataFrame                # prompt_id, beta, gamma, sample_idx, label
    history: pd.DataFrame               # prompt_id, beta, gamma, step, round, kind, L, K, predicted_delta
    models: list[RateDistortionClustering] = field(default_factory=list)
    runtime_s: list[float] = field(default_factory=list)


def rd_sweep(E: Any, A: Any, P: Any, betas: Sequence[float], gammas: Sequence[float], *,
             prompt_id: str = "", cache_mb: float = 256.0, **rd_params: Any) -> RDSweepResult:
    """Fit RD at every (β, γ) of the grid, each from K = 1, on one shared workspace.

    Configurations are ordered β-major, in the order given. Runtimes are returned apart
    from the tables so that the tables are byte-reproducible.
    """
    ws = RDWorkspace(E, A, P, name=prompt_id or None, cache_mb=cache_mb,
                     normalize_semantic_centres=rd_params.get("normalize_semantic_centres", False))
    rows, label_rows, hist_rows, models, runtimes = [], [], [], [], []
    N = ws.n_samples
    for beta in betas:
        for gamma in gammas:
            t0 = time.perf_counter()
            est = RateDistortionClustering(beta=float(beta), gamma=float(gamma), **rd_params)
            est.fit_workspace(ws)
            runtimes.append(time.perf_counter() - t0)
            models.append(est)
            o = est.objective_
            rows.append({"prompt_id": prompt_id, "beta": float(beta), "gamma": float(gamma),
                         "K": est.n_clusters_, "L": o["L"], "H": o["H"], "D_e": o["D_e"],
                         "D_a": o["D_a"]})
            label_rows.append(pd.DataFrame({
                "prompt_id": prompt_id, "beta": float(beta), "gamma": float(gamma),
                "sample_idx": np.arange(N, dtype=np.int64), "label": est.labels_.astype(np.int64)}))
            h = pd.DataFrame(est.history_, columns=list(RDStep._fields))
            h.insert(0, "step", np.arange(len(h), dtype=np.int64))
            h.insert(0, "gamma", float(gamma))
            h.insert(0, "beta", float(beta))
            h.insert(0, "prompt_id", prompt_id)
            hist_rows.append(h)
    table = pd.DataFrame(rows).astype({"K": np.int64})
    labels = pd.concat(label_rows, ignore_index=True)
    history = pd.concat(hist_rows, ignore_index=True).astype({"round": np.int64, "K": np.int64})
    return RDSweepResult(prompt_id, ws.norm, table, labels, history, models, runtimes)


def sweep_arrays(result: RDSweepResult) -> dict[str, np.ndarray]:
    """The arrays of ``clusters/{p}.npz`` (layout in the module docstring)."""
    out: dict[str, np.ndarray] = {
        "H0": result.normalisation.H0.astype(np.float64),
        "scale": np.asarray(result.normalisation.scale, dtype=np.float64),
        "beta": result.table["beta"].to_numpy(np.float64),
        "gamma": result.table["gamma"].to_numpy(np.float64),
        "K": result.table["K"].to_numpy(np.int64),
        "labels": np.stack([m.labels_ for m in result.models]).astype(np.int64),
    }
    for i, m in enumerate(result.models):
        out[f"cfg{i:03d}_centres_e"] = m.cluster_centers_e_
        out[f"cfg{i:03d}_centres_a"] = m.cluster_centers_a_
        out[f"cfg{i:03d}_weights"] = m.cluster_weights_
    return out


# --------------------------------------------------------------------------------------
# Workflow entry


def read_prompt_views(prompt_id: str, samples_path: Any, embeddings_path: Any,
                      signatures_path: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E (embeddings), raw A (signatures) and P (weights) of one prompt, row n = sample_idx n,
    with row counts checked against the sample table before any clustering work."""
    from . import io

    samples = io.read_parquet(samples_path, required=["sample_idx", "weight"])
    n = len(samples)
    if not np.array_equal(samples["sample_idx"].to_numpy(), np.arange(n)):
        raise io.CorruptInputError(f"{samples_path}: sample_idx is not 0..N-1 in order")
    emb = io.read_npz(embeddings_path, required=["embeddings"])["embeddings"]
    tensors, _ = io.read_safetensors(signatures_path, required=["signatures"])
    A = tensors["signatures"].double().numpy()
    for path, X in ((embeddings_path, emb), (signatures_path, A)):
        if X.ndim != 2 or X.shape[0] != n:
            raise io.CorruptInputError(f"{path}: expected {n} rows (one per continuation of "
                                       f"prompt {prompt_id!r}), found shape {X.shape}")
    return emb.astype(np.float64), A, samples["weight"].to_numpy(np.float64)


RD_PARAM_KEYS = ("max_rounds", "tol", "normalize_semantic_centres", "split_refine_iter",
                 "split_power_iter")


def cluster_prompt_stage(prompt_id: str, samples_path: Any, embeddings_path: Any,
                         signatures_path: Any, cfg: dict[str, Any], out_sweep: Any, out_labels: Any,
                         out_history: Any, out_npz: Any, out_runtime: Any) -> RDSweepResult:
    """Workflow entry: the β × γ sweep of one prompt, written as clusters/{p}.*.

    Tables and arrays are byte-reproducible; wall-clock runtimes go to a separate JSON.
    """
    import logging
    import platform

    from . import io

    log = logging.getLogger("semmech")
    E, A, P = read_prompt_views(prompt_id, samples_path, embeddings_path, signatures_path)
    params = {k: cfg[k] for k in RD_PARAM_KEYS if k in cfg}
    betas = list(cfg.get("betas", [0.5, 0.75, 1.0, 1.25]))
    gammas = list(cfg.get("gammas", [0.1, 0.3, 0.5, 0.7, 0.9]))
    log.info("prompt %s: RD sweep over %d betas x %d gammas, N=%d, d_e=%d, d_a=%d",
             prompt_id, len(betas), len(gammas), E.shape[0], E.shape[1], A.shape[1])
    t0 = time.perf_counter()
    res = rd_sweep(E, A, P, betas, gammas, prompt_id=prompt_id,
                   cache_mb=float(cfg.get("cache_mb", 256.0)), **params)
    total = time.perf_counter() - t0
    for r, m in zip(res.table.itertuples(index=False), res.models):
        log.info("beta=%g gamma=%g: K=%d L=%.4f H=%.4f D_e=%.4f D_a=%.4f rounds=%d%s", r.beta,
                 r.gamma, r.K, r.L, r.H, r.D_e, r.D_a, m.n_rounds_,
                 "" if m.converged_ else " (max_rounds reached)")
    io.write_parquet(res.table, out_sweep)
    io.write_parquet(res.labels, out_labels)
    io.write_parquet(res.history, out_history)
    io.write_npz(out_npz, **sweep_arrays(res))
    io.write_json({"prompt_id": prompt_id, "total_s": total, "host": platform.node(),
                   "configs": [{"beta": float(r.beta), "gamma": float(r.gamma), "runtime_s": t}
                               for r, t in zip(res.table.itertuples(index=False), res.runtime_s)]},
                  out_runtime)
    return res


# --------------------------------------------------------------------------------------
# Synthetic two-view data (tests, benchmarks, realistic-scale checks)


def make_signature_like_data(n: int = 500, *, n_modes: int = 4, d_e: int = 384, d_a: int = 5000,
                             rank: int = 32, sep: float = 1.0, noise: float = 1.0,
                             node_sigma: float = 1.5, seed: int = 0) -> dict[str, np.ndarray]:
    """Views shaped like the real ones, for benchmarks and scale checks.

    Semantic vectors are unit vectors around ``n_modes`` random directions in d_e dimensions.
    Signatures are a rank-``rank`` linear image of a per-continuation latent (attribution is
    linear in the gradient, which varies smoothly with the continuation) with mode means
    ``sep`` apart, isotropic latent ``noise`` and log-normal node scales (a few nodes
    dominate a signature). Weights look like exp(mean log-probability).
    """
    rng = np.random.default_rng(seed)
    mode = rng.integers(0, n_modes, n)
    Ce = rng.standard_normal((n_modes, d_e))
    Ce /= np.linalg.norm(Ce, axis=1, keepdims=True)
    base = rng.standard_normal(d_e)
    base /= np.linalg.norm(base)
    E = 2.0 * base + sep * Ce[mode] + 0.3 * math.sqrt(50.0 / d_e) * rng.standard_normal((n, d_e))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    Z = sep * rng.standard_normal((n_modes, rank))[mode] + noise * rng.standard_normal((n, rank))
    B = rng.standard_normal((rank, d_a)) / math.sqrt(rank)
    A = (Z @ B + 0.1 * rng.standard_normal((n, d_a))) * np.exp(node_sigma * rng.standard_normal(d_a))
    P = np.exp(-np.abs(rng.normal(1.2, 0.6, n)))
    return {"E": E, "A": A, "P": P, "mode": mode}


def make_two_view_data(n_per_mode: int = 50, *, d_e: int = 16, d_a: int = 32,
                       sem_sep: float = 1.0, mech_sep: float = 1.0, noise_e: float = 0.05,
                       noise_a: float = 0.1, mech_support: int | None = None,
                       heavy_tail: float = 0.0, weights: str = "uniform", seed: int = 0
                       ) -> dict[str, np.ndarray]:
    """Four joint modes: the semantic view splits them into 2 groups (s ∈ {0, 1}) and the
    mechanistic view into 2 crossing groups (t ∈ {0, 1}); mode = 2s + t.

    E rows are unit vectors around two orthogonal directions mixed by ``sem_sep``; A rows
    are raw signatures ±``mech_sep`` · v on ``mech_support`` coordinates plus noise, with an
    arbitrary offset and scale (the normalisation has to undo them). ``heavy_tail`` > 0
    scales coordinates by log-normal factors, as attribution magnitudes are. ``weights``:
    "uniform" or "lognormal" (exp of a mean log-probability-like value).
    """
    rng = np.random.default_rng(seed)
    n = 4 * n_per_mode
    mode = np.repeat(np.arange(4), n_per_mode)
    s, t = mode // 2, mode % 2
    u0 = np.zeros(d_e); u0[0] = 1.0
    u1 = np.zeros(d_e); u1[1] = 1.0
    base = np.zeros(d_e); base[2] = 1.0
    dirs = np.where(s[:, None] == 0, u0, u1)
    E = base + sem_sep * dirs + noise_e * rng.standard_normal((n, d_e))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    support = d_a if mech_support is None else mech_support
    v = np.zeros(d_a)
    v[:support] = rng.choice([-1.0, 1.0], size=support) / math.sqrt(support)
    A = np.where(t[:, None] == 0, 1.0, -1.0) * mech_sep * v + noise_a * rng.standard_normal((n, d_a)) / math.sqrt(d_a) * math.sqrt(support)
    if heavy_tail > 0:
        A *= np.exp(heavy_tail * rng.standard_normal(d_a))[None, :]
    A = 0.01 * A + 0.003 * rng.standard_normal(d_a)[None, :]  # arbitrary units and offset
    if weights == "uniform":
        P = np.ones(n)
    elif weights == "lognormal":
        P = np.exp(-np.abs(rng.normal(1.0, 0.5, n)))
    else:
        raise ValueError(f"weights must be 'uniform' or 'lognormal', got {weights!r}")
    return {"E": E, "A": A, "P": P, "mode": mode, "sem": s, "mech": t}
