"""Rate–distortion clustering of continuations by meaning and mechanism together (METHOD §5).

The estimator minimises, over hard partitions c(·), the objective of
:mod:`semmech.cluster.objective`,

    L = H(C) + β_e D_e + β_a D_a,        β_e = γβ,  β_a = (1 − γ)β.

K is not given: it emerges from split and merge tests whose acceptance is the exact change in
L, starting from one cluster.

Everything here works on arrays alone (no model), so it can be tested and benchmarked on
synthetic data. One :class:`RDWorkspace` holds a prompt's views with shared normalisation and
exact caches (centres depend only on a member set, split proposals only on the member set and
γ), so the β × γ sweep (:mod:`semmech.cluster.sweep`) runs every configuration on one.

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
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from .medians import (
    argsort_rows,
    weighted_median,
    weighted_median_rows,
    weighted_median_sorted,
    weighted_median_sorted_groups,
)
from .objective import (
    binary_entropy,
    l1_distances,
    mass_entropy,
    normalise_mechanistic,
    sq_distances,
    validate_views,
)

__all__ = ["RDWorkspace", "RDStep", "RateDistortionClustering"]


# --------------------------------------------------------------------------------------
# The workspace: views of one prompt, their normalisation and exact caches


def _members_key(idx: np.ndarray) -> bytes:
    return hashlib.blake2b(
        np.ascontiguousarray(idx, dtype=np.int64).tobytes(), digest_size=16
    ).digest()


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

    left: np.ndarray  # bool over the members: child 1 (keeps the parent's index)
    keys: tuple[bytes, bytes]
    idx: tuple[np.ndarray, np.ndarray]
    dist_e: np.ndarray  # (2,) Σ_{n ∈ child} w_n ||e_n − μ^e_child||²
    dist_a: np.ndarray  # (2,) Σ_{n ∈ child} w_n ||ã_n − μ^a_child||₁
    da: np.ndarray  # (members, 2) L1 distance of every member to both children

    @property
    def smaller_child(self) -> int:
        """Members of the smaller child (the split test's ``min_cluster_size`` bound)."""
        return min(self.idx[0].size, self.idx[1].size)


class RDWorkspace:
    """One prompt's validated views, its mechanistic normalisation and exact caches.

    Cluster centres depend only on the member set, and a split proposal only on the member
    set and γ (β scales the joint space uniformly). A sweep therefore shares one workspace
    across all (β, γ): cached values are the values a fresh computation would return, so
    results do not depend on the order in which configurations run.
    """

    def __init__(
        self,
        E: Any,
        A: Any,
        sample_weight: Any = None,
        *,
        name: str | None = None,
        normalize_semantic_centres: bool = False,
        cache_mb: float = 256.0,
    ):
        E, A, P = validate_views(E, A, sample_weight, name)
        self.name = name
        # ã is a per-coordinate increasing map of a, so one row order serves H0 and every
        # centre; medians then walk contiguous rows of the transposed layout.
        AT = np.ascontiguousarray(A.T)
        self.order = argsort_rows(AT)
        H0 = weighted_median_sorted(AT, self.order, P / P.sum())
        self.norm = normalise_mechanistic(A, P, H0=H0)
        self.E = E
        self.At = self.norm.A_tilde
        # ã in the transposed layout, elementwise as normalise_mechanistic computes it
        # ((a − H0) / s: the same two roundings), without transposing ã itself
        AT -= H0[:, None]
        AT /= self.norm.scale
        self.AtT = AT
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
        return self.centres([idx], None if key is None else [key])[0]

    def centres(self, members: list[np.ndarray], keys: list[bytes] | None = None) -> list[_Centre]:
        """:meth:`centre` of several disjoint member sets. Large sets walk the shared row
        order, all of them in one walk; few members select among themselves only."""
        if keys is None:
            keys = [_members_key(idx) for idx in members]
        out: list[_Centre | None] = [None] * len(members)
        walk = []
        for j, (idx, key) in enumerate(zip(members, keys)):
            hit = self._centres.get(key)
            if hit is not None:
                self._centres.move_to_end(key)
                out[j] = hit
            elif 64 * idx.size >= self.n_samples:
                walk.append(j)
            else:
                mu_a = weighted_median_rows(self.AtT, self.w[idx], idx)
                out[j] = self._new_centre(idx, key, mu_a)
        if walk:
            meds = weighted_median_sorted_groups(
                self.AtT, self.order, self.w, [members[j] for j in walk]
            )
            for j, mu_a in zip(walk, meds):
                out[j] = self._new_centre(members[j], keys[j], mu_a)
        return out  # type: ignore[return-value]

    def _new_centre(self, idx: np.ndarray, key: bytes, mu_a: np.ndarray) -> _Centre:
        w = self.w[idx]
        m = float(w.sum())
        mu_e = w @ self.E[idx] / m
        if self.normalize_semantic_centres:
            nrm = np.linalg.norm(mu_e)
            if nrm > 0:
                mu_e = mu_e / nrm
        c = _Centre(key, mu_e, mu_a, m)
        self._store(self._centres, key, c)
        return c

    def distances(self, c: _Centre) -> tuple[np.ndarray, np.ndarray]:
        """Distances of every sample to a centre, computed once per centre."""
        self.fill_distances([c])
        return c.de, c.da

    def fill_distances(
        self, cs: list[_Centre], known: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        """Distances of every sample to each centre lacking them, in one pass over ã.

        L1 distances are computed pair by pair (torch.cdist), so a column does not depend on
        which other centres or rows share the call: ``known`` = (rows, their L1 distances to
        the centres ``cs``, rows × len(cs)) skips recomputing those rows."""
        todo = [j for j, c in enumerate(cs) if c.de is None]
        if not todo:
            return
        mus = np.stack([cs[j].mu_a for j in todo])
        if known is None:
            da = l1_distances(self.At, mus)
        else:
            rows, vals = known
            rest = np.ones(self.n_samples, dtype=bool)
            rest[rows] = False
            da = np.empty((self.n_samples, len(todo)))
            da[rows] = vals[:, todo]
            da[rest] = l1_distances(self.At[rest], mus)
        for col, j in enumerate(todo):
            c = cs[j]
            c.de = sq_distances(self.E, c.mu_e[None])[:, 0]
            c.da = np.ascontiguousarray(da[:, col])
            if self._centres.get(c.key) is c:  # a cached centre just grew
                self._used += c.de.nbytes + c.da.nbytes
                self._trim()

    @staticmethod
    def _size(value: _Centre | _Proposal | None) -> int:
        if value is None:
            return 64
        if isinstance(value, _Centre):
            arrays = [value.mu_e, value.mu_a, value.de, value.da]
        else:
            arrays = [value.left, *value.idx, value.dist_e, value.dist_a, value.da]
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

    def propose_split(
        self, idx: np.ndarray, key: bytes, gamma: float, refine_iter: int, power_iter: int
    ) -> _Proposal | None:
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
            cs = self.centres(list(ids), list(keys))
            de = sq_distances(E, np.stack([cs[0].mu_e, cs[1].mu_e]))
            da = l1_distances(At, np.stack([cs[0].mu_a, cs[1].mu_a]))
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
        return _Proposal(
            left=left,
            keys=keys,
            idx=ids,
            dist_e=(w[:, None] * de * sel).sum(0),
            dist_a=(w[:, None] * da * sel).sum(0),
            da=da,
        )


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


def _keep_min_size(old: np.ndarray, new: np.ndarray, m: int, K: int) -> np.ndarray:
    """Undo the departures from every cluster that the assignment would leave with 1 to m − 1
    members (it may empty completely: empty clusters vanish). The previous partition has no
    such cluster, so undoing converges; a member that stays put costs no more than before,
    so the step still never raises L."""
    if m <= 1:
        return new
    new = new.copy()
    while True:
        counts = np.bincount(new, minlength=K)
        back = ((counts > 0) & (counts < m))[old] & (new != old)
        if not back.any():
            return new
        new[back] = old[back]


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
    min_cluster_size : a split is accepted only if each child keeps at least this many
        members. 1 (the default) is METHOD §5 exactly. 2 forbids isolating a single
        continuation: METHOD §7 steers a cluster from one member and measures the others, so a
        one-member cluster cannot be tested, and the objective prices isolating a low-mass
        continuation so cheaply (rate H_b(P_n)) that such splits otherwise cascade.

    Attributes after ``fit``: labels_, n_clusters_, cluster_centers_e_, cluster_centers_a_
    (normalised units; raw units are H0_ + scale_ · centre), cluster_weights_ (masses P̄_c),
    objective_ {L, H, D_e, D_a}, history_ (list of :class:`RDStep`), H0_, scale_,
    n_rounds_, converged_.
    """

    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 0.5,
        *,
        max_rounds: int = 100,
        tol: float = 1e-3,
        normalize_semantic_centres: bool = False,
        split_refine_iter: int = 3,
        split_power_iter: int = 2,
        min_cluster_size: int = 1,
    ):
        self.beta = beta
        self.gamma = gamma
        self.max_rounds = max_rounds
        self.tol = tol
        self.normalize_semantic_centres = normalize_semantic_centres
        self.split_refine_iter = split_refine_iter
        self.split_power_iter = split_power_iter
        self.min_cluster_size = min_cluster_size

    # ---- public API -------------------------------------------------------------------
    def fit(
        self, E: Any, A: Any, sample_weight: Any = None, *, name: str | None = None
    ) -> RateDistortionClustering:
        """Cluster rows of E (semantic, N × d_e) and A (raw signatures, N × d_a) with
        weights P (default 1). ``name`` (a prompt id) appears in error messages."""
        self._check_params()
        ws = RDWorkspace(
            E,
            A,
            sample_weight,
            name=name,
            normalize_semantic_centres=self.normalize_semantic_centres,
        )
        return self.fit_workspace(ws)

    def fit_workspace(self, ws: RDWorkspace) -> RateDistortionClustering:
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
        if not (
            isinstance(self.beta, (int, float, np.number))
            and np.isfinite(self.beta)
            and self.beta > 0
        ):
            raise ValueError(f"beta must be a positive number, got {self.beta!r}")
        if not (0.0 <= float(self.gamma) <= 1.0):
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma!r}")
        if int(self.max_rounds) < 1 or not self.tol > 0:
            raise ValueError("max_rounds must be >= 1 and tol > 0")
        if int(self.split_refine_iter) < 0 or int(self.split_power_iter) < 0:
            raise ValueError("split_refine_iter and split_power_iter must be >= 0")
        if not isinstance(self.min_cluster_size, (int, np.integer)) or self.min_cluster_size < 1:
            raise ValueError(
                f"min_cluster_size must be an integer >= 1, got {self.min_cluster_size!r}"
            )

    def _descend(self, ws: RDWorkspace) -> None:
        """The descent of METHOD §5; every recorded step lowers L (or leaves it)."""
        N = ws.n_samples
        everyone = np.arange(N)
        c0 = ws.centre(everyone)
        de, da = ws.distances(c0)
        st = _State(
            labels=np.zeros(N, dtype=np.int64),
            centres=[c0],
            mass=np.array([1.0]),
            de=de[:, None].copy(),
            da=da[:, None].copy(),
            dirty=np.zeros(1, dtype=bool),
        )
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
        H = mass_entropy(st.mass)
        De = float(ws.w @ st.de[own])
        Da = float(ws.w @ st.da[own])
        return H + self.beta_e * De + self.beta_a * Da, H, De, Da

    def _refresh(self, ws: RDWorkspace, st: _State, which: np.ndarray) -> None:
        """Optimal centres (and distance columns) for the clusters in ``which``."""
        cols = np.nonzero(which)[0]
        centres = ws.centres([np.nonzero(st.labels == c)[0] for c in cols])
        ws.fill_distances(centres)
        for c, centre in zip(cols, centres):
            st.centres[c] = centre
            st.de[:, c], st.da[:, c] = centre.de, centre.da
        st.dirty[which] = False

    def _assign(self, ws: RDWorkspace, st: _State) -> None:
        """Steps 2-3: entropy-constrained assignment with the previous masses, then the
        centre and mass update. Members keep their cluster on exact ties."""
        N, K = st.labels.shape[0], st.K
        rows = np.arange(N)
        cost = -np.log(st.mass)[None, :] + self.beta_e * st.de + self.beta_a * st.da
        best = np.argmin(cost, axis=1)
        new = np.where(cost[rows, st.labels] <= cost[rows, best], st.labels, best)
        new = _keep_min_size(st.labels, new, int(self.min_cluster_size), K)
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
        spread = (
            np.bincount(st.labels, weights=w * (be * st.de[own] + ba * st.da[own]), minlength=K)
            / st.mass
        )
        for c in np.argsort(-spread, kind="stable"):
            idx = np.nonzero(st.labels == c)[0]
            if idx.size < 2:
                continue
            key = _members_key(idx)
            if key in rejected:
                continue
            prop = ws.propose_split(
                idx, key, float(self.gamma), int(self.split_refine_iter), int(self.split_power_iter)
            )
            if prop is None or prop.smaller_child < self.min_cluster_size:
                rejected.add(key)
                continue
            wi = w[idx]
            gain = be * (float(wi @ st.de[idx, c]) - prop.dist_e.sum()) + ba * (
                float(wi @ st.da[idx, c]) - prop.dist_a.sum()
            )
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
            # the proposal measured its members already; the rest costs one pass
            ws.fill_distances([c1, c2], known=(idx, prop.da) if 2 * idx.size >= N else None)
            st.de[:, c], st.da[:, c] = c1.de, c1.da
            st.de[:, K], st.da[:, K] = c2.de, c2.da
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
        H_now = mass_entropy(st.mass)
        best = None
        for c in range(K):
            members = st.labels == c
            new_mass = st.mass + np.bincount(dest[members], weights=w[members], minlength=K)
            new_mass[c] = 0.0
            delta = mass_entropy(new_mass) - H_now + float(added[members].sum())
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
