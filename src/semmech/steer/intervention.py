"""The steering intervention (METHOD §7): add ε · sign · α · d to the MLP output at chosen
nodes' (layer, prefix position), with α read from the pass being steered; in a traced
prefix forward (for measurement) or in a seeded ``generate`` (for inspection).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..model.bases import FeatureBasis
from ..model.layout import envoy
from ..model.loading import LoadedModel
from ..model.transcoders import BasisMismatchError
from ..views.sampling import (
    SamplingSettings,
    encode_prompt,
    generate_batch,
    stop_token_mask,
    truncate,
)


def steer_nodes(
    model: LoadedModel,
    basis: FeatureBasis,
    nodes: Sequence[tuple[int, int, int]],
    scales: Sequence[float] | torch.Tensor,
) -> None:
    """Call inside ``with model.lm.trace(...)`` (before reading anything later in the forward).

    For each node (layer l, position p, feature f) adds ``scale · α · d_f`` to the output of
    layer l's MLP module at position p, where α is read from *this* pass (so earlier steered
    layers change it) and d_f is the basis decoder row. With scale −1 an ``mlp_neurons`` node
    is removed exactly. Positions index the sequence as fed (use right padding so that prefix
    positions coincide across rows); ``scales`` may be [n_nodes] or [batch, n_nodes].
    """
    if len(nodes) == 0:
        return
    layout = basis.layout
    scales = torch.as_tensor(scales, dtype=torch.float32)
    by_layer: dict[int, list[int]] = {}
    for k, (layer, _, feat) in enumerate(nodes):
        if layer not in basis.feature_layers():
            raise BasisMismatchError(
                f"node {nodes[k]}: layer {layer} has no features in basis {basis.name}"
            )
        if not 0 <= feat < basis.n_features(layer):
            raise BasisMismatchError(f"node {nodes[k]}: feature {feat} out of range")
        by_layer.setdefault(layer, []).append(k)
    for layer in sorted(by_layer, key=lambda l: layout.order[(basis.site_path(l), "in")]):
        ks = by_layer[layer]
        pos = torch.tensor([nodes[k][1] for k in ks], device=model.device)
        feat = torch.tensor([nodes[k][2] for k in ks], device=model.device)
        site = envoy(model.lm, basis.site_path(layer)).input
        alpha = basis.encode(layer, site[:, pos, :])  # [B, k, F]: only the steered positions
        a = alpha.gather(-1, feat.view(1, -1, 1).expand(alpha.shape[0], -1, 1)).squeeze(-1)
        s = scales[..., ks].to(device=a.device, dtype=a.dtype)
        vec = (s * a).unsqueeze(-1) * basis.directions(layer, feat).to(a.dtype).unsqueeze(0)
        mlp = envoy(model.lm, layout.layers[layer].mlp)
        out = mlp.output
        delta = torch.zeros_like(out).index_add(1, pos, vec)
        mlp.output = out + delta


@dataclass(frozen=True)
class Intervention:
    """Nodes (layer, position, feature) and the scale each is added with (ε · sign)."""

    nodes: tuple[tuple[int, int, int], ...] = ()
    scales: tuple[float, ...] = ()


def node_union(
    interventions: Sequence[Intervention],
) -> tuple[list[tuple[int, int, int]], torch.Tensor]:
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


def steered_prefix(
    model: Any, basis: Any, prompt_ids: Sequence[int], interventions: Sequence[Intervention]
) -> tuple[torch.Tensor, Any]:
    """One traced prefix forward, row r steered by intervention r.

    Returns the final hidden states [R, M, d] and the KV cache of the steered prefix.
    """
    nodes, scales = node_union(interventions)
    R = len(interventions)
    ids = torch.tensor([list(prompt_ids)] * R, dtype=torch.long, device=model.device)
    with (
        torch.no_grad(),
        model.lm.trace(
            input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True
        ) as tracer,
    ):
        steer_nodes(model, basis, nodes, scales)
        out = envoy(model.lm, basis.layout.base).output.save()
        tracer.stop()  # the lm head over every prefix position is not needed
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    cache = out.past_key_values if hasattr(out, "past_key_values") else out[1]
    return hidden, cache


def steered_generate(
    model: Any,
    basis: Any,
    prompt_ids: Sequence[int],
    nodes: Sequence[tuple[int, int, int]],
    signs: Sequence[float],
    epsilons: Sequence[float],
    n: int,
    sampling_cfg: Mapping[str, Any] | None,
    seed: int,
) -> list[tuple[float, int, list[int], str, str]]:
    """``n`` sampled continuations per ε, with the steering on the prefix positions only.

    One traced prefix pass encodes the prompt once per ε, steered at that ε (per-row scales);
    the sampling stage's own decoder (:func:`~semmech.views.sampling.generate_batch`: the
    same nucleus, stop rule and seeded generator) then decodes all n·|ε| rows from those KV
    caches, untouched — later steps have no prefix position to steer.
    Returns (ε, sample, token ids, text, stop reason) per continuation.
    """
    if n <= 0 or not epsilons:
        return []
    settings = SamplingSettings.from_config(sampling_cfg)
    stop_mask = stop_token_mask(model.tokenizer, settings.stop_chars)
    scales = torch.tensor(
        [[float(e) * float(s) for s in signs] for e in epsilons], dtype=torch.float32
    )
    prompt = encode_prompt(
        model,
        list(prompt_ids),
        rows=len(epsilons),
        inside=lambda: steer_nodes(model, basis, list(nodes), scales),
    )
    generator = torch.Generator(device=model.device).manual_seed(int(seed))
    ids, logprobs = generate_batch(
        model, prompt, int(n) * len(epsilons), settings, stop_mask, generator
    )
    out = []
    for r, (row, lp) in enumerate(zip(ids.tolist(), logprobs.tolist())):
        toks, _, reason = truncate(row, lp, stop_mask, model.eos_token_ids)
        out.append(
            (
                float(epsilons[r // int(n)]),
                r % int(n),
                toks,
                model.tokenizer.decode(toks, skip_special_tokens=False),
                reason,
            )
        )
    return out
