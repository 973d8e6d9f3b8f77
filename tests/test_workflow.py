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
