"""Cluster-level steering (METHOD §7): is each cluster's signature a causal factor?

For every steered cluster a *source* names B feature nodes and a sign for each; the
intervention adds ``ε · sign · α · d`` to the MLP output at each node's (layer, prefix
position), with α recomputed in the pass being steered (:func:`semmech.bases.steer_nodes`).
Methods differ only in the source:

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
source's continuations, and the first-order prediction for a member n is
Δ_n(ε) ≈ ε Σ_j sign(H_j) a_{n,j} — positive for members that share the source's signature.
The KM-Sem source, defined by METHOD §6 as the P-weighted median of ã, is mapped back to raw
units with the clustering's own normalisation (H0 + s · median ã, which is the P-weighted
median of the raw signatures). In the normalised view (``source_space: normalised``) the
sign of ã_j says only whether the cluster uses node j more or less than the prompt's median,
not which way it moves the logit, and at K = 1 the KM-Sem source is identically 0.

Every source goes through one function, :func:`steered_targets`, which measures the
teacher-forced mean demeaned logit ℓ̃ of continuations under a list of interventions:

1. one nnsight-traced *prefix* forward per chunk of interventions (rows = interventions,
   per-row scales), steered at prefix positions, keeping the KV cache and the final hidden
   state at the last prefix position (which predicts each continuation's first token);
2. continuation forwards over (intervention, continuation) rows, each row reading its
   intervention's prefix KV cache. These passes are not traced: nothing is patched at
   continuation positions, and the steered state reaches them only through the cache —
   which is exactly "continuation positions are untouched". The lm head is never run; ℓ̃
   is computed from the final hidden states at the predicting positions only.

The prefix is shared by all rows, so a row costs only its continuation's tokens, and the
ε = 0 reference is one intervention shared by every source. All passes run under no_grad.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from . import io
from .config import derive_seed
from .stats import pearson, slope, spearman
from .steering_settings import (SELECTIONS, SteeringInputError, SteeringSettings,
                                check_steering_configs)

log = logging.getLogger("semmech")

__all__ = [
    "METHODS", "SELECTIONS", "CURVE_COLUMNS", "METRIC_COLUMNS", "GENERATION_COLUMNS",
    "SteeringInputError", "SteeringSettings", "check_steering_configs", "Source", "Intervention",
    "MeasureStats", "PromptInputs", "top_nodes", "random_nodes", "rd_source_member",
    "kmsem_source_vector", "plan_sources", "measured_members", "demeaned_logits",
    "steered_prefix", "steered_targets", "steer_sources", "steered_generate", "read_inputs",
    "steer_prompt_stage", "aggregate_steering_stage",
]

METHODS = ("RD", "KM-Sem", "Single", "Random")
# Δ within this multiple of the measured batch-composition rounding counts as no change.
NOISE_FACTOR = 2.0
CURVE_COLUMNS = ["prompt_id", "method", "budget", "beta", "gamma", "source_cluster",
                 "measured_cluster", "own", "epsilon", "delta", "delta_sem", "n_members",
                 "frac_moved"]
METRIC_COLUMNS = ["prompt_id", "method", "budget", "beta", "gamma", "cluster", "mass",
                  "n_heldout", "pearson", "spearman", "frac_moved", "specificity",
                  "effect", "max_other_effect", "n_nodes", "source_member"]
GENERATION_COLUMNS = ["prompt_id", "method", "budget", "beta", "gamma", "cluster", "epsilon",
                      "sample", "text", "token_ids", "stop_reason"]


# ---------------------------------------------------------------------------------------------
# Sources: what differs between methods
# ---------------------------------------------------------------------------------------------


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


def top_nodes(vector: np.ndarray, feature_cols: np.ndarray, budget: int,
              selection: str = "full") -> tuple[np.ndarray, np.ndarray]:
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


def random_nodes(feature_cols: np.ndarray, budget: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The random-feature control: ``budget`` distinct feature columns, random ±1 signs."""
    feature_cols = np.asarray(feature_cols, dtype=np.int64)
    pick = rng.choice(feature_cols.size, size=budget, replace=False)
    return feature_cols[np.sort(pick)], rng.choice(np.array([-1.0, 1.0]), size=budget)


def rd_source_member(members: np.ndarray, E: np.ndarray, A_tilde: np.ndarray, mu_e: np.ndarray,
                     mu_a: np.ndarray, beta: float, gamma: float) -> int:
    """The member closest to its cluster's centres under β_e‖e − μ^e‖² + β_a‖ã − μ^a‖₁
    (β_e = γβ, β_a = (1 − γ)β); ties go to the lower sample index."""
    members = np.asarray(members, dtype=np.int64)
    be, ba = gamma * beta, (1.0 - gamma) * beta
    d = (be * ((E[members] - mu_e) ** 2).sum(1)
         + ba * np.abs(A_tilde[members] - mu_a).sum(1))
    return int(members[np.argmin(d)])


def kmsem_source_vector(members: np.ndarray, A_tilde: np.ndarray, P: np.ndarray) -> np.ndarray:
    """The KM-Sem source: the P-weighted coordinate-wise median of ã over the members."""
    from .rd import weighted_median

    members = np.asarray(members, dtype=np.int64)
    return weighted_median(A_tilde[members], np.asarray(P, dtype=np.float64)[members])


@dataclass
class PromptInputs:
    """Everything the steering of one prompt reads, checked for mutual consistency."""

    prompt_id: str
    prompt_ids: list[int]
    continuations: list[list[int]]
    weights: np.ndarray                 # P_n
    signatures: np.ndarray              # raw a_n [N, n_nodes]
    nodes: pd.DataFrame                 # attribution/{p}.nodes.parquet
    embeddings: np.ndarray              # e_n [N, d_e]
    H0: np.ndarray
    scale: float
    rd: dict[tuple[float, float], dict[str, np.ndarray]]   # labels, centres_e, centres_a
    km_sem: dict[tuple[float, float], np.ndarray]          # K-means labels on e, K = RD's K
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
        return list(zip(sub["layer"].astype(int), sub["position"].astype(int), sub["feature"].astype(int)))


def _cluster_members(labels: np.ndarray) -> dict[int, np.ndarray]:
    return {int(k): np.nonzero(labels == k)[0] for k in np.unique(labels)}


def plan_sources(inp: PromptInputs, settings: SteeringSettings, seed: int
                 ) -> tuple[list[Source], dict[tuple[str, float, float], np.ndarray], list[str]]:
    """Every source of one prompt (all methods, budgets, configurations, clusters), the
    partitions they are measured on, and a note per skipped cluster.

    A cluster with fewer than 2 members has no held-out member to measure: it is skipped
    (neither steered nor measured) and reported, not fatal.

    The random control draws from the *live* feature nodes, those with a non-zero attribution
    to some continuation: a node whose column is 0 everywhere cannot reach the measured
    logits at all (e.g. a last-layer node at a non-final prefix position writes to a residual
    stream nothing reads), so drawing it would make the control trivially flat.
    """
    feats = inp.feature_cols
    live = feats[np.any(inp.signatures[:, feats] != 0, axis=0)]
    if live.size < max(settings.budgets):
        live = feats  # too few live nodes for the budget: draw from all feature nodes
    if max(settings.budgets) > feats.size:
        raise SteeringInputError(
            f"prompt {inp.prompt_id!r}: steering budget B={max(settings.budgets)} exceeds the "
            f"{feats.size} feature nodes of its attribution; lower steering.budgets or raise "
            "attribution.max_feature_nodes")
    At = inp.A_tilde
    raw = settings.source_space == "raw"
    vec = inp.signatures if raw else At
    sources: list[Source] = []
    partitions: dict[tuple[str, float, float], np.ndarray] = {}
    skipped: list[str] = []
    for beta, gamma in settings.configs:
        rd = inp.rd[(beta, gamma)]
        labels = rd["labels"]
        km = inp.km_sem[(beta, gamma)]
        partitions[("RD", beta, gamma)] = labels
        partitions[("KM-Sem", beta, gamma)] = km
        for c, members in _cluster_members(labels).items():
            if members.size < 2:
                skipped.append(f"RD cluster {c} at beta={beta:g} gamma={gamma:g} has "
                               f"{members.size} member: no held-out member to measure")
                continue
            rd_member = rd_source_member(members, inp.embeddings, At, rd["centres_e"][c],
                                         rd["centres_a"][c], beta, gamma)
            rng = np.random.default_rng(derive_seed(seed, "single", beta, gamma, c))
            single = int(rng.choice(members))
            for B in settings.budgets:
                cols, signs = top_nodes(vec[rd_member], feats, B, settings.selection)
                sources.append(Source("RD", B, beta, gamma, c, "RD", cols, signs, rd_member))
                cols, signs = top_nodes(vec[single], feats, B, settings.selection)
                sources.append(Source("Single", B, beta, gamma, c, "RD", cols, signs, single))
                rng_r = np.random.default_rng(derive_seed(seed, "random", beta, gamma, c, B))
                cols, signs = random_nodes(live, B, rng_r)
                # Measured on exactly RD's held-out members, so the control is paired with RD.
                sources.append(Source("Random", B, beta, gamma, c, "RD", cols, signs, rd_member))
        for c, members in _cluster_members(km).items():
            if members.size < 2:
                skipped.append(f"KM-Sem cluster {c} at beta={beta:g} gamma={gamma:g} has "
                               f"{members.size} member: no held-out member to measure")
                continue
            med = kmsem_source_vector(members, At, inp.weights)
            km_vec = inp.H0 + inp.scale * med if raw else med
            for B in settings.budgets:
                cols, signs = top_nodes(km_vec, feats, B, settings.selection)
                sources.append(Source("KM-Sem", B, beta, gamma, c, "KM-Sem", cols, signs, -1))
    kept = []
    for s in sources:
        if s.columns.size == 0:
            skipped.append(f"{s.method} cluster {s.cluster} (B={s.budget}, beta={s.beta:g}, "
                           f"gamma={s.gamma:g}): no feature node with a {settings.selection} value")
            continue
        if s.columns.size < s.budget:
            log.info("%s cluster %d (B=%d): only %d nodes with a %s value", s.method, s.cluster,
                     s.budget, s.columns.size, settings.selection)
        kept.append(s)
    return kept, partitions, skipped


def measured_members(labels: np.ndarray, rank: np.ndarray, exclude: int,
                     cap: int | None) -> dict[int, np.ndarray]:
    """Members measured per cluster (clusters with ≥ 2 members only): ordered by the prompt's
    seeded ``rank`` of every sample, the source member left out, at most ``cap`` of them.
    The subset depends on neither ε nor the budget, so Δ curves are paired."""
    out = {}
    for k, members in _cluster_members(labels).items():
        if members.size < 2:
            continue
        m = members[members != exclude]
        m = m[np.argsort(rank[m], kind="stable")]
        if cap is not None:
            m = m[:cap]
        if m.size:
            out[k] = np.sort(m)
    return out


# ---------------------------------------------------------------------------------------------
# The measurement: one code path for every source
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intervention:
    """Nodes (layer, position, feature) and the scale each is added with (ε · sign)."""

    nodes: tuple[tuple[int, int, int], ...] = ()
    scales: tuple[float, ...] = ()


@dataclass
class MeasureStats:
    """Forward-pass accounting of :func:`steered_targets` (for the benchmark)."""

    prefix_forwards: int = 0
    continuation_forwards: int = 0
    interventions: int = 0
    rows: int = 0
    continuation_rows: int = 0
    tokens: int = 0
    min_forwards: int = 0

    @property
    def forwards(self) -> int:
        return self.prefix_forwards + self.continuation_forwards

    def as_dict(self) -> dict[str, int]:
        return {"prefix_forwards": self.prefix_forwards,
                "continuation_forwards": self.continuation_forwards, "forwards": self.forwards,
                "min_forwards": self.min_forwards, "interventions": self.interventions,
                "rows": self.rows, "continuation_rows": self.continuation_rows,
                "tokens": self.tokens}


def demeaned_logits(unembed: Any, hidden: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ℓ̃_y = ℓ_y − mean_v ℓ_v from final hidden states [..., d] for tokens y [...], via the
    attribution stage's own unembedding (so both stages read the same target)."""
    return unembed.target(hidden, y)[0]


def _unembed(model: Any, basis: Any) -> Any:
    from .attribution import _Unembed  # the attribution stage's demeaned-logit reader

    return _Unembed(basis.layout, model.hf)


def _union(interventions: Sequence[Intervention]) -> tuple[list[tuple[int, int, int]], torch.Tensor]:
    """All nodes of a chunk (deduplicated, sorted) and the per-row scale matrix over them."""
    nodes = sorted({n for iv in interventions for n in iv.nodes})
    col = {n: j for j, n in enumerate(nodes)}
    scales = torch.zeros(len(interventions), len(nodes), dtype=torch.float32)
    for r, iv in enumerate(interventions):
        if len(iv.nodes) != len(iv.scales):
            raise ValueError("an intervention needs one scale per node")
        for n, s in zip(iv.nodes, iv.scales):
            scales[r, col[n]] += float(s)
    return nodes, scales


def steered_prefix(model: Any, basis: Any, prompt_ids: Sequence[int],
                   interventions: Sequence[Intervention]) -> tuple[torch.Tensor, Any]:
    """One traced prefix forward, row r steered by intervention r.

    Returns the final hidden states [R, M, d] and the KV cache of the steered prefix.
    """
    from .bases import envoy, steer_nodes

    nodes, scales = _union(interventions)
    R = len(interventions)
    ids = torch.tensor([list(prompt_ids)] * R, dtype=torch.long, device=model.device)
    with torch.no_grad(), model.lm.trace(input_ids=ids, attention_mask=torch.ones_like(ids),
                                         use_cache=True) as tracer:
        steer_nodes(model, basis, nodes, scales)
        out = envoy(model.lm, basis.layout.base).output.save()
        tracer.stop()  # the lm head over every prefix position is not needed
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    cache = out.past_key_values if hasattr(out, "past_key_values") else out[1]
    return hidden, cache


def _select_cache(cache: Any, rows: torch.Tensor) -> Any:
    """A new cache holding the given batch rows (repeats allowed); ``cache`` is not modified,
    because the copies' layers re-bind their tensors instead of writing into them."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in new.layers:
        layer.batch_select_indices(rows)
    return new


def steered_targets(model: Any, basis: Any, prompt_ids: Sequence[int],
                    continuations: Sequence[Sequence[int]], interventions: Sequence[Intervention],
                    pairs: np.ndarray, batch_size: int = 16, unembed: Any = None
                    ) -> tuple[np.ndarray, MeasureStats]:
    """Teacher-forced mean demeaned logit of continuation ``pairs[i, 1]`` under intervention
    ``pairs[i, 0]``, for every pair.

    Interventions go in chunks of ``batch_size`` rows through one steered prefix forward each;
    their (intervention, continuation) rows then go, longest first, in batches of
    ``batch_size`` through continuation forwards that read the chunk's KV cache.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if pairs.size and (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= len(interventions)
                       or pairs[:, 1].min() < 0 or pairs[:, 1].max() >= len(continuations)):
        raise ValueError("pairs index an intervention or continuation that does not exist")
    if any(len(continuations[int(n)]) == 0 for n in np.unique(pairs[:, 1])):
        raise ValueError("a measured continuation has no tokens")
    unembed = unembed or _unembed(model, basis)
    dev = model.device
    M = len(prompt_ids)
    stats = MeasureStats()
    values = np.full(len(pairs), np.nan)
    used = np.unique(pairs[:, 0])
    stats.interventions = int(used.size)
    stats.rows = int(len(pairs))
    lengths = np.array([len(continuations[int(n)]) for n in pairs[:, 1]], dtype=np.int64)
    n_cont_rows = int((lengths > 1).sum())
    stats.min_forwards = int(math.ceil(used.size / batch_size) + math.ceil(n_cont_rows / batch_size))
    with torch.no_grad():
        for start in range(0, used.size, batch_size):
            chunk = used[start:start + batch_size]
            hidden, cache = steered_prefix(model, basis, prompt_ids, [interventions[int(i)] for i in chunk])
            stats.prefix_forwards += 1
            stats.tokens += int(len(chunk) * M)
            row_of = np.full(len(interventions), -1, dtype=np.int64)
            row_of[chunk] = np.arange(len(chunk))
            sel = np.nonzero(np.isin(pairs[:, 0], chunk))[0]
            prow = torch.as_tensor(row_of[pairs[sel, 0]], device=dev)
            # Token 0 is predicted by the last prefix position.
            y0 = torch.tensor([continuations[int(n)][0] for n in pairs[sel, 1]], device=dev)
            first = demeaned_logits(unembed, hidden[prow, M - 1], y0).double().cpu().numpy()
            total = first.copy()
            # Tokens 1.. are predicted by the continuation positions, longest rows first.
            rest = sel[lengths[sel] > 1]
            rest = rest[np.argsort(-lengths[rest], kind="stable")]
            pos_in_sel = {int(i): j for j, i in enumerate(sel)}
            for b0 in range(0, rest.size, batch_size):
                idx = rest[b0:b0 + batch_size]
                s = _continuation_sums(model, unembed, cache, torch.as_tensor(row_of[pairs[idx, 0]], device=dev),
                                       [continuations[int(n)] for n in pairs[idx, 1]], M)
                stats.continuation_forwards += 1
                stats.continuation_rows += int(idx.size)
                stats.tokens += int(sum(len(continuations[int(n)]) - 1 for n in pairs[idx, 1]))
                for j, i in enumerate(idx):
                    total[pos_in_sel[int(i)]] += s[j]
            values[sel] = total / lengths[sel]
            del cache, hidden
    return values, stats


def _continuation_sums(model: Any, unembed: Any, cache: Any, cache_rows: torch.Tensor,
                       conts: Sequence[Sequence[int]], M: int) -> np.ndarray:
    """Σ_{t≥1} ℓ̃_t per row: tokens c[:-1] at positions M.. after the row's prefix cache."""
    dev = model.device
    B = len(conts)
    T = max(len(c) for c in conts) - 1
    ids = torch.full((B, T), int(model.tokenizer.pad_token_id or 0), dtype=torch.long)
    y = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for r, c in enumerate(conts):
        n = len(c) - 1
        ids[r, :n] = torch.tensor(list(c[:-1]))
        y[r, :n] = torch.tensor(list(c[1:]))
        mask[r, :n] = 1
    ids, y, mask = ids.to(dev), y.to(dev), mask.to(dev)
    attn = torch.cat([torch.ones((B, M), dtype=torch.long, device=dev), mask], dim=1)
    pos = (M + torch.arange(T, device=dev)).unsqueeze(0).expand(B, -1)
    out = model.hf.base_model(input_ids=ids, attention_mask=attn, position_ids=pos,
                              past_key_values=_select_cache(cache, cache_rows), use_cache=True)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    tgt = demeaned_logits(unembed, hidden, y).double()
    return (tgt * mask).sum(-1).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# One prompt: sources -> interventions -> curves and metrics
# ---------------------------------------------------------------------------------------------


@dataclass
class SteeringResult:
    curves: pd.DataFrame
    metrics: pd.DataFrame
    stats: MeasureStats
    sources: list[Source] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    noise_floor: float = 0.0


def steer_sources(model: Any, basis: Any, inp: PromptInputs, sources: Sequence[Source],
                  partitions: Mapping[tuple[str, float, float], np.ndarray],
                  settings: SteeringSettings, seed: int) -> SteeringResult:
    """Measure every source at every ε through :func:`steered_targets` (one call for all
    methods), then reduce to the curves and per-cluster metrics of the steering contract.

    Rows of different batches differ by rounding (~1e-7 relative in float32, far more in
    bfloat16), so the ε = 0 reference is not bit-identical to a steered row at zero effect.
    The floor is measured, not assumed: a zero-scale intervention on real nodes, batched apart
    from the reference. A member whose change is within ``NOISE_FACTOR`` × that floor has not
    moved, and an own-cluster curve entirely within it has no correlation (NaN).
    """
    rank = np.random.default_rng(derive_seed(seed, "measured")).permutation(inp.n)
    eps_nz = settings.nonzero_epsilons
    interventions: list[Intervention] = [Intervention()]  # 0: the shared ε = 0 reference
    index: dict[Intervention, int] = {interventions[0]: 0}
    plans = []
    wanted: set[tuple[int, int]] = set()
    for s in sources:
        labels = partitions[(s.partition, s.beta, s.gamma)]
        meas = measured_members(labels, rank, s.source_member, settings.max_measured)
        keys = tuple(inp.node_keys(s.columns))
        ids = {}
        everyone = np.concatenate(list(meas.values())) if meas else np.zeros(0, dtype=np.int64)
        for e in eps_nz:
            iv = Intervention(keys, tuple(float(e) * float(x) for x in s.signs))
            if iv not in index:  # identical sources (e.g. Single drew RD's member) run once
                index[iv] = len(interventions)
                interventions.append(iv)
            ids[e] = index[iv]
            wanted.update((ids[e], int(n)) for n in everyone)
        wanted.update((0, int(n)) for n in everyone)
        plans.append((s, meas, ids))
    # The rounding floor: real nodes at scale 0 measured in other batches than the reference
    # (last, so in another prefix chunk too). Its Δ is pure batch-composition rounding.
    null = -1
    if plans:
        keys = tuple(inp.node_keys(plans[0][0].columns))
        null = len(interventions)
        interventions.append(Intervention(keys, (0.0,) * len(keys)))
        wanted.update((null, n) for i, n in list(wanted) if i == 0)
    pairs = np.array(sorted(wanted), dtype=np.int64).reshape(-1, 2)
    log.info("prompt %s: %d sources, %d interventions, %d (intervention, continuation) rows",
             inp.prompt_id, len(sources), len(interventions), len(pairs))
    values, stats = steered_targets(model, basis, inp.prompt_ids, inp.continuations, interventions,
                                    pairs, batch_size=settings.batch_size)
    table = {(int(i), int(n)): float(v) for (i, n), v in zip(pairs, values)}
    refs = [n for i, n in table if i == 0]
    noise = max((abs(table[(null, n)] - table[(0, n)]) for n in refs), default=0.0)
    floor = NOISE_FACTOR * noise
    curves, metrics = [], []
    P = np.asarray(inp.weights, dtype=np.float64)
    for s, meas, ids in plans:
        labels = partitions[(s.partition, s.beta, s.gamma)]
        effects: dict[int, float] = {}
        own_curve = None
        for k, members in meas.items():
            ref = np.array([table[(0, int(n))] for n in members])
            deltas, fracs = [], []
            for e in settings.epsilons:
                if e == 0.0:
                    change = np.zeros(members.size)
                else:
                    change = np.array([table[(ids[e], int(n))] for n in members]) - ref
                delta = float(change.mean())
                sem = float(change.std(ddof=1) / math.sqrt(change.size)) if change.size > 1 else math.nan
                moved = (np.sign(change) == np.sign(e)) & (np.abs(change) > floor)
                frac = math.nan if e == 0.0 else float(np.mean(moved))
                deltas.append(delta)
                fracs.append(frac)
                curves.append({"prompt_id": inp.prompt_id, "method": s.method, "budget": s.budget,
                               "beta": s.beta, "gamma": s.gamma, "source_cluster": s.cluster,
                               "measured_cluster": k, "own": k == s.cluster, "epsilon": float(e),
                               "delta": delta, "delta_sem": sem, "n_members": int(members.size),
                               "frac_moved": frac})
            effects[k] = slope(settings.epsilons, deltas)
            if k == s.cluster:
                own_curve = (deltas, fracs, members.size)
        if own_curve is None:  # the source's own cluster had no measurable member
            continue
        deltas, fracs, n_own = own_curve
        # A curve within the rounding floor shows no effect: its correlation is undefined.
        flat = max(abs(d) for d in deltas) <= floor
        others = [v for k, v in effects.items() if k != s.cluster and math.isfinite(v)]
        max_other = max(others) if others else math.nan
        metrics.append({"prompt_id": inp.prompt_id, "method": s.method, "budget": s.budget,
                        "beta": s.beta, "gamma": s.gamma, "cluster": s.cluster,
                        "mass": float(P[labels == s.cluster].sum() / P.sum()),
                        "n_heldout": int(n_own),
                        "pearson": math.nan if flat else pearson(settings.epsilons, deltas),
                        "spearman": math.nan if flat else spearman(settings.epsilons, deltas),
                        "frac_moved": float(np.nanmean([f for f in fracs if math.isfinite(f)]))
                        if any(math.isfinite(f) for f in fracs) else math.nan,
                        "specificity": effects[s.cluster] - max_other if others else math.nan,
                        "effect": effects[s.cluster], "max_other_effect": max_other,
                        "n_nodes": int(s.columns.size), "source_member": int(s.source_member)})
    return SteeringResult(_curves_frame(curves), _metrics_frame(metrics), stats, list(sources),
                          noise_floor=floor)


def _curves_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return df.astype({"prompt_id": str, "method": str, "budget": np.int64, "beta": np.float64,
                      "gamma": np.float64, "source_cluster": np.int64, "measured_cluster": np.int64,
                      "own": bool, "epsilon": np.float64, "delta": np.float64,
                      "delta_sem": np.float64, "n_members": np.int64, "frac_moved": np.float64})


def _metrics_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    return df.astype({"prompt_id": str, "method": str, "budget": np.int64, "beta": np.float64,
                      "gamma": np.float64, "cluster": np.int64, "mass": np.float64,
                      "n_heldout": np.int64, "pearson": np.float64, "spearman": np.float64,
                      "frac_moved": np.float64, "specificity": np.float64, "effect": np.float64,
                      "max_other_effect": np.float64, "n_nodes": np.int64, "source_member": np.int64})


# ---------------------------------------------------------------------------------------------
# Steered generation (for inspection)
# ---------------------------------------------------------------------------------------------


def steered_generate(model: Any, basis: Any, prompt_ids: Sequence[int],
                     nodes: Sequence[tuple[int, int, int]], signs: Sequence[float],
                     epsilons: Sequence[float], n: int, sampling_cfg: Mapping[str, Any] | None,
                     seed: int) -> list[tuple[float, int, list[int], str, str]]:
    """``n`` sampled continuations per ε, all ε in one seeded ``generate`` (per-row scales),
    with the steering on the prefix positions only.

    nnsight applies interventions given in a ``generate`` invoke to the first forward step
    only — the prefix pass; later steps decode from its (steered) KV cache untouched (a later
    step has one position, so a prefix position there would not even exist).
    Returns (ε, sample, token ids, text, stop reason) per continuation.
    """
    import warnings

    from .bases import steer_nodes
    from .sampling import SamplingSettings, generation_inputs, stop_token_mask, truncate

    if n <= 0 or not epsilons:
        return []
    cfg = dict(sampling_cfg or {})
    cfg["batch_size"] = int(n) * len(epsilons)
    settings = SamplingSettings.from_config(cfg)
    stop_mask = stop_token_mask(model.tokenizer, settings.stop_chars)
    ids, gen_kwargs = generation_inputs(model, list(prompt_ids), settings, stop_mask)
    eps_row = [float(e) for e in epsilons for _ in range(int(n))]
    scales = torch.tensor([[e * float(s) for s in signs] for e in eps_row], dtype=torch.float32)
    torch.manual_seed(int(seed))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        with model.lm.generate(**gen_kwargs) as tracer:
            with tracer.invoke({"input_ids": ids, "attention_mask": torch.ones_like(ids)}):
                steer_nodes(model, basis, list(nodes), scales)
            with tracer.invoke():
                result = tracer.result.save()
    out = []
    for r, row in enumerate(result[:, len(prompt_ids):].cpu().tolist()):
        toks, _, reason = truncate(row, [0.0] * len(row), stop_mask, model.eos_token_ids)
        out.append((eps_row[r], r % int(n), toks,
                    model.tokenizer.decode(toks, skip_special_tokens=False), reason))
    return out


def _generations_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=GENERATION_COLUMNS)
    return df.astype({"prompt_id": str, "method": str, "budget": np.int64, "beta": np.float64,
                      "gamma": np.float64, "cluster": np.int64, "epsilon": np.float64,
                      "sample": np.int64, "text": str, "stop_reason": str})


# ---------------------------------------------------------------------------------------------
# Stage entry points
# ---------------------------------------------------------------------------------------------


def _find_config(beta_arr: np.ndarray, gamma_arr: np.ndarray, beta: float, gamma: float,
                 path: Any) -> int:
    hit = np.nonzero(np.isclose(beta_arr, beta) & np.isclose(gamma_arr, gamma))[0]
    if hit.size == 0:
        have = ", ".join(f"({b:g}, {g:g})" for b, g in zip(beta_arr, gamma_arr))
        raise SteeringInputError(
            f"{path}: steering configuration (beta={beta:g}, gamma={gamma:g}) is not in the "
            f"clustering sweep; the sweep has {have}")
    return int(hit[0])


def read_inputs(prompt_id: str, samples_path: Any, prompt_path: Any, signatures_path: Any,
                nodes_path: Any, embeddings_path: Any, clusters_npz: Any, baseline_labels_path: Any,
                settings: SteeringSettings, basis_name: str, model_name: str) -> PromptInputs:
    """Read and cross-check one prompt's inputs (no model needed), failing with one clear
    error naming the file before any expensive work."""
    from .attribution import read_samples

    conts, samples = read_samples(samples_path)
    if "weight" not in samples.columns:
        raise io.CorruptInputError(f"{samples_path}: missing column 'weight'")
    N = len(conts)
    prompt = io.read_json(prompt_path)
    if not isinstance(prompt, dict) or "prompt_token_ids" not in prompt:
        raise io.CorruptInputError(f"{prompt_path}: no 'prompt_token_ids'")
    tensors, meta = io.read_safetensors(signatures_path, required=["signatures"])
    got_basis = meta.get("basis")
    if got_basis != basis_name:
        raise SteeringInputError(
            f"{signatures_path}: signatures were computed in basis {got_basis!r}, but the "
            f"configured attribution.basis is {basis_name!r}; re-run attribution or configure "
            "the same basis")
    if meta.get("model") not in (None, model_name):
        raise SteeringInputError(f"{signatures_path}: signatures belong to model {meta.get('model')!r}, "
                                 f"not the configured {model_name!r}")
    A = tensors["signatures"].double().numpy()
    nodes = io.read_parquet(nodes_path, required=["node_idx", "kind", "layer", "position", "feature"])
    if A.ndim != 2 or A.shape[0] != N:
        raise io.CorruptInputError(f"{signatures_path}: expected {N} rows, found shape {A.shape}")
    if len(nodes) != A.shape[1] or not np.array_equal(nodes["node_idx"].to_numpy(), np.arange(A.shape[1])):
        raise io.CorruptInputError(f"{nodes_path}: node_idx must be 0..{A.shape[1] - 1}, one per "
                                   f"signature column ({len(nodes)} rows)")
    E = io.read_npz(embeddings_path, required=["embeddings"])["embeddings"].astype(np.float64)
    if E.ndim != 2 or E.shape[0] != N:
        raise io.CorruptInputError(f"{embeddings_path}: expected {N} rows, found shape {E.shape}")
    z = io.read_npz(clusters_npz, required=["H0", "scale", "beta", "gamma", "K", "labels"])
    if z["H0"].shape != (A.shape[1],):
        raise io.CorruptInputError(f"{clusters_npz}: H0 has shape {z['H0'].shape}, signatures "
                                   f"have {A.shape[1]} nodes")
    km_all = io.read_parquet(baseline_labels_path, required=["method", "k", "sample_idx", "label"])
    km_all = km_all[km_all["method"] == "km_sem"]
    rd, km = {}, {}
    for beta, gamma in settings.configs:
        i = _find_config(z["beta"], z["gamma"], beta, gamma, clusters_npz)
        labels = z["labels"][i].astype(np.int64)
        if labels.shape != (N,):
            raise io.CorruptInputError(f"{clusters_npz}: labels of configuration {i} have shape "
                                       f"{labels.shape}, expected ({N},)")
        ce, ca = z.get(f"cfg{i:03d}_centres_e"), z.get(f"cfg{i:03d}_centres_a")
        K = int(labels.max()) + 1
        if ce is None or ca is None or ce.shape[0] < K or ca.shape != (ce.shape[0], A.shape[1]) \
                or ce.shape[1] != E.shape[1]:
            raise io.CorruptInputError(f"{clusters_npz}: centres of configuration {i} are missing "
                                       f"or do not match {K} clusters of the views")
        rd[(beta, gamma)] = {"labels": labels, "centres_e": ce.astype(np.float64),
                             "centres_a": ca.astype(np.float64)}
        k = min(int(z["K"][i]), N)
        sub = km_all[km_all["k"] == k].sort_values("sample_idx")
        if not np.array_equal(sub["sample_idx"].to_numpy(), np.arange(N)):
            raise io.CorruptInputError(
                f"{baseline_labels_path}: no complete KM-Sem labelling with k={k} (RD's K at "
                f"beta={beta:g}, gamma={gamma:g})")
        km[(beta, gamma)] = sub["label"].to_numpy(np.int64)
    inp = PromptInputs(prompt_id=prompt_id, prompt_ids=[int(t) for t in prompt["prompt_token_ids"]],
                       continuations=conts, weights=samples["weight"].to_numpy(np.float64),
                       signatures=A, nodes=nodes, embeddings=E, H0=z["H0"].astype(np.float64),
                       scale=float(z["scale"]), rd=rd, km_sem=km, basis=basis_name)
    n_feat = inp.feature_cols.size
    if max(settings.budgets) > n_feat:
        raise SteeringInputError(
            f"{nodes_path}: steering budget B={max(settings.budgets)} exceeds the {n_feat} feature "
            "nodes of the attribution; lower steering.budgets or raise attribution.max_feature_nodes")
    return inp


def steer_prompt_stage(prompt_id: str, samples_path: Any, prompt_path: Any, signatures_path: Any,
                       nodes_path: Any, embeddings_path: Any, clusters_npz: Any,
                       baseline_labels_path: Any, model_cfg: Mapping[str, Any],
                       attribution_cfg: Mapping[str, Any], steering_cfg: Mapping[str, Any],
                       sampling_cfg: Mapping[str, Any], seed: int, out_curves: Any,
                       out_metrics: Any, out_generations: Any, out_stats: Any,
                       transcoder_dir: Any = None) -> SteeringResult:
    """Workflow entry: steering/{p}.curves.parquet, .metrics.parquet, .generations.parquet and
    .stats.json (forward-pass counts and timings) of one prompt."""
    t0 = time.perf_counter()
    settings = SteeringSettings.from_config(steering_cfg)
    basis_name = attribution_cfg.get("basis", "mlp_neurons")
    tc_dir = transcoder_dir or attribution_cfg.get("transcoder_dir")
    if basis_name == "transcoder" and not tc_dir:
        raise SteeringInputError("attribution.basis is 'transcoder' but no transcoder directory is set")
    inp = read_inputs(prompt_id, samples_path, prompt_path, signatures_path, nodes_path,
                      embeddings_path, clusters_npz, baseline_labels_path, settings, basis_name,
                      model_cfg["name"])
    sources, partitions, skipped = plan_sources(inp, settings, seed)
    for note in skipped:
        log.warning("prompt %s: skipped %s", prompt_id, note)
    counts = {m: sum(s.method == m for s in sources) for m in METHODS}
    log.info("prompt %s: %d sources %s, budgets %s, %d epsilons, selection %s", prompt_id,
             len(sources), counts, list(settings.budgets), len(settings.epsilons), settings.selection)

    from .attribution import _check_prompt, check_token_ids
    from .bases import load_basis
    from .stages import load_configured_model

    model = load_configured_model(dict(model_cfg))
    _check_prompt(model, io.read_json(prompt_path), prompt_id, model_cfg["name"], prompt_path)
    check_token_ids(model, inp.prompt_ids, inp.continuations)
    basis = load_basis(basis_name, model, transcoder_dir=tc_dir)
    t_load = time.perf_counter()
    if sources:
        result = steer_sources(model, basis, inp, sources, partitions, settings, seed)
    else:
        log.warning("prompt %s: no cluster with at least 2 members; nothing to steer", prompt_id)
        result = SteeringResult(_curves_frame([]), _metrics_frame([]), MeasureStats())
    result.skipped = skipped
    t_measure = time.perf_counter()

    gen_rows = []
    rd_sources = [s for s in sources if s.method == "RD" and s.budget == max(settings.budgets)
                  and (s.beta, s.gamma) == settings.configs[0]]
    if rd_sources and settings.n_generate > 0:
        P = inp.weights
        labels = partitions[("RD",) + settings.configs[0]]
        src = max(rd_sources, key=lambda s: (P[labels == s.cluster].sum(), -s.cluster))
        gen = steered_generate(model, basis, inp.prompt_ids, inp.node_keys(src.columns), src.signs,
                               (-1.0, 0.0, 1.0), settings.n_generate, sampling_cfg,
                               derive_seed(seed, "generate"))
        for e, i, toks, text, reason in gen:
            gen_rows.append({"prompt_id": prompt_id, "method": src.method, "budget": src.budget,
                             "beta": src.beta, "gamma": src.gamma, "cluster": src.cluster,
                             "epsilon": e, "sample": i, "text": text,
                             "token_ids": np.asarray(toks, dtype=np.int64), "stop_reason": reason})
    t_gen = time.perf_counter()
    st = result.stats
    log.info("prompt %s: %d forwards (%d prefix + %d continuation; minimum %d), %d rows, "
             "%d tokens; measure %.1fs, generate %.1fs", prompt_id, st.forwards,
             st.prefix_forwards, st.continuation_forwards, st.min_forwards, st.rows, st.tokens,
             t_measure - t_load, t_gen - t_measure)
    io.write_parquet(result.curves, out_curves)
    io.write_parquet(result.metrics, out_metrics)
    io.write_parquet(_generations_frame(gen_rows), out_generations)
    io.write_json({"prompt_id": prompt_id, "basis": basis_name, **st.as_dict(),
                   "sources": counts, "skipped": skipped, "noise_floor": result.noise_floor,
                   "naive_forwards": int(st.rows),
                   "seconds": {"load": t_load - t0, "measure": t_measure - t_load,
                               "generate": t_gen - t_measure, "total": t_gen - t0}}, out_stats)
    return result


def aggregate_steering_stage(metrics_paths: Sequence[Any], steering_cfg: Mapping[str, Any],
                             seed: int, out_csv: Any, out_tex: Any) -> pd.DataFrame:
    """Workflow entry: tables/steering_comparison.{csv,tex} — per method and budget, mean
    Pearson / Spearman over all prompts' and configurations' steered clusters with seeded
    bootstrap 95% CIs (:func:`semmech.tables.steering_comparison`). Every (method, budget)
    gets a row, with n_clusters = 0 and NaNs where nothing could be steered."""
    from .tables import STEERING_COLUMNS, steering_comparison, write_steering_comparison

    settings = SteeringSettings.from_config(steering_cfg)
    frames = [io.read_parquet(p, required=["method", "budget", "pearson", "spearman",
                                           "frac_moved", "specificity"]) for p in metrics_paths]
    metrics = pd.concat(frames, ignore_index=True) if frames else _metrics_frame([])
    table = steering_comparison(metrics, n_boot=settings.bootstrap, seed=int(seed))
    have = {(str(m), int(b)) for m, b in zip(table["method"], table["budget"])}
    missing = [{"method": m, "budget": int(b), "n_clusters": 0}
               for b in settings.budgets for m in METHODS if (m, int(b)) not in have]
    if missing:
        table = pd.concat([table, pd.DataFrame(missing)], ignore_index=True)
    order = {m: i for i, m in enumerate(METHODS)}
    table = table.assign(_b=table["budget"].astype(int), _m=table["method"].map(order).fillna(len(order)))
    table = table.sort_values(["_b", "_m"], kind="stable").drop(columns=["_b", "_m"])
    table = table.reset_index(drop=True)[STEERING_COLUMNS].astype({"budget": np.int64, "n_clusters": np.int64})
    write_steering_comparison(table, out_csv, out_tex)
    return table
