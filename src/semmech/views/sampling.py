"""The continuation distribution of one prompt: nnsight-traced sampling, truncation at the
first sentence end, de-duplication and length-normalised weights (METHOD §2).

Decoding is an explicit loop of nnsight traces that shares the work a plain ``generate``
repeats: the prompt is encoded once per prompt (its KV cache is copied into every batch, so
no batch re-encodes it), finished rows leave the batch at once, and each batch is sized from
the de-duplication rate seen so far, so that the last one draws a few rows rather than a full
batch for the last missing continuations. Log-probabilities are read from the model's output
logits (after any final soft-capping, as Gemma 2 applies) at every step, i.e. at T = 1
whatever the sampling temperature, so the weights need no second pass. One seeded generator
drives every draw: the same seed gives the same samples.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import section_defaults
from ..model.loading import LoadedModel

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = [
    "prompt_id",
    "sample_idx",
    "text",
    "token_ids",
    "token_logprobs",
    "n_tokens",
    "mean_logprob",
    "weight",
    "stop_reason",
]


@dataclass(frozen=True)
class SamplingSettings:
    """The ``sampling`` config section; defaults live in the schema only."""

    n_continuations: int
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int
    patience: int
    max_batches: int
    stop_chars: str

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> SamplingSettings:
        full = section_defaults("sampling", cfg)
        return cls(**{k: full[k] for k in cls.__dataclass_fields__})


@dataclass
class _Candidate:
    text: str
    token_ids: list[int]
    token_logprobs: list[float]
    stop_reason: str
    order: int = field(default=0)

    @property
    def sum_logprob(self) -> float:
        return float(np.sum(self.token_logprobs))


class PromptTooLongError(ValueError):
    """Prompt plus continuation budget exceeds the model's context window."""


def check_context(
    prompt_id: str, n_prompt_tokens: int, max_new_tokens: int, max_context: int
) -> None:
    if n_prompt_tokens + max_new_tokens > max_context:
        raise PromptTooLongError(
            f"prompt {prompt_id!r} has {n_prompt_tokens} tokens; with max_new_tokens={max_new_tokens} "
            f"it exceeds the model's context of {max_context} tokens"
        )


def stop_token_mask(tokenizer: Any, stop_chars: str) -> torch.Tensor:
    """Vocabulary mask of tokens whose text contains a sentence end (computed once per run)."""
    vocab = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab)))
    texts = [tokenizer.convert_tokens_to_string([p]) if p is not None else "" for p in pieces]
    return torch.tensor([any(c in t for c in stop_chars) for t in texts], dtype=torch.bool)


def truncate(
    ids: list[int], logprobs: list[float], stop_mask: torch.Tensor, eos_ids: set[int]
) -> tuple[list[int], list[float], str]:
    """Cut a generated row at EOS (excluded) or after the first sentence-ending token (kept)."""
    for i, tok in enumerate(ids):
        if tok in eos_ids:
            return ids[:i], logprobs[:i], "eos"
        if tok < len(stop_mask) and bool(stop_mask[tok]):
            return ids[: i + 1], logprobs[: i + 1], "sentence"
    return ids, logprobs, "length"


@dataclass
class EncodedPrompt:
    """The prompt run through the model once: its KV cache and the raw next-token logits."""

    prompt_len: int
    cache: Any
    logits: torch.Tensor  # lm_head output at the last prompt position: (vocab,), or (rows, vocab)


def _keep_last_logits(model: LoadedModel) -> dict[str, Any]:
    """``logits_to_keep=1`` where the model accepts it: the prompt pass needs the lm head at
    its last position only."""
    params = inspect.signature(model.hf.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def encode_prompt(
    model: LoadedModel,
    prompt_ids: list[int],
    rows: int = 1,
    inside: Callable[[], None] | None = None,
) -> EncodedPrompt:
    """One traced forward over the prompt; every batch of the prompt starts from its cache.

    ``rows`` > 1 encodes that many copies, and ``inside`` runs within the trace (steering
    interventions on the prompt positions, one row each): the logits are then (rows, vocab).
    """
    ids = torch.tensor([prompt_ids] * rows, dtype=torch.long, device=model.device)
    with torch.no_grad():
        with model.lm.trace(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            use_cache=True,
            **_keep_last_logits(model),
        ):
            if inside is not None:
                inside()
            out = model.lm.output.save()
    logits = out.logits[0, -1] if rows == 1 else out.logits[:, -1]
    return EncodedPrompt(len(prompt_ids), out.past_key_values, logits)


def _decode_step(model: LoadedModel, tokens: torch.Tensor, cache: Any, length: int) -> torch.Tensor:
    """One traced step: feed each row's last token, extend the cache, return the raw logits."""
    ids = tokens[:, None]
    mask = torch.ones(ids.shape[0], length, dtype=torch.long, device=ids.device)
    with torch.no_grad():
        with model.lm.trace(
            input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True
        ):
            out = model.lm.output.save()
    return out.logits[:, -1]


def draw_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """Temperature, then nucleus filtering, then one draw per row.

    The nucleus is the smallest set of most probable tokens whose mass reaches ``top_p``
    (a token stays while the mass of the tokens above it is below ``top_p``; the most
    probable one always stays). It is found among the top k tokens, k growing fourfold until their
    mass reaches ``top_p``, rather than by sorting the whole vocabulary, and the draw is over
    those k: on a 49k vocabulary a full sort and a full multinomial cost more than the
    model's forward step at batch 32."""
    probs = (logits.float() / temperature if temperature != 1.0 else logits.float()).softmax(-1)
    if top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=generator)[:, 0]
    vocab = probs.shape[-1]
    k = min(vocab, 64)
    while True:
        top, idx = torch.topk(probs, k, dim=-1)  # descending
        mass = top.cumsum(-1)
        if k == vocab or bool((mass[:, -1] >= top_p).all()):
            break
        k = min(vocab, 4 * k)
    keep = (mass - top) < top_p
    keep[:, 0] = True
    pick = torch.multinomial(top * keep, 1, generator=generator)
    return idx.gather(-1, pick)[:, 0]


def _finished(tokens: torch.Tensor, stop_mask: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    in_vocab = tokens < stop_mask.shape[0]
    stop = torch.zeros_like(in_vocab)
    stop[in_vocab] = stop_mask.to(tokens.device)[tokens[in_vocab]]
    return stop | torch.isin(tokens, eos.to(tokens.device))


def generate_batch(
    model: LoadedModel,
    prompt: EncodedPrompt,
    n_rows: int,
    settings: SamplingSettings,
    stop_mask: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_rows`` continuations of the encoded prompt, decoded together (of an encoding with R
    rows, n_rows / R consecutive rows each).

    A row leaves the batch as soon as it emits a sentence end or EOS. Returns the new token
    ids (n_rows × steps; after its last token a row holds the pad id) and their
    log-probabilities at T = 1 (0 after the last token).
    """
    eos = torch.tensor(sorted(model.eos_token_ids), dtype=torch.long)
    pad = model.tokenizer.pad_token_id
    steps = settings.max_new_tokens
    out_ids = torch.full((n_rows, steps), int(pad), dtype=torch.long)
    out_lp = torch.zeros((n_rows, steps), dtype=torch.float64)
    R = 1 if prompt.logits.dim() == 1 else prompt.logits.shape[0]
    if n_rows % R:
        raise ValueError(f"{n_rows} rows cannot be split evenly over {R} encoded prompts")
    cache = copy.deepcopy(prompt.cache)
    cache.batch_repeat_interleave(n_rows // R)
    if R == 1:
        logits = prompt.logits.reshape(-1)[None, :].expand(n_rows, -1)
    else:
        logits = prompt.logits.repeat_interleave(n_rows // R, dim=0)
    rows = torch.arange(n_rows)
    length = prompt.prompt_len
    used = 0
    for t in range(steps):
        tokens = draw_tokens(logits, settings.temperature, settings.top_p, generator)
        logp = logits.float().log_softmax(-1).gather(-1, tokens[:, None])[:, 0]
        tokens_cpu = tokens.cpu()
        out_ids[rows, t] = tokens_cpu
        out_lp[rows, t] = logp.double().cpu()
        used = t + 1
        going = ~_finished(tokens_cpu, stop_mask, eos)
        if t == steps - 1 or not going.any():
            break
        if not going.all():  # finished rows leave the batch and its cache
            keep = torch.nonzero(going)[:, 0]
            cache.batch_select_indices(keep.to(tokens.device))
            rows, tokens = rows[keep], tokens[keep.to(tokens.device)]
        length += 1
        logits = _decode_step(model, tokens, cache, length)
    return out_ids[:, :used], out_lp[:, :used]


def next_batch_size(remaining: int, added: int, drawn: int, cap: int) -> int:
    """Rows for the next batch: enough for the ``remaining`` distinct continuations at the
    de-duplication rate of the last batch (``added`` new of ``drawn``), with a margin.

    A short batch is cheap (a decoding step costs mostly a pass over the weights, whatever the
    number of rows) but another batch costs every step again, so the margin is generous:
    twice the expected need plus two rows. Without a rate (the first batch, or a batch that
    added nothing) the batch is full."""
    if drawn <= 0 or added <= 0:
        return cap
    return max(1, min(cap, math.ceil(2.0 * remaining * drawn / added) + 2))


def sample_continuations(
    model: LoadedModel,
    prompt_id: str,
    prompt_ids: list[int],
    settings: SamplingSettings,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Sample until ``n_continuations`` distinct continuations or ``patience`` fruitless batches.

    Distinct means distinct stripped text; of duplicates the most probable token sequence is kept.
    The result is sorted by descending mean log-prob so that row order is canonical.
    """
    check_context(prompt_id, len(prompt_ids), settings.max_new_tokens, model.max_context)
    stop_mask = stop_token_mask(model.tokenizer, settings.stop_chars)
    eos_ids = model.eos_token_ids
    generator = torch.Generator(device=model.device).manual_seed(int(seed))
    prompt = encode_prompt(model, prompt_ids)
    found: dict[str, _Candidate] = {}
    fruitless, order = 0, 0
    size = settings.batch_size
    for _ in range(settings.max_batches):
        if len(found) >= settings.n_continuations or fruitless >= settings.patience:
            break
        new_ids, logprobs = generate_batch(model, prompt, size, settings, stop_mask, generator)
        before, drawn = len(found), 0
        for row, row_lp in zip(new_ids.tolist(), logprobs.tolist()):
            toks, lps, reason = truncate(row, row_lp, stop_mask, eos_ids)
            text = model.tokenizer.decode(toks, skip_special_tokens=False)
            key = text.strip()
            if not toks or not key:
                continue  # an immediate EOS has no content to embed or attribute
            drawn += 1
            cand = _Candidate(text, toks, lps, reason, order)
            order += 1
            if key not in found:
                if len(found) < settings.n_continuations:
                    found[key] = cand
            elif cand.sum_logprob > found[key].sum_logprob:
                cand.order = found[key].order
                found[key] = cand
        added = len(found) - before
        fruitless = 0 if added else fruitless + 1
        size = next_batch_size(
            settings.n_continuations - len(found), added, drawn, settings.batch_size
        )
        if progress:
            progress(added)
    if not found:
        raise RuntimeError(f"prompt {prompt_id!r}: sampling produced no non-empty continuation")
    return _to_table(prompt_id, list(found.values()))


def _to_table(prompt_id: str, cands: list[_Candidate]) -> pd.DataFrame:
    mean_lp = np.array([np.mean(c.token_logprobs) for c in cands], dtype=np.float64)
    order = np.lexsort((np.array([c.order for c in cands]), -mean_lp))
    rows = []
    for idx, i in enumerate(order):
        c = cands[i]
        rows.append(
            {
                "prompt_id": prompt_id,
                "sample_idx": idx,
                "text": c.text,
                "token_ids": np.asarray(c.token_ids, dtype=np.int64),
                "token_logprobs": np.asarray(c.token_logprobs, dtype=np.float64),
                "n_tokens": len(c.token_ids),
                "mean_logprob": float(mean_lp[i]),
                "weight": float(math.exp(mean_lp[i])),
                "stop_reason": c.stop_reason,
            }
        )
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
