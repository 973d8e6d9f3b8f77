"""Everything about a run that can be checked before any job starts, in one call.

``workflow/rules/common.smk`` calls :func:`check_startup` when the Snakefile is parsed, and
the tests call the same function, so both agree on what is refused at start-up: the config
(schema, defaults, cross-key constraints), the prompt file, the figures' example prompt, the
main model and the embedding model (found offline, directory complete) and a configured
transcoder directory. Each problem is one exception whose message starts with the config key.
Torch-free: the Snakefile is parsed once per job on a cluster.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError, validate_config
from .model.source import check_model_available
from .prompts import Prompt, PromptFileError, read_prompts
from .views.embedding_source import check_embedding_available

TRANSCODER_FILE_GLOB = "layer_*.safetensors"


def check_startup(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[Prompt]]:
    """The validated config (defaults filled) and the prompts; raises on the first problem."""
    cfg = validate_config(dict(config))
    try:
        prompts = read_prompts(cfg["prompts"])
    except PromptFileError as exc:
        raise PromptFileError(f"prompts: {exc}") from None
    ids = [p.id for p in prompts]
    example = cfg["figures"]["example_prompt"]
    if example is not None and example not in ids:
        raise ConfigError(
            f"figures.example_prompt: {example!r} is not a prompt id of {cfg['prompts']} "
            f"(ids: {ids})"
        )
    check_model_available(cfg["model"]["name"], cfg["model"]["allow_download"])
    check_embedding_available(cfg["embedding"]["model"], cfg["embedding"]["allow_download"])
    tc_dir = cfg["attribution"]["transcoder_dir"]
    if tc_dir is not None:
        path = Path(tc_dir).expanduser()
        if not path.is_dir() or not any(path.glob(TRANSCODER_FILE_GLOB)):
            raise ConfigError(
                f"attribution.transcoder_dir: {tc_dir} is not a directory of transcoder files "
                f"({TRANSCODER_FILE_GLOB}); set it to null to train transcoders instead"
            )
    return cfg, prompts


def use_report_docutils_settings(conf: str | Path) -> None:
    """Point docutils at ``conf`` (workflow/report/docutils.conf: raw and include switched off)
    for every reStructuredText the Snakemake report renders in this process. DOCUTILSCONFIG
    replaces docutils' default config files (./docutils.conf included)."""
    if not Path(conf).is_file():
        raise FileNotFoundError(f"docutils settings of the report not found: {conf}")
    os.environ["DOCUTILSCONFIG"] = str(conf)
