"""Rate–distortion clustering of continuations by meaning and mechanism together (METHOD §5).

The estimator minimises, over hard partitions c(·),

    L = H(C) + β_e D_e + β_a D_a,        β_e = γβ,  β_a = (1 − γ)β,

with H(C) the entropy of the P-weighted cluster masses, D_e the P-weighted squared Euclidean
distortion of the semantic vectors around their cluster means, and D_a the P-weighted L1
distortion of the normalised attribution signatures around their cluster coordinate-wise
medians. K is not given: it emerges from split and merge tests whose acceptance is the exact
change in L, starting from one cluster.

Everything here works on arrays alone (no model), so it can be tested and benchmarked on
synthetic data. ``rd_sweep`` runs the β × γ grid with a shared normalisation.

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

import math
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

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
    "RDSweepResult",
    "weighted_median",
    "normalise_mechanistic",
    "validate_views",
    "partition_cost",
    "binary_entropy",
    "rd_sweep",
    "sweep_arrays",
    "make_two_view_data",
]


class RDInputError(ValueError):
    """The arrays given to the clustering cannot be clustered (shape, NaN/inf, weights)."""


# --------------------------------------------------------------------------------------
# Small exact building blocks


def weighted_median(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Column-wise lower weighted median of ``X`` (n × d) with weights ``w`` (n,).

    The lower weighted median (first sorted value whose cumulative weight reaches half the
    total) minimises Σ_n w_n |x_n − m| in every column, which is what makes the median
    centre update a descent step for the L1 distortion. Vectorised: one argsort per column,
    cumulative weights, and a count of positions below half (a searchsorted per column).
    """
    X = np.asarray(X)
    w = np.asarray(w, dtype=np.float64)
    if X.ndim != 2 or w.shape != (X.shape[0],):
        raise ValueError(f"weighted_median: X must be (n, d) and w (n,), got {X.shape} and {w.shape}")
    if X.shape[0] == 0 or not w.sum() > 0:
        raise ValueError("weighted_median: needs at least one row with positive weight")
    n, d = X.shape
    if n == 1:
        return X[0].copy()
    order = np.argsort(X, axis=0)
    cw = np.cumsum(w[order], axis=0)
    k = np.count_nonzero(cw < 0.5 * cw[-1], axis=0)  # first position with cw >= half
    rows = order[k, np.arange(d)]
    return X[rows, np.arange(d)]


def binary_entropy(alpha: float) -> float:
    """H_b(α) in nats (0 at α ∈ {0, 1})."""
    if alpha <= 0.0 or alpha >= 1.0:
        return 0.0
    return -(alpha * math.log(alpha) + (1.0 - alpha) * math.log(1.0 - alpha))


def _entropy(mass: np.ndarray) -> float:
    m = mass[mass > 0]
    return float(-(m * np.log(m)).sum())


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


def normalise_mechanistic(A: np.ndarray, P: np.ndarray) -> Normalisation:
    """H0 = P-weighted coordinate-wise median, s = sqrt(mean_n ||a_n − H0||²) (METHOD §5).

    The scale puts D_a on a per-prefix footing, so one β grid serves every prompt. When all
    signatures are identical s would be 0; it is then set to 1 (ã is 0 either way).
    """
    H0 = weighted_median(A, P)
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
    """The partition being descended: labels, centres, masses and cached distances
    (de: squared Euclidean, da: L1, both N × K) to every centre."""

    labels: np.ndarray
    ce: np.ndarray
    ca: np.ndarray
    mass: np.ndarray
    de: np.ndarray
    da: np.ndarray
    dirty: np.ndarray  # centres not optimal for their members (receivers of a merge)

    @property
    def K(self) -> int:
        return int(self.mass.shape[0])


@dataclass
class _Split:
    gain: float           # β_e ΔD_e + β_a ΔD_a (distortion removed)
    rate: float           # P̄_c H_b(α) (rate added)
    left: np.ndarray      # bool over the cluster's members: goes to child 1 (keeps index c)
    centres_e: np.ndarray  # (2, d_e)
    centres_a: np.ndarray  # (2, d_a)
    mass: np.ndarray      # (2,)


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
    (normalised units), cluster_weights_ (masses P̄_c), objective_ {L, H, D_e, D_a},
    history_ (list of :class:`RDStep`), H0_, scale_, n_rounds_, converged_.
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
    def fit(self, E: Any, A: Any, sample_weight: Any = None, *, name: str | None = None,
            normalisation: Normalisation | None = None) -> "RateDistortionClustering":
        """Cluster rows of E (semantic) and A (raw signatures) with weights P.

        ``normalisation`` lets a sweep compute H0 and s once; it must come from the same A.
        ``name`` (a prompt id) is used in error messages.
        """
        self._check_params()
        E, A, P = validate_views(E, A, sample_weight, name)
        if normalisation is None:
            normalisation = normalise_mechanistic(A, P)
        elif normalisation.A_tilde.shape != A.shape:
            raise RDInputError(f"normalisation was computed for shape {normalisation.A_tilde.shape}, "
                               f"A has {A.shape}{_where(name)}")
        self.H0_ = normalisation.H0
        self.scale_ = normalisation.scale
        self._fit_normalised(E, normalisation.A_tilde, P)
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
        if not (np.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a positive number, got {self.beta!r}")
        if not (0.0 <= self.gamma <= 1.0):
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma!r}")
        if int(self.max_rounds) < 1 or not self.tol > 0:
            raise ValueError("max_rounds must be >= 1 and tol > 0")
        if int(self.split_refine_iter) < 0 or int(self.split_power_iter) < 0:
            raise ValueError("split_refine_iter and split_power_iter must be >= 0")

    def _centre_e(self, X: np.ndarray, w: np.ndarray) -> np.ndarray:
        mu = w @ X / w.sum()
        if self.normalize_semantic_centres:
            nrm = np.linalg.norm(mu)
            if nrm > 0:
                mu = mu / nrm
        return mu

    def _fit_normalised(self, E: np.ndarray, At: np.ndarray, P: np.ndarray) -> None:
        """The descent of METHOD §5 on normalised views; every recorded step lowers L."""
        w = P / P.sum()
        N = w.shape[0]
        self._E, self._At, self._w = E, At, w
        ce = self._centre_e(E, w)[None]
        ca = weighted_median(At, w)[None]
        st = _State(labels=np.zeros(N, dtype=np.int64), ce=ce, ca=ca, mass=np.array([1.0]),
                    de=_sq_dist(E, ce), da=_l1_dist(At, ca), dirty=np.zeros(1, dtype=bool))
        L = self._objective(st)[0]
        history = [RDStep(0, "init", L, 1, 0.0)]
        split_rejected: set[bytes] = set()  # member sets whose split was rejected
        converged = False
        rnd = 0
        try:
            for rnd in range(1, int(self.max_rounds) + 1):
                L_start = L
                self._assign(st)
                L = self._objective(st)[0]
                history.append(RDStep(rnd, "assign", L, st.K, 0.0))
                accepted = False
                predicted = self._split(st, split_rejected)
                if predicted is not None:
                    L = self._objective(st)[0]
                    history.append(RDStep(rnd, "split", L, st.K, predicted))
                    accepted = True
                predicted = self._merge(st)
                if predicted is not None:
                    L = self._objective(st)[0]
                    history.append(RDStep(rnd, "merge", L, st.K, predicted))
                    accepted = True
                if not accepted and abs(L_start - L) <= self.tol * max(abs(L), 1e-300):
                    converged = True
                    break
            if st.dirty.any():  # a merge in the last round left receiving centres stale
                self._refresh(st, st.dirty)
                L = self._objective(st)[0]
                history.append(RDStep(rnd, "assign", L, st.K, 0.0))
            Lv, H, De, Da = self._objective(st)
        finally:
            del self._E, self._At, self._w

        # canonical order: heaviest cluster first, ties by first member
        K = st.K
        first = np.full(K, N)
        np.minimum.at(first, st.labels, np.arange(N))
        order = np.lexsort((first, -st.mass))
        rank = np.empty(K, dtype=np.int64)
        rank[order] = np.arange(K)
        self.labels_ = rank[st.labels]
        self.cluster_centers_e_ = st.ce[order]
        self.cluster_centers_a_ = st.ca[order]
        self.cluster_weights_ = st.mass[order]
        self.n_clusters_ = int(K)
        self.objective_ = {"L": Lv, "H": H, "D_e": De, "D_a": Da}
        self.history_ = history
        self.n_rounds_ = rnd
        self.converged_ = converged

    def _refresh(self, st: "_State", which: np.ndarray) -> None:
        """Recompute the centres (and their distance columns) of the clusters in ``which``."""
        E, At, w = self._E, self._At, self._w
        ch = np.nonzero(which)[0]
        for c in ch:
            idx = np.nonzero(st.labels == c)[0]
            st.ce[c] = self._centre_e(E[idx], w[idx])
            st.ca[c] = weighted_median(At[idx], w[idx])
        if ch.size:
            st.de[:, ch] = _sq_dist(E, st.ce[ch])
            st.da[:, ch] = _l1_dist(At, st.ca[ch])
        st.dirty[ch] = False

    def _assign(self, st: "_State") -> None:
        """Steps 2-3: entropy-constrained assignment with the previous masses, then the
        centre and mass update. Members keep their cluster on exact ties."""
        be, ba, w = self.beta_e, self.beta_a, self._w
        N, K = st.labels.shape[0], st.K
        rows = np.arange(N)
        cost = -np.log(st.mass)[None, :] + be * st.de + ba * st.da
        best = np.argmin(cost, axis=1)
        new = np.where(cost[rows, st.labels] <= cost[rows, best], st.labels, best)
        new = _dissolve_massless(new, w, cost, K)
        changed = st.dirty.copy()
        moved = new != st.labels
        changed[st.labels[moved]] = True
        changed[new[moved]] = True
        st.labels = new
        keep = np.bincount(new, minlength=K) > 0  # empty clusters vanish
        if not keep.all():
            st.labels = (np.cumsum(keep) - 1)[st.labels]
            st.ce, st.ca, st.de, st.da = st.ce[keep], st.ca[keep], st.de[:, keep], st.da[:, keep]
            changed, st.dirty = changed[keep], st.dirty[keep]
        st.mass = np.bincount(st.labels, weights=w, minlength=st.K)
        self._refresh(st, changed)

    def _split(self, st: "_State", rejected: set[bytes]) -> float | None:
        """Step 4: test clusters by β-weighted spread, largest first; apply the first split
        whose distortion gain exceeds its rate cost and return its predicted ΔL."""
        be, ba, w = self.beta_e, self.beta_a, self._w
        N, K = st.labels.shape[0], st.K
        own = np.arange(N), st.labels
        spread = (np.bincount(st.labels, weights=w * (be * st.de[own] + ba * st.da[own]),
                              minlength=K) / st.mass)
        for c in np.argsort(-spread, kind="stable"):
            idx = np.nonzero(st.labels == c)[0]
            key = idx.tobytes()
            if idx.size < 2 or key in rejected:
                continue
            prop = self._propose_split(idx, st.ce[c], st.ca[c], st.mass[c])
            if prop is None or not prop.gain > prop.rate:
                rejected.add(key)
                continue
            st.labels[idx[~prop.left]] = K
            st.ce = np.vstack([st.ce, prop.centres_e[1:2]])
            st.ca = np.vstack([st.ca, prop.centres_a[1:2]])
            st.ce[c], st.ca[c] = prop.centres_e[0], prop.centres_a[0]
            st.mass = np.append(st.mass, prop.mass[1])
            st.mass[c] = prop.mass[0]
            st.de = np.hstack([st.de, np.zeros((N, 1))])
            st.da = np.hstack([st.da, np.zeros((N, 1))])
            st.de[:, [c, K]] = _sq_dist(self._E, st.ce[[c, K]])
            st.da[:, [c, K]] = _l1_dist(self._At, st.ca[[c, K]])
            st.dirty = np.append(st.dirty, False)
            return prop.rate - prop.gain
        return None

    def _merge(self, st: "_State") -> float | None:
        """Step 5: dissolve the cluster whose removal lowers L the most (if any), its
        members going to their best other clusters with those centres fixed."""
        if st.K < 2:
            return None
        found = self._try_merge(st)
        if found is None:
            return None
        c, dest, predicted = found
        K = st.K
        members = st.labels == c
        receivers = np.zeros(K, dtype=bool)
        receivers[np.unique(dest)] = True
        st.labels[members] = dest
        keep = np.arange(K) != c
        st.labels = (np.cumsum(keep) - 1)[st.labels]
        st.ce, st.ca, st.de, st.da = st.ce[keep], st.ca[keep], st.de[:, keep], st.da[:, keep]
        st.dirty = (st.dirty | receivers)[keep]
        st.mass = np.bincount(st.labels, weights=self._w, minlength=K - 1)
        return predicted

    def _objective(self, st: "_State") -> tuple[float, float, float, float]:
        """(L, H, D_e, D_a) of the current state from its cached distances."""
        w = self._w
        own = np.arange(st.labels.shape[0]), st.labels
        H = _entropy(st.mass)
        De = float(w @ st.de[own])
        Da = float(w @ st.da[own])
        return H + self.beta_e * De + self.beta_a * Da, H, De, Da

    def _propose_split(self, idx: np.ndarray, mu_e: np.ndarray, mu_a: np.ndarray,
                       mass_c: float) -> _Split | None:
        """A 2-way split of one cluster with its exact distortion gain and rate cost.

        Proposal: principal direction of the √β-weighted joint space (randomised subspace
        iteration with a fixed sketch, so it is deterministic), cut at the weighted median of
        the projections, then a few 2-means rounds under the joint distortion.
        """
        be, ba = self.beta_e, self.beta_a
        E, At, w = self._E[idx], self._At[idx], self._w[idx]
        Wc = w.sum()
        if not Wc > 0:
            return None
        n = idx.size
        # weighted, centred joint matrix Z (n × (d_e + d_a)) as two blocks
        sw = np.sqrt(w / Wc)[:, None]
        Ze = (E - w @ E / Wc) * (math.sqrt(be) * sw)
        Za = (At - w @ At / Wc) * (math.sqrt(ba) * sw)
        k = min(n, 8)
        omega = np.random.default_rng(12345).standard_normal((n, k))  # sample-space sketch
        Y = omega
        for _ in range(int(self.split_power_iter) + 1):
            Y, _r = np.linalg.qr(Y)
            Y = Ze @ (Ze.T @ Y) + Za @ (Za.T @ Y)
        Q, _r = np.linalg.qr(Y)
        # top eigenvector of Q^T Z Z^T Q gives the leading left singular vector in span(Q)
        B = (Ze.T @ Q, Za.T @ Q)
        G = B[0].T @ B[0] + B[1].T @ B[1]
        vals, vecs = np.linalg.eigh(G)
        u = Q @ vecs[:, -1]  # leading left singular vector of Z, in sample space
        if not np.abs(u).max() > 0:
            return None
        # project every member (zero-weight ones too) on the direction Z^T u of the joint space
        proj = math.sqrt(be) * (E @ (Ze.T @ u)) + math.sqrt(ba) * (At @ (Za.T @ u))
        m = weighted_median(proj[:, None], w)[0]
        left = proj <= m
        if left.all() or not w[~left].sum() > 0:
            left = proj < m
        if not left.any() or left.all() or not w[left].sum() > 0 or not w[~left].sum() > 0:
            return None

        def centres(lft: np.ndarray):
            ce = np.empty((2, E.shape[1]))
            ca = np.empty((2, At.shape[1]))
            for j, sel in enumerate((lft, ~lft)):
                ce[j] = self._centre_e(E[sel], w[sel])
                ca[j] = weighted_median(At[sel], w[sel])
            return ce, ca

        ce, ca = centres(left)
        for _ in range(int(self.split_refine_iter)):
            dist = be * _sq_dist(E, ce) + ba * _l1_dist(At, ca)
            new = np.where(left, dist[:, 0] <= dist[:, 1], dist[:, 0] < dist[:, 1])
            if np.array_equal(new, left) or new.all() or not new.any():
                break
            if not (w[new].sum() > 0 and w[~new].sum() > 0):
                break
            left = new
            ce, ca = centres(left)

        own_e = np.where(left, ((E - ce[0]) ** 2).sum(1), ((E - ce[1]) ** 2).sum(1))
        own_a = np.where(left, np.abs(At - ca[0]).sum(1), np.abs(At - ca[1]).sum(1))
        par_e = ((E - mu_e) ** 2).sum(1)
        par_a = np.abs(At - mu_a).sum(1)
        gain = be * float(w @ (par_e - own_e)) + ba * float(w @ (par_a - own_a))
        m1 = float(w[left].sum())
        mass = np.array([m1, float(w[~left].sum())])
        rate = mass_c * binary_entropy(m1 / Wc)
        return _Split(gain=gain, rate=rate, left=left, centres_e=ce, centres_a=ca, mass=mass)

    def _try_merge(self, st: "_State"):
        """Exact ΔL of dissolving each cluster into its members' best other clusters (their
        entropy-constrained cost with the current masses and fixed centres); return the
        most negative, or None."""
        be, ba = self.beta_e, self.beta_a
        w, labels, mass, de, da = self._w, st.labels, st.mass, st.de, st.da
        N, K = labels.shape[0], mass.shape[0]
        cost = -np.log(mass)[None, :] + be * de + ba * da
        cost[np.arange(N), labels] = np.inf
        dest = np.argmin(cost, axis=1)  # best other cluster of every sample
        dist = be * de + ba * da
        added = w * (dist[np.arange(N), dest] - dist[np.arange(N), labels])
        H0 = _entropy(mass)
        best = None
        for c in range(K):
            members = labels == c
            new_mass = mass + np.bincount(dest[members], weights=w[members], minlength=K)
            new_mass[c] = 0.0
            delta = _entropy(new_mass) - H0 + float(added[members].sum())
            if delta < -1e-12 * max(1.0, abs(H0)) and (best is None or delta < best[2]):
                best = (c, dest[members], delta)
        return best


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
             prompt_id: str = "", **rd_params: Any) -> RDSweepResult:
    """Fit RD at every (β, γ) of the grid, each from K = 1, with one shared normalisation.

    Configurations are ordered β-major, in the order given. Runtimes are returned apart
    from the tables so that the tables are byte-reproducible.
    """
    E, A, P = validate_views(E, A, P, prompt_id or None)
    norm = normalise_mechanistic(A, P)
    rows, label_rows, hist_rows, models, runtimes = [], [], [], [], []
    N = E.shape[0]
    for beta in betas:
        for gamma in gammas:
            t0 = time.perf_counter()
            est = RateDistortionClustering(beta=float(beta), gamma=float(gamma), **rd_params)
            est.fit(E, A, P, name=prompt_id or None, normalisation=norm)
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
    return RDSweepResult(prompt_id, norm, table, labels, history, models, runtimes)


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
# Synthetic two-view data (tests, benchmarks, realistic-scale checks)


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
