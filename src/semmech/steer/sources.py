"""Steering sources (METHOD §6, §7): what differs between methods is which feature nodes a
cluster's intervention pushes, and with which sign.

* ``RD``: the member of the RD cluster closest to its centres under the joint distortion
  β_e‖e − μ^e‖² + β_a‖ã − μ^a‖₁;
* ``KM-Sem``: the P-weighted coordinate median of ã over a K-means cluster of the semantic
  view (K = RD's K, the partition of the baselines stage);
* ``Single``: one seeded random member of the RD cluster;
* ``Random``: B random live feature nodes (non-zero attribution to some continuation) with
  random signs, measured on the RD cluster's held-out members.

Source vectors are read in raw attribution units by default (``source_space: raw``): a
node's raw value is its attribution to the continuation's mean demeaned logit, so
``sign · α · d`` with ε > 0 pushes every chosen node in the direction that *raises* the
source's continuations. The KM-Sem source, defined by METHOD §6 as the P-weighted median of
ã, is mapped back to raw units with the clustering's own normalisation (H0 + s · median ã).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..cluster.medians import weighted_median
from ..config import derive_seed
from .settings import SELECTIONS, SteeringInputError, SteeringSettings

log = logging.getLogger("semmech")

METHODS = ("RD", "KM-Sem", "Single", "Random")


@dataclass(frozen=True)
class Source:
    """One steered cluster of one method: the signature columns to push and their signs.

    ``partition`` names the labelling its clusters come from ("RD" or "KM-Sem");
    ``source_member`` is the member the source was taken from (never measured), −1 if none.
    """

    method: str
    budget: int
    beta: float
    gamma: float
    cluster: int
    partition: str
    columns: np.ndarray
    signs: np.ndarray
    source_member: int = -1
    selection: str = "full"


def top_nodes(
    vector: np.ndarray, feature_cols: np.ndarray, budget: int, selection: str = "full"
) -> tuple[np.ndarray, np.ndarray]:
    """The top-``budget`` feature columns of ``vector`` by |value| (ties: lower column first)
    and their signs; ``positive`` / ``negative`` keep only entries of that sign. Zero entries
    are never chosen (their sign steers nothing), so fewer than ``budget`` may come back."""
    if selection not in SELECTIONS:
        raise SteeringInputError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    feature_cols = np.asarray(feature_cols, dtype=np.int64)
    v = np.asarray(vector, dtype=np.float64)[feature_cols]
    keep = {"full": v != 0, "positive": v > 0, "negative": v < 0}[selection]
    cols, vals = feature_cols[keep], v[keep]
    order = np.lexsort((cols, -np.abs(vals)))[:budget]
    return cols[order], np.sign(vals[order])


def random_nodes(
    feature_cols: np.ndarray, budget: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The random-feature control: ``budget`` distinct feature columns, random ±1 signs."""
    feature_cols = np.asarray(feature_cols, dtype=np.int64)
    pick = rng.choice(feature_cols.size, size=budget, replace=False)
    return feature_cols[np.sort(pick)], rng.choice(np.array([-1.0, 1.0]), size=budget)


def rd_source_member(
    members: np.ndarray,
    E: np.ndarray,
    A_tilde: np.ndarray,
    mu_e: np.ndarray,
    mu_a: np.ndarray,
    beta_e: float,
    beta_a: float,
) -> int:
    """The member closest to its cluster's centres under β_e‖e − μ^e‖² + β_a‖ã − μ^a‖₁, the
    weights the clustering itself used; ties go to the lower sample index."""
    members = np.asarray(members, dtype=np.int64)
    be, ba = beta_e, beta_a
    d = be * ((E[members] - mu_e) ** 2).sum(1) + ba * np.abs(A_tilde[members] - mu_a).sum(1)
    return int(members[np.argmin(d)])


def kmsem_source_vector(members: np.ndarray, A_tilde: np.ndarray, P: np.ndarray) -> np.ndarray:
    """The KM-Sem source: the P-weighted coordinate-wise median of ã over the members."""
    members = np.asarray(members, dtype=np.int64)
    return weighted_median(A_tilde[members], np.asarray(P, dtype=np.float64)[members])


@dataclass
class PromptInputs:
    """Everything the steering of one prompt reads, checked for mutual consistency."""

    prompt_id: str
    prompt_ids: list[int]
    continuations: list[list[int]]
    weights: np.ndarray  # P_n
    signatures: np.ndarray  # raw a_n [N, n_nodes]
    nodes: pd.DataFrame  # attribution/{p}.nodes.parquet
    embeddings: np.ndarray  # e_n [N, d_e]
    H0: np.ndarray
    scale: float
    rd: dict[tuple[float, float], dict[str, np.ndarray]]  # labels, centres, beta_e, beta_a
    km_sem: dict[tuple[float, float], np.ndarray]  # K-means labels on e, K = RD's K
    configs: tuple[tuple[float, float], ...] = ()  # the steered (β, γ), resolved
    basis: str = "mlp_neurons"

    @property
    def n(self) -> int:
        return len(self.continuations)

    @property
    def A_tilde(self) -> np.ndarray:
        return (self.signatures - self.H0) / self.scale

    @property
    def feature_cols(self) -> np.ndarray:
        return np.nonzero((self.nodes["kind"] == "feature").to_numpy())[0].astype(np.int64)

    def node_keys(self, cols: np.ndarray) -> list[tuple[int, int, int]]:
        sub = self.nodes.iloc[np.asarray(cols, dtype=np.int64)]
        return list(
            zip(sub["layer"].astype(int), sub["position"].astype(int), sub["feature"].astype(int))
        )


def cluster_members(labels: np.ndarray) -> dict[int, np.ndarray]:
    return {int(k): np.nonzero(labels == k)[0] for k in np.unique(labels)}


def members_seed(seed: int, what: str, members: np.ndarray, *keys: object) -> int:
    """A seed keyed by a cluster's member set (not by the configuration that produced it), so
    configurations with identical partitions draw identical Single and Random sources, and
    each distinct (partition, source) is measured once."""
    digest = hashlib.blake2b(np.asarray(members, dtype=np.int64).tobytes(), digest_size=8)
    return derive_seed(seed, what, digest.hexdigest(), *keys)


def plan_sources(
    inp: PromptInputs, settings: SteeringSettings, seed: int
) -> tuple[list[Source], dict[tuple[str, float, float], np.ndarray], list[str]]:
    """Every source of one prompt (all methods, selections, budgets, configurations and
    clusters), the partitions they are measured on, and a note per skipped cluster.

    A cluster with fewer than 2 members has no held-out member to measure: it is skipped
    (neither steered nor measured) and reported, not fatal.

    The random control draws from the *live* feature nodes, those with a non-zero attribution
    to some continuation: a node whose column is 0 everywhere cannot reach the measured
    logits at all (e.g. a last-layer node at a non-final prefix position writes to a residual
    stream nothing reads), so drawing it would make the control trivially flat. It does not
    depend on the selection.
    """
    feats = inp.feature_cols
    live = feats[np.any(inp.signatures[:, feats] != 0, axis=0)]
    if live.size < max(settings.budgets):
        live = feats  # too few live nodes for the budget: draw from all feature nodes
    if max(settings.budgets) > feats.size:
        raise SteeringInputError(
            f"prompt {inp.prompt_id!r}: steering budget B={max(settings.budgets)} exceeds the "
            f"{feats.size} feature nodes of its attribution; lower steering.budgets or raise "
            "attribution.max_feature_nodes"
        )
    At = inp.A_tilde
    raw = settings.source_space == "raw"
    vec = inp.signatures if raw else At
    sources: list[Source] = []
    partitions: dict[tuple[str, float, float], np.ndarray] = {}
    skipped: list[str] = []
    for beta, gamma in inp.configs:
        rd = inp.rd[(beta, gamma)]
        labels = rd["labels"]
        km = inp.km_sem[(beta, gamma)]
        partitions[("RD", beta, gamma)] = labels
        partitions[("KM-Sem", beta, gamma)] = km
        where = f"beta={beta:g} gamma={gamma:g}"
        for c, members in cluster_members(labels).items():
            if members.size < 2:
                skipped.append(
                    f"RD cluster {c} at {where} has {members.size} member: "
                    "no held-out member to measure"
                )
                continue
            rd_member = rd_source_member(
                members,
                inp.embeddings,
                At,
                rd["centres_e"][c],
                rd["centres_a"][c],
                rd["beta_e"],
                rd["beta_a"],
            )
            single = int(
                np.random.default_rng(members_seed(seed, "single", members)).choice(members)
            )
            for B in settings.budgets:
                rng_r = np.random.default_rng(members_seed(seed, "random", members, B))
                r_cols, r_signs = random_nodes(live, B, rng_r)
                for sel in settings.selections:
                    cols, signs = top_nodes(vec[rd_member], feats, B, sel)
                    sources.append(
                        Source("RD", B, beta, gamma, c, "RD", cols, signs, rd_member, sel)
                    )
                    cols, signs = top_nodes(vec[single], feats, B, sel)
                    sources.append(
                        Source("Single", B, beta, gamma, c, "RD", cols, signs, single, sel)
                    )
                    # Measured on exactly RD's held-out members: the control is paired with RD.
                    sources.append(
                        Source("Random", B, beta, gamma, c, "RD", r_cols, r_signs, rd_member, sel)
                    )
        for c, members in cluster_members(km).items():
            if members.size < 2:
                skipped.append(
                    f"KM-Sem cluster {c} at {where} has {members.size} member: "
                    "no held-out member to measure"
                )
                continue
            med = kmsem_source_vector(members, At, inp.weights)
            km_vec = inp.H0 + inp.scale * med if raw else med
            for B in settings.budgets:
                for sel in settings.selections:
                    cols, signs = top_nodes(km_vec, feats, B, sel)
                    sources.append(
                        Source("KM-Sem", B, beta, gamma, c, "KM-Sem", cols, signs, -1, sel)
                    )
    kept = []
    for s in sources:
        if s.columns.size == 0:
            skipped.append(
                f"{s.method} cluster {s.cluster} (B={s.budget}, beta={s.beta:g}, "
                f"gamma={s.gamma:g}): no feature node with a {s.selection} value"
            )
            continue
        if s.columns.size < s.budget:
            log.info(
                "%s cluster %d (B=%d): only %d nodes with a %s value",
                s.method,
                s.cluster,
                s.budget,
                s.columns.size,
                s.selection,
            )
        kept.append(s)
    return kept, partitions, skipped


# measured_cluster of the pooled sample of the other clusters' members
OTHER_CLUSTERS = -1


def measured_members(
    labels: np.ndarray, rank: np.ndarray, cluster: int, exclude: int, cap: int | None
) -> dict[int, np.ndarray]:
    """Members measured for a source of ``cluster``: its held-out members under ``cluster``
    (the source ``exclude`` left out) and, under :data:`OTHER_CLUSTERS`, one pooled sample of
    every other cluster's members; each the first ``cap`` by the prompt's seeded ``rank``.

    Pooling makes the specificity comparison the same size whatever K is: a maximum over K − 1
    per-cluster estimates would grow with K from noise alone, and measuring ``cap`` members of
    every other cluster made the rows per source grow with K. The subsets depend on neither ε
    nor the budget, so Δ curves are paired. Keys with no member are left out, and so is the
    own key of a one-member cluster."""

    def first(m: np.ndarray) -> np.ndarray:
        m = m[np.argsort(rank[m], kind="stable")]
        return np.sort(m if cap is None else m[:cap])

    out = {}
    own = np.nonzero((labels == cluster) & (np.arange(labels.size) != exclude))[0]
    if own.size and (labels == cluster).sum() >= 2:  # a one-member cluster has no held-out
        out[int(cluster)] = first(own)
    rest = np.nonzero(labels != cluster)[0]
    if rest.size:
        out[OTHER_CLUSTERS] = first(rest)
    return out
