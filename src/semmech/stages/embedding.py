"""Entry point of ``workflow/rules/embedding.smk``: the semantic view of one prompt.

A module of its own (not in :mod:`semmech.stages.clustering`): the embed job runs in
``envs/embedding.yaml`` (transformers, no numba or scikit-learn) and the clustering jobs in
``envs/clustering.yaml`` (the reverse), and every import here is at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..views.embedding import ContextualEncoder, embed_samples

log = logging.getLogger("semmech")

__all__ = ["run_embed"]


def run_embed(
    *,
    prompt_id: str,
    samples: str | Path,
    prompt: str | Path,
    embedding_cfg: Mapping[str, Any],
    out_npz: str | Path,
) -> None:
    """embeddings/{p}.npz: one unit vector per continuation, encoded in its prompt's context
    (``embedding_cfg``: the ``embedding`` config section, defaults filled; its ``context`` names
    the field of the prompt record used as context: the prompt ``text`` as written, or the
    ``model_input``, the exact string the language model saw, chat template included)."""
    df = io.read_parquet(samples, required=["sample_idx", "text"])
    meta = io.read_json(prompt)
    context_key = embedding_cfg["context"]
    if not isinstance(meta, dict) or not isinstance(meta.get(context_key), str):
        raise io.CorruptInputError(f"{prompt}: no {context_key!r} field (embedding.context)")
    idx = df["sample_idx"].to_numpy()
    if not np.array_equal(idx, np.arange(len(df))):
        raise io.CorruptInputError(f"{samples}: sample_idx is not 0..N-1 in order")
    encoder = ContextualEncoder.from_name(
        embedding_cfg["model"],
        device=embedding_cfg["device"],
        allow_download=bool(embedding_cfg["allow_download"]),
        task_prefix=embedding_cfg["task_prefix"],
    )
    log.info(
        "prompt %s: embedding %d continuations with %s (max %d tokens), context %s, task prefix %r",
        prompt_id,
        len(df),
        encoder.name,
        encoder.max_length,
        context_key,
        encoder.task_prefix,
    )
    E = embed_samples(
        encoder,
        meta[context_key],
        df["text"].tolist(),
        batch_size=int(embedding_cfg["batch_size"]),
        name=prompt_id,
    )
    io.write_npz(out_npz, embeddings=E, sample_idx=idx.astype(np.int64))
