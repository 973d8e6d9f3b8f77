"""Cluster-level steering (METHOD §7): is each cluster's signature a causal factor?

For every steered cluster a *source* (:mod:`semmech.steer.sources`) names B feature nodes and a sign for each; the
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import derive_seed
from ..model.target import DemeanedLogit, demeaned_logits
from ..stats import pearson, slope, spearman
from .intervention import Intervention, steered_prefix
from .settings import SteeringSettings
from .sources import OTHER_CLUSTERS, PromptInputs, Source, measured_members

log = logging.getLogger("semmech")

# Δ within this multiple of the measured batch-composition rounding counts as no change.
NOISE_FACTOR = 2.0
CURVE_DTYPES = {
    "prompt_id": str,
    "method": str,
    "selection": str,
    "budget": np.int64,
    "beta": np.float64,
    "gamma": np.float64,
    "source_cluster": np.int64,
    "measured_cluster": np.int64,
    "own": bool,
    "epsilon": np.float64,
    "delta": np.float64,
    "delta_sem": np.float64,
    "n_members": np.int64,
    "frac_moved": np.float64,
}
CURVE_COLUMNS = list(CURVE_DTYPES)
METRIC_DTYPES = {
    "prompt_id": str,
    "method": str,
    "selection": str,
    "budget": np.int64,
    "beta": np.float64,
    "gamma": np.float64,
    "cluster": np.int64,
    "mass": np.float64,
    "n_heldout": np.int64,
    "pearson": np.float64,
    "spearman": np.float64,
    "frac_moved": np.float64,
    "specificity": np.float64,
    "effect": np.float64,
    "other_effect": np.float64,
    "n_nodes": np.int64,
    "source_member": np.int64,
    "amplify": np.float64,
    "suppress": np.float64,
    "two_sided": np.float64,
    "two_sided_specificity": np.float64,
}
METRIC_COLUMNS = list(METRIC_DTYPES)
GENERATION_DTYPES = {
    "prompt_id": str,
    "method": str,
    "selection": str,
    "budget": np.int64,
    "beta": np.float64,
    "gamma": np.float64,
    "cluster": np.int64,
    "epsilon": np.float64,
    "sample": np.int64,
    "text": str,
    "token_ids": object,
    "stop_reason": str,
}
GENERATION_COLUMNS = list(GENERATION_DTYPES)


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
        return {
            "prefix_forwards": self.prefix_forwards,
            "continuation_forwards": self.continuation_forwards,
            "forwards": self.forwards,
            "min_forwards": self.min_forwards,
            "interventions": self.interventions,
            "rows": self.rows,
            "continuation_rows": self.continuation_rows,
            "tokens": self.tokens,
        }


def select_cache(cache: Any, rows: torch.Tensor) -> Any:
    """A new cache holding the given batch rows (repeats allowed); ``cache`` is not modified,
    because the copies' layers re-bind their tensors instead of writing into them."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in new.layers:
        layer.batch_select_indices(rows)
    return new


def steered_targets(
    model: Any,
    basis: Any,
    prompt_ids: Sequence[int],
    continuations: Sequence[Sequence[int]],
    interventions: Sequence[Intervention],
    pairs: np.ndarray,
    batch_size: int = 16,
    unembed: Any = None,
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
    if pairs.size and (
        pairs[:, 0].min() < 0
        or pairs[:, 0].max() >= len(interventions)
        or pairs[:, 1].min() < 0
        or pairs[:, 1].max() >= len(continuations)
    ):
        raise ValueError("pairs index an intervention or continuation that does not exist")
    if any(len(continuations[int(n)]) == 0 for n in np.unique(pairs[:, 1])):
        raise ValueError("a measured continuation has no tokens")
    unembed = unembed or DemeanedLogit(basis.layout, model.hf)
    dev = model.device
    M = len(prompt_ids)
    stats = MeasureStats()
    values = np.full(len(pairs), np.nan)
    used = np.unique(pairs[:, 0])
    stats.interventions = int(used.size)
    stats.rows = int(len(pairs))
    lengths = np.array([len(continuations[int(n)]) for n in pairs[:, 1]], dtype=np.int64)
    n_cont_rows = int((lengths > 1).sum())
    stats.min_forwards = int(
        math.ceil(used.size / batch_size) + math.ceil(n_cont_rows / batch_size)
    )
    with torch.no_grad():
        for start in range(0, used.size, batch_size):
            chunk = used[start : start + batch_size]
            hidden, cache = steered_prefix(
                model, basis, prompt_ids, [interventions[int(i)] for i in chunk]
            )
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
                idx = rest[b0 : b0 + batch_size]
                s = _continuation_sums(
                    model,
                    unembed,
                    cache,
                    torch.as_tensor(row_of[pairs[idx, 0]], device=dev),
                    [continuations[int(n)] for n in pairs[idx, 1]],
                    M,
                )
                stats.continuation_forwards += 1
                stats.continuation_rows += int(idx.size)
                stats.tokens += int(sum(len(continuations[int(n)]) - 1 for n in pairs[idx, 1]))
                for j, i in enumerate(idx):
                    total[pos_in_sel[int(i)]] += s[j]
            values[sel] = total / lengths[sel]
            del cache, hidden
    return values, stats


def _continuation_sums(
    model: Any,
    unembed: Any,
    cache: Any,
    cache_rows: torch.Tensor,
    conts: Sequence[Sequence[int]],
    M: int,
) -> np.ndarray:
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
    out = model.hf.base_model(
        input_ids=ids,
        attention_mask=attn,
        position_ids=pos,
        past_key_values=select_cache(cache, cache_rows),
        use_cache=True,
    )
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    tgt = demeaned_logits(unembed, hidden, y).double()
    return (tgt * mask).sum(-1).cpu().numpy()


@dataclass
class SteeringResult:
    curves: pd.DataFrame
    metrics: pd.DataFrame
    stats: MeasureStats
    sources: list[Source] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    noise_floor: float = 0.0


def steer_sources(
    model: Any,
    basis: Any,
    inp: PromptInputs,
    sources: Sequence[Source],
    partitions: Mapping[tuple[str, float, float], np.ndarray],
    settings: SteeringSettings,
    seed: int,
) -> SteeringResult:
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
        meas = measured_members(labels, rank, s.cluster, s.source_member, settings.max_measured)
        if s.cluster not in meas:  # no held-out member: nothing to measure the source on
            continue
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
    log.info(
        "prompt %s: %d sources, %d interventions, %d (intervention, continuation) rows",
        inp.prompt_id,
        len(sources),
        len(interventions),
        len(pairs),
    )
    values, stats = steered_targets(
        model,
        basis,
        inp.prompt_ids,
        inp.continuations,
        interventions,
        pairs,
        batch_size=settings.batch_size,
    )
    table = {(int(i), int(n)): float(v) for (i, n), v in zip(pairs, values)}
    refs = [n for i, n in table if i == 0]
    noise = max((abs(table[(null, n)] - table[(0, n)]) for n in refs), default=0.0)
    floor = NOISE_FACTOR * noise
    curves, metrics = [], []
    P = np.asarray(inp.weights, dtype=np.float64)
    # The extension measure: the response at the strongest amplification and suppression.
    # A cluster-specific mechanism moves its own members both ways; ablating generically
    # important nodes only lowers the logit (suppress < 0, amplify ≈ 0).
    i_hi = int(np.argmax(settings.epsilons))
    i_lo = int(np.argmin(settings.epsilons))
    for s, meas, ids in plans:
        labels = partitions[(s.partition, s.beta, s.gamma)]
        effects: dict[int, float] = {}
        two_sided: dict[int, float] = {}
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
                sem = (
                    float(change.std(ddof=1) / math.sqrt(change.size))
                    if change.size > 1
                    else math.nan
                )
                moved = (np.sign(change) == np.sign(e)) & (np.abs(change) > floor)
                frac = math.nan if e == 0.0 else float(np.mean(moved))
                deltas.append(delta)
                fracs.append(frac)
                curves.append(
                    {
                        "prompt_id": inp.prompt_id,
                        "method": s.method,
                        "selection": s.selection,
                        "budget": s.budget,
                        "beta": s.beta,
                        "gamma": s.gamma,
                        "source_cluster": s.cluster,
                        "measured_cluster": k,
                        "own": k == s.cluster,
                        "epsilon": float(e),
                        "delta": delta,
                        "delta_sem": sem,
                        "n_members": int(members.size),
                        "frac_moved": frac,
                    }
                )
            effects[k] = slope(settings.epsilons, deltas)
            two_sided[k] = min(deltas[i_hi], -deltas[i_lo])
            if k == s.cluster:
                own_curve = (deltas, fracs, members.size)
        deltas, fracs, n_own = own_curve
        # A curve within the rounding floor shows no effect: its correlation is undefined.
        flat = max(abs(d) for d in deltas) <= floor
        other = effects.get(OTHER_CLUSTERS, math.nan)
        other_two = two_sided.get(OTHER_CLUSTERS, math.nan)
        metrics.append(
            {
                "prompt_id": inp.prompt_id,
                "method": s.method,
                "selection": s.selection,
                "budget": s.budget,
                "beta": s.beta,
                "gamma": s.gamma,
                "cluster": s.cluster,
                "mass": float(P[labels == s.cluster].sum() / P.sum()),
                "n_heldout": int(n_own),
                "pearson": math.nan if flat else pearson(settings.epsilons, deltas),
                "spearman": math.nan if flat else spearman(settings.epsilons, deltas),
                "frac_moved": float(np.nanmean([f for f in fracs if math.isfinite(f)]))
                if any(math.isfinite(f) for f in fracs)
                else math.nan,
                "specificity": effects[s.cluster] - other,
                "effect": effects[s.cluster],
                "other_effect": other,
                "n_nodes": int(s.columns.size),
                "source_member": int(s.source_member),
                "amplify": deltas[i_hi],
                "suppress": deltas[i_lo],
                "two_sided": two_sided[s.cluster],
                "two_sided_specificity": two_sided[s.cluster] - other_two,
            }
        )
    return SteeringResult(
        curves_frame(curves), metrics_frame(metrics), stats, list(sources), noise_floor=floor
    )


def typed_frame(rows: list[dict], dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """A table with exactly the columns of ``dtypes``, in order and of those types (an empty
    one too), so every prompt's file has the same schema."""
    return pd.DataFrame(rows, columns=list(dtypes)).astype(dict(dtypes))


def curves_frame(rows: list[dict]) -> pd.DataFrame:
    return typed_frame(rows, CURVE_DTYPES)


def metrics_frame(rows: list[dict]) -> pd.DataFrame:
    return typed_frame(rows, METRIC_DTYPES)


def generations_frame(rows: list[dict]) -> pd.DataFrame:
    return typed_frame(rows, GENERATION_DTYPES)
