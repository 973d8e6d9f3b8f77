"""The continuation distribution of one prompt: nnsight-traced sampling, truncation at the
first sentence end, de-duplication and length-normalised weights (METHOD §2).

Log-probabilities are read from the raw ``lm_head`` output at every generation step through
nnsight, i.e. at T = 1 whatever the sampling temperature, so the weights need no second pass.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nnsight
import numpy as np
import pandas as pd
import torch
from transformers import StoppingCriteriaList

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


class _SentenceEnd:
    """Stopping criterion: a row is done once it emitted a sentence end or EOS."""

    def __init__(self, stop_mask: torch.Tensor, eos_ids: set[int], prompt_len: int):
        self.stop_mask = stop_mask
        self.eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.prompt_len :].cpu()
        hit = self.stop_mask.to(new.device)[new.clamp(max=len(self.stop_mask) - 1)] | torch.isin(
            new, self.eos
        )
        return hit.any(dim=1).to(input_ids.device)


def generation_inputs(
    model: LoadedModel, prompt_ids: list[int], settings: SamplingSettings, stop_mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The batch of prompt copies and the ``generate`` arguments of METHOD §2."""
    ids = torch.tensor([prompt_ids] * settings.batch_size, dtype=torch.long, device=model.device)
    stopper = _SentenceEnd(stop_mask, model.eos_token_ids, len(prompt_ids))
    return ids, dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=True,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=0,
        stopping_criteria=StoppingCriteriaList([stopper]),
        pad_token_id=model.tokenizer.pad_token_id,
    )


def generate_batch(
    model: LoadedModel, prompt_ids: list[int], settings: SamplingSettings, stop_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One traced ``generate`` over ``batch_size`` copies of the prompt.

    Returns the new token ids (B × steps) and their log-probabilities at T = 1 (B × steps),
    read from ``lm_head`` inside the nnsight trace at every generation step.
    """
    ids, gen_kwargs = generation_inputs(model, prompt_ids, settings, stop_mask)
    with warnings.catch_warnings():
        # The open-ended step loop below ends when generation stops early; nnsight reports that
        # expected end as a warning.
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        return _traced_generate(model, ids, gen_kwargs, len(prompt_ids))


def _traced_generate(
    model: LoadedModel, ids: torch.Tensor, gen_kwargs: dict[str, Any], prompt_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    with model.lm.generate(**gen_kwargs) as tracer:
        step_logprobs = nnsight.save([])
        with tracer.invoke({"input_ids": ids, "attention_mask": torch.ones_like(ids)}):
            # Open-ended: generation may stop early at a sentence end; the loop ends with it.
            for _ in tracer.all():
                step_logprobs.append(model.lm.lm_head.output[:, -1].float().log_softmax(-1))
        with tracer.invoke():
            result = tracer.result.save()
    new_ids = result[:, prompt_len:].cpu()
    steps = new_ids.shape[1]
    lp = torch.stack([s.cpu() for s in step_logprobs[:steps]], dim=1)  # B × steps × V
    chosen = lp.gather(-1, new_ids.unsqueeze(-1)).squeeze(-1)
    return new_ids, chosen.double()


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
    torch.manual_seed(seed)
    found: dict[str, _Candidate] = {}
    fruitless, order = 0, 0
    for _ in range(settings.max_batches):
        if len(found) >= settings.n_continuations or fruitless >= settings.patience:
            break
        new_ids, logprobs = generate_batch(model, prompt_ids, settings, stop_mask)
        before = len(found)
        for row, row_lp in zip(new_ids.tolist(), logprobs.tolist()):
            toks, lps, reason = truncate(row, row_lp, stop_mask, eos_ids)
            text = model.tokenizer.decode(toks, skip_special_tokens=False)
            key = text.strip()
            if not toks or not key:
                continue  # an immediate EOS has no content to embed or attribute
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
