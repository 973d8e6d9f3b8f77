"""End to end: the real Snakemake workflow on the real default model (smoke config)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, run_snakemake, write_config

SMOKE_PROMPTS = ["mercury", "java"]


def _smoke_config(workdir: Path, **overrides) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    return write_config(
        workdir / "cfg.yaml", prompts=str(REPO / ".test" / "config" / "prompts.yaml"), **overrides
    )


def _planned_jobs(proc) -> dict[str, int]:
    """Parse the job-count table that `snakemake -n` prints."""
    counts = {}
    for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", proc.stdout + proc.stderr, re.M):
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_smoke_outputs_exist_and_rerun_is_a_no_op(smoke_run):
    wd, cfg = smoke_run
    for p in SMOKE_PROMPTS:
        assert (wd / f"results/smoke/samples/{p}.parquet").stat().st_size > 0
        assert (wd / f"results/smoke/samples/{p}.prompt.json").stat().st_size > 0
        assert (wd / f"results/smoke/logs/sample/{p}.log").exists()
    dry = run_snakemake(wd, "-n", "--configfile", str(cfg))
    assert dry.returncode == 0, dry.stderr
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_deleting_one_prompt_reruns_only_that_prompt(smoke_run):
    wd, cfg = smoke_run
    victim = wd / "results/smoke/samples/java.parquet"
    keep = (wd / "results/smoke/samples/mercury.parquet").read_bytes()
    old = victim.read_bytes()
    victim.unlink()
    dry = run_snakemake(wd, "-n", "--configfile", str(cfg))
    jobs = _planned_jobs(dry)
    assert jobs.get("sample") == 1, dry.stdout
    out = dry.stdout + dry.stderr
    assert "prompt=java" in out and "prompt=mercury" not in out
    proc = run_snakemake(wd, "--cores", "all", "--configfile", str(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert victim.read_bytes() == old  # same seed, same bytes
    assert (wd / "results/smoke/samples/mercury.parquet").read_bytes() == keep


def test_same_seed_is_byte_identical_and_another_seed_differs(smoke_run, tmp_path):
    wd, _ = smoke_run
    other = tmp_path / "seed1"
    cfg = _smoke_config(other, seed=1)
    target = "results/smoke/samples/mercury.parquet"
    proc = run_snakemake(other, target, "--cores", "all", "--configfile", str(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (other / target).read_bytes() != (wd / target).read_bytes()
    same = tmp_path / "seed0"
    cfg0 = _smoke_config(same)
    proc = run_snakemake(same, target, "--cores", "all", "--configfile", str(cfg0))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (same / target).read_bytes() == (wd / target).read_bytes()


@pytest.mark.parametrize(
    "prompts,overrides,message",
    [
        ("- {id: a, text: x}\n", {"sampling__n_continuationz": 3}, "n_continuationz"),
        ("- {id: a, text: x}\n", {"sampling__max_new_tokens": "many"}, "sampling.max_new_tokens"),
        ("", {}, "prompt file is empty"),
        ("- {id: a, text: x}\n- {id: a, text: y}\n", {}, "duplicate prompt id"),
        ("- {id: '../../etc', text: x}\n", {}, "unsafe prompt id"),
        ("- {id: a, text: ''}\n", {}, "empty text"),
        ("- {id: a, text: x}\n", {"model__name": "nobody-here/no-such-model"}, "local copy"),
    ],
)
def test_bad_input_fails_before_any_job(tmp_path, prompts, overrides, message):
    pfile = tmp_path / "prompts.yaml"
    pfile.write_text(prompts)
    cfg = write_config(tmp_path / "cfg.yaml", prompts=str(pfile), **overrides)
    proc = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(cfg))
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_prompt_longer_than_context_fails_without_partial_output(tmp_path, default_model_dir):
    pfile = tmp_path / "prompts.yaml"
    pfile.write_text("- {id: long, text: '" + "word " * 9000 + "'}\n")
    cfg = write_config(tmp_path / "cfg.yaml", prompts=str(pfile))
    proc = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(cfg))
    assert proc.returncode != 0
    log = (tmp_path / "results/smoke/logs/sample/long.log").read_text()
    assert "exceeds the model's context" in log
    assert not list((tmp_path / "results/smoke").glob("samples/*"))


def test_manifest_verifies_and_names_a_changed_byte(smoke_run, tmp_path):
    import json
    import shutil

    from semmech.cli import main as cli
    from semmech.manifest import verify

    wd, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(wd / "results/smoke", run)
    manifest = json.loads((run / "manifest.json").read_text())
    listed = {a["path"]: a for a in manifest["artifacts"]}
    for p in SMOKE_PROMPTS:
        assert listed[f"samples/{p}.parquet"]["rule"] == "sample"
    assert manifest["seed"] == 0 and len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["packages"]["nnsight"] != "not installed"
    assert cli(["verify", str(run)]) == 0
    for rel in sorted(listed):
        f = run / rel
        original = f.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
        problems = verify(run)
        assert problems == [f"MISMATCH {rel} (made by rule {listed[rel]['rule']})"]
        f.write_bytes(original)
    assert cli(["verify", str(run)]) == 0


def test_snakemake_lint_reports_no_problems(tmp_path):
    for cfg in (REPO / "config" / "config.yaml", REPO / ".test" / "config" / "config.yaml"):
        proc = run_snakemake(REPO, "--lint", "--configfile", str(cfg))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "Congratulations, your workflow is in a good condition!" in out, out


def test_bad_transcoder_set_or_chat_template_fails_at_start_up(tmp_path):
    """A set that cannot fit the model, a cross-layer set, or chat-template arguments for a
    tokenizer without a template: one error naming the problem, before any job or model load.
    A good set plans its attribute jobs with the set's memory added."""
    import yaml
    from test_bases import random_set
    from tiny_models import tiny_llama

    from semmech import io
    from semmech.model.transcoders import write_transcoder_set

    model = tiny_llama(seed=0)
    model.tokenizer.chat_template = None
    model_dir = tmp_path / "tiny"
    model.hf.save_pretrained(model_dir)
    model.tokenizer.save_pretrained(model_dir)
    d, L = model.hf.config.hidden_size, model.hf.config.num_hidden_layers

    def tc_set(name, d_model=d, n_features=8, edit=None):
        path = tmp_path / name
        write_transcoder_set(random_set(d_model, L, n_features, 0), path, "tiny", "test")
        if edit:
            edit(path)
        return str(path)

    def clt(path):  # the set as written, with its integrity record (semmech.io)
        cfg = yaml.safe_load((path / "config.yaml").read_text())
        io.write_yaml({**cfg, "model_kind": "cross_layer_transcoder"}, path / "config.yaml")

    pfile = tmp_path / "prompts.yaml"
    pfile.write_text("- {id: a, text: 'who won the cup ?'}\n")
    tc = {"attribution__basis": "transcoder", "model__name": str(model_dir)}
    cases = [
        (
            {**tc, "attribution__transcoder_dir": tc_set("wide", d_model=d + 4)},
            f"d_model {d + 4} but the model's hidden size is {d}",
        ),
        (
            {
                **tc,
                "attribution__transcoder_dir": tc_set(
                    "gap", edit=lambda p: (p / "layer_1.safetensors").unlink()
                ),
            },
            "missing layer files for layers [1]",
        ),
        (
            {**tc, "attribution__transcoder_dir": tc_set("clt", edit=clt)},
            "cross-layer transcoder (CLT), which is not supported",
        ),
        (
            {
                "model__name": str(model_dir),
                "model__chat_template_kwargs": {"enable_thinking": False},
            },
            "has no chat template",
        ),
    ]
    for k, (overrides, message) in enumerate(cases):
        wd = tmp_path / f"run{k}"
        cfg = write_config(tmp_path / f"cfg{k}.yaml", prompts=str(pfile), **overrides)
        proc = run_snakemake(wd, "--cores", "1", "--configfile", str(cfg))
        assert proc.returncode != 0
        assert message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
        assert not (wd / "results").exists()

    def attribute_mem(overrides):
        cfg = write_config(tmp_path / "ok.yaml", prompts=str(pfile), **overrides)
        target = "results/smoke/attribution/a.safetensors"
        proc = run_snakemake(tmp_path / "ok", "-n", target, "--configfile", str(cfg))
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = proc.stdout + proc.stderr
        return {int(m) for m in re.findall(r"rule attribute:.*?mem_mb=(\d+)", out, re.S)}

    neurons = attribute_mem({"model__name": str(model_dir)})
    big = tc_set("big", n_features=8192)
    with_set = attribute_mem({**tc, "attribution__transcoder_dir": big})
    assert len(neurons) == len(with_set) == 1
    # Encoders, one decoder and, per continuation of a batch, dense activations + gradients.
    tokens = 64 + 20
    resident = sum(8192 * d + 8192 + d + d * d + 8192 * (l % 2 == 0) for l in range(L))
    expected = int((resident + 8192 * d) * 4 / 1e6) + 1
    expected += int(8 * 2 * L * 8192 * tokens * 4 / 1e6)
    assert with_set.pop() - neurons.pop() == expected
