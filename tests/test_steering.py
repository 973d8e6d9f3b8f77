"""Steering (METHOD §7): the intervention against an independent hook implementation, ε = 0
exactness, causality in position, agreement with attribution at small ε, prefix-only steered
generation, one code path for every method, the stage's files, bad input, and the aggregate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic_run import write_signatures
from test_attribution import PROMPT, continuations, transcoder_basis, true_targets
from tiny_models import TINY_MODELS, tiny_llama

from semmech import io
from semmech.cluster.medians import weighted_median
from semmech.cluster.objective import normalise_mechanistic
from semmech.config import section_defaults
from semmech.model.bases import load_basis
from semmech.model.layout import logits_from_hidden
from semmech.stages import steering as steer_stage
from semmech.stats import pearson, rankdata, slope, spearman
from semmech.steer import measure
from semmech.steer.intervention import Intervention, steered_generate, steered_prefix
from semmech.steer.measure import (
    CURVE_COLUMNS,
    METRIC_COLUMNS,
    metrics_frame,
    steer_sources,
    steered_targets,
)
from semmech.steer.settings import SteeringInputError, SteeringSettings, check_steering_configs
from semmech.steer.sources import (
    METHODS,
    OTHER_CLUSTERS,
    Source,
    measured_members,
    plan_sources,
    random_nodes,
    top_nodes,
)
from semmech.views.attribution import attribute, select_nodes


@pytest.fixture(scope="module")
def llama():
    return tiny_llama(seed=0)


def _basis(model, name, tmp_path):
    return (
        load_basis("mlp_neurons", model)
        if name == "mlp_neurons"
        else transcoder_basis(model, tmp_path)
    )


# --------------------------------------------------------------------------------------------
# The intervention itself
# --------------------------------------------------------------------------------------------


def hooked_targets(model, basis, prompt_ids, conts, nodes, scales) -> np.ndarray:
    """Reference: plain PyTorch hooks on a full (prefix + continuation) forward, one row at a
    time: read α at each node's site, add scale·α·d to the MLP output at its position."""
    hf = model.hf
    layout = basis.layout
    out = []
    for c in conts:
        ids = torch.tensor([list(prompt_ids) + list(c)])
        handles, site = [], {}
        for layer in sorted({n[0] for n in nodes}):
            mine = [(k, n) for k, n in enumerate(nodes) if n[0] == layer]

            def pre(mod, args, layer=layer, site=site):
                site[layer] = args[0].detach()

            def post(mod, args, output, layer=layer, mine=mine, site=site):
                alpha = basis.encode(layer, site[layer])
                output = output.clone()
                for k, (_, p, f) in mine:
                    output[:, p] += scales[k] * alpha[:, p, f, None] * basis.decoder(layer)[f]
                return output

            handles.append(hf.get_submodule(basis.site_path(layer)).register_forward_pre_hook(pre))
            handles.append(hf.get_submodule(layout.layers[layer].mlp).register_forward_hook(post))
        try:
            with torch.no_grad():
                logits = hf(ids).logits[0].double()
        finally:
            for h in handles:
                h.remove()
        M = len(prompt_ids)
        lt = logits[M - 1 : M - 1 + len(c)]
        out.append(float((lt[torch.arange(len(c)), torch.tensor(c)] - lt.mean(-1)).mean()))
    return np.array(out)


@pytest.mark.parametrize("basis_name", ["mlp_neurons", "transcoder"])
@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_intervention_matches_an_independent_hook_implementation(name, basis_name, tmp_path):
    model = TINY_MODELS[name](seed=0)
    basis = _basis(model, basis_name, tmp_path)
    prompt = model.tokenizer(PROMPT)["input_ids"]
    conts = continuations(2, lengths=(1, 4, 6, 3))
    active = select_nodes(model, basis, prompt, 60).feature_nodes()  # α ≠ 0: sorted by layer
    nodes = (active[0], active[-1], active[len(active) // 2])
    ivs = [Intervention(), Intervention(nodes, (0.7, -1.3, 2.0)), Intervention(nodes[:1], (-1.0,))]
    pairs = np.array([(i, n) for i in range(len(ivs)) for n in range(len(conts))])
    values, stats = steered_targets(model, basis, prompt, conts, ivs, pairs, batch_size=3)
    values = values.reshape(len(ivs), len(conts))
    # ε = 0 (no nodes): the unsteered model; the lm head is never run, the target still matches.
    np.testing.assert_allclose(values[0], true_targets(model, prompt, conts), rtol=1e-4, atol=1e-5)
    for i, iv in enumerate(ivs[1:], start=1):
        ref = hooked_targets(model, basis, prompt, conts, iv.nodes, iv.scales)
        np.testing.assert_allclose(values[i], ref, rtol=1e-4, atol=1e-5)
        assert np.abs(values[i] - values[0]).max() > 1e-4  # the intervention does something
    assert stats.prefix_forwards == 1 and stats.forwards == stats.min_forwards
    assert stats.rows == len(pairs)


def test_eps_zero_reproduces_the_unsteered_pass_exactly(llama):
    basis = load_basis("mlp_neurons", llama)
    prompt = llama.tokenizer(PROMPT)["input_ids"]
    conts = continuations(3)
    nodes = ((1, 3, 5), (0, 2, 7), (2, 5, 11))
    ivs = [
        Intervention(),
        Intervention(nodes, (0.0, 0.0, 0.0)),
        Intervention(nodes, (1.0, -1.0, 0.5)),
    ]
    hidden, _ = steered_prefix(llama, basis, prompt, ivs)
    assert torch.equal(hidden[0], hidden[1])  # adding 0·α·d leaves every value bit-identical
    assert not torch.equal(hidden[0], hidden[2])
    # Through the whole measurement: one row per forward, so batch composition is the same.
    pairs = np.array([(i, n) for i in range(2) for n in range(len(conts))])
    values, _ = steered_targets(llama, basis, prompt, conts, ivs, pairs, batch_size=1)
    assert np.array_equal(values[: len(conts)], values[len(conts) :])


@pytest.mark.parametrize("basis_name", ["mlp_neurons", "transcoder"])
def test_steering_changes_nothing_before_the_node_position(llama, basis_name, tmp_path):
    basis = _basis(llama, basis_name, tmp_path)
    prompt = llama.tokenizer(PROMPT)["input_ids"]
    layer = basis.feature_layers()[0]
    ivs = [Intervention()] + [
        Intervention(((layer, p, 2), (layer, p, 9)), (1.5, -2.0)) for p in range(1, len(prompt))
    ]
    hidden, cache = steered_prefix(llama, basis, prompt, ivs)
    for p in range(1, len(prompt)):
        assert torch.equal(hidden[p, :p], hidden[0, :p]), p
        assert not torch.allclose(hidden[p, p], hidden[0, p]), p
        for lay in cache.layers:  # the keys/values the continuation will read, too
            assert torch.equal(lay.keys[p, :, :p], lay.keys[0, :, :p])


@pytest.mark.parametrize("basis_name", ["mlp_neurons", "transcoder"])
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_small_eps_effect_has_the_sign_attribution_predicts(name, basis_name, tmp_path):
    """To first order, steering node j by ε changes the target by ε·α_j⟨d_j, ∇⟩; attribution
    gives α_j⟨d_j, g⟩ with g the gradient under frozen attention and norms. The two agree in
    sign for the large nodes (not always: the freezing is an approximation)."""
    model = TINY_MODELS[name](seed=0)
    basis = _basis(model, basis_name, tmp_path)
    prompt = model.tokenizer(PROMPT)["input_ids"]
    conts = continuations(1)[:4]
    res = attribute(model, basis, prompt, conts, max_feature_nodes=40, batch_size=4)
    nf = res.nodes.n_feature_nodes
    keys = res.nodes.feature_nodes()
    eps = 1e-3
    agree, ratio = [], []
    for n in range(len(conts)):
        A = res.signatures[n, :nf].numpy()
        top = np.argsort(-np.abs(A), kind="stable")[:5]
        ivs = [Intervention()] + [Intervention((keys[j],), (e,)) for j in top for e in (eps, -eps)]
        v, _ = steered_targets(
            model,
            basis,
            prompt,
            conts,
            ivs,
            np.array([(i, n) for i in range(len(ivs))]),
            batch_size=16,
        )
        d = (v[1:] - v[0]).reshape(len(top), 2)
        agree += list(np.sign(d[:, 0]) == np.sign(A[top]))
        agree += list(np.sign(d[:, 1]) == -np.sign(A[top]))
        ratio += list(d[:, 0] / eps / A[top])
    assert np.mean(agree) >= 0.8, agree
    assert 0.5 < np.median(ratio) < 2.0, ratio


def test_steered_generation_steers_the_prefix_step_only(llama):
    """Greedy (top_p → 0) steered generation equals decoding by hand from the steered prefix's
    KV cache with no further intervention; ε = 0 equals plain generation."""
    basis = load_basis("mlp_neurons", llama)
    prompt = llama.tokenizer(PROMPT)["input_ids"]
    nodes = [(0, 3, 5), (1, 5, 7), (2, 6, 2)]
    signs = [1.0, -1.0, 1.0]
    cfg = {"max_new_tokens": 6, "top_p": 1e-9, "stop_chars": "\x00"}
    got = steered_generate(llama, basis, prompt, nodes, signs, (-3.0, 0.0, 3.0), 2, cfg, seed=1)
    assert [(e, i) for e, i, *_ in got] == [
        (-3.0, 0),
        (-3.0, 1),
        (0.0, 0),
        (0.0, 1),
        (3.0, 0),
        (3.0, 1),
    ]
    for e, _, toks, text, _ in got:
        iv = Intervention(tuple(nodes), tuple(e * s for s in signs))
        hidden, cache = steered_prefix(llama, basis, prompt, [iv])
        expect = []
        h = hidden[:, -1:]
        pos = len(prompt)
        for _ in range(6):
            tok = int(logits_from_hidden(basis.layout, llama.hf, h.float())[0, -1].argmax())
            if tok in llama.eos_token_ids:
                break
            expect.append(tok)
            with torch.no_grad():
                out = llama.hf.base_model(
                    input_ids=torch.tensor([[tok]]),
                    past_key_values=cache,
                    position_ids=torch.tensor([[pos]]),
                    use_cache=True,
                )
            h, cache, pos = out.last_hidden_state, out.past_key_values, pos + 1
        assert toks == expect, (e, toks, expect)
        assert text == llama.tokenizer.decode(toks)
    by_eps = {e: toks for e, _, toks, _, _ in got}
    assert by_eps[-3.0] != by_eps[0.0] or by_eps[3.0] != by_eps[0.0]
    ids = torch.tensor([prompt])
    plain = llama.hf.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=6,
        do_sample=False,
        pad_token_id=2,
    )[0, len(prompt) :].tolist()
    cut = next((i for i, t in enumerate(plain) if t in llama.eos_token_ids), len(plain))
    assert by_eps[0.0] == plain[:cut]


# --------------------------------------------------------------------------------------------
# Sources and their selection
# --------------------------------------------------------------------------------------------


def test_top_nodes_selection_modes():
    v = np.array([0.0, 3.0, -5.0, 1.0, -1.0, 0.0, 2.0, 9.0])
    feats = np.array([0, 1, 2, 3, 4, 5, 6])  # column 7 is not a feature node (error/token)
    cols, signs = top_nodes(v, feats, 3, "full")
    assert cols.tolist() == [2, 1, 6] and signs.tolist() == [-1, 1, 1]
    cols, signs = top_nodes(v, feats, 3, "positive")
    assert cols.tolist() == [1, 6, 3] and (signs > 0).all()
    cols, signs = top_nodes(v, feats, 5, "negative")
    assert cols.tolist() == [2, 4] and (signs < 0).all()  # fewer than B exist; zeros never
    cols, _ = top_nodes(v, feats, 10, "full")
    assert 0 not in cols and 5 not in cols and 7 not in cols
    assert top_nodes(v, feats, 2, "full")[0].tolist() == [2, 1]
    with pytest.raises(SteeringInputError, match="selection"):
        top_nodes(v, feats, 2, "largest")


def test_random_nodes_are_seeded_distinct_features():
    feats = np.arange(3, 50)
    a = random_nodes(feats, 10, np.random.default_rng(4))
    b = random_nodes(feats, 10, np.random.default_rng(4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert len(set(a[0].tolist())) == 10 and set(a[0].tolist()) <= set(feats.tolist())
    assert set(a[1].tolist()) <= {-1.0, 1.0}


def test_measured_members_hold_out_the_source_and_pool_the_other_clusters():
    labels = np.array([0, 0, 0, 1, 1, 2, 0, 1])
    rank = np.arange(8)[::-1].copy()
    m = measured_members(labels, rank, cluster=0, exclude=6, cap=None)
    assert set(m) == {0, OTHER_CLUSTERS}
    assert m[0].tolist() == [0, 1, 2] and m[OTHER_CLUSTERS].tolist() == [3, 4, 5, 7]
    # capped: the ones ranked first, the pool the same size whatever the number of clusters
    m = measured_members(labels, rank, cluster=0, exclude=-1, cap=2)
    assert m[0].tolist() == [2, 6] and m[OTHER_CLUSTERS].tolist() == [5, 7]
    m = measured_members(labels, rank, cluster=1, exclude=3, cap=2)
    assert m[1].tolist() == [4, 7] and m[OTHER_CLUSTERS].tolist() == [5, 6]
    # a one-member cluster has no held-out member (KM-Sem's source is no member: exclude -1)
    assert set(measured_members(labels, rank, cluster=2, exclude=-1, cap=None)) == {OTHER_CLUSTERS}


# --------------------------------------------------------------------------------------------
# A synthetic prompt on the tiny model, through the stage
# --------------------------------------------------------------------------------------------


def _write_prompt(
    root: Path,
    model,
    basis_meta="mlp_neurons",
    n=12,
    labels=None,
    km=None,
    max_nodes=30,
    configs=((1.0, 0.5), (0.5, 0.1)),
) -> dict[str, Path]:
    pid = "toy"
    prompt = model.tokenizer(PROMPT)["input_ids"]
    g = torch.Generator().manual_seed(7)
    conts = [
        torch.randint(3, 70, (int(k),), generator=g).tolist()
        for k in torch.randint(1, 7, (n,), generator=g)
    ]
    basis = load_basis("mlp_neurons", model)
    res = attribute(model, basis, prompt, conts, max_feature_nodes=max_nodes, batch_size=6)
    A = res.signatures.double().numpy()
    P = np.exp(-np.linspace(0.5, 2.0, n))
    rng = np.random.default_rng(0)
    E = rng.standard_normal((n, 8))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    labels = np.array([0] * 5 + [1] * 6 + [2] * (n - 11)) if labels is None else np.asarray(labels)
    km = np.arange(n) % 3 if km is None else np.asarray(km)
    norm = normalise_mechanistic(A, P)
    K = int(labels.max()) + 1
    arrays = {
        "H0": norm.H0,
        "scale": np.asarray(norm.scale),
        "beta": np.array([b for b, _ in configs]),
        "gamma": np.array([g for _, g in configs]),
        "beta_e": np.array([b * g for b, g in configs]),
        "beta_a": np.array([b * (1 - g) for b, g in configs]),
        "beta_crit": np.array([1.0] * len(configs)),
        "K": np.array([K] * len(configs)),
        "labels": np.stack([labels] * len(configs)),
    }
    for i in range(len(configs)):
        arrays[f"cfg{i:03d}_centres_e"] = np.stack(
            [P[labels == c] @ E[labels == c] / P[labels == c].sum() for c in range(K)]
        )
        arrays[f"cfg{i:03d}_centres_a"] = np.stack(
            [weighted_median(norm.A_tilde[labels == c], P[labels == c]) for c in range(K)]
        )
        arrays[f"cfg{i:03d}_weights"] = np.array([P[labels == c].sum() / P.sum() for c in range(K)])
    f = {
        k: root / v
        for k, v in {
            "samples": "samples/toy.parquet",
            "prompt": "samples/toy.prompt.json",
            "signatures": "attribution/toy.safetensors",
            "nodes": "attribution/toy.nodes.parquet",
            "embeddings": "embeddings/toy.npz",
            "clusters": "clusters/toy.npz",
            "baselines": "baselines/toy.labels.parquet",
        }.items()
    }
    io.write_parquet(
        pd.DataFrame(
            {
                "prompt_id": pid,
                "sample_idx": np.arange(n),
                "text": [" ".join(map(str, c)) for c in conts],
                "token_ids": [np.asarray(c, dtype=np.int64) for c in conts],
                "n_tokens": [len(c) for c in conts],
                "mean_logprob": np.log(P),
                "weight": P,
                "stop_reason": "length",
            }
        ),
        f["samples"],
    )
    io.write_json(
        {
            "prompt_id": pid,
            "text": PROMPT,
            "model_input": PROMPT,
            "prompt_token_ids": prompt,
            "model": model.name,
            "chat_template": False,
        },
        f["prompt"],
    )
    write_signatures(
        Path(f["signatures"]),
        res.signatures,
        metadata={"basis": basis_meta, "model": model.name, "prompt_id": pid},
        rows=res.completeness,
    )
    io.write_parquet(res.nodes.table(model.tokenizer), f["nodes"])
    io.write_npz(f["embeddings"], embeddings=E.astype(np.float32), sample_idx=np.arange(n))
    io.write_npz(f["clusters"], **arrays)
    io.write_parquet(
        pd.DataFrame(
            {
                "prompt_id": pid,
                "method": "km_sem",
                "k": K,
                "sample_idx": np.arange(n),
                "label": km.astype(np.int64),
            }
        ),
        f["baselines"],
    )
    return f


def _run_stage(root, f, model, monkeypatch, steering=None, attribution=None, seed=3):
    monkeypatch.setattr(steer_stage, "load_configured_model", lambda cfg: model)
    out = {
        k: root / "steering" / f"toy.{k}.{ext}"
        for k, ext in (
            ("curves", "parquet"),
            ("metrics", "parquet"),
            ("generations", "parquet"),
            ("stats", "json"),
        )
    }
    steering = {
        "configs": [[1.0, 0.5]],
        "budgets": [2, 4],
        "batch_size": 16,
        "n_generate": 2,
        **(steering or {}),
    }
    attribution = section_defaults("attribution", attribution or {"basis": "mlp_neurons"})
    res = steer_stage.run_steer(
        prompt_id="toy",
        samples=f["samples"],
        prompt=f["prompt"],
        signatures=f["signatures"],
        nodes=f["nodes"],
        embeddings=f["embeddings"],
        clusters=f["clusters"],
        baseline_labels=f["baselines"],
        model_cfg={"name": model.name},
        attribution_cfg=attribution,
        steering_cfg=steering,
        sampling_cfg={"max_new_tokens": 4},
        transcoder_dir=None,
        seed=seed,
        out_curves=out["curves"],
        out_metrics=out["metrics"],
        out_generations=out["generations"],
        out_stats=out["stats"],
    )
    return res, out


@pytest.fixture(scope="module")
def toy_files(llama, tmp_path_factory):
    return _write_prompt(tmp_path_factory.mktemp("toy"), llama)


def test_stage_writes_the_contract_files(llama, toy_files, tmp_path, monkeypatch, caplog):
    with caplog.at_level("WARNING", logger="semmech"):
        res, out = _run_stage(tmp_path, toy_files, llama, monkeypatch)
    assert "RD cluster 2 at beta=1 gamma=0.5 has 1 member" in caplog.text  # skipped, not fatal
    curves = pd.read_parquet(out["curves"])
    metrics = pd.read_parquet(out["metrics"])
    gens = pd.read_parquet(out["generations"])
    assert list(curves.columns) == CURVE_COLUMNS
    assert list(metrics.columns[:13]) == [
        "prompt_id",
        "method",
        "selection",
        "budget",
        "beta",
        "gamma",
        "cluster",
        "mass",
        "n_heldout",
        "pearson",
        "spearman",
        "frac_moved",
        "specificity",
    ]
    # every method, both budgets, RD clusters 0 and 1 and KM-Sem clusters 0..2
    got = metrics.groupby(["method", "budget"])["cluster"].apply(sorted).to_dict()
    for B in (2, 4):
        assert got[("RD", B)] == [0, 1] and got[("Single", B)] == [0, 1]
        assert got[("Random", B)] == [0, 1] and got[("KM-Sem", B)] == [0, 1, 2]
    rd = metrics[metrics.method == "RD"]
    assert (rd["n_heldout"].to_numpy() == np.array([4, 4, 5, 5])).all()  # the source is held out
    assert np.isfinite(metrics["specificity"]).all() and np.isfinite(metrics["pearson"]).all()
    masses = dict(zip(rd["cluster"], rd["mass"]))
    P = pd.read_parquet(toy_files["samples"])["weight"].to_numpy()
    assert math.isclose(masses[0], P[:5].sum() / P.sum())
    # curves: Δ(0) = 0, frac_moved NaN at 0, one row per (source, measured cluster, ε)
    assert (curves.loc[curves.epsilon == 0, "delta"] == 0).all()
    assert curves.loc[curves.epsilon == 0, "frac_moved"].isna().all()
    # ... each source on its own cluster and on the pooled other clusters
    assert len(curves) == 7 * (2 * (3 * 2 * 2) + 2 * 3 * 2)
    own = curves[curves.own]
    assert (own.source_cluster == own.measured_cluster).all()
    assert set(curves.loc[~curves.own, "measured_cluster"]) == {OTHER_CLUSTERS}
    # metrics are reductions of the curves
    for r in metrics.itertuples():
        c = curves[
            (curves.method == r.method)
            & (curves.budget == r.budget)
            & (curves.source_cluster == r.cluster)
        ]
        o = c[c.own].sort_values("epsilon")
        assert math.isclose(r.pearson, pearson(o.epsilon, o.delta), rel_tol=1e-12)
        assert math.isclose(r.spearman, spearman(o.epsilon, o.delta), rel_tol=1e-12, abs_tol=1e-15)
        effects = {
            k: slope(g.sort_values("epsilon").epsilon, g.sort_values("epsilon").delta)
            for k, g in c.groupby("measured_cluster")
        }
        assert set(effects) == {r.cluster, OTHER_CLUSTERS}
        assert r.other_effect == effects[OTHER_CLUSTERS]
        assert math.isclose(
            r.specificity,
            effects[r.cluster] - effects[OTHER_CLUSTERS],
            rel_tol=1e-9,
            abs_tol=1e-12,
        )
        assert math.isclose(r.frac_moved, o.frac_moved.dropna().mean(), rel_tol=1e-12)
    # the steering moves the target; the random control's effect is not forced to be zero
    assert (metrics.loc[metrics.method == "RD", "effect"].abs() > 1e-4).all()
    # generations of the heaviest RD cluster at ε = -1, 0, 1
    assert sorted(gens.epsilon.unique()) == [-1.0, 0.0, 1.0] and len(gens) == 6
    assert (gens.method == "RD").all() and (gens.cluster == 0).all() and (gens.budget == 4).all()
    stats = io.read_json(out["stats"])
    assert stats["forwards"] == stats["prefix_forwards"] + stats["continuation_forwards"]
    assert (
        stats["min_forwards"]
        <= stats["forwards"]
        <= stats["min_forwards"] + stats["prefix_forwards"]
    )
    assert stats["forwards"] < stats["naive_forwards"]
    # same seed -> identical bytes (parquet writer is deterministic)
    res2, out2 = _run_stage(tmp_path / "again", toy_files, llama, monkeypatch)
    for k in ("curves", "metrics", "generations"):
        assert out[k].read_bytes() == out2[k].read_bytes(), k


def test_every_method_goes_through_one_measurement_call(llama, toy_files, tmp_path, monkeypatch):
    """RD, KM-Sem, Single and the random control are Sources of the same type, measured in a
    single call of the same function: only the source differs."""
    calls = []
    real = measure.steered_targets

    def spy(model, basis, prompt_ids, conts, interventions, pairs, **kw):
        calls.append((list(interventions), np.asarray(pairs)))
        return real(model, basis, prompt_ids, conts, interventions, pairs, **kw)

    monkeypatch.setattr(measure, "steered_targets", spy)
    res, _ = _run_stage(tmp_path, toy_files, llama, monkeypatch)
    assert len(calls) == 1
    assert {s.method for s in res.sources} == set(METHODS)
    assert all(type(s) is Source for s in res.sources)
    ivs = calls[0][0]
    inp = _inputs(toy_files)
    for s in res.sources:
        nodes = tuple(inp.node_keys(s.columns))
        assert any(iv.nodes == nodes for iv in ivs), s.method


def _inputs(f, settings=None, basis="mlp_neurons", model="tiny-llama"):
    return steer_stage.read_steering_inputs(
        "toy",
        f["samples"],
        f["prompt"],
        f["signatures"],
        f["nodes"],
        f["embeddings"],
        f["clusters"],
        f["baselines"],
        settings or SteeringSettings.from_config({"configs": [[1.0, 0.5]], "budgets": [2, 4]}),
        basis,
        model,
    )


def test_sources_follow_their_definitions(toy_files):
    inp = _inputs(toy_files)
    settings = SteeringSettings.from_config({"configs": [[1.0, 0.5]], "budgets": [3]})
    sources, parts, skipped = plan_sources(inp, settings, seed=5)
    At = inp.A_tilde
    rd = inp.rd[(1.0, 0.5)]
    for s in sources:
        members = np.nonzero(parts[(s.partition, 1.0, 0.5)] == s.cluster)[0]
        if s.method == "RD":
            d = 0.5 * ((inp.embeddings[members] - rd["centres_e"][s.cluster]) ** 2).sum(
                1
            ) + 0.5 * np.abs(At[members] - rd["centres_a"][s.cluster]).sum(1)
            assert s.source_member == members[np.argmin(d)]
            vec = inp.signatures[s.source_member]
        elif s.method == "Single":
            assert s.source_member in members
            vec = inp.signatures[s.source_member]
        elif s.method == "KM-Sem":
            vec = inp.H0 + inp.scale * weighted_median(At[members], inp.weights[members])
            assert s.source_member == -1
            # raw units: the weighted median of the raw signatures themselves
            np.testing.assert_allclose(
                vec,
                weighted_median(inp.signatures[members], inp.weights[members]),
                rtol=1e-9,
                atol=1e-12,
            )
        else:
            assert s.method == "Random" and s.columns.size == 3
            continue
        feats = inp.feature_cols
        best = feats[np.argsort(-np.abs(vec[feats]), kind="stable")[:3]]
        assert set(s.columns.tolist()) == set(best.tolist())
        assert (s.signs == np.sign(vec[s.columns])).all()
    assert any("has 1 member" in x for x in skipped)
    # the normalised view is an option
    norm = plan_sources(
        inp,
        SteeringSettings.from_config(
            {"configs": [[1.0, 0.5]], "budgets": [3], "source_space": "normalised"}
        ),
        seed=5,
    )[0]
    s = next(x for x in norm if x.method == "RD")
    assert set(s.columns.tolist()) == set(
        inp.feature_cols[
            np.argsort(-np.abs(At[s.source_member][inp.feature_cols]), kind="stable")[:3]
        ].tolist()
    )


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_settings_reject_bad_values():
    with pytest.raises(SteeringInputError, match="lacks 0"):
        SteeringSettings.from_config({"epsilons": [-1, 1]})
    with pytest.raises(SteeringInputError, match="selection"):
        SteeringSettings.from_config({"selections": ["top"]})
    with pytest.raises(SteeringInputError, match="source_space"):
        SteeringSettings.from_config({"source_space": "pca"})
    with pytest.raises(SteeringInputError, match="budgets"):
        SteeringSettings.from_config({"budgets": [0]})
    s = SteeringSettings.from_config({"configs": [[1, 0.5]], "max_measured": 8})
    assert s.configs == ((1.0, 0.5),) and s.max_measured == 8 and s.nonzero_epsilons[0] == -1.0


def test_config_not_in_the_sweep_is_an_error_at_start_up():
    check_steering_configs({"configs": [[1.0, 0.5]]}, {"betas": [0.5, 1.0], "gammas": [0.5]})
    with pytest.raises(
        SteeringInputError, match=r"beta=2, gamma=0.5\) is not in the clustering sweep"
    ):
        check_steering_configs({"configs": [[2.0, 0.5]]}, {"betas": [0.5, 1.0], "gammas": [0.5]})


def test_bad_inputs_fail_before_the_model_loads(llama, toy_files, tmp_path, monkeypatch):
    def no_model(cfg):
        raise AssertionError("the model must not load for bad input")

    monkeypatch.setattr(steer_stage, "load_configured_model", no_model)
    base = {"configs": [[1.0, 0.5]], "budgets": [2]}
    with pytest.raises(
        SteeringInputError,
        match="basis 'mlp_neurons', but the configured attribution.basis is 'transcoder'",
    ):
        _run_stage(
            tmp_path,
            toy_files,
            llama,
            monkeypatch,
            steering=base,
            attribution={"basis": "transcoder", "transcoder_dir": str(tmp_path)},
        )
    with pytest.raises(SteeringInputError, match="B=31 exceeds the 30 feature nodes"):
        _run_stage(tmp_path, toy_files, llama, monkeypatch, steering={**base, "budgets": [5, 31]})
    with pytest.raises(
        SteeringInputError, match=r"\(beta=0.75, gamma=0.5\) is not in the clustering sweep"
    ):
        _run_stage(
            tmp_path, toy_files, llama, monkeypatch, steering={**base, "configs": [[0.75, 0.5]]}
        )
    with pytest.raises(SteeringInputError, match="lacks 0"):
        _run_stage(tmp_path, toy_files, llama, monkeypatch, steering={**base, "epsilons": [-1, 1]})
    other = _write_prompt(tmp_path / "tc", llama, basis_meta="transcoder")
    with pytest.raises(SteeringInputError, match="computed in basis 'transcoder'"):
        _run_stage(tmp_path, other, llama, monkeypatch, steering=base)


def test_only_singleton_clusters_write_empty_tables(llama, tmp_path, monkeypatch):
    f = _write_prompt(tmp_path / "in", llama, n=3, labels=[0, 1, 2], km=[0, 1, 2], max_nodes=10)
    res, out = _run_stage(tmp_path, f, llama, monkeypatch, steering={"budgets": [2]})
    assert len(res.skipped) == 6  # 3 RD + 3 KM-Sem singletons
    for k in ("curves", "metrics", "generations"):
        assert pd.read_parquet(out[k]).empty
    assert list(pd.read_parquet(out["metrics"]).columns) == METRIC_COLUMNS


# --------------------------------------------------------------------------------------------
# Statistics and the aggregate table
# --------------------------------------------------------------------------------------------


def test_statistics_match_scipy():
    from scipy import stats as ss

    rng = np.random.default_rng(0)
    x = np.array([-1, -0.5, -0.1, 0, 0.1, 0.5, 1.0])
    for _ in range(5):
        y = rng.standard_normal(7)
        y[2] = y[3]  # a tie
        assert math.isclose(pearson(x, y), ss.pearsonr(x, y)[0], rel_tol=1e-10)
        assert math.isclose(spearman(x, y), ss.spearmanr(x, y)[0], rel_tol=1e-10)
        assert math.isclose(slope(x, y), ss.linregress(x, y).slope, rel_tol=1e-10)
    assert np.array_equal(rankdata([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
    assert math.isnan(pearson(x, np.zeros(7))) and math.isnan(spearman([1, 1], [2, 3]))
    assert math.isnan(slope([1], [2])) and math.isnan(pearson([1], [1]))


def test_aggregate_has_a_row_for_every_method_and_budget(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for p in range(3):
        rows = [
            {
                "prompt_id": f"p{p}",
                "method": m,
                "selection": "full",
                "budget": B,
                "beta": 1.0,
                "gamma": 0.5,
                "cluster": c,
                "mass": 0.5,
                "n_heldout": 4,
                "pearson": rng.uniform(-1, 1),
                "spearman": rng.uniform(-1, 1),
                "frac_moved": rng.uniform(),
                "specificity": rng.normal(),
                "effect": 0.1,
                "other_effect": 0.0,
                "n_nodes": B,
                "source_member": 0,
                "amplify": 0.1,
                "suppress": -0.1,
                "two_sided": rng.normal(0.05, 0.02),
                "two_sided_specificity": rng.normal(0.0, 0.02),
            }
            for m in ("RD", "Single", "Random")
            for B in (5, 10)
            for c in range(2)
        ]
        paths.append(tmp_path / f"p{p}.parquet")
        io.write_parquet(metrics_frame(rows), paths[-1])
    out_csv, out_tex = tmp_path / "t.csv", tmp_path / "t.tex"
    table = steer_stage.run_aggregate_steering(
        metrics=paths,
        steering_cfg={"budgets": [5, 10], "bootstrap": 200},
        seed=0,
        out_csv=out_csv,
        out_tex=out_tex,
    )
    assert [tuple(x) for x in table[["method", "budget"]].itertuples(index=False)] == [
        (m, B) for B in (5, 10) for m in METHODS
    ]
    km = table[table.method == "KM-Sem"]
    assert (km.n_clusters == 0).all() and km.pearson_mean.isna().all()
    rd = table[(table.method == "RD") & (table.budget == 5)].iloc[0]
    allm = pd.concat([pd.read_parquet(p) for p in paths])
    sel = allm[(allm.method == "RD") & (allm.budget == 5)]
    assert rd.n_clusters == 6 and math.isclose(rd.pearson_mean, sel.pearson.mean())
    assert rd.pearson_ci_low <= rd.pearson_mean <= rd.pearson_ci_high
    assert pd.read_csv(out_csv).shape[0] == 8 and "RD" in out_tex.read_text()
    again = steer_stage.run_aggregate_steering(
        metrics=paths,
        steering_cfg={"budgets": [5, 10], "bootstrap": 200},
        seed=0,
        out_csv=tmp_path / "u.csv",
        out_tex=tmp_path / "u.tex",
    )
    pd.testing.assert_frame_equal(table, again)


def test_a_node_that_cannot_reach_the_continuation_is_flat(llama, toy_files):
    """A last-layer node at a non-final prefix position writes to a residual stream that no
    measured logit reads: its curve is within the rounding floor, so it has no correlation and
    moves no member; the random control never draws such dead nodes."""
    inp = _inputs(toy_files)
    last = llama.hf.config.num_hidden_layers - 1
    M = len(inp.prompt_ids)
    dead = inp.feature_cols[
        ((inp.nodes["layer"] == last) & (inp.nodes["position"] < M - 1)).to_numpy()[
            inp.feature_cols
        ]
    ]
    assert dead.size >= 2
    assert (inp.signatures[:, dead] == 0).all()  # attribution agrees: no path to the target
    settings = SteeringSettings.from_config({"configs": [[1.0, 0.5]], "budgets": [2]})
    sources, parts, _ = plan_sources(inp, settings, seed=5)
    for s in sources:
        if s.method == "Random":
            assert (inp.signatures[:, s.columns] != 0).any(axis=0).all()
    flat = Source("Random", 2, 1.0, 0.5, 0, "RD", dead[:2], np.array([1.0, -1.0]), -1)
    live = next(s for s in sources if s.method == "RD" and s.cluster == 0)
    res = steer_sources(
        llama, load_basis("mlp_neurons", llama), inp, [live, flat], parts, settings, 5
    )
    m = res.metrics.set_index("method")
    assert math.isnan(m.loc["Random", "pearson"]) and math.isnan(m.loc["Random", "spearman"])
    assert m.loc["Random", "frac_moved"] == 0.0
    assert abs(m.loc["Random", "effect"]) <= 1e-5 and res.noise_floor < 1e-5
    assert np.isfinite(m.loc["RD", "pearson"]) and abs(m.loc["RD", "effect"]) > 1e-3


def test_two_sided_measure_follows_its_definition(llama, toy_files, tmp_path, monkeypatch):
    """amplify / suppress are the own cluster's Δ at the largest / smallest ε; two_sided is
    the smaller of the two pushes in the right direction; its specificity subtracts the
    pooled other clusters' two-sided response (recomputed here from the curves)."""
    _, out = _run_stage(tmp_path, toy_files, llama, monkeypatch)
    curves = pd.read_parquet(out["curves"])
    metrics = pd.read_parquet(out["metrics"])
    for r in metrics.itertuples(index=False):
        c = curves[
            (curves.method == r.method)
            & (curves.selection == r.selection)
            & (curves.budget == r.budget)
            & (curves.source_cluster == r.cluster)
        ]
        eps_hi, eps_lo = c.epsilon.max(), c.epsilon.min()
        two = {}
        for k, g in c.groupby("measured_cluster"):
            d = g.set_index("epsilon")["delta"]
            two[k] = min(d[eps_hi], -d[eps_lo])
        own = c[c.own].set_index("epsilon")["delta"]
        assert r.amplify == own[eps_hi] and r.suppress == own[eps_lo]
        assert r.two_sided == min(own[eps_hi], -own[eps_lo]) == two[r.cluster]
        assert math.isclose(
            r.two_sided_specificity, two[r.cluster] - two[OTHER_CLUSTERS], abs_tol=1e-12
        )


def test_selections_are_measured_in_one_run_with_a_table_block_each(
    llama, toy_files, tmp_path, monkeypatch
):
    steering = {"selections": ["full", "positive", "negative"], "budgets": [2]}
    res, out = _run_stage(tmp_path, toy_files, llama, monkeypatch, steering=steering)
    metrics = pd.read_parquet(out["metrics"])
    assert set(metrics.selection) == {"full", "positive", "negative"}
    inp = _inputs(toy_files)
    At = inp.signatures
    for s in res.sources:
        if s.method in ("RD", "Single"):
            v = At[s.source_member][s.columns]
            if s.selection == "positive":
                assert (v > 0).all()
            elif s.selection == "negative":
                assert (v < 0).all()
    # the random control does not depend on the selection: one intervention serves all three
    rand = [s for s in res.sources if s.method == "Random" and s.cluster == 0]
    assert len({(tuple(s.columns), tuple(s.signs)) for s in rand}) == 1 and len(rand) == 3
    table = steer_stage.run_aggregate_steering(
        metrics=[out["metrics"]],
        steering_cfg=steering,
        seed=0,
        out_csv=tmp_path / "t.csv",
        out_tex=tmp_path / "t.tex",
    )
    assert list(table.selection.unique()) == ["full", "positive", "negative"]
    assert len(table) == 3 * 4  # every (selection, method) at B = 2
    tex = (tmp_path / "t.tex").read_text()
    assert tex.count("\\midrule") >= 3 and "negative" in tex


def test_auto_steers_every_configuration_with_2_to_k_clamp_clusters():
    settings = SteeringSettings.from_config({"configs": "auto", "k_clamp": 3})
    got = settings.steered_configs([0.5, 0.5, 1.0, 1.0], [0.1, 0.9, 0.1, 0.9], [1, 2, 3, 4])
    assert got == ((0.5, 0.9), (1.0, 0.1))
    explicit = SteeringSettings.from_config({"configs": [[1.0, 0.1]]})
    assert explicit.steered_configs([1.0], [0.1], [1]) == ((1.0, 0.1),)  # named ones are kept
    with pytest.raises(SteeringInputError, match="k_clamp"):
        SteeringSettings.from_config({"configs": "auto", "k_clamp": 1})
    with pytest.raises(SteeringInputError, match="k_max"):
        check_steering_configs({"configs": "auto", "k_clamp": 10}, {}, {"kmeans": {"k_max": 8}})
    check_steering_configs({"configs": "auto", "k_clamp": 8}, {}, {"kmeans": {"k_max": 8}})


def test_identical_partitions_share_their_sources(llama, toy_files):
    """Single and Random draw from seeds keyed by the member set, so two configurations with
    the same partition steer identical sources (measured once by the shared index)."""
    inp = _inputs(toy_files)
    # a second configuration with the same partition (and, for RD's medoid, the same weights)
    inp.rd[(2.0, 0.5)] = dict(inp.rd[(1.0, 0.5)])
    inp.km_sem[(2.0, 0.5)] = inp.km_sem[(1.0, 0.5)]
    inp.configs = ((1.0, 0.5), (2.0, 0.5))
    settings = SteeringSettings.from_config({"configs": [[1.0, 0.5]], "budgets": [2]})
    sources, _, _ = plan_sources(inp, settings, seed=5)
    by_cfg = {
        b: [(s.method, s.cluster, tuple(s.columns), tuple(s.signs)) for s in sources if s.beta == b]
        for b in (1.0, 2.0)
    }
    assert by_cfg[1.0] == by_cfg[2.0] and len(by_cfg[1.0]) > 0
