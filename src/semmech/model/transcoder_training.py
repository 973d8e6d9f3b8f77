"""Train small per-layer transcoders on the model's own activations, so the ``transcoder``
basis can be tried on a CPU without downloading one.

Corpus: the model's own text, i.e. the sampled continuations of the configured prompts (the
sample tables); the MLP input/output pairs at every position ≥ 1 (each prompt's own positions
only once) are the training data. Position 0 is left out: its activations are
outliers that a small transcoder would spend its capacity on, and attribution excludes it.

Each layer's transcoder is a ReLU encoder/decoder (``transcoders.LayerTranscoder``) trained with Adam
on the fraction of variance unexplained plus an L1 penalty on α·‖d‖ (scale-free: the output is
measured in units of its own standard deviation). The set is written in circuit-tracer's format
(``semmech.model.transcoder_format``), so circuit-tracer loads it unchanged. That format needs
a transcoder for every layer: layers outside ``transcoder_training.layers`` get an inactive one
(all weights zero, no feature ever active), so their whole MLP output is the error node.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import derive_seed, section_defaults
from .layout import ModelLayout, envoy
from .loading import LoadedModel
from .transcoders import LayerTranscoder, write_transcoder_set

log = logging.getLogger(__name__)

LAYERS_PER_PASS = 8


@dataclass(frozen=True)
class TranscoderTrainingSettings:
    """The ``transcoder_training`` config section (defaults live in the schema only), plus
    the optimiser's batch size in tokens, which is not a setting of the experiment."""

    layers: tuple[int, ...]  # empty: every layer
    n_features: int
    steps: int
    n_tokens: int
    l1_coefficient: float
    learning_rate: float
    batch_tokens: int = 512

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> TranscoderTrainingSettings:
        full = section_defaults("transcoder_training", cfg)
        kw = {k: full[k] for k in cls.__dataclass_fields__ if k in full}
        kw["layers"] = tuple(int(l) for l in kw["layers"])
        return cls(**kw)


def corpus_from_samples(
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    n_tokens: int,
) -> list[tuple[list[int], int]]:
    """(token ids, first position to use) for every sampled continuation: the model's own text.

    Each prompt's own positions 1..M-1 are used once (with its first continuation); later rows
    of the same prompt start at their first continuation position, so no activation repeats.
    Rows are taken in order until ``n_tokens`` positions are collected.
    """
    out: list[tuple[list[int], int]] = []
    total = 0
    for prompt, conts in zip(prompts, continuations):
        M = len(prompt)
        for k, cont in enumerate(conts):
            if total >= n_tokens:
                return out
            seq = list(prompt) + list(cont)
            start = 1 if k == 0 else M
            if len(seq) > start:
                out.append((seq, start))
                total += len(seq) - start
    if not out:
        raise ValueError("transcoder training found no tokens in the samples")
    return out


def collect_activations(
    model: LoadedModel,
    layout: ModelLayout,
    corpus: list[tuple[list[int], int]],
    layers: Sequence[int],
    n_tokens: int,
    batch: int = 16,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """(MLP input, MLP output) pairs [n_tokens, d_model] per layer, read through nnsight."""
    xs: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    ys: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    order = sorted(layers, key=lambda l: layout.order[(layout.layers[l].mlp, "in")])
    for start in range(0, len(corpus), batch):
        chunk = corpus[start : start + batch]
        S = max(len(s) for s, _ in chunk)
        pad = model.tokenizer.pad_token_id or 0
        ids = torch.full((len(chunk), S), pad, dtype=torch.long)
        keep = torch.zeros((len(chunk), S), dtype=torch.bool)
        mask = torch.zeros((len(chunk), S), dtype=torch.long)
        for r, (seq, first) in enumerate(chunk):
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
            keep[r, first : len(seq)] = True
        ids, mask = ids.to(model.device), mask.to(model.device)
        store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        with (
            torch.no_grad(),
            model.lm.trace(input_ids=ids, attention_mask=mask, use_cache=False) as tracer,
        ):
            _read_mlps(model.lm, tracer, layout, order, store)
        keep = keep.to(model.device)
        for l in layers:
            x, y = store[l]
            xs[l].append(x[keep].float().cpu())
            ys[l].append(y[keep].float().cpu())
    return {l: (torch.cat(xs[l])[:n_tokens], torch.cat(ys[l])[:n_tokens]) for l in layers}


def _read_mlps(
    lm: Any, tracer: Any, layout: ModelLayout, layers: Sequence[int], store: dict
) -> None:
    for l in layers:
        mlp = envoy(lm, layout.layers[l].mlp)
        x = mlp.input
        store[l] = (x, mlp.output)
    tracer.stop()


def train_layer(
    X: torch.Tensor,
    Y: torch.Tensor,
    settings: TranscoderTrainingSettings,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[LayerTranscoder, dict[str, float]]:
    """Fit one ReLU transcoder Y ≈ relu(X W_enc + b_enc) W_dec + b_dec (float32, CPU-friendly)."""
    n, d = X.shape
    F = settings.n_features
    gen = torch.Generator().manual_seed(seed)
    x_scale = X.pow(2).sum(-1).mean().sqrt() / math.sqrt(d)  # inputs trained at unit RMS
    y_mean = Y.mean(0)
    y_scale = (Y - y_mean).pow(2).sum(-1).mean().sqrt()
    W_dec = torch.randn(F, d, generator=gen)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True) * 0.1 * y_scale
    W_enc = torch.randn(d, F, generator=gen) / math.sqrt(d)
    params = {"W_enc": W_enc, "b_enc": torch.zeros(F), "W_dec": W_dec, "b_dec": y_mean.clone()}
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam(params.values(), lr=settings.learning_rate)
    Xn = X / x_scale
    for _ in range(settings.steps):
        idx = torch.randint(0, n, (min(settings.batch_tokens, n),), generator=gen)
        x, y = Xn[idx], Y[idx]
        a = torch.relu(x @ params["W_enc"] + params["b_enc"])
        pred = a @ params["W_dec"] + params["b_dec"]
        fvu = (pred - y).pow(2).sum(-1).mean() / y_scale.pow(2)
        l1 = (a * params["W_dec"].norm(dim=-1)).sum(-1).mean() / y_scale
        loss = fvu + settings.l1_coefficient * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress(1)
    with torch.no_grad():
        tc = LayerTranscoder(
            W_enc=(params["W_enc"] / x_scale).T.detach().contiguous(),  # [F, d]
            b_enc=params["b_enc"].detach().clone(),
            W_dec=params["W_dec"].detach().clone(),
            b_dec=params["b_dec"].detach().clone(),
        )
        a = tc.activation(X)
        pred = tc.linear_part(X, a)
        stats = {
            "fvu": float((pred - Y).pow(2).sum(-1).mean() / y_scale.pow(2)),
            "l0": float((a > 0).float().sum(-1).mean()),
            "dead_fraction": float(((a > 0).sum(0) == 0).float().mean()),
            "n_tokens": int(n),
        }
    return tc, stats


def train_transcoders(
    model: LoadedModel,
    prompt_ids: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    settings: TranscoderTrainingSettings,
    seed: int,
    out_dir: str | Path,
    progress: Callable[[int], None] | None = None,
    layout: ModelLayout | None = None,
) -> dict[int, dict[str, float]]:
    """Generate the corpus, collect activations, fit one transcoder per listed layer, and write
    the complete set (inactive transcoders for the other layers) into ``out_dir``."""
    layout = layout or ModelLayout.discover(model)
    layers = list(settings.layers) or list(range(layout.n_layers))
    bad = [l for l in layers if not 0 <= l < layout.n_layers]
    if bad:
        raise ValueError(
            f"transcoder_training.layers {bad} do not exist; the model has "
            f"{layout.n_layers} layers (0..{layout.n_layers - 1})"
        )
    if len(set(layers)) != len(layers):
        raise ValueError(f"transcoder_training.layers has duplicates: {layers}")
    corpus = corpus_from_samples(prompt_ids, continuations, settings.n_tokens)
    stats = {}
    trained: dict[int, LayerTranscoder] = {}
    # Activations of a few layers at a time bound memory (2 · n_tokens · d_model floats a layer).
    for start in range(0, len(layers), LAYERS_PER_PASS):
        group = layers[start : start + LAYERS_PER_PASS]
        acts = collect_activations(model, layout, corpus, group, settings.n_tokens)
        for l in group:
            X, Y = acts.pop(l)
            if len(X) < settings.n_tokens and start == 0 and l == group[0]:
                log.warning(
                    "only %d tokens in the samples (transcoder_training.n_tokens is %d)",
                    len(X),
                    settings.n_tokens,
                )
            tc, st = train_layer(X, Y, settings, derive_seed(seed, "layer", l), progress)
            trained[l] = tc
            stats[l] = st
            log.info(
                "layer %d: FVU %.3f, L0 %.1f, dead %.2f",
                l,
                st["fvu"],
                st["l0"],
                st["dead_fraction"],
            )
    full = {
        l: trained[l]
        if l in trained
        else LayerTranscoder.inactive(layout.d_model, settings.n_features)
        for l in range(layout.n_layers)
    }
    write_transcoder_set(
        full,
        Path(out_dir),
        model_name=model.name,
        scan=f"semmech-trained:{model.name}",
        extra_config={"trained_layers": sorted(trained)},
    )
    return stats
