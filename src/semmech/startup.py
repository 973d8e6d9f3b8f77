"""Everything about a run that can be checked before any job starts, in one call.

``workflow/rules/common.smk`` calls :func:`check_startup` when the Snakefile is parsed, and
the tests call the same function, so both agree on what is refused at start-up: the config
(schema, defaults, cross-key constraints), the prompt set (a prompt file, or the AmbigQA
selection made from its local copy), the figures' example prompt and summarised
configurations, the steering section against the clustering sweep and the K-means baselines,
the main model (found offline, directory complete, chat-template arguments applicable), the
embedding model (likewise, and its window not filled by the task prefix) and a configured
transcoder set (found, per-layer, fitting the model). Each problem is one exception whose
message starts with the config key. Torch-free: the Snakefile is parsed once per job on a
cluster.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .cluster.grid import on_grid
from .config import ConfigError, validate_config
from .model.source import check_chat_template_kwargs, check_model_available
from .model.transcoder_format import (
    BasisMismatchError,
    TranscoderFormatError,
    TranscoderNotFoundError,
    TranscoderSetSpec,
    check_configured_transcoders,
)
from .prompts import AMBIGQA, AmbigQADataError, Prompt, PromptFileError, configured_prompts
from .steer.settings import AUTO, check_steering_configs
from .views.embedding_source import check_embedding_available, check_task_prefix

TRANSCODER_KEY = "attribution.transcoder_dir"


class Startup(NamedTuple):
    """What the start-up checks hand to the workflow."""

    config: dict[str, Any]  # validated, defaults filled
    prompts: list[Prompt]
    # the configured transcoder set, checked from its file headers; None when none is
    # configured, or when a hub set is not cached yet and model.allow_download lets the jobs
    # fetch it
    transcoder_set: TranscoderSetSpec | None


def check_startup(config: Mapping[str, Any]) -> Startup:
    """The validated config, the prompts and the configured transcoder set; raises on the
    first problem, naming its config key."""
    cfg = validate_config(dict(config))
    prompts = startup_prompts(cfg)
    ids = [p.id for p in prompts]
    example = cfg["figures"]["example_prompt"]
    if example is not None and example not in ids:
        where = "the AmbigQA selection" if cfg["prompts"] == AMBIGQA else cfg["prompts"]
        raise ConfigError(
            f"figures.example_prompt: {example!r} is not a prompt id of {where} (ids: {ids})"
        )
    summary_configs(cfg)
    check_steering_configs(cfg["steering"], cfg["clustering"], cfg["baselines"])
    model = cfg["model"]
    check_model_available(model["name"], model["allow_download"])
    # Keyword arguments for a chat template the model's tokenizer does not have fail here when
    # the tokenizer is on disk (else in the sample job, before the model loads).
    check_chat_template_kwargs(model["chat_template_kwargs"], model["chat_template"], model["name"])
    embedding = cfg["embedding"]
    check_embedding_available(embedding["model"], embedding["allow_download"])
    check_task_prefix(embedding["model"], embedding["task_prefix"], embedding["allow_download"])
    return Startup(cfg, prompts, configured_transcoder_set(cfg))


def startup_prompts(cfg: Mapping[str, Any]) -> list[Prompt]:
    """The prompt set of a validated config, its errors prefixed with the config key."""
    try:
        return configured_prompts(cfg)
    except AmbigQADataError as exc:
        if str(exc).startswith("prompts:"):
            raise
        raise AmbigQADataError(f"ambigqa.path: {exc}") from None
    except PromptFileError as exc:
        raise PromptFileError(f"prompts: {exc}") from None


def summary_configs(cfg: Mapping[str, Any]) -> list[list[float]]:
    """The (beta, gamma) pairs of the cluster tables, the browser and the per-prompt figures
    (``figures.configs``, else the explicitly steered ones); each must be a clustered point."""
    figures, steering, clustering = cfg["figures"], cfg["steering"], cfg["clustering"]
    if figures["configs"] is None and steering["configs"] == AUTO:
        raise ConfigError(
            "figures.configs is null and steering.configs is auto: name the (beta, gamma) pairs "
            "of the cluster tables, browser and per-prompt figures in figures.configs"
        )
    pairs = [[float(b), float(g)] for b, g in (figures["configs"] or steering["configs"])]
    for b, g in pairs:
        if not on_grid(clustering["betas"], clustering["gammas"], b, g):
            raise ConfigError(
                f"figures.configs / steering.configs: (beta={b:g}, gamma={g:g}) is not on the "
                f"clustering grid betas={clustering['betas']} x gammas={clustering['gammas']}"
            )
    return pairs


def configured_transcoder_set(cfg: Mapping[str, Any]) -> TranscoderSetSpec | None:
    """Check ``attribution.transcoder_dir`` when it is set (whatever the basis: a set that is
    named must exist): found (locally, or in the Hugging Face cache), a per-layer set (not a
    cross-layer transcoder), every layer file present and well-formed, and fitting the model's
    hidden size and layer count when its config.json is on disk. A hub set that is not cached
    yet passes only with ``model.allow_download`` (the jobs fetch it); then None."""
    source = cfg["attribution"]["transcoder_dir"]
    if source is None:
        return None
    try:
        return check_configured_transcoders(source, cfg["model"]["name"])
    except TranscoderNotFoundError as exc:
        if cfg["model"]["allow_download"]:
            return None
        raise TranscoderNotFoundError(f"{TRANSCODER_KEY}: {exc}") from None
    except (TranscoderFormatError, BasisMismatchError) as exc:
        raise type(exc)(f"{TRANSCODER_KEY}: {exc}") from None


def use_report_docutils_settings(conf: str | Path) -> None:
    """Point docutils at ``conf`` (workflow/report/docutils.conf: raw and include switched off)
    for every reStructuredText the Snakemake report renders in this process. DOCUTILSCONFIG
    replaces docutils' default config files (./docutils.conf included)."""
    if not Path(conf).is_file():
        raise FileNotFoundError(f"docutils settings of the report not found: {conf}")
    os.environ["DOCUTILSCONFIG"] = str(conf)
