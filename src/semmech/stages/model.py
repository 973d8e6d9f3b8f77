"""Entry point of ``workflow/rules/model.smk``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..model.loading import prepare_gguf_model
from ..model.source import DEFAULT_MODEL, default_gguf_file

log = logging.getLogger("semmech")


def run_prepare_model(*, model_cfg: Mapping[str, Any], out_config: str | Path) -> None:
    """Materialise the offline default model as safetensors (a no-op for user models)."""
    if model_cfg["name"] != DEFAULT_MODEL:
        raise ValueError("prepare_model only applies to the offline default model")
    gguf = default_gguf_file()
    log.info("dequantising %s", gguf)
    prepare_gguf_model(gguf, Path(out_config).parent)
    log.info("wrote %s", Path(out_config).parent)
