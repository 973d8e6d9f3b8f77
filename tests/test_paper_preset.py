"""config/paper.yaml, the paper's own experiment: its settings, and all of them run end to end.

The end-to-end test runs the real workflow with ``--configfile config/paper.yaml`` on CPU, in a
scratch directory where offline stand-ins take the place of what needs the hub or the data:

- a private Hugging Face cache (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE=1``) holding, under the
  preset's own repo ids, a tiny random Qwen3 (``Qwen/Qwen3-8B``, word-level tokenizer whose chat
  template honours ``enable_thinking``), a circuit-tracer-format transcoder set
  (``mwhanna/qwen3-8b-transcoders``) and an EmbeddingGemma-architecture sentence-transformers
  encoder (``google/embeddinggemma-300m``), so the repo-id code paths run as on a cluster;
- the AmbigQA fixture (tests/ambigqa_data.py, a saved DatasetDict) at the preset's
  ``resources/ambigqa``.

Only the keys in ``OVERRIDES`` differ from the preset, each for the reason given there; the
test checks that the run's recorded config is the preset's in every other key.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from ambigqa_data import DRAWN_2_IDS, ROWS, write_saved_dataset
from conftest import REPO, run_snakemake
from tiny_models import (
    EMBEDDINGGEMMA_PROMPTS,
    circuit_tracer_transcoders,
    hub_cache_repo,
    tiny_embeddinggemma,
    tiny_qwen3_chat,
)

from semmech.config import validate_config
from semmech.prompts import read_prompts
from semmech.views.embedding import ContextualEncoder

PRESET = REPO / "config" / "paper.yaml"
EPSILONS = [-1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0]
SELECTIONS = ["full", "positive", "negative"]
# (preset value, value in the test, why): everything else runs as the preset says.
OVERRIDES = {
    ("model", "device"): ("cuda", "cpu", "the test suite has no GPU"),
    ("model", "dtype"): ("bfloat16", "float32", "CPU runs in float32 (bit-reproducible)"),
    ("ambigqa", "n_groups"): (100, 2, "2 of the fixture's 5 groups: still the seeded draw"),
    ("sampling", "n_continuations"): (500, 24, "a tiny model; CPU time"),
}


def _merge(base: dict, extra: dict) -> dict:
    """Nested update, as Snakemake merges --configfile files over the Snakefile's configfile."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def paper_config() -> dict:
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return validate_config(_merge(default, yaml.safe_load(PRESET.read_text())))


def test_the_preset_is_the_papers_setup():
    cfg = paper_config()
    assert cfg["prompts"] == "ambigqa"
    assert cfg["ambigqa"] == {
        "path": "resources/ambigqa",
        "split": "train",
        "n_groups": 100,
        "seed": 42,
    }
    m = cfg["model"]
    assert (m["name"], m["device"], m["dtype"]) == ("Qwen/Qwen3-8B", "cuda", "bfloat16")
    assert m["chat_template"] is True and m["chat_template_kwargs"] == {"enable_thinking": False}
    s = cfg["sampling"]
    assert (s["n_continuations"], s["max_new_tokens"], s["temperature"], s["top_p"]) == (
        500,
        20,
        1.0,
        0.9,
    )
    assert (s["batch_size"], s["patience"], s["max_batches"]) == (32, 5, 200)
    a = cfg["attribution"]
    assert (a["basis"], a["transcoder_dir"]) == ("transcoder", "mwhanna/qwen3-8b-transcoders")
    assert (a["aggregate"], a["max_feature_nodes"]) == ("sum", 4096)
    e = cfg["embedding"]
    assert (e["model"], e["context"], e["task_prefix"]) == (
        "google/embeddinggemma-300m",
        "model_input",
        "",
    )
    c = cfg["clustering"]
    assert c["betas"] == [0.5, 0.75, 1.0, 1.25] and c["gammas"] == [0.1, 0.3, 0.5, 0.7, 0.9]
    st = cfg["steering"]
    assert (st["configs"], st["k_clamp"], st["selections"]) == ("auto", 10, SELECTIONS)
    assert st["budgets"] == [5, 10] and st["epsilons"] == EPSILONS and st["max_measured"] == 10
    for (section, key), (preset, _, _) in OVERRIDES.items():
        assert cfg[section][key] == preset, (section, key)


# --- the whole preset on CPU ---------------------------------------------------------------------


def _words() -> list[str]:
    text = (
        " ".join(r["question"] for r in ROWS)
        + " "
        + " ".join(
            p["question"] for r in ROWS for a in r["annotations"] for p in a.get("qaPairs", [])
        )
    )
    extra = (
        "user assistant a an of on to and or it he she they game car drink island language "
        "coffee snake java bank river money fast jaguar speed building capital move year time "
        "red blue green one two three four five yes no germany italy . ? ! ,"
    )
    return list(dict.fromkeys((text + " " + extra).split()))


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("paper")
    (wd / "config").symlink_to(REPO / "config")
    hub = wd / "hub"
    stand_ins = wd / "stand_ins"
    qwen = tiny_qwen3_chat(stand_ins / "qwen3", _words())
    n_layers, d_model = 2, 32
    tcs = circuit_tracer_transcoders(stand_ins / "transcoders", d_model, n_layers)
    questions = [r["question"] for r in ROWS] + [EMBEDDINGGEMMA_PROMPTS["query"]]
    gemma = tiny_embeddinggemma(stand_ins / "embeddinggemma", questions + _words())
    snapshots = {
        "model": hub_cache_repo(hub, "Qwen/Qwen3-8B", qwen),
        "transcoders": hub_cache_repo(hub, "mwhanna/qwen3-8b-transcoders", tcs),
        "embedding": hub_cache_repo(hub, "google/embeddinggemma-300m", gemma),
    }
    write_saved_dataset(wd / "resources" / "ambigqa")  # the preset's ambigqa.path
    overrides = {}
    for (section, key), (_, value, _) in OVERRIDES.items():
        overrides.setdefault(section, {})[key] = value
    (wd / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    env = {
        "HF_HUB_CACHE": str(hub),
        "HF_HOME": str(wd / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        proc = run_snakemake(
            wd,
            "--cores",
            "2",
            "--configfile",
            str(PRESET),
            str(wd / "overrides.yaml"),
            timeout=1800,
        )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return wd, wd / "results" / "paper", snapshots


@pytest.mark.slow
def test_paper_run_uses_every_setting_of_the_preset(paper_run):
    _, run, _ = paper_run
    recorded = json.loads((run / "manifest.json").read_text())["config"]
    expected = paper_config()
    for (section, key), (_, value, _) in OVERRIDES.items():
        expected[section][key] = value
    assert recorded == expected
    listed = {
        a["path"]: a["rule"] for a in json.loads((run / "manifest.json").read_text())["artifacts"]
    }
    assert listed["prompts/ambigqa.yaml"] == "ambigqa_prompts"


@pytest.mark.slow
def test_paper_run_prompts_are_the_ambigqa_draw_in_the_thinking_off_template(paper_run):
    _, run, _ = paper_run
    assert [p.id for p in read_prompts(run / "prompts" / "ambigqa.yaml")] == DRAWN_2_IDS
    for pid in DRAWN_2_IDS:
        rec = json.loads((run / "samples" / f"{pid}.prompt.json").read_text())
        assert rec["model"] == "Qwen/Qwen3-8B"
        assert rec["chat_template_kwargs"] == {"enable_thinking": False}
        # enable_thinking=False reached the template: the empty thinking block ends the input
        assert rec["model_input"].endswith("<|im_start|> assistant <think> </think> ")
        assert rec["model_input"].startswith("<|im_start|> user " + rec["text"])
        df = pd.read_parquet(run / "samples" / f"{pid}.parquet")
        assert len(df) == OVERRIDES[("sampling", "n_continuations")][1]


def _demeaned_logit_sum(model, prompt_ids, cont_ids) -> float:
    """Σ_t (ℓ_{y_t} − mean_v ℓ_v), each read at the position that predicts y_t."""
    ids = torch.tensor([list(prompt_ids) + list(cont_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    m = len(prompt_ids)
    total = 0.0
    for t, y in enumerate(cont_ids):
        row = logits[m + t - 1]
        total += float(row[y] - row.mean())
    return total


@pytest.mark.slow
def test_paper_run_attributes_on_the_transcoder_set_with_summed_signatures(paper_run):
    from transformers import AutoModelForCausalLM

    _, run, snapshots = paper_run
    model = AutoModelForCausalLM.from_pretrained(snapshots["model"], dtype=torch.float32).eval()
    for pid in DRAWN_2_IDS:
        nodes = pd.read_parquet(run / "attribution" / f"{pid}.nodes.parquet")
        feats = nodes[nodes["kind"] == "feature"]
        assert len(feats) > 0 and set(feats["layer"]) <= {0, 1}
        assert feats["feature"].between(0, 23).all()  # the set's 24 features per layer
        assert (nodes["kind"] == "error").any()  # a transcoder basis has error nodes
        comp = json.loads((run / "attribution" / f"{pid}.completeness.json").read_text())
        assert comp["basis"] == "transcoder" and comp["aggregate"] == "sum" and comp["passed"]
        rec = json.loads((run / "samples" / f"{pid}.prompt.json").read_text())
        df = pd.read_parquet(run / "samples" / f"{pid}.parquet")
        longest = int(df["n_tokens"].to_numpy().argmax())
        row = next(c for c in comp["continuations"] if c["sample_idx"] == longest)
        assert row["n_tokens"] >= 2
        # aggregate: sum, the target is the SUM of the per-token demeaned logits (not the mean)
        expect = _demeaned_logit_sum(model, rec["prompt_token_ids"], df["token_ids"].iloc[longest])
        assert row["target"] == pytest.approx(expect, rel=1e-4, abs=1e-4)


@pytest.mark.slow
def test_paper_run_embeds_with_embeddinggemma_in_the_chat_context(paper_run):
    _, run, snapshots = paper_run
    encoder = ContextualEncoder.from_name(str(snapshots["embedding"]))
    assert type(encoder.model).__name__ == "Gemma3TextModel"
    for pid in DRAWN_2_IDS:
        rec = json.loads((run / "samples" / f"{pid}.prompt.json").read_text())
        texts = pd.read_parquet(run / "samples" / f"{pid}.parquet")["text"].tolist()
        E = np.load(run / "embeddings" / f"{pid}.npz")["embeddings"]
        np.testing.assert_allclose(E, encoder.encode(rec["model_input"], texts), atol=1e-5)


@pytest.mark.slow
def test_paper_run_steers_every_configuration_with_2_to_10_clusters_in_all_selections(paper_run):
    _, run, _ = paper_run
    steered_total = 0
    for pid in DRAWN_2_IDS:
        sweep = pd.read_parquet(run / "clusters" / f"{pid}.sweep.parquet")
        want = {
            (float(b), float(g))
            for b, g, k in zip(sweep["beta"], sweep["gamma"], sweep["K"])
            if 2 <= k <= 10
        }
        metrics = pd.read_parquet(run / "steering" / f"{pid}.metrics.parquet")
        curves = pd.read_parquet(run / "steering" / f"{pid}.curves.parquet")
        got = (
            set()
            if metrics.empty
            else {(float(b), float(g)) for b, g in zip(metrics["beta"], metrics["gamma"])}
        )
        assert got == want
        steered_total += len(want)
        if want:
            assert sorted(set(metrics["selection"])) == sorted(SELECTIONS)
            assert sorted(set(metrics["budget"])) == [5, 10]
            assert sorted(set(curves["epsilon"])) == EPSILONS
            assert (metrics["n_heldout"] <= 10).all()
    assert steered_total > 0, "no swept configuration had 2 <= K <= 10: the test steers nothing"
    table = pd.read_csv(run / "tables" / "steering_comparison.csv")
    assert sorted(set(table["selection"])) == sorted(SELECTIONS)
