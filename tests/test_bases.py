"""Feature bases: generic layout discovery, transcoder files, steering, transcoder training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny_models import TINY_MODELS, tiny_llama

from semmech import io
from semmech.model.bases import TranscoderBasis, load_basis
from semmech.model.layout import ModelLayout, UnsupportedModelError, envoy
from semmech.model.transcoders import (
    BasisMismatchError,
    LayerTranscoder,
    TranscoderFormatError,
    read_transcoder_file,
    write_transcoder_file,
)
from semmech.steer.intervention import steer_nodes


@pytest.fixture(scope="module")
def models():
    return {name: make(seed=0) for name, make in TINY_MODELS.items()}


def random_transcoder(
    d: int, n_features: int, seed: int, threshold: bool = False, skip: bool = False
) -> LayerTranscoder:
    g = torch.Generator().manual_seed(seed)
    return LayerTranscoder(
        W_enc=torch.randn(d, n_features, generator=g) / d**0.5,
        b_enc=0.1 * torch.randn(n_features, generator=g),
        W_dec=torch.randn(n_features, d, generator=g) / n_features**0.5,
        b_dec=0.1 * torch.randn(d, generator=g),
        threshold=0.2 * torch.rand(n_features, generator=g) if threshold else None,
        W_skip=0.1 * torch.randn(d, d, generator=g) if skip else None,
    )


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_layout_is_found_and_verified_for_every_family(models, name):
    model = models[name]
    layout = ModelLayout.discover(model)
    cfg = model.hf.config
    assert layout.n_layers == cfg.num_hidden_layers
    assert layout.d_model == cfg.hidden_size
    for lay in layout.layers:
        assert model.hf.get_submodule(lay.down) is not None
        # nnsight is asked in execution order: the down projection starts after its MLP does.
        assert (
            layout.order[(lay.mlp, "in")]
            < layout.order[(lay.down, "in")]
            < layout.order[(lay.mlp, "out")]
        )
    norms = layout.norms.values()
    if name == "gpt2":
        assert all(n.center and n.has_bias for n in norms)
        assert layout.layers[0].qk.fused_width == 2 * cfg.hidden_size
        assert layout.position_embeddings == ["transformer.wpe"]
        assert layout.bias_modules  # Conv1D biases are constant terms
    else:
        assert not any(n.center for n in norms)
        assert layout.layers[0].qk.fused_width is None
    if name.startswith("gemma"):
        assert all(n.gain_offset == 1.0 for n in norms)
    if name == "gemma2":
        assert layout.logit_softcap == 3.0
        assert len([p for p in layout.norms if p.startswith("model.layers.0.")]) == 4


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_neuron_decoder_is_the_down_projection_column(models, name):
    model = models[name]
    basis = load_basis("mlp_neurons", model)
    down = model.hf.get_submodule(basis.layout.layers[1].down)
    dec = basis.decoder(1)
    # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
    expected = down.weight.T if isinstance(down, torch.nn.Linear) else down.weight
    torch.testing.assert_close(dec, expected.detach(), rtol=1e-6, atol=1e-6)


def test_unrecognised_norm_is_rejected(models):
    model = tiny_llama(seed=1)
    norm = model.hf.model.layers[0].input_layernorm
    norm.forward = lambda x: torch.tanh(x)  # not an RMS/Layer norm: its scale cannot be frozen
    with pytest.raises(UnsupportedModelError, match="input_layernorm"):
        ModelLayout.discover(model)


def test_transcoder_file_roundtrip_and_encoding(tmp_path, models):
    model = models["llama"]
    layout = ModelLayout.discover(model)
    tc = random_transcoder(layout.d_model, 24, seed=3, threshold=True, skip=True)
    write_transcoder_file(tc, tmp_path / "layer_1.safetensors", 1, "tiny")
    basis = TranscoderBasis.load(layout, tmp_path, model.device, model.dtype)
    assert basis.feature_layers() == [1] and basis.n_features(1) == 24
    x = torch.randn(5, layout.d_model)
    z = x @ tc.W_enc + tc.b_enc
    expected = torch.where(z > tc.threshold, z, torch.zeros_like(z))  # JumpReLU
    torch.testing.assert_close(basis.encode(1, x), expected)
    assert (basis.encode(1, x) > 0).sum() < z.gt(0).sum()  # the threshold removed some units
    torch.testing.assert_close(basis.decoder(1), tc.W_dec)


def test_transcoder_file_errors(tmp_path, models):
    layout = ModelLayout.discover(models["llama"])
    d = layout.d_model
    good = random_transcoder(d, 8, seed=0)
    tensors = {k: getattr(good, k) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}

    def write(name, ts, meta=None):
        path = tmp_path / name
        path.mkdir()
        save_file(
            {k: v.contiguous() for k, v in ts.items()},
            str(path / "layer_0.safetensors"),
            metadata=meta,
        )
        return path

    missing = write("missing", {k: v for k, v in tensors.items() if k != "W_dec"})
    with pytest.raises(TranscoderFormatError, match=r"missing tensors \['W_dec'\]"):
        TranscoderBasis.load(layout, missing, torch.device("cpu"), torch.float32)
    wrong = write("wrong", {**tensors, "b_dec": torch.zeros(d + 1)})
    with pytest.raises(TranscoderFormatError, match="b_dec has shape"):
        TranscoderBasis.load(layout, wrong, torch.device("cpu"), torch.float32)
    other = random_transcoder(d + 4, 8, seed=0)
    other_model = write(
        "other", {k: getattr(other, k) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    )
    with pytest.raises(BasisMismatchError, match="hidden size is 32"):
        TranscoderBasis.load(layout, other_model, torch.device("cpu"), torch.float32)
    act = write("act", tensors, meta={"activation": "jumprelu"})
    with pytest.raises(TranscoderFormatError, match="threshold"):
        TranscoderBasis.load(layout, act, torch.device("cpu"), torch.float32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TranscoderFormatError, match="no layer_"):
        TranscoderBasis.load(layout, tmp_path / "empty", torch.device("cpu"), torch.float32)
    far = tmp_path / "far"
    write_transcoder_file(good, far / f"layer_{layout.n_layers}.safetensors", layout.n_layers)
    with pytest.raises(BasisMismatchError, match="does not exist"):
        TranscoderBasis.load(layout, far, torch.device("cpu"), torch.float32)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "layer_0.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TranscoderFormatError, match="cannot read"):
        read_transcoder_file(tmp_path / "junk" / "layer_0.safetensors")
    with pytest.raises(ValueError, match="no transcoder directory"):
        load_basis("transcoder", models["llama"], layout)
    with pytest.raises(ValueError, match="unknown feature basis"):
        load_basis("sae", models["llama"], layout)


def _mlp_hooks(model, layout, fn_by_layer):
    """Plain torch hooks (independent of nnsight) that edit MLP internals layer by layer."""
    handles = []
    for l, fn in fn_by_layer.items():
        handles.append(
            model.hf.get_submodule(layout.layers[l].down).register_forward_pre_hook(
                lambda m, args, fn=fn: (fn(args[0]),)
            )
        )
    return handles


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_steering_neurons_matches_hooked_edit(models, name):
    """scale·α·d added at (l, p), with α read from the already-steered pass."""
    model = models[name]
    basis = load_basis("mlp_neurons", model)
    layout = basis.layout
    ids = torch.tensor([model.tokenizer("who won the world cup ? yes")["input_ids"]] * 2)
    nodes = [(0, 2, 5), (1, 2, 7), (1, 3, 11)]
    scales = torch.tensor([[0.7, -1.0, 2.0], [0.0, 0.5, -0.3]])

    def edit(layer):
        def fn(h):
            h = h.clone()
            for k, (l, p, f) in enumerate(nodes):
                if l == layer:
                    h[:, p, f] = h[:, p, f] * (1 + scales[:, k])
            return h

        return fn

    handles = _mlp_hooks(model, layout, {0: edit(0), 1: edit(1)})
    try:
        with torch.no_grad():
            expected = model.hf(ids).logits
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad(), model.lm.trace(input_ids=ids):
        steer_nodes(model, basis, nodes, scales)
        logits = model.lm.output.logits.save()
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        plain = model.hf(ids).logits
    assert (logits[0] - plain[0]).abs().max() > 1e-3  # the steering did something


def test_steering_transcoder_adds_decoder_rows(tmp_path, models):
    model = models["llama"]
    layout = ModelLayout.discover(model)
    tcs = {
        0: random_transcoder(layout.d_model, 16, seed=1, threshold=False),
        2: random_transcoder(layout.d_model, 16, seed=2, skip=True),
    }
    for l, tc in tcs.items():
        write_transcoder_file(tc, tmp_path / f"layer_{l}.safetensors", l)
    basis = load_basis("transcoder", model, layout, transcoder_dir=tmp_path)
    ids = torch.tensor([model.tokenizer("who won the world cup ?")["input_ids"]])
    with torch.no_grad(), model.lm.trace(input_ids=ids):
        x0 = envoy(model.lm, layout.layers[0].mlp).input.save()
    alpha = tcs[0].activation(x0)[0, 3]
    f = int(alpha.argmax())
    nodes, scale = [(0, 3, f)], 0.8
    delta = scale * alpha[f] * tcs[0].W_dec[f]

    def add(m, args, out):
        out = out.clone()
        out[:, 3] += delta
        return out

    h = model.hf.get_submodule(layout.layers[0].mlp).register_forward_hook(add)
    try:
        with torch.no_grad():
            expected = model.hf(ids).logits
    finally:
        h.remove()
    with torch.no_grad(), model.lm.trace(input_ids=ids):
        steer_nodes(model, basis, nodes, [scale])
        logits = model.lm.output.logits.save()
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(BasisMismatchError, match="no features"):
        with torch.no_grad(), model.lm.trace(input_ids=ids):
            steer_nodes(model, basis, [(1, 3, 0)], [1.0])


def test_transcoder_training_writes_loadable_deterministic_files(tmp_path):
    from semmech.model.transcoder_training import (
        TranscoderTrainingSettings,
        corpus_from_samples,
        train_transcoders,
    )

    model = tiny_llama(seed=0)
    settings = replace(
        TranscoderTrainingSettings.from_config(
            {"layers": [0, 2], "n_features": 32, "steps": 60, "n_tokens": 150}
        ),
        batch_tokens=64,
    )
    prompts = [model.tokenizer(t)["input_ids"] for t in ["who won the cup ?", "what is java ?"]]
    g = torch.Generator().manual_seed(0)
    conts = [[torch.randint(3, 70, (8,), generator=g).tolist() for _ in range(12)] for _ in prompts]
    corpus = corpus_from_samples(prompts, conts, 10_000)
    # Each prompt's own positions once, then only continuation positions.
    assert corpus[0][1] == 1 and corpus[1][1] == len(prompts[0])
    assert (
        sum(len(s) - start for s, start in corpus) == sum(len(p) - 1 for p in prompts) + 2 * 12 * 8
    )
    stats = train_transcoders(model, prompts, conts, settings, seed=4, out_dir=tmp_path / "a")
    again = train_transcoders(model, prompts, conts, settings, seed=4, out_dir=tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "layer_0.safetensors",
        "layer_0.safetensors.sha256",  # integrity records (semmech.io)
        "layer_2.safetensors",
        "layer_2.safetensors.sha256",
    ]
    for name in ("layer_0.safetensors", "layer_2.safetensors"):
        ta, ma = io.read_safetensors(tmp_path / "a" / name)
        tb, mb = io.read_safetensors(tmp_path / "b" / name)
        assert ma == mb and ta.keys() == tb.keys()
        assert all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert stats == again
    for st in stats.values():
        assert 0 < st["fvu"] < 1.0  # better than predicting the mean
        assert st["n_tokens"] == 150
    basis = load_basis("transcoder", model, transcoder_dir=tmp_path / "a")
    assert basis.feature_layers() == [0, 2] and basis.n_features(0) == 32
    with pytest.raises(ValueError, match="do not exist"):
        train_transcoders(
            model,
            prompts,
            conts,
            TranscoderTrainingSettings.from_config({"layers": [7]}),
            0,
            tmp_path / "c",
        )
