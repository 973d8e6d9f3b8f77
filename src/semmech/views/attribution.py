"""Attribution signatures (METHOD §3): linearised prefix-to-continuation attribution traced
with nnsight.

One nnsight trace per batch of continuations patches the model so that the demeaned logit is
*linear* in the nodes while every forward value stays bit-identical:

* attention patterns are constants: the query and key projections' outputs are detached, so
  no gradient reaches the softmax inputs (the pattern depends on nothing else). This works for
  eager, SDPA and flash attention alike, because the softmax itself is never touched — inside
  ``scaled_dot_product_attention`` (a C kernel) nnsight could not reach it anyway;
* normalisation scales are constants: each norm's output y is replaced by ``_FrozenNorm(x, y)``,
  the identity on y whose backward is the frozen-σ linear map x ↦ a ⊙ c(x)/σ (c: mean removal
  for LayerNorm-style norms), with the norm's form identified by probing (``bases.NormSpec``).
  ``nn.LayerNorm`` computes σ inside the ``F.layer_norm`` C kernel, where nnsight's ``.source``
  cannot reach, so one uniform output patch is used for every norm class;
* MLP outputs are Σ α·d (+ error): for ``mlp_neurons`` the down projection's input is replaced by
  a detached leaf α, so the gradient stops there and ``∂ℓ/∂α_f = ⟨d_f, g⟩``; for ``transcoder``
  the MLP output becomes ``y.detach() + (α@W_dec + b_dec + x@W_skipᵀ) − (same).detach() + (e − e.detach())``
  with α and the error e leaves;
* token embeddings (and learned position embeddings, a constant) are leaves.

The lm head is never run over the whole sequence (the trace stops after the decoder stack);
the target is computed from the final hidden states at the predicting positions only. One
backward of Σ_rows agg_t ℓ̃_t then gives every node's attribution α·grad for every row, where
agg is the mean over the continuation's tokens (length-invariant) or their sum (the authors'
released code); METHOD §3, ``attribution.aggregate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..model.bases import FeatureBasis
from ..model.layout import ModelLayout, envoy
from ..model.loading import LoadedModel, check_token_ids
from ..model.target import DemeanedLogit

log = logging.getLogger(__name__)

COMPLETENESS_TOLERANCE = 1e-3
AGGREGATES = ("mean", "sum")
NODE_COLUMNS = [
    "node_idx",
    "kind",
    "layer",
    "position",
    "feature",
    "token_id",
    "token_str",
    "alpha",
]


# ---------------------------------------------------------------------------------------------
# Node selection
# ---------------------------------------------------------------------------------------------


@dataclass
class NodeSet:
    """The nodes of one prompt, shared by all its continuations.

    Order: feature nodes sorted by (layer, position, feature), then error nodes by (layer,
    position) when the basis has them, then token nodes by position. Positions are 1..M-1.
    """

    prompt_ids: list[int]
    feat_layer: torch.Tensor
    feat_pos: torch.Tensor
    feat_idx: torch.Tensor
    feat_alpha: torch.Tensor
    error_layers: list[int]
    error_norm: torch.Tensor  # [n_layers, M] ‖MLP output − reconstruction‖ (prefix pass)
    token_norm: torch.Tensor  # [M] ‖token embedding‖

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def positions(self) -> torch.Tensor:
        return torch.arange(1, self.prompt_len)

    @property
    def n_feature_nodes(self) -> int:
        return int(self.feat_layer.numel())

    @property
    def n_error_nodes(self) -> int:
        return len(self.error_layers) * (self.prompt_len - 1)

    @property
    def n_token_nodes(self) -> int:
        return self.prompt_len - 1

    @property
    def n_nodes(self) -> int:
        return self.n_feature_nodes + self.n_error_nodes + self.n_token_nodes

    def feature_nodes(self) -> list[tuple[int, int, int]]:
        return list(zip(self.feat_layer.tolist(), self.feat_pos.tolist(), self.feat_idx.tolist()))

    def table(self, tokenizer: Any) -> pd.DataFrame:
        M = self.prompt_len
        pos = list(range(1, M))
        layers = (
            self.feat_layer.tolist() + [l for l in self.error_layers for _ in pos] + [-1] * (M - 1)
        )
        positions = self.feat_pos.tolist() + pos * len(self.error_layers) + pos
        kind = (
            ["feature"] * self.n_feature_nodes
            + ["error"] * self.n_error_nodes
            + ["token"] * (M - 1)
        )
        feature = self.feat_idx.tolist() + [-1] * (self.n_error_nodes + M - 1)
        alpha = (
            self.feat_alpha.double().tolist()
            + [float(self.error_norm[l, p]) for l in self.error_layers for p in pos]
            + [float(self.token_norm[p]) for p in pos]
        )
        tok_ids = [self.prompt_ids[p] for p in positions]
        text = {t: tokenizer.decode([t]) for t in set(tok_ids)}
        tok_str = [text[t] for t in tok_ids]
        return pd.DataFrame(
            {
                "node_idx": np.arange(self.n_nodes, dtype=np.int64),
                "kind": kind,
                "layer": np.asarray(layers, dtype=np.int64),
                "position": np.asarray(positions, dtype=np.int64),
                "feature": np.asarray(feature, dtype=np.int64),
                "token_id": np.asarray(tok_ids, dtype=np.int64),
                "token_str": [str(t) for t in tok_str],
                "alpha": np.asarray(alpha, dtype=np.float64),
            },
            columns=NODE_COLUMNS,
        )


def _sorted_events(
    layout: ModelLayout, wanted: dict[tuple[str, str], list]
) -> list[tuple[str, str, list]]:
    """nnsight serves values in execution order, so interventions are issued in that order."""
    keys = sorted(wanted, key=lambda k: layout.order[k])
    return [(path, when, wanted[(path, when)]) for path, when in keys]


def _prefix_events(layout: ModelLayout, basis: FeatureBasis) -> list[tuple[str, str, list]]:
    wanted: dict[tuple[str, str], list] = {(layout.embed, "out"): [("embed", None)]}
    for l in basis.feature_layers():
        wanted.setdefault((basis.site_path(l), "in"), []).append(("site", l))
    if basis.has_error_nodes:
        for lay in layout.layers:
            wanted.setdefault((lay.mlp, "in"), []).append(("mlp_in", lay.index))
            wanted.setdefault((lay.mlp, "out"), []).append(("mlp_out", lay.index))
    return _sorted_events(layout, wanted)


def _prefix_body(lm: Any, tracer: Any, basis: FeatureBasis, events: list, store: dict) -> None:
    """Read α at every feature layer (and the error vectors) on the prompt alone."""
    pending: dict[int, torch.Tensor] = {}
    for path, when, roles in events:
        env = envoy(lm, path)
        value = env.input if when == "in" else env.output
        for role, layer in roles:
            if role == "embed":
                store["embed"] = value.detach()
            elif role == "site":
                store.setdefault("alpha", {})[layer] = basis.encode(layer, value).detach()
            elif role == "mlp_in":
                pending[layer] = value.detach()
            elif role == "mlp_out":
                x = pending.pop(layer)
                tc = basis.transcoders.get(layer)
                err = value.detach()
                if tc is not None:
                    err = err - tc.linear_part(x, tc.activation(x))
                store.setdefault("err_norm", {})[layer] = err.float().norm(dim=-1)
    tracer.stop()


def select_nodes(
    model: LoadedModel, basis: FeatureBasis, prompt_ids: Sequence[int], max_feature_nodes: int
) -> NodeSet:
    """Top ``max_feature_nodes`` feature nodes by |α| over prefix positions 1..M-1 from one
    prefix-only pass (nodes with α = 0 are never kept: they contribute nothing)."""
    if max_feature_nodes < 1:
        raise ValueError(f"max_feature_nodes must be at least 1, got {max_feature_nodes}")
    M = len(prompt_ids)
    if M < 2:
        raise ValueError(
            "the prompt needs at least 2 tokens: position 0 is excluded from attribution"
        )
    layout = basis.layout
    ids = torch.tensor([list(prompt_ids)], device=model.device)
    store: dict[str, Any] = {}
    with (
        torch.no_grad(),
        model.lm.trace(
            input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False
        ) as tracer,
    ):
        _prefix_body(model.lm, tracer, basis, _prefix_events(layout, basis), store)
    layers_, pos_, feat_, vals = [], [], [], []
    for l in basis.feature_layers():
        a = store["alpha"][l][0, 1:].float()  # [M-1, F]
        flat = a.abs().flatten()
        layers_.append(torch.full_like(flat, l, dtype=torch.long))
        pos_.append((torch.arange(1, M, device=a.device)[:, None].expand_as(a)).flatten())
        feat_.append(torch.arange(a.shape[1], device=a.device)[None, :].expand_as(a).flatten())
        vals.append(flat)
    mag = torch.cat(vals).cpu()
    order = torch.argsort(-mag, stable=True)[:max_feature_nodes]
    order = order[mag[order] > 0]
    L, P, F = (torch.cat(t).cpu()[order] for t in (layers_, pos_, feat_))
    key = torch.argsort((L * M + P) * (int(F.max()) + 1 if F.numel() else 1) + F, stable=True)
    L, P, F = L[key], P[key], F[key]
    alpha = torch.zeros(L.numel())
    for l in L.unique().tolist():
        sel = L == l
        a = store["alpha"][l][0].float().cpu()
        alpha[sel] = a[P[sel], F[sel]]
    err_norm = torch.zeros(layout.n_layers, M)
    for l, v in store.get("err_norm", {}).items():
        err_norm[l] = v[0].cpu()
    return NodeSet(
        prompt_ids=[int(i) for i in prompt_ids],
        feat_layer=L,
        feat_pos=P,
        feat_idx=F,
        feat_alpha=alpha.float().cpu(),
        error_layers=list(range(layout.n_layers)) if basis.has_error_nodes else [],
        error_norm=err_norm,
        token_norm=store["embed"][0].float().norm(dim=-1).cpu(),
    )


# ---------------------------------------------------------------------------------------------
# The linearised pass
# ---------------------------------------------------------------------------------------------


def _linear_events(layout: ModelLayout, basis: FeatureBasis) -> list[tuple[str, str, list]]:
    wanted: dict[tuple[str, str], list] = {}

    def add(path: str, when: str, role: str, arg: Any = None) -> None:
        wanted.setdefault((path, when), []).append((role, arg))

    add(layout.embed, "out", "embed")
    for p in layout.position_embeddings:
        add(p, "out", "pos")
    for p in layout.bias_modules:  # read before any patch of the same module (fused qkv)
        add(p, "out", "bias")
    for lay in layout.layers:
        for p in lay.qk.paths:
            add(p, "out", "qk", lay.qk.fused_width)
        if basis.has_error_nodes:
            add(lay.mlp, "in", "mlp_in", lay.index)
            add(lay.mlp, "out", "mlp_out", lay.index)
        else:
            add(lay.down, "in", "down_in", lay.index)
    for p in layout.norms:
        add(p, "in", "norm_in")
        add(p, "out", "norm_out")
    add(layout.base, "out", "final")
    return _sorted_events(layout, wanted)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def _linear_body(
    lm: Any,
    tracer: Any,
    hf: torch.nn.Module,
    layout: ModelLayout,
    basis: FeatureBasis,
    events: list,
    store: dict,
) -> None:
    """The patches that make the target linear in the nodes (see the module docstring)."""
    pending: dict[Any, torch.Tensor] = {}
    store.update(alpha={}, err={}, bias=[], pos=[])
    for path, when, roles in events:
        env = envoy(lm, path)
        if when == "in":
            value = env.input
            for role, arg in roles:
                if role == "down_in":
                    leaf = _leaf(value)
                    store["alpha"][arg] = leaf
                    env.input = leaf
                elif role in ("norm_in", "mlp_in"):
                    pending[(role, path)] = value
            continue
        out = env.output
        new = out
        for role, arg in roles:
            if role == "embed":
                new = store["embed"] = _leaf(new)
            elif role == "pos":
                new = _leaf(new)
                store["pos"].append(new)
            elif role == "bias":
                store["bias"].append((hf.get_submodule(path).bias, new))
            elif role == "qk":
                if arg is None:
                    new = new.detach()
                else:
                    new = torch.cat([new[..., :arg].detach(), new[..., arg:]], dim=-1)
            elif role == "norm_out":
                spec = layout.norms[path]
                x = pending.pop(("norm_in", path))
                mod = hf.get_submodule(path)
                new = _FrozenNorm.apply(
                    x, new.detach(), spec.gain(mod), spec.scale(x.detach()), spec.center
                )
                if spec.has_bias:
                    store["bias"].append((mod.bias, new))
            elif role == "mlp_out":
                x = pending.pop(("mlp_in", path))
                tc = basis.transcoders.get(arg)
                if tc is None:
                    new = store["err"][arg] = _leaf(new)
                    continue
                alpha = _leaf(tc.activation(x.detach()))
                lin = tc.linear_part(x, alpha)
                err = _leaf(new.detach() - lin.detach())
                store["alpha"][arg] = alpha
                store["err"][arg] = err
                store["bias"].append((tc.b_dec, err))
                new = new.detach() + (lin - lin.detach()) + (err - err.detach())
            elif role == "final":
                hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
                store["hidden"] = hidden
        if new is not out:
            env.output = new
    tracer.stop()  # the lm head over every position is not needed


class _FrozenNorm(torch.autograd.Function):
    """Identity on the norm's true output y; backward is the frozen-σ map x ↦ a ⊙ c(x)/σ,
    i.e. grad_x = c(a ⊙ g)/σ (centering is symmetric). Exact forward, no extra forward ops."""

    @staticmethod
    def forward(ctx, x, y, gain, sigma, center):  # type: ignore[override]
        ctx.save_for_backward(gain, sigma)
        ctx.center, ctx.dtype = center, x.dtype
        return y.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        gain, sigma = ctx.saved_tensors
        gx = g.float()
        if gain is not None:
            gx = gx * gain
        if ctx.center:
            gx = gx - gx.mean(-1, keepdim=True)
        return (gx / sigma).to(ctx.dtype), None, None, None, None


@dataclass
class BatchAttribution:
    """Per-row results of one linearised pass (rows in the order given)."""

    signatures: torch.Tensor  # [B, n_nodes] float32
    terms: dict[str, torch.Tensor]  # each [B] float64


def _batch_inputs(
    prompt_ids: Sequence[int],
    conts: Sequence[Sequence[int]],
    pad_id: int,
    padding_side: str,
    device: torch.device,
):
    """Prompt + continuation without its last token (that token predicts nothing we read)."""
    M = len(prompt_ids)
    seqs = [list(prompt_ids) + list(c[:-1]) for c in conts]
    S = max(len(s) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, S), pad_id, dtype=torch.long)
    mask = torch.zeros((B, S), dtype=torch.long)
    offset = torch.zeros(B, dtype=torch.long)
    for r, s in enumerate(seqs):
        o = S - len(s) if padding_side == "left" else 0
        ids[r, o : o + len(s)] = torch.tensor(s)
        mask[r, o : o + len(s)] = 1
        offset[r] = o
    pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    T = max(len(c) for c in conts)
    pred_pos = torch.zeros((B, T), dtype=torch.long)
    y = torch.zeros((B, T), dtype=torch.long)
    tmask = torch.zeros((B, T), dtype=torch.bool)
    for r, c in enumerate(conts):
        n = len(c)
        pred_pos[r, :n] = offset[r] + M - 1 + torch.arange(n)
        y[r, :n] = torch.tensor(list(c))
        tmask[r, :n] = True
    return (
        ids.to(device),
        mask.to(device),
        pos_ids.to(device),
        offset.to(device),
        pred_pos.to(device),
        y.to(device),
        tmask.to(device),
    )


def attribute_batch(
    model: LoadedModel,
    basis: FeatureBasis,
    nodes: NodeSet,
    conts: Sequence[Sequence[int]],
    padding_side: str = "right",
    unembed: DemeanedLogit | None = None,
    aggregate: str = "mean",
) -> BatchAttribution:
    """Signatures and completeness terms for a batch of continuations of one prompt; the
    target of a row is the mean (``aggregate="mean"``) or the sum (``"sum"``) of its tokens'
    demeaned logits."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    check_aggregate(aggregate)
    layout = basis.layout
    hf = model.hf
    unembed = unembed or DemeanedLogit(layout, hf)
    M = nodes.prompt_len
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids, mask, pos_ids, offset, pred_pos, y, tmask = _batch_inputs(
        nodes.prompt_ids, conts, pad, padding_side, model.device
    )
    B, S = ids.shape
    store: dict[str, Any] = {}
    events = _linear_events(layout, basis)
    with torch.enable_grad(), _frozen_params(hf):
        with model.lm.trace(
            input_ids=ids, attention_mask=mask, position_ids=pos_ids, use_cache=False
        ) as tracer:
            _linear_body(model.lm, tracer, hf, layout, basis, events, store)
        hidden = store["hidden"]
        rows = torch.arange(B, device=ids.device)[:, None]
        hs = hidden[rows, pred_pos]  # the positions that PREDICT each continuation token
        tgt_tok, head_bias = unembed.target(hs, y)
        n_tok = tmask.sum(-1).double()
        w = tmask.float()
        if aggregate == "mean":
            w = w / tmask.sum(-1, keepdim=True).float()
        target = (tgt_tok * w).sum(-1)
        feat_layers = sorted(store["alpha"])
        err_layers = sorted(store["err"])
        inputs = (
            [store["embed"]]
            + store["pos"]
            + [store["alpha"][l] for l in feat_layers]
            + [store["err"][l] for l in err_layers]
            + [t for _, t in store["bias"]]
        )
        grads = torch.autograd.grad(target.sum(), inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
    it = iter(grads)
    g_embed = next(it)
    g_pos = [next(it) for _ in store["pos"]]
    g_alpha = {l: next(it) for l in feat_layers}
    g_err = {l: next(it) for l in err_layers}
    g_bias = [next(it) for _ in store["bias"]]
    fmask = mask.float()

    # Per (row, position) contribution of every node, summed over node kinds.
    tok_contrib = (store["embed"].detach().float() * g_embed.float()).sum(-1)  # [B, S]
    per_pos = tok_contrib
    feat_contrib: dict[int, torch.Tensor] = {}
    for l in feat_layers:
        c = store["alpha"][l].detach().float() * g_alpha[l].float()
        feat_contrib[l] = c
        per_pos = per_pos + c.sum(-1)
    err_contrib = {
        l: (store["err"][l].detach().float() * g_err[l].float()).sum(-1) for l in err_layers
    }
    for c in err_contrib.values():
        per_pos = per_pos + c
    bias = (head_bias * w).sum(-1).double()
    for (b, _), g in zip(store["bias"], g_bias):
        bias = bias + ((g.float() * b.detach().float()).sum(-1) * fmask).sum(-1).double()
    for t, g in zip(store["pos"], g_pos):
        bias = bias + ((t.detach().float() * g.float()).sum(-1) * fmask).sum(-1).double()

    # Gather the signature columns at each row's prefix positions.
    P = nodes.positions.to(ids.device)[None, :] + offset[:, None]  # [B, M-1]
    cols = []
    for l in sorted(set(nodes.feat_layer.tolist())):
        sel = nodes.feat_layer == l
        p = nodes.feat_pos[sel].to(ids.device)[None, :] + offset[:, None]
        f = nodes.feat_idx[sel].to(ids.device)[None, :].expand(B, -1)
        cols.append(feat_contrib[l][rows, p, f])
    for l in nodes.error_layers:
        cols.append(err_contrib[l][rows, P])
    cols.append(tok_contrib[rows, P])
    signatures = torch.cat(cols, dim=1)

    seq_len = mask.sum(-1)
    idx = torch.arange(S, device=ids.device)[None, :]
    rel = idx - offset[:, None]
    is_pos0 = rel == 0
    is_prefix = (rel >= 1) & (rel < M)
    is_cont = (rel >= M) & (rel < seq_len[:, None])
    per_pos = per_pos.double()
    terms = {
        "target": target.double(),
        "n_tokens": n_tok,
        "prefix_kept": signatures.double().sum(-1),
        "prefix_all": (per_pos * is_prefix).sum(-1),
        "position0": (per_pos * is_pos0).sum(-1),
        "continuation": (per_pos * is_cont).sum(-1),
        "bias": bias,
    }
    return BatchAttribution(
        signatures=signatures.detach().float().cpu(),
        terms={k: v.detach().cpu() for k, v in terms.items()},
    )


class _frozen_params:
    """Parameters need no gradient: the backward then only computes activation gradients."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __enter__(self) -> None:
        self.flags = [(p, p.requires_grad) for p in self.module.parameters()]
        for p, _ in self.flags:
            p.requires_grad_(False)

    def __exit__(self, *exc: Any) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# One prompt
# ---------------------------------------------------------------------------------------------


@dataclass
class AttributionResult:
    signatures: torch.Tensor  # [N, n_nodes] float32, row n = continuation n
    nodes: NodeSet
    completeness: list[dict[str, float]] = field(default_factory=list)

    @property
    def max_rel_error(self) -> float:
        return max((c["rel_error"] for c in self.completeness), default=0.0)


def check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATES:
        raise ValueError(
            f"attribution.aggregate must be one of {', '.join(AGGREGATES)}; got {aggregate!r}"
        )


def completeness_rows(terms: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """The per-continuation completeness diagnostic (METHOD §3).

    total = prefix_kept + continuation + constant, constant = bias + prefix_dropped + position0;
    rel_error = |total − target| / |target|. prefix_share = prefix_kept / target.
    """
    out = []
    for r in range(len(terms["target"])):
        t = {k: float(v[r]) for k, v in terms.items()}
        dropped = t["prefix_all"] - t["prefix_kept"]
        constant = t["bias"] + dropped + t["position0"]
        total = t["prefix_kept"] + t["continuation"] + constant
        err = abs(total - t["target"])
        denom = abs(t["target"]) if t["target"] != 0 else 1.0
        out.append(
            {
                "n_tokens": int(t["n_tokens"]),
                "target": t["target"],
                "prefix_kept": t["prefix_kept"],
                "prefix_dropped": dropped,
                "position0": t["position0"],
                "continuation": t["continuation"],
                "bias": t["bias"],
                "constant": constant,
                "total": total,
                "abs_error": err,
                "rel_error": err / denom,
                "prefix_share": t["prefix_kept"] / denom,
                "prefix_share_all": t["prefix_all"] / denom,
            }
        )
    return out


def attribute(
    model: LoadedModel,
    basis: FeatureBasis,
    prompt_ids: Sequence[int],
    continuations: Sequence[Sequence[int]],
    max_feature_nodes: int,
    batch_size: int = 8,
    padding_side: str = "right",
    nodes: NodeSet | None = None,
    progress: Callable[[int], None] | None = None,
    aggregate: str = "mean",
) -> AttributionResult:
    """Attribution signatures of every continuation of one prompt: row n is the mean (or, with
    ``aggregate="sum"``, the sum) over continuation n's tokens of each node's attribution.

    Rows are batched longest-first (less padding); each batch is one traced forward and one
    backward. The result does not depend on the batch size or the padding side.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    check_aggregate(aggregate)
    check_token_ids(model, prompt_ids, continuations)
    nodes = nodes or select_nodes(model, basis, prompt_ids, max_feature_nodes)
    unembed = DemeanedLogit(basis.layout, model.hf)
    order = sorted(range(len(continuations)), key=lambda i: (-len(continuations[i]), i))
    sig = torch.zeros(len(continuations), nodes.n_nodes)
    terms: dict[str, torch.Tensor] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        res = attribute_batch(
            model,
            basis,
            nodes,
            [continuations[i] for i in idx],
            padding_side,
            unembed,
            aggregate=aggregate,
        )
        sig[idx] = res.signatures
        for k, v in res.terms.items():
            terms.setdefault(k, torch.zeros(len(continuations), dtype=torch.float64))[idx] = v
        if progress:
            progress(len(idx))
    return AttributionResult(signatures=sig, nodes=nodes, completeness=completeness_rows(terms))
