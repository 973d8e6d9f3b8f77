"""Stage entry points: one function per workflow rule, taking plain paths and config dicts.

``workflow/scripts/*.py`` call exactly one of these, so a stage can also be run from Python
or a notebook without Snakemake.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import io
from .models import (DEFAULT_MODEL, default_gguf_file, format_prompt, load_model,
                     load_tokenizer_and_context, prepare_gguf_model)

log = logging.getLogger("semmech")


def prepare_model(model_cfg: dict[str, Any], out_config: str | Path) -> None:
    """Materialise the default model as safetensors (a no-op for user models)."""
    if model_cfg["name"] != DEFAULT_MODEL:
        raise ValueError("prepare_model only applies to the offline default model")
    gguf = default_gguf_file()
    log.info("dequantising %s", gguf)
    prepare_gguf_model(gguf, Path(out_config).parent)
    log.info("wrote %s", Path(out_config).parent)


def load_configured_model(model_cfg: dict[str, Any]):
    return load_model(model_cfg["name"], device=model_cfg["device"], dtype=model_cfg["dtype"],
                      allow_download=model_cfg["allow_download"])


def sample_prompt(prompt_id: str, text: str, model_cfg: dict[str, Any], sampling_cfg: dict[str, Any],
                  seed: int, out_table: str | Path, out_prompt: str | Path) -> None:
    """Sample one prompt and write its table and its exact model input."""
    from .sampling import SamplingSettings, check_context, sample_continuations

    settings = SamplingSettings.from_config(sampling_cfg)
    # Cheap checks first: the tokenizer and config decide whether the prompt fits.
    tokenizer, max_context = load_tokenizer_and_context(
        model_cfg["name"], allow_download=model_cfg["allow_download"])
    model_input, ids = format_prompt(tokenizer, text, model_cfg["chat_template"])
    check_context(prompt_id, len(ids), settings.max_new_tokens, max_context)
    model = load_configured_model(model_cfg)
    log.info("prompt %s: %d prompt tokens, seed %d", prompt_id, len(ids), seed)
    with tqdm(total=settings.n_continuations, desc=f"sample {prompt_id}", unit="cont") as bar:
        df = sample_continuations(model, prompt_id, ids, settings, seed,
                                  progress=lambda added: bar.update(added))
    log.info("prompt %s: %d distinct continuations", prompt_id, len(df))
    io.write_json({"prompt_id": prompt_id, "text": text, "model_input": model_input,
                   "prompt_token_ids": ids, "model": model_cfg["name"],
                   "chat_template": bool(model_cfg["chat_template"])}, out_prompt)
    io.write_parquet(df, out_table)
