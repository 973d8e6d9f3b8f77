"""Model loading: GGUF dequantisation fidelity, offline errors, device/dtype resolution."""

from __future__ import annotations

import pytest
import torch

from semmech.model.loading import format_prompt, resolve_device_dtype
from semmech.model.source import (
    ModelNotFoundError,
    check_model_available,
    default_gguf_file,
    weights_sha256,
)


def test_safetensors_copy_gives_the_gguf_models_logits(default_model, default_model_dir):
    from transformers import AutoModelForCausalLM

    gguf = default_gguf_file()
    ref = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    _, ids = format_prompt(default_model.tokenizer, "Who won the World Cup?", chat_template=True)
    x = torch.tensor([ids])
    with torch.no_grad():
        a = ref(x).logits
        b = default_model.hf(x).logits
    assert torch.equal(a, b)
    assert len(weights_sha256(default_model_dir)) == 64


def test_unknown_hub_id_fails_offline_with_advice():
    with pytest.raises(ModelNotFoundError, match="local copy"):
        check_model_available("nobody-here/not-a-model-xyz", allow_download=False)


def test_local_dir_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        check_model_available(str(tmp_path))


def test_auto_device_and_dtype():
    dev, dt = resolve_device_dtype("auto", "auto")
    if torch.cuda.is_available():
        assert (dev.type, dt) == ("cuda", torch.bfloat16)
    else:
        assert (dev.type, dt) == ("cpu", torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        resolve_device_dtype("cpu", "float8")


def test_chat_template_is_applied_once(default_model):
    tok = default_model.tokenizer
    text, ids = format_prompt(tok, "What is Mercury?", chat_template=True)
    assert "What is Mercury?" in text and text != "What is Mercury?"
    assert tok.decode(ids) == text
    plain, _ = format_prompt(tok, "What is Mercury?", chat_template=False)
    assert plain == "What is Mercury?"
