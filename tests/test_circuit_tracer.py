"""circuit-tracer as the oracle of the transcoder basis (issue 11).

circuit-tracer 0.5.0 needs transformers 4.57 and nnsight 0.6.3, so it lives in its own venv,
``.venv-circuit-tracer`` (made by ``envs/install.sh``), and is driven as a subprocess through
``tests/oracle/ct_attribute.py``. The transcoder sets are written by semmech
(``write_transcoder_set``, and the ``train_transcoder`` stage) and loaded by circuit-tracer's own
``ReplacementModel.from_pretrained`` unchanged.

Node correspondence (positions index the token sequence both tools run, which is the same
sequence because it starts with a special token, so circuit-tracer prepends nothing):

* circuit-tracer's graph for the sequence ``s`` and the logit target ``y`` is compared through
  the adjacency row of its one logit node. Its target is ⟨final-norm state at the last position,
  W_U[y] − mean_v W_U[v]⟩, the demeaned logit semmech attributes when ``s`` is the prefix and
  ``[y]`` the continuation.
* feature column (l, p, f) of that row ↔ semmech's feature node (l, p, f). Both values are
  activation-scaled: α · ⟨d_f, ∂target/∂(MLP output of layer l at p)⟩. semmech keeps every
  active feature (``max_feature_nodes`` above the number of active features).
* error column n_features + l · n_pos + p ↔ semmech's error node (l, p): the MLP output minus
  the transcoder's reconstruction (b_dec and the skip path included), dotted with the gradient.
* token column p ↔ semmech's token node p: the token embedding dotted with the gradient.
* position 0: circuit-tracer zeroes its features and errors and keeps its token node; semmech
  has no position-0 nodes (they are in its ``position0`` constant). Position 0 is left out.

A whole continuation c = (c_0, …, c_{T-1}) of a prompt of M tokens is T such graphs: graph t has
the sequence prompt + c_{<t} and the target c_t. semmech's signature with
``attribution.aggregate: sum`` is the sum of the T graphs' rows over the prompt positions
1..M-1, and its ``continuation`` term is the sum of all their nodes at positions ≥ M; with
``mean`` both are divided by T.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from test_attribution import PROMPT, _write_samples
from test_bases import random_set
from tiny_models import tiny_llama

from semmech.config import section_defaults
from semmech.model.bases import load_basis
from semmech.model.layout import ModelLayout
from semmech.model.transcoders import LayerTranscoder, write_transcoder_set
from semmech.stages.attribution import run_train_transcoder
from semmech.views.attribution import COMPLETENESS_TOLERANCE, attribute

CT_PYTHON = REPO / ".venv-circuit-tracer" / "bin" / "python"
DRIVER = REPO / "tests" / "oracle" / "ct_attribute.py"
ALL_FEATURES = 10**9
# Relative to the largest node value of the graph compared. circuit-tracer runs transformers
# 4.57 with eager attention, semmech transformers 5 with SDPA: the same model in a different
# float summation order.
RTOL_TINY = 1e-5
RTOL_REAL = 5e-5


def run_circuit_tracer(tmp_path: Path, model_dir: Path, runs: list[dict]) -> dict:
    """circuit-tracer's logit rows, keyed by run name, one dict per sequence."""
    if not CT_PYTHON.exists():
        pytest.fail(
            f"the circuit-tracer venv is missing ({CT_PYTHON}); run `bash envs/install.sh`, "
            "which creates it next to .venv"
        )
    job = tmp_path / "ct_job.json"
    job.write_text(json.dumps({"model_dir": str(model_dir), "batch_size": 64, "runs": runs}))
    out = tmp_path / "ct_out"
    proc = subprocess.run(
        [str(CT_PYTHON), str(DRIVER), str(job), str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    print("circuit-tracer timings (s):", proc.stdout.strip().splitlines()[-1])
    graphs = {}
    for run in runs:
        graphs[run["name"]] = []
        for k, seq in enumerate(run["sequences"]):
            z = dict(np.load(out / f"{run['name']}_{k}.npz"))
            assert z["input_tokens"].tolist() == seq["input_ids"], "circuit-tracer prepended BOS"
            graphs[run["name"]].append(z)
    return graphs


def ct_nodes(z: dict) -> tuple[dict, dict]:
    """(node key -> value, feature key -> activation) of a logit row; position 0 left out."""
    values, acts = {}, {}
    for v, kind, l, p, f, a in zip(
        z["row"], z["kind"], z["layer"], z["pos"], z["feature"], z["activation"]
    ):
        if p < 1:
            continue
        key = (
            ("feature", int(l), int(p), int(f))
            if kind == 0
            else ("error", int(l), int(p))
            if kind == 1
            else ("token", int(p))
        )
        values[key] = float(v)
        if kind == 0:
            acts[key] = float(a)
    return values, acts


def semmech_nodes(res, row: int = 0) -> tuple[dict, dict]:
    """(node key -> value, feature key -> activation) of semmech's signature row, keyed like
    :func:`ct_nodes` (semmech's node order: features, errors layer-major, tokens)."""
    nodes = res.nodes
    pos = range(1, nodes.prompt_len)
    keys = (
        [("feature", l, p, f) for l, p, f in nodes.feature_nodes()]
        + [("error", l, p) for l in nodes.error_layers for p in pos]
        + [("token", p) for p in pos]
    )
    sig = res.signatures[row].double().tolist()
    assert len(keys) == len(sig)
    acts = dict(zip(keys, nodes.feat_alpha.double().tolist()))
    return dict(zip(keys, sig)), acts


def compare(ours: dict, ours_act: dict, theirs: dict, theirs_act: dict, rtol: float) -> dict:
    """Max abs / rel difference over the union of nodes. A feature present on one side only
    must be a float-noise activation (≤ 1e-4) at a zero/threshold boundary."""
    only = set(ours) ^ set(theirs)
    assert all(
        k[0] == "feature" and max(ours_act.get(k, 0.0), theirs_act.get(k, 0.0)) <= 1e-4
        for k in only
    ), sorted(only)[:10]
    keys = sorted(set(ours) | set(theirs))
    a = np.array([ours.get(k, 0.0) for k in keys])
    b = np.array([theirs.get(k, 0.0) for k in keys])
    scale = float(np.abs(b).max())
    diff = float(np.abs(a - b).max())
    assert scale > 1e-3  # the graph is not trivially zero
    assert diff <= rtol * scale, (diff, scale)
    for kind in ("feature", "error", "token"):
        assert any(k[0] == kind and abs(theirs.get(k, 0.0)) > 0 for k in keys), kind
    return {"n_nodes": len(keys), "max_abs": diff, "max_rel": diff / scale}


def per_token_sequences(prompt: list[int], cont: list[int]) -> list[dict]:
    return [{"input_ids": prompt + cont[:t], "target": cont[t]} for t in range(len(cont))]


def check_against_graphs(model, basis, prompt, cont, graphs, rtol) -> dict:
    """Every per-token graph node by node, then the whole continuation (sum and mean)."""
    report = {"per_token": [], "completeness": {}}
    for t, z in enumerate(graphs):
        res = attribute(model, basis, prompt + cont[:t], [[cont[t]]], ALL_FEATURES)
        assert res.completeness[0]["target"] == pytest.approx(
            float(z["demeaned_logit"]), rel=rtol, abs=rtol
        )
        report["per_token"].append(compare(*semmech_nodes(res), *ct_nodes(z), rtol))
    M, T = len(prompt), len(cont)
    summed: dict = {}
    continuation = target = 0.0
    for z in graphs:
        values, _ = ct_nodes(z)
        for key, v in values.items():
            if key[-2 if key[0] == "feature" else -1] < M:
                summed[key] = summed.get(key, 0.0) + v
            else:
                continuation += v
        target += float(z["demeaned_logit"])
    for aggregate, scale in (("sum", 1.0), ("mean", 1.0 / T)):
        res = attribute(model, basis, prompt, [cont], ALL_FEATURES, aggregate=aggregate)
        ours, ours_act = semmech_nodes(res)
        expected = {k: v * scale for k, v in summed.items()}
        acts = {k: 1.0 for k in expected if k[0] == "feature"}
        report[aggregate] = compare(ours, ours_act, expected, acts, rtol)
        row = res.completeness[0]
        assert row["continuation"] == pytest.approx(continuation * scale, rel=rtol, abs=rtol)
        assert row["target"] == pytest.approx(target * scale, rel=rtol, abs=rtol)
        assert row["rel_error"] <= COMPLETENESS_TOLERANCE  # error nodes included
        report["completeness"][aggregate] = row["rel_error"]
    return report


# --------------------------------------------------------------------------------------------


def test_tiny_random_model_agrees_with_circuit_tracer(tmp_path):
    """A tiny random Llama built offline from a config; every layer gets a random transcoder
    (JumpReLU on even layers, ReLU on odd ones, a skip path everywhere); and a set written by
    the train_transcoder stage (ReLU, no skip, one layer inactive) must load in circuit-tracer
    unchanged and agree as well."""
    model = tiny_llama(seed=0)
    model_dir = tmp_path / "tiny"
    model.hf.save_pretrained(model_dir)
    model.tokenizer.save_pretrained(model_dir)
    layout = ModelLayout.discover(model)
    random_dir = tmp_path / "random_set"
    write_transcoder_set(
        random_set(layout.d_model, layout.n_layers, 24, seed=10),
        random_dir,
        model_name=str(model_dir),
        scan="test",
    )
    prompt = model.tokenizer(PROMPT)["input_ids"]
    assert prompt[0] in model.tokenizer.all_special_ids
    cont = [7, 9, 11]

    # The train_transcoder stage's own output directory.
    g = torch.Generator().manual_seed(0)
    sample_conts = [torch.randint(3, 70, (6,), generator=g).tolist() for _ in range(12)]
    _write_samples(tmp_path, model_dir, sample_conts)
    trained_dir = tmp_path / "trained_set"
    run_train_transcoder(
        samples=[tmp_path / "p.parquet"],
        prompts=[tmp_path / "p.prompt.json"],
        model_cfg=section_defaults(
            "model", {"name": str(model_dir), "device": "cpu", "dtype": "float32"}
        ),
        training_cfg={"layers": [0, 2], "n_features": 32, "steps": 10, "n_tokens": 80},
        seed=0,
        out_dir=trained_dir,
    )
    assert (trained_dir / "training.json").is_file()

    graphs = run_circuit_tracer(
        tmp_path,
        model_dir,
        [
            {
                "name": name,
                "transcoders": str(d),
                "sequences": per_token_sequences(prompt, cont),
            }
            for name, d in (("random", random_dir), ("trained", trained_dir))
        ],
    )
    for name, d in (("random", random_dir), ("trained", trained_dir)):
        basis = load_basis("transcoder", model, layout, transcoder_dir=d)
        report = check_against_graphs(model, basis, prompt, cont, graphs[name], RTOL_TINY)
        print(f"tiny model, {name} set:", json.dumps(report))


def calibrated_random_set(model, layout, ids, n_features=16, active=0.1, seed=0):
    """Random transcoders for every layer of a real model, with JumpReLU thresholds at each
    feature's (1 − active) quantile over the sequence's positions ≥ 1, so about ``active`` of
    the features fire: a graph of realistic sparsity that circuit-tracer builds in seconds."""
    xs = {}
    hooks = [
        model.hf.get_submodule(lay.mlp).register_forward_pre_hook(
            lambda m, a, l=lay.index: xs.__setitem__(l, a[0][0, 1:].detach())
        )
        for lay in layout.layers
    ]
    try:
        with torch.no_grad():
            model.hf(torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
    tcs = random_set(layout.d_model, layout.n_layers, n_features, seed)
    out = {}
    for l, tc in tcs.items():
        z = tc.pre_activation(xs[l])
        threshold = torch.quantile(z, 1 - active, dim=0).clamp(min=0)
        out[l] = LayerTranscoder(
            W_enc=tc.W_enc,
            b_enc=tc.b_enc,
            W_dec=tc.W_dec * 4.0,  # features write on the scale of the MLP output
            b_dec=tc.b_dec,
            threshold=threshold,
            W_skip=tc.W_skip,
        )
    return out


def test_default_model_agrees_with_circuit_tracer(tmp_path, default_model, default_model_dir):
    """The default model (SmolLM2-135M-Instruct, 30 layers) with a random transcoder per layer."""
    model = default_model
    layout = ModelLayout.discover(model)
    tok = model.tokenizer
    prompt = [tok.bos_token_id] + tok.encode("user\nName a planet.", add_special_tokens=False)
    cont = tok.encode(" Mars is", add_special_tokens=False)
    assert prompt[0] in tok.all_special_ids and len(cont) == 2
    set_dir = tmp_path / "random_set"
    write_transcoder_set(
        calibrated_random_set(model, layout, prompt + cont),
        set_dir,
        model_name="default",
        scan="test",
    )
    graphs = run_circuit_tracer(
        tmp_path,
        default_model_dir,
        [
            {
                "name": "random",
                "transcoders": str(set_dir),
                "sequences": per_token_sequences(prompt, cont),
            }
        ],
    )
    basis = load_basis("transcoder", model, layout, transcoder_dir=set_dir)
    report = check_against_graphs(model, basis, prompt, cont, graphs["random"], RTOL_REAL)
    print("default model:", json.dumps(report))
