"""Entry point of ``workflow/rules/sampling.smk``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .. import io
from ..model.loading import format_prompt, load_configured_model, load_tokenizer_and_context
from ..views.sampling import SamplingSettings, check_context, sample_continuations

log = logging.getLogger("semmech")


def run_sample(
    *,
    prompt_id: str,
    text: str,
    model_cfg: Mapping[str, Any],
    sampling_cfg: Mapping[str, Any],
    seed: int,
    out_table: str | Path,
    out_prompt: str | Path,
) -> None:
    """Sample one prompt and write its table and its exact model input."""
    settings = SamplingSettings.from_config(sampling_cfg)
    # Cheap checks first: the tokenizer and config decide whether the prompt fits.
    tokenizer, max_context = load_tokenizer_and_context(
        model_cfg["name"], allow_download=model_cfg["allow_download"]
    )
    model_input, ids = format_prompt(
        tokenizer, text, model_cfg["chat_template"], model_cfg["chat_template_kwargs"]
    )
    check_context(prompt_id, len(ids), settings.max_new_tokens, max_context)
    model = load_configured_model(model_cfg, tokenizer=tokenizer)  # read once, not twice
    log.info("prompt %s: %d prompt tokens, seed %d", prompt_id, len(ids), seed)
    with tqdm(total=settings.n_continuations, desc=f"sample {prompt_id}", unit="cont") as bar:
        df = sample_continuations(
            model, prompt_id, ids, settings, seed, progress=lambda added: bar.update(added)
        )
    log.info("prompt %s: %d distinct continuations", prompt_id, len(df))
    io.write_json(
        {
            "prompt_id": prompt_id,
            "text": text,
            "model_input": model_input,
            "prompt_token_ids": ids,
            "model": model_cfg["name"],
            "chat_template": bool(model_cfg["chat_template"]),
            "chat_template_kwargs": dict(model_cfg["chat_template_kwargs"]),
        },
        out_prompt,
    )
    io.write_parquet(df, out_table)
