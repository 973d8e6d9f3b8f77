"""Attribution signatures: completeness, agreement with an independent forward-mode evaluation
of the frozen-pattern model, target indexing, batch invariance, bad input, the stage's files,
and (on the real default model) completeness and an ablation test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_bases import random_set, random_transcoder
from tiny_models import TINY_MODELS, tiny_llama

from semmech import io
from semmech.config import section_defaults
from semmech.io import SampleMismatchError
from semmech.model.bases import load_basis
from semmech.model.layout import ModelLayout
from semmech.model.transcoders import LayerTranscoder, write_transcoder_set
from semmech.stages.attribution import run_attribute
from semmech.steer.intervention import steer_nodes
from semmech.views.attribution import COMPLETENESS_TOLERANCE, NODE_COLUMNS, attribute, select_nodes

PROMPT = "who won the world cup ?"


@pytest.fixture(scope="module")
def models():
    return {name: make(seed=0) for name, make in TINY_MODELS.items()}


def continuations(seed: int, lengths=(1, 3, 6, 2, 5, 4, 1, 6)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 70, (n,), generator=g).tolist() for n in lengths]


def true_targets(model, prompt_ids, conts, aggregate="mean") -> np.ndarray:
    """Mean (or summed) demeaned logit of each continuation from one plain forward pass."""
    M, T = len(prompt_ids), max(len(c) for c in conts)
    ids = torch.full((len(conts), M + T), int(model.tokenizer.pad_token_id))
    mask = torch.zeros_like(ids)
    for r, c in enumerate(conts):
        ids[r, : M + len(c)] = torch.tensor(list(prompt_ids) + list(c))
        mask[r, : M + len(c)] = 1
    with torch.no_grad():
        logits = model.hf(ids, attention_mask=mask, logits_to_keep=T + 1).logits.double()
    out = []
    for r, c in enumerate(conts):
        lt = logits[r, : len(c)]  # kept positions start at M-1, the one predicting token 0
        per_token = lt[torch.arange(len(c)), torch.tensor(c)] - lt.mean(-1)
        out.append(float(per_token.sum() if aggregate == "sum" else per_token.mean()))
    return np.array(out)


def transcoder_basis(model, tmp_path, active_layers=None):
    """A random set in circuit-tracer's format (JumpReLU on even layers, ReLU on odd ones, with
    W_skip), or with only ``active_layers`` random and the others inactive (then no W_skip)."""
    layout = ModelLayout.discover(model)
    if active_layers is None:
        # seed 13: features 2 and 9 of layer 0, which the steering tests steer, are active at
        # every position of PROMPT
        tcs = random_set(layout.d_model, layout.n_layers, 24, seed=13)
    else:
        tcs = {
            l: random_transcoder(layout.d_model, 24, seed=10 + l, threshold=True)
            if l in active_layers
            else LayerTranscoder.inactive(layout.d_model, 24)
            for l in range(layout.n_layers)
        }
    write_transcoder_set(tcs, tmp_path, model_name=model.name, scan="test")
    return load_basis("transcoder", model, layout, transcoder_dir=tmp_path)


def basis_named(basis_name, model, tmp_path):
    """The exact neuron basis, or the random transcoder set of :func:`transcoder_basis`."""
    if basis_name == "mlp_neurons":
        return load_basis("mlp_neurons", model)
    return transcoder_basis(model, tmp_path)


# --------------------------------------------------------------------------------------------
# Completeness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("basis_name", ["mlp_neurons", "transcoder"])
@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_completeness_on_tiny_models(models, name, basis_name, tmp_path):
    model = models[name]
    basis = basis_named(basis_name, model, tmp_path)
    prompt = model.tokenizer(PROMPT)["input_ids"]
    conts = continuations(1)
    res = attribute(model, basis, prompt, conts, max_feature_nodes=25, batch_size=3)
    rows = res.completeness
    assert res.signatures.shape == (len(conts), res.nodes.n_nodes)
    assert res.nodes.n_feature_nodes == 25
    assert res.nodes.n_error_nodes == (
        basis.layout.n_layers * (len(prompt) - 1) if basis_name == "transcoder" else 0
    )
    target = np.array([r["target"] for r in rows])
    if name != "gemma2":  # Gemma 2's final softcap is linearised, so only its value is the logit's
        np.testing.assert_allclose(target, true_targets(model, prompt, conts), rtol=1e-4, atol=1e-5)
    for r in rows:
        assert r["rel_error"] < COMPLETENESS_TOLERANCE
        assert abs(
            r["prefix_kept"] + r["continuation"] + r["constant"] - r["target"]
        ) <= 1e-4 * max(1, abs(r["target"]))
        # Something was dropped by the budget, and the continuation explains part of longer ones.
        assert r["prefix_dropped"] != 0
        if r["n_tokens"] > 1:
            assert r["continuation"] != 0
    sig_sum = res.signatures.double().sum(1).numpy()
    np.testing.assert_allclose(sig_sum, [r["prefix_kept"] for r in rows], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("basis_name", ["mlp_neurons", "transcoder"])
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_sum_over_tokens_is_complete_and_the_mean_times_the_length(
    models, name, basis_name, tmp_path
):
    """attribution.aggregate: sum pools the per-token attributions by their sum (the authors'
    code); completeness holds for it, error nodes included, and it is T_n times the mean."""
    model = models[name]
    basis = basis_named(basis_name, model, tmp_path)
    prompt = model.tokenizer(PROMPT)["input_ids"]
    conts = continuations(11)
    nodes = select_nodes(model, basis, prompt, 25)
    mean = attribute(model, basis, prompt, conts, 25, batch_size=3, nodes=nodes)
    total = attribute(model, basis, prompt, conts, 25, batch_size=3, nodes=nodes, aggregate="sum")
    lengths = torch.tensor([len(c) for c in conts], dtype=torch.float32)[:, None]
    torch.testing.assert_close(total.signatures, mean.signatures * lengths, rtol=1e-4, atol=1e-5)
    target = np.array([r["target"] for r in total.completeness])
    np.testing.assert_allclose(
        target, true_targets(model, prompt, conts, "sum"), rtol=1e-4, atol=1e-5
    )
    assert total.max_rel_error < COMPLETENESS_TOLERANCE
    for r, m in zip(total.completeness, mean.completeness):
        assert r["n_tokens"] == m["n_tokens"]
        assert r["continuation"] == pytest.approx(m["continuation"] * r["n_tokens"], rel=1e-4)
    with pytest.raises(ValueError, match="attribution.aggregate must be one of mean, sum"):
        attribute(model, basis, prompt, conts, 25, aggregate="max")


def test_constant_terms_are_biases_and_position_embeddings(models):
    """Llama has no bias: its constant is only the dropped and position-0 nodes. GPT-2's is not."""
    conts = continuations(2)
    for name, has_bias in (("llama", False), ("gpt2", True), ("qwen2", True)):
        model = models[name]
        res = attribute(
            model, load_basis("mlp_neurons", model), model.tokenizer(PROMPT)["input_ids"], conts, 10
        )
        biases = [r["bias"] for r in res.completeness]
        assert all(b != 0 for b in biases) if has_bias else all(b == 0 for b in biases)


# --------------------------------------------------------------------------------------------
# Independent computation: forward-mode evaluation of the frozen model with plain torch hooks
# --------------------------------------------------------------------------------------------


class FrozenReplay:
    """The linearised model evaluated forwards: attention q/k, norm scales and MLP node values
    are recorded on a reference pass and replayed, so the target is an affine function of the
    nodes that we can evaluate after removing any one of them. Uses torch hooks, not nnsight."""

    def __init__(self, model, basis, ids: torch.Tensor):
        self.model, self.basis, self.layout, self.ids = model, basis, basis.layout, ids
        self.ref: dict[str, torch.Tensor] = {}
        hooks = []
        lay = self.layout
        for path in lay.norms:
            hooks.append(
                self._mod(path).register_forward_hook(
                    lambda m, a, o, path=path: self.ref.__setitem__(
                        f"sigma:{path}", lay.norms[path].scale(a[0])
                    )
                )
            )
        for l in lay.layers:
            for p in l.qk.paths:
                hooks.append(
                    self._mod(p).register_forward_hook(
                        lambda m, a, o, p=p: self.ref.__setitem__(f"qk:{p}", o)
                    )
                )
            hooks.append(
                self._mod(l.down).register_forward_hook(
                    lambda m, a, o, i=l.index: self.ref.__setitem__(f"h:{i}", a[0])
                )
            )
            hooks.append(
                self._mod(l.mlp).register_forward_hook(
                    lambda m, a, o, i=l.index: self.ref.update({f"x:{i}": a[0], f"y:{i}": o})
                )
            )
        hooks.append(
            self._mod(lay.embed).register_forward_hook(
                lambda m, a, o: self.ref.__setitem__("embed", o)
            )
        )
        try:
            with torch.no_grad():
                model.hf(ids)
        finally:
            for h in hooks:
                h.remove()

    def _mod(self, path):
        return self.model.hf.get_submodule(path)

    def logits(self, remove: tuple | None = None) -> torch.Tensor:
        """Logits of the frozen model with one node's contribution removed:
        ("feature", l, p, f), ("error", l, p) or ("token", p)."""
        lay, ref, hooks = self.layout, self.ref, []

        def norm_hook(m, a, o, path):
            spec = lay.norms[path]
            out = spec.frozen(m, a[0], ref[f"sigma:{path}"])
            return out + m.bias if spec.has_bias else out

        for path in lay.norms:
            hooks.append(
                self._mod(path).register_forward_hook(
                    lambda m, a, o, path=path: norm_hook(m, a, o, path)
                )
            )
        for l in lay.layers:
            for p in l.qk.paths:
                w = l.qk.fused_width

                def qk_hook(m, a, o, p=p, w=w):
                    r = ref[f"qk:{p}"]
                    return r if w is None else torch.cat([r[..., :w], o[..., w:]], -1)

                hooks.append(self._mod(p).register_forward_hook(qk_hook))
            i = l.index
            if self.basis.name == "mlp_neurons":

                def down_pre(m, a, i=i):
                    h = ref[f"h:{i}"].clone()
                    if remove and remove[0] == "feature" and remove[1] == i:
                        h[:, remove[2], remove[3]] = 0
                    return (h,)

                hooks.append(self._mod(l.down).register_forward_pre_hook(down_pre))
            else:

                def mlp_hook(m, a, o, i=i):
                    tc = self.basis.transcoders.get(i)
                    out = ref[f"y:{i}"].clone()
                    if tc is not None and tc.W_skip is not None:  # the skip path is live
                        out = out + (a[0] - ref[f"x:{i}"]) @ tc.W_skip.T
                    if remove and remove[0] == "feature" and remove[1] == i:
                        alpha = tc.activation(ref[f"x:{i}"])
                        d_f = tc.decoder_rows(torch.tensor([remove[3]]))[0]
                        out[:, remove[2]] -= alpha[:, remove[2], remove[3], None] * d_f
                    if remove and remove[0] == "error" and remove[1] == i:
                        x = ref[f"x:{i}"]
                        recon = tc.linear_part(x, tc.activation(x)) if tc is not None else 0 * x
                        out[:, remove[2]] -= (ref[f"y:{i}"] - recon)[:, remove[2]]
                    return out

                hooks.append(self._mod(l.mlp).register_forward_hook(mlp_hook))

        def embed_hook(m, a, o):
            e = ref["embed"].clone()
            if remove and remove[0] == "token":
                e[:, remove[1]] = 0
            return e

        hooks.append(self._mod(lay.embed).register_forward_hook(embed_hook))
        try:
            with torch.no_grad():
                return self.model.hf(self.ids).logits[0].double()
        finally:
            for h in hooks:
                h.remove()


def mean_demeaned(logits: torch.Tensor, prompt_len: int, cont: list[int]) -> float:
    pos = torch.arange(prompt_len - 1, prompt_len - 1 + len(cont))
    lt = logits[pos]
    return float((lt[torch.arange(len(cont)), torch.tensor(cont)] - lt.mean(-1)).mean())


@pytest.mark.parametrize(
    "name,basis_name",
    [
        ("llama", "mlp_neurons"),
        ("gpt2", "mlp_neurons"),
        ("gemma", "mlp_neurons"),
        ("qwen2", "transcoder"),
        ("llama", "transcoder"),
    ],
)
def test_single_node_attribution_equals_removal_effect(models, name, basis_name, tmp_path):
    model = models[name]
    basis = basis_named(basis_name, model, tmp_path)
    prompt = model.tokenizer(PROMPT)["input_ids"]
    cont = [7, 9, 11, 13]
    res = attribute(model, basis, prompt, [cont], max_feature_nodes=40)
    table = res.nodes.table(model.tokenizer)
    replay = FrozenReplay(model, basis, torch.tensor([prompt + cont[:-1]]))
    M = len(prompt)
    base = mean_demeaned(replay.logits(), M, cont)
    assert base == pytest.approx(res.completeness[0]["target"], rel=1e-5, abs=1e-6)
    sig = res.signatures[0].double().numpy()
    feats = table.index[table.kind == "feature"]
    picks = list(feats[np.argsort(-np.abs(sig[feats]))[:3]])
    picks.append(int(table.index[(table.kind == "token")][-2]))
    if basis_name == "transcoder":
        errs = table.index[table.kind == "error"]
        picks.append(int(errs[np.argmax(np.abs(sig[errs]))]))
    checked = 0
    for j in picks:
        row = table.loc[j]
        key = {
            "feature": ("feature", row.layer, row.position, row.feature),
            "error": ("error", row.layer, row.position),
            "token": ("token", row.position),
        }[row.kind]
        delta = base - mean_demeaned(replay.logits(key), M, cont)
        assert sig[j] == pytest.approx(delta, rel=1e-4, abs=1e-6), (row.kind, key)
        checked += abs(delta) > 1e-4
    assert checked >= 3  # the chosen nodes matter, so the agreement is not 0 == 0


def test_only_the_predicting_position_explains_the_first_token():
    """With attention outputs zeroed, position i only sees token i: the first continuation
    token's logit lives entirely at prefix position M-1 and the second at position M."""
    model = tiny_llama(seed=3)
    for layer in model.hf.model.layers:
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
    basis = load_basis("mlp_neurons", model)
    prompt = model.tokenizer(PROMPT)["input_ids"]
    M = len(prompt)
    cont = [12, 20]
    res = attribute(model, basis, prompt, [cont], max_feature_nodes=100000)
    r = res.completeness[0]
    logits = model.hf(torch.tensor([prompt + cont])).logits[0].detach().double()
    first = float(logits[M - 1, cont[0]] - logits[M - 1].mean())
    second = float(logits[M, cont[1]] - logits[M].mean())
    assert r["prefix_dropped"] == pytest.approx(0, abs=1e-6)  # every prefix node was kept
    assert r["prefix_kept"] == pytest.approx(first / 2, rel=1e-5)
    assert r["continuation"] == pytest.approx(second / 2, rel=1e-5)
    table = res.nodes.table(model.tokenizer)
    sig = res.signatures[0].numpy()
    assert np.all(sig[table.position.to_numpy() < M - 1] == 0)
    assert np.abs(sig[table.position.to_numpy() == M - 1]).sum() > 0


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma2"])
def test_batch_size_and_padding_side_do_not_change_results(models, name):
    model = models[name]
    basis = load_basis("mlp_neurons", model)
    prompt = model.tokenizer(PROMPT)["input_ids"]
    conts = continuations(5)
    nodes = select_nodes(model, basis, prompt, 30)
    ref = attribute(model, basis, prompt, conts, 30, batch_size=1, nodes=nodes)
    for bs, side in ((3, "right"), (8, "right"), (3, "left"), (8, "left")):
        res = attribute(
            model, basis, prompt, conts, 30, batch_size=bs, padding_side=side, nodes=nodes
        )
        torch.testing.assert_close(res.signatures, ref.signatures, rtol=1e-5, atol=1e-5)
        for a, b in zip(res.completeness, ref.completeness):
            assert a["target"] == pytest.approx(b["target"], rel=1e-5, abs=1e-5)
            assert a["continuation"] == pytest.approx(b["continuation"], rel=1e-5, abs=1e-5)


def test_selection_keeps_largest_activations(models):
    model = models["llama"]
    basis = load_basis("mlp_neurons", model)
    prompt = model.tokenizer(PROMPT)["input_ids"]
    nodes = select_nodes(model, basis, prompt, 50)
    with torch.no_grad():
        h = []
        hooks = [
            model.hf.get_submodule(l.down).register_forward_pre_hook(lambda m, a: h.append(a[0][0]))
            for l in basis.layout.layers
        ]
        model.hf(torch.tensor([prompt]))
        for hk in hooks:
            hk.remove()
    alpha = torch.stack(h)[:, 1:]  # position 0 excluded
    threshold = alpha.abs().flatten().sort(descending=True).values[49]
    assert (nodes.feat_alpha.abs() >= threshold).all()
    assert (nodes.feat_pos >= 1).all()
    for (l, p, f), a in zip(nodes.feature_nodes(), nodes.feat_alpha):
        assert float(h[l][p, f]) == pytest.approx(float(a), rel=1e-5)
    table = nodes.table(model.tokenizer)
    assert list(table.columns) == NODE_COLUMNS
    assert list(table.node_idx) == list(range(nodes.n_nodes))
    assert (table[table.kind == "token"].layer == -1).all()


# --------------------------------------------------------------------------------------------
# Bad input and the stage entry point
# --------------------------------------------------------------------------------------------


def test_attribution_runs_in_float32_unless_told_otherwise():
    from semmech.stages.attribution import attribution_model_config

    cfg = {"name": "default", "device": "cuda", "dtype": "bfloat16"}
    assert attribution_model_config(cfg, section_defaults("attribution", {}))["dtype"] == "float32"
    assert (
        attribution_model_config(cfg, section_defaults("attribution", {"dtype": "model"}))["dtype"]
        == "bfloat16"
    )
    assert cfg["dtype"] == "bfloat16"  # the model config itself is left alone


def test_bad_inputs_are_rejected_before_work(models):
    model = models["llama"]
    basis = load_basis("mlp_neurons", model)
    prompt = model.tokenizer(PROMPT)["input_ids"]
    with pytest.raises(ValueError, match="max_feature_nodes must be at least 1"):
        attribute(model, basis, prompt, [[4, 5]], max_feature_nodes=0)
    with pytest.raises(SampleMismatchError, match="outside the model's vocabulary"):
        attribute(model, basis, prompt, [[4, 5000]], max_feature_nodes=5)
    with pytest.raises(SampleMismatchError, match="outside the model's vocabulary"):
        attribute(model, basis, prompt + [-1], [[4]], max_feature_nodes=5)
    with pytest.raises(SampleMismatchError, match="no tokens"):
        attribute(model, basis, prompt, [[4], []], max_feature_nodes=5)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        attribute(model, basis, prompt[:1], [[4]], max_feature_nodes=5)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model = tiny_llama(seed=0)
    path = tmp_path_factory.mktemp("tiny_model")
    model.hf.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def _write_samples(tmp_path, model_dir, conts, prompt_ids=None, model_name=None):
    from transformers import AutoTokenizer

    from semmech.model.loading import format_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    model_input, ids = format_prompt(tok, PROMPT, True)
    df = pd.DataFrame(
        {
            "prompt_id": "p",
            "sample_idx": range(len(conts)),
            "text": ["x"] * len(conts),
            "token_ids": [np.asarray(c, dtype=np.int64) for c in conts],
            "n_tokens": [len(c) for c in conts],
        }
    )
    io.write_parquet(df, tmp_path / "p.parquet")
    io.write_json(
        {
            "prompt_id": "p",
            "text": PROMPT,
            "model_input": model_input,
            "prompt_token_ids": prompt_ids or ids,
            "model": model_name or str(model_dir),
            "chat_template": True,
        },
        tmp_path / "p.prompt.json",
    )
    return ids


def _run_stage(tmp_path, model_dir, attribution=None, transcoder_dir=None):
    cfg = {
        "name": str(model_dir),
        "device": "cpu",
        "dtype": "float32",
        "chat_template": True,
        "allow_download": False,
    }
    out = tmp_path / "out"
    attribution = section_defaults(
        "attribution",
        attribution or {"basis": "mlp_neurons", "max_feature_nodes": 30, "batch_size": 4},
    )
    return run_attribute(
        prompt_id="p",
        samples=tmp_path / "p.parquet",
        prompt=tmp_path / "p.prompt.json",
        model_cfg=cfg,
        attribution_cfg=attribution,
        transcoder_dir=transcoder_dir,
        out_signatures=out / "p.safetensors",
        out_nodes=out / "p.nodes.parquet",
        out_completeness=out / "p.completeness.json",
    )


def test_stage_writes_the_contract_files(tmp_path, tiny_dir):
    conts = continuations(7)
    ids = _write_samples(tmp_path, tiny_dir, conts)
    _run_stage(tmp_path, tiny_dir)
    tensors, meta = io.read_safetensors(tmp_path / "out" / "p.safetensors", required=["signatures"])
    sig = tensors["signatures"]
    assert sig.dtype == np.float32 and sig.shape[0] == len(conts)
    assert meta["basis"] == "mlp_neurons" and meta["model"] == str(tiny_dir)
    nodes = io.read_parquet(tmp_path / "out" / "p.nodes.parquet", required=NODE_COLUMNS)
    assert len(nodes) == sig.shape[1]
    assert set(nodes.kind) == {"feature", "token"}
    assert nodes.position.min() == 1 and nodes.position.max() == len(ids) - 1
    assert nodes.token_id.tolist() == [ids[p] for p in nodes.position]
    diag = json.loads((tmp_path / "out" / "p.completeness.json").read_text())
    assert diag["passed"] and diag["max_rel_error"] < COMPLETENESS_TOLERANCE
    assert diag["aggregate"] == meta["aggregate"] == "mean"  # the schema default
    assert [r["sample_idx"] for r in diag["continuations"]] == list(range(len(conts)))
    assert {
        "target",
        "prefix_kept",
        "continuation",
        "constant",
        "bias",
        "prefix_dropped",
        "rel_error",
        "prefix_share",
    } <= set(diag["continuations"][0])
    first = (tmp_path / "out" / "p.safetensors").read_bytes()
    _run_stage(tmp_path, tiny_dir)  # deterministic, to the byte
    assert (tmp_path / "out" / "p.safetensors").read_bytes() == first
    _run_stage(
        tmp_path,
        tiny_dir,
        {"basis": "mlp_neurons", "max_feature_nodes": 30, "batch_size": 4, "aggregate": "sum"},
    )
    tensors, meta = io.read_safetensors(tmp_path / "out" / "p.safetensors")
    diag = json.loads((tmp_path / "out" / "p.completeness.json").read_text())
    assert diag["aggregate"] == meta["aggregate"] == "sum" and diag["passed"]
    assert meta["target"] == "sum demeaned logit over the continuation's tokens"
    lengths = np.array([len(c) for c in conts], dtype=np.float64)[:, None]
    np.testing.assert_allclose(tensors["signatures"], sig * lengths, rtol=1e-4, atol=1e-6)


def test_stage_with_a_transcoder(tmp_path, tiny_dir):
    from semmech.model.loading import load_model

    conts = continuations(8, lengths=(2, 5, 3))
    _write_samples(tmp_path, tiny_dir, conts)
    tc_dir = tmp_path / "tc"
    transcoder_basis(
        load_model(str(tiny_dir), device="cpu", dtype="float32"), tc_dir, active_layers=(1,)
    )
    _run_stage(
        tmp_path,
        tiny_dir,
        {"basis": "transcoder", "max_feature_nodes": 10, "batch_size": 2},
        transcoder_dir=tc_dir,
    )
    nodes = io.read_parquet(tmp_path / "out" / "p.nodes.parquet")
    assert set(nodes.kind) == {"feature", "error", "token"}
    assert set(nodes[nodes.kind == "feature"].layer) == {1}
    assert sorted(set(nodes[nodes.kind == "error"].layer)) == [0, 1, 2]
    diag = json.loads((tmp_path / "out" / "p.completeness.json").read_text())
    assert diag["basis"] == "transcoder" and diag["passed"]


def test_stage_rejects_samples_from_another_tokenizer(tmp_path, tiny_dir):
    conts = continuations(9, lengths=(2, 3))
    ids = _write_samples(tmp_path, tiny_dir, conts, prompt_ids=None)
    _write_samples(tmp_path, tiny_dir, conts, prompt_ids=[ids[0]] + [5] * (len(ids) - 1))
    with pytest.raises(SampleMismatchError, match="do not match the model tokenizer"):
        _run_stage(tmp_path, tiny_dir)
    _write_samples(tmp_path, tiny_dir, conts, model_name="other-model")
    with pytest.raises(SampleMismatchError, match="other-model"):
        _run_stage(tmp_path, tiny_dir)
    _write_samples(tmp_path, tiny_dir, [[4, 99999]])
    with pytest.raises(SampleMismatchError, match="vocabulary"):
        _run_stage(tmp_path, tiny_dir)
    _write_samples(tmp_path, tiny_dir, conts)
    # The schema (the one place of config constraints) refuses it, naming the key and bound.
    with pytest.raises(
        ValueError, match="attribution.max_feature_nodes: 0 is less than the minimum of 1"
    ):
        _run_stage(tmp_path, tiny_dir, {"basis": "mlp_neurons", "max_feature_nodes": 0})
    with pytest.raises(ValueError, match="transcoder_dir"):
        _run_stage(tmp_path, tiny_dir, {"basis": "transcoder", "max_feature_nodes": 5})


# A Qwen3-style template: with enable_thinking false it closes an empty thinking block after the
# generation prompt; left undefined (the default), thinking stays on.
THINKING_TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant : "
    "{% if enable_thinking is defined and enable_thinking is false %}<think> </think> "
    "{% endif %}{% endif %}"
)


def test_chat_template_kwargs_are_applied_recorded_and_checked(tmp_path):
    from transformers import AutoTokenizer

    from semmech.config import section_defaults
    from semmech.model.loading import format_prompt
    from semmech.model.source import ChatTemplateError, check_chat_template_kwargs
    from semmech.stages.sampling import run_sample

    model = tiny_llama(seed=0)
    model.tokenizer.chat_template = THINKING_TEMPLATE
    model_dir = tmp_path / "thinking_model"
    model.hf.save_pretrained(model_dir)
    model.tokenizer.save_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    off = {"enable_thinking": False}
    on_text, on_ids = format_prompt(tok, PROMPT, True)
    off_text, off_ids = format_prompt(tok, PROMPT, True, off)
    assert on_text.endswith("<s> assistant : ") and "<think>" not in on_text
    assert off_text == on_text + "<think> </think> " and len(off_ids) == len(on_ids) + 2
    assert format_prompt(tok, PROMPT, True, {"enable_thinking": True})[0] == on_text

    model_cfg = section_defaults(
        "model",
        {"name": str(model_dir), "device": "cpu", "dtype": "float32", "chat_template_kwargs": off},
    )
    run_sample(
        prompt_id="p",
        text=PROMPT,
        model_cfg=model_cfg,
        sampling_cfg={"n_continuations": 3, "max_new_tokens": 3, "batch_size": 3, "patience": 1},
        seed=0,
        out_table=tmp_path / "p.parquet",
        out_prompt=tmp_path / "p.prompt.json",
    )
    record = json.loads((tmp_path / "p.prompt.json").read_text())
    assert record["chat_template_kwargs"] == {"enable_thinking": False}
    assert record["model_input"] == off_text and record["prompt_token_ids"] == off_ids
    attribution = section_defaults("attribution", {"max_feature_nodes": 10})
    out = {
        "out_signatures": tmp_path / "o.safetensors",
        "out_nodes": tmp_path / "o.nodes.parquet",
        "out_completeness": tmp_path / "o.completeness.json",
    }
    common = dict(
        prompt_id="p",
        samples=tmp_path / "p.parquet",
        prompt=tmp_path / "p.prompt.json",
        attribution_cfg=attribution,
        transcoder_dir=None,
        **out,
    )
    run_attribute(model_cfg=model_cfg, **common)  # the same keyword arguments: accepted
    other = {**model_cfg, "chat_template_kwargs": {}}
    with pytest.raises(SampleMismatchError, match="chat_template_kwargs {'enable_thinking': Fals"):
        run_attribute(model_cfg=other, **common)

    # Keyword arguments with no template to take them: one clear error, before any model loads.
    model.tokenizer.chat_template = None
    bare_dir = tmp_path / "bare_model"
    model.hf.config.save_pretrained(bare_dir)
    model.tokenizer.save_pretrained(bare_dir)
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        check_chat_template_kwargs(off, True, str(bare_dir))
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        format_prompt(AutoTokenizer.from_pretrained(bare_dir), PROMPT, True, off)
    with pytest.raises(ChatTemplateError, match="model.chat_template is false"):
        check_chat_template_kwargs(off, False, str(model_dir))
    with pytest.raises(ChatTemplateError, match=r"may not set \['tokenize'\]"):
        check_chat_template_kwargs({"tokenize": True}, True, str(model_dir))
    check_chat_template_kwargs(off, True, str(model_dir))  # a template: fine
    check_chat_template_kwargs({}, True, str(bare_dir))  # nothing to pass: fine


# --------------------------------------------------------------------------------------------
# The real default model
# --------------------------------------------------------------------------------------------

REAL_PROMPTS = {
    "mercury": "What is Mercury?",
    "java": "What is Java known for?",
    "bank": "Why would someone go to the bank?",
}


@pytest.fixture(scope="module")
def real_samples(default_model):
    from semmech.model.loading import format_prompt
    from semmech.views.sampling import SamplingSettings, sample_continuations

    settings = SamplingSettings.from_config(
        dict(n_continuations=10, max_new_tokens=10, batch_size=10, patience=1)
    )
    out = {}
    for k, (pid, text) in enumerate(REAL_PROMPTS.items()):
        _, ids = format_prompt(default_model.tokenizer, text, True)
        df = sample_continuations(default_model, pid, ids, settings, seed=k)
        out[pid] = (ids, [list(map(int, t)) for t in df["token_ids"]])
    return out


@pytest.fixture(scope="module")
def real_attributions(default_model, real_samples):
    basis = load_basis("mlp_neurons", default_model)
    return basis, {
        pid: attribute(default_model, basis, ids, conts, max_feature_nodes=512, batch_size=8)
        for pid, (ids, conts) in real_samples.items()
    }


def test_completeness_on_the_default_model(default_model, real_samples, real_attributions):
    basis, results = real_attributions
    for pid, res in results.items():
        ids, conts = real_samples[pid]
        assert res.max_rel_error < COMPLETENESS_TOLERANCE
        target = [r["target"] for r in res.completeness]
        np.testing.assert_allclose(
            target, true_targets(default_model, ids, conts[: len(target)]), rtol=1e-4, atol=1e-4
        )
        shares = [r["prefix_share"] for r in res.completeness]
        assert np.all(np.isfinite(shares))


def test_ablating_top_nodes_hurts_more_than_random_nodes(
    default_model, real_samples, real_attributions
):
    """Removing a continuation's 10 most supportive feature nodes lowers its log-probability
    more than removing 10 random feature nodes of the same node set (paired, one-sided test)."""
    from scipy.stats import wilcoxon

    basis, results = real_attributions
    rng = np.random.default_rng(0)
    drops_top, drops_rand = [], []
    for pid, res in results.items():
        ids, conts = real_samples[pid]
        nodes = res.nodes.feature_nodes()
        K = len(nodes)
        top = [np.argsort(-res.signatures[n, :K].numpy())[:10] for n in range(len(conts))]
        rand = [rng.choice(np.setdiff1d(np.arange(K), t), 10, replace=False) for t in top]
        base = _logprobs(default_model, basis, ids, conts, nodes, None)
        drops_top += list(base - _logprobs(default_model, basis, ids, conts, nodes, top))
        drops_rand += list(base - _logprobs(default_model, basis, ids, conts, nodes, rand))
    drops_top, drops_rand = np.array(drops_top), np.array(drops_rand)
    assert len(drops_top) >= 20
    assert drops_top.mean() > drops_rand.mean()
    assert np.mean(drops_top > drops_rand) >= 0.7
    assert wilcoxon(drops_top, drops_rand, alternative="greater").pvalue < 0.01


def _logprobs(model, basis, prompt, conts, nodes, chosen) -> np.ndarray:
    """Mean log-prob of each continuation with each row's chosen nodes removed (α·d → 0)."""
    M = len(prompt)
    S = M + max(len(c) for c in conts)
    ids = torch.full((len(conts), S), model.tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for r, c in enumerate(conts):
        ids[r, : M + len(c)] = torch.tensor(prompt + c)
        mask[r, : M + len(c)] = 1
    scales = torch.zeros(len(conts), len(nodes))
    if chosen is not None:
        for r, sel in enumerate(chosen):
            scales[r, torch.as_tensor(sel)] = -1.0
    used = scales.abs().sum(0) > 0
    T = S - M
    with torch.no_grad(), model.lm.trace(input_ids=ids, attention_mask=mask, logits_to_keep=T + 1):
        steer_nodes(model, basis, [n for n, u in zip(nodes, used) if u], scales[:, used])
        logits = model.lm.output.logits.save()
    lp = logits.double().log_softmax(-1)  # position k here is sequence position M - 1 + k
    out = []
    for r, c in enumerate(conts):
        out.append(float(lp[r, torch.arange(len(c)), torch.tensor(c)].mean()))
    return np.array(out)
