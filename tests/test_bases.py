"""Feature bases: generic layout discovery, transcoder sets in circuit-tracer's format (reading,
checking, lazy decoders, the Hugging Face cache), steering, transcoder training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_models import TINY_MODELS, tiny_llama

from semmech import io
from semmech.model import transcoders as transcoders_module
from semmech.model.bases import TranscoderBasis, load_basis
from semmech.model.layout import ModelLayout, UnsupportedModelError, envoy
from semmech.model.transcoder_format import (
    BasisMismatchError,
    TranscoderFormatError,
    TranscoderNotFoundError,
    resolve_transcoder_set,
    transcoder_set_config,
)
from semmech.model.transcoders import (
    LayerTranscoder,
    MappedDecoder,
    load_transcoder_set,
    write_transcoder_set,
)
from semmech.steer.intervention import steer_nodes


@pytest.fixture(scope="module")
def models():
    return {name: make(seed=0) for name, make in TINY_MODELS.items()}


def random_transcoder(
    d: int, n_features: int, seed: int, threshold: bool = False, skip: bool = False
) -> LayerTranscoder:
    """A random transcoder in circuit-tracer's layout (W_enc [F, d], W_skip used as x @ W_skip.T)."""
    g = torch.Generator().manual_seed(seed)
    return LayerTranscoder(
        W_enc=torch.randn(n_features, d, generator=g) / d**0.5,
        b_enc=0.1 * torch.randn(n_features, generator=g),
        W_dec=torch.randn(n_features, d, generator=g) / n_features**0.5,
        b_dec=0.1 * torch.randn(d, generator=g),
        threshold=0.2 * torch.rand(n_features, generator=g) if threshold else None,
        W_skip=0.1 * torch.randn(d, d, generator=g) if skip else None,
    )


def random_set(
    d: int,
    n_layers: int,
    n_features: int,
    seed: int,
    threshold=lambda l: l % 2 == 0,
    skip: bool = True,
) -> dict[int, LayerTranscoder]:
    """A complete random set: JumpReLU on the layers ``threshold`` picks, ReLU on the others."""
    return {
        l: random_transcoder(d, n_features, seed + l, threshold=threshold(l), skip=skip)
        for l in range(n_layers)
    }


def write_random_set(path, layout, n_features=24, seed=10, **kw) -> dict[int, LayerTranscoder]:
    tcs = random_set(layout.d_model, layout.n_layers, n_features, seed, **kw)
    write_transcoder_set(tcs, path, model_name="tiny", scan="test")
    return tcs


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


def test_transcoder_set_roundtrip_encoding_and_lazy_decoders(tmp_path, models):
    model = models["llama"]
    layout = ModelLayout.discover(model)
    tcs = write_random_set(tmp_path, layout)
    # circuit-tracer's format: config.yaml and one file per layer, with its tensor names.
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg["model_kind"] == "transcoder_set"
    assert (cfg["feature_input_hook"], cfg["feature_output_hook"]) == (
        "mlp.hook_in",
        "mlp.hook_out",
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    files = ["config.yaml"] + [f"layer_{l}.safetensors" for l in range(layout.n_layers)]
    # each file with its integrity record (semmech.io), checked when the set is loaded
    assert names == sorted(f + s for f in files for s in ("", io.SIDECAR_SUFFIX))
    arrays, _ = io.read_safetensors(tmp_path / "layer_0.safetensors")
    assert sorted(arrays) == [
        "W_dec",
        "W_enc",
        "W_skip",
        "activation_function.threshold",
        "b_dec",
        "b_enc",
    ]
    assert arrays["W_enc"].shape == (24, layout.d_model)
    assert (
        "activation_function.threshold"
        not in io.read_safetensors(tmp_path / "layer_1.safetensors")[0]
    )

    basis = TranscoderBasis.load(layout, tmp_path, model.device, model.dtype)
    assert basis.feature_layers() == list(range(layout.n_layers)) and basis.n_features(1) == 24
    assert all(isinstance(tc.W_dec, MappedDecoder) for tc in basis.transcoders.values())
    x = torch.randn(5, layout.d_model)
    tc = tcs[0]
    z = x @ tc.W_enc.T + tc.b_enc
    expected = torch.where(z > tc.threshold, z, torch.zeros_like(z))  # JumpReLU
    torch.testing.assert_close(basis.encode(0, x), expected)
    assert (basis.encode(0, x) > 0).sum() < z.gt(0).sum()  # the threshold removed some units
    torch.testing.assert_close(basis.encode(1, x), torch.relu(x @ tcs[1].W_enc.T + tcs[1].b_enc))
    torch.testing.assert_close(basis.decoder(1), tcs[1].W_dec)
    feats = torch.tensor([3, 0, 17])
    torch.testing.assert_close(basis.directions(2, feats), tcs[2].W_dec[feats])

    # The sparse reconstruction (active rows only, re-read in backward) is the dense one.
    loaded = basis.transcoders[0]
    alpha = loaded.activation(x).requires_grad_(True)
    xs = x.clone().requires_grad_(True)
    dense = alpha @ tc.W_dec + tc.b_dec + xs @ tc.W_skip.T
    sparse = loaded.linear_part(xs, alpha)
    torch.testing.assert_close(sparse, dense)
    g = torch.randn_like(dense)
    ga, gx = torch.autograd.grad((sparse * g).sum(), (alpha, xs))
    ga_ref, gx_ref = torch.autograd.grad((dense * g).sum(), (alpha, xs))
    active = alpha.detach() != 0
    torch.testing.assert_close(ga[active.any(0).expand_as(ga)], ga_ref[active.any(0).expand_as(ga)])
    torch.testing.assert_close(gx, gx_ref)


def test_decoders_are_read_row_by_row(tmp_path, monkeypatch):
    """A decoder is memory-mapped: only the rows asked for are read, never the whole tensor."""
    tc = random_transcoder(16, 4096, seed=0)
    write_transcoder_set({0: tc}, tmp_path, model_name="m", scan="s")
    dec = MappedDecoder(tmp_path / "layer_0.safetensors", (4096, 16), "cpu", torch.float32)
    idx = torch.tensor([4095, 7, 7, 100])
    torch.testing.assert_close(dec.rows(idx), tc.W_dec[idx])
    assert dec.rows(torch.tensor([], dtype=torch.long)).shape == (0, 16)
    # load_transcoder_set never materialises W_dec.
    read = []
    real = safe_open

    class Spy:
        def __init__(self, *a, **k):
            self.f = real(*a, **k)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def keys(self):
            return self.f.keys()

        def get_tensor(self, name):
            read.append(name)
            return self.f.get_tensor(name)

    monkeypatch.setattr(transcoders_module, "safe_open", Spy)
    spec = resolve_transcoder_set(tmp_path)
    loaded = load_transcoder_set(spec, torch.device("cpu"), torch.float32)
    assert "W_dec" not in read and "W_enc" in read
    assert isinstance(loaded[0].W_dec, MappedDecoder)
    # The memory a job needs: encoder side plus one layer's decoder, in the compute dtype.
    assert spec.memory_mb(4) == int((4096 * 16 + 4096 + 16 + 4096 * 16) * 4 / 1e6) + 1


def _write_layer(path, tensors):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def _flip_last_byte(name: str):
    def mutate(path):
        data = bytearray((path / name).read_bytes())
        data[-2] ^= 0x01
        (path / name).write_bytes(bytes(data))

    return mutate


def test_transcoder_set_errors(tmp_path, models):
    """Every bad set fails with one error naming the problem, from headers alone."""
    layout = ModelLayout.discover(models["llama"])
    d, L = layout.d_model, layout.n_layers

    def make(name, mutate=None, n_layers=L, config=None, skip=False, d_model=d):
        path = tmp_path / name
        tcs = random_set(d_model, n_layers, 8, 0, skip=skip)
        write_transcoder_set(tcs, path, model_name="tiny", scan="t")
        if config is not None:
            cfg = yaml.safe_load((path / "config.yaml").read_text())
            cfg.update(config)
            io.write_yaml(cfg, path / "config.yaml")  # the set as written, with its record
        if mutate:
            mutate(path)
        return path

    def load(path):
        return TranscoderBasis.load(layout, path, torch.device("cpu"), torch.float32)

    def retensor(layer, change):
        def mutate(path):
            f = path / f"layer_{layer}.safetensors"
            t = dict(io.read_safetensors(f)[0])
            change(t)
            _write_layer(f, {k: torch.from_numpy(v) for k, v in t.items()})

        return mutate

    cases = [
        (
            make("missing", retensor(1, lambda t: t.pop("W_dec"))),
            TranscoderFormatError,
            r"missing tensors \['W_dec'\]",
        ),
        (
            make(
                "shape", retensor(0, lambda t: t.__setitem__("b_dec", np.zeros(d + 1, np.float32)))
            ),
            TranscoderFormatError,
            "b_dec has shape",
        ),
        # semmech's old layout named the threshold 'threshold': refused, not misread.
        (
            make(
                "oldname",
                retensor(
                    0, lambda t: t.__setitem__("threshold", t.pop("activation_function.threshold"))
                ),
            ),
            TranscoderFormatError,
            r"unexpected tensors \['threshold'\]",
        ),
        (
            make("ints", retensor(0, lambda t: t.__setitem__("b_dec", np.zeros(d, np.int64)))),
            TranscoderFormatError,
            "not floating point",
        ),
        (
            make("other_model", d_model=d + 4),
            BasisMismatchError,
            f"d_model {d + 4} but the model's hidden size is {d}",
        ),
        (
            make("short", n_layers=L - 1),
            TranscoderFormatError,
            rf"missing layer files for layers \[{L - 1}\]",
        ),
        (
            make("gap", lambda p: (p / "layer_1.safetensors").unlink()),
            TranscoderFormatError,
            r"missing layer files for layers \[1\]",
        ),
        (
            make("long", n_layers=L + 1),
            BasisMismatchError,
            f"has {L + 1} layers but the model has {L}",
        ),
        (
            make("clt", config={"model_kind": "cross_layer_transcoder"}),
            TranscoderFormatError,
            "cross-layer transcoder",
        ),
        (
            make(
                "cltfiles",
                lambda p: _write_layer(p / "W_enc_0.safetensors", {"W_enc_0": torch.zeros(2, d)}),
            ),
            TranscoderFormatError,
            "cross-layer transcoder",
        ),
        (
            make("hooks", config={"feature_input_hook": "hook_resid_mid"}),
            TranscoderFormatError,
            "'hook_resid_mid' -> 'mlp.hook_out' are not supported",
        ),
        (
            make("noconfig", lambda p: (p / "config.yaml").unlink()),
            TranscoderFormatError,
            "no config.yaml",
        ),
        (
            make(
                "listed",
                config={
                    "transcoders": [f"layer_{l}.safetensors" for l in range(L - 1)]
                    + ["nowhere.safetensors"]
                },
            ),
            TranscoderFormatError,
            f"the file of layer {L - 1}",
        ),
        (
            make(
                "width",
                retensor(
                    2,
                    lambda t: t.update(
                        W_enc=t["W_enc"][:4],
                        b_enc=t["b_enc"][:4],
                        W_dec=t["W_dec"][:4],
                        **{"activation_function.threshold": t["activation_function.threshold"][:4]},
                    ),
                ),
            ),
            TranscoderFormatError,
            "same n_features",
        ),
        (
            make(
                "skip", retensor(1, lambda t: t.__setitem__("W_skip", np.zeros((d, d), np.float32)))
            ),
            TranscoderFormatError,
            "W_skip must be in every layer or in none",
        ),
        (
            make(
                "junk", lambda p: (p / "layer_0.safetensors").write_bytes(b"not a safetensors file")
            ),
            TranscoderFormatError,
            "cannot read",
        ),
        # a set semmech wrote whose layer file changed afterwards (one byte of W_dec's data):
        # its integrity record no longer matches
        (
            make("flipped", _flip_last_byte("layer_1.safetensors")),
            TranscoderFormatError,
            r"layer_1\.safetensors: content does not match the sha256 recorded",
        ),
        (
            make("flipped_config", _flip_last_byte("config.yaml")),
            TranscoderFormatError,
            r"config\.yaml: content does not match the sha256 recorded",
        ),
    ]
    for path, exc, message in cases:
        with pytest.raises(exc, match=message):
            load(path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text(
        yaml.safe_dump(transcoder_set_config("m", "s", d, 8))
    )
    with pytest.raises(TranscoderFormatError, match="no layer_"):
        load(tmp_path / "empty")
    with pytest.raises(
        TranscoderNotFoundError, match="neither a local directory nor a Hugging Face"
    ):
        load(tmp_path / "no" / "such" / "dir")
    with pytest.raises(TranscoderNotFoundError, match="not in the offline Hugging Face cache"):
        load("nobody-here/no-such-transcoders")
    # A listed file is found relative to the set's directory.
    listed = make("listed_ok", config={"transcoders": [f"layer_{l}.safetensors" for l in range(L)]})
    assert load(listed).feature_layers() == list(range(L))
    with pytest.raises(ValueError, match="no transcoder set"):
        load_basis("transcoder", models["llama"], layout)
    with pytest.raises(ValueError, match="unknown feature basis"):
        load_basis("sae", models["llama"], layout)


def test_a_hub_set_is_read_from_the_hugging_face_cache(tmp_path, models, monkeypatch):
    """A repo id resolves through the Hugging Face cache (offline), including hf:// lists."""
    import huggingface_hub.constants as hub_constants

    layout = ModelLayout.discover(models["llama"])
    cache = tmp_path / "hub"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--tiny-transcoders"
    snap = repo / "snapshots" / commit
    tcs = write_random_set(snap, layout)
    for side in snap.glob("*" + io.SIDECAR_SUFFIX):
        side.unlink()  # a hub snapshot holds the set's own files only, no integrity records
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    basis = TranscoderBasis.load(
        layout, "someone/tiny-transcoders", torch.device("cpu"), torch.float32
    )
    torch.testing.assert_close(basis.decoder(2), tcs[2].W_dec)
    # A config.yaml listing hf:// files (as hub sets do) is followed, file by file.
    cfg = yaml.safe_load((snap / "config.yaml").read_text())
    cfg["transcoders"] = [
        f"hf://someone/tiny-transcoders/sub/layer_{l}.safetensors" for l in range(layout.n_layers)
    ]
    (snap / "config.yaml").write_text(yaml.safe_dump(cfg))
    (snap / "sub").mkdir()
    for l in range(layout.n_layers):
        (snap / f"layer_{l}.safetensors").rename(snap / "sub" / f"layer_{l}.safetensors")
    basis = TranscoderBasis.load(
        layout, "someone/tiny-transcoders", torch.device("cpu"), torch.float32
    )
    assert basis.transcoders[1].W_dec.path == snap / "sub" / "layer_1.safetensors"
    (snap / "sub" / "layer_1.safetensors").unlink()
    with pytest.raises(
        TranscoderNotFoundError, match="sub/layer_1.safetensors is not in the offline"
    ):
        TranscoderBasis.load(layout, "someone/tiny-transcoders", torch.device("cpu"), torch.float32)


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
    tcs = write_random_set(tmp_path, layout, n_features=16, seed=1)
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
    with pytest.raises(BasisMismatchError, match="out of range"):
        with torch.no_grad(), model.lm.trace(input_ids=ids):
            steer_nodes(model, basis, [(1, 3, 16)], [1.0])


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
    # A complete set in circuit-tracer's format: every layer, the untrained one inactive, each
    # file with its integrity record (semmech.io).
    names = ["config.yaml", "layer_0.safetensors", "layer_1.safetensors", "layer_2.safetensors"]
    listing = sorted(n + s for n in names for s in ("", io.SIDECAR_SUFFIX))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == listing
    for name in listing:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for name in names:
        io.verify_integrity(tmp_path / "a" / name)
    cfg = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert cfg["model_kind"] == "transcoder_set" and cfg["trained_layers"] == [0, 2]
    assert stats == again
    for st in stats.values():
        assert 0 < st["fvu"] < 1.0  # better than predicting the mean
        assert st["n_tokens"] == 150
    basis = load_basis("transcoder", model, transcoder_dir=tmp_path / "a")
    assert basis.feature_layers() == [0, 1, 2] and basis.n_features(0) == 32
    inactive, _ = io.read_safetensors(tmp_path / "a" / "layer_1.safetensors")
    assert sorted(inactive) == ["W_dec", "W_enc", "b_dec", "b_enc"]
    assert all(not v.any() for v in inactive.values())
    x = torch.randn(7, basis.layout.d_model)
    assert not basis.encode(1, x).any() and basis.encode(0, x).any()
    with pytest.raises(ValueError, match="do not exist"):
        train_transcoders(
            model,
            prompts,
            conts,
            TranscoderTrainingSettings.from_config({"layers": [7]}),
            0,
            tmp_path / "c",
        )
