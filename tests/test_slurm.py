"""SLURM scale-out machinery: profiles, the plugin's resource mapping, and a real-cluster run.

The fast tests pin what the profiles and docs rely on (resource names of the pinned
snakemake-executor-plugin-slurm, status-query settings that avoid the sacct hang). The `slurm`
test brings up a real one-node cluster via .ci/slurm_check.sh on a toy workflow; it needs root and
the Debian slurm packages, so it only runs with SEMMECH_SLURM_TEST=1.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ambigqa_data import ALL_IDS, write_saved_dataset

REPO = Path(__file__).resolve().parents[1]
CI = REPO / ".ci"
PROFILE_CI = REPO / "profiles" / "slurm-ci" / "config.yaml"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
GPU_KEYS = {"gpu", "gres", "gpu_model", "gpus", "cpus_per_gpu", "tasks_per_gpu"}


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


# --- profiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [PROFILE, PROFILE_CI], ids=["slurm", "slurm-ci"])
def test_profile_basics(path: Path) -> None:
    prof = _load(path)
    assert prof["executor"] == "slurm"
    assert prof["slurm-keep-successful-logs"] is True
    assert int(prof["jobs"]) >= 1 and int(prof["latency-wait"]) >= 1
    defaults = prof.get("default-resources") or {}
    assert {"mem_mb", "runtime"} <= set(defaults), "jobs need explicit mem_mb and runtime"
    # A GPU request in a profile would apply whatever the config says; rules decide GPUs.
    assert not GPU_KEYS & set(defaults), f"GPU resource in default-resources of {path}"
    for rule, res in (prof.get("set-resources") or {}).items():
        assert not GPU_KEYS & set(res), f"GPU resource set for rule {rule} in {path}"


def test_ci_profile_status_query_cannot_hang() -> None:
    """No slurmdbd on the CI cluster: squeue must be used, and MinJobAge must keep it in force."""
    prof = _load(PROFILE_CI)
    assert prof["slurm-status-command"] == "squeue"
    init_s = int(prof["slurm-init-seconds-before-status-checks"])
    m = re.search(r"^MinJobAge=(\d+)$", (CI / "slurm_up.sh").read_text(), re.M)
    assert m, "slurm_up.sh must set MinJobAge"
    # Below 3x the init interval the plugin silently switches back to sacct, which hangs here;
    # above the 180 s max poll interval finished jobs stay visible between two polls.
    assert int(m.group(1)) >= max(3 * init_s, 180)
    # The conf's memory must fit the workflow's model-loading jobs (2-4 GB each).
    assert int(prof["default-resources"]["mem_mb"]) <= 4000


@pytest.mark.parametrize("script", ["slurm_up.sh", "slurm_down.sh", "slurm_check.sh"])
def test_scripts_parse_and_document_usage(script: str) -> None:
    path = CI / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    head = path.read_text().splitlines()[:12]
    assert any("Usage" in line for line in head), f"{script} lacks a usage header"


def test_check_script_rejects_bad_usage() -> None:
    out = subprocess.run(
        ["bash", str(CI / "slurm_check.sh"), "--configfile", "does/not/exist.yaml"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert out.returncode == 2
    assert "does/not/exist.yaml" in out.stderr


# --- the plugin's resource mapping (what profiles/slurm/config.yaml documents) --------------------


class _Resources(dict):
    """Mimics Snakemake's job.resources: .get() and attribute access."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class _Job:
    def __init__(self, threads: int = 1, **resources) -> None:
        self.threads = threads
        self.resources = _Resources(resources)
        self.name = "sample"
        self.wildcards = {}


def _sbatch(job: _Job) -> str:
    submit = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    params = {
        "run_uuid": "uuid",
        "slurm_logfile": "/tmp/x/%j.log",
        "comment_str": "rule_sample",
        "account": "",
        "partition": " -p debug",
        "workdir": "/tmp",
    }
    return submit.get_submit_command(job, params) + set_gres_string(job)


def test_plugin_cpu_job_mapping() -> None:
    call = _sbatch(_Job(threads=2, mem_mb=3000, runtime=90, gpu=0))
    assert " -t 90" in call  # runtime is in minutes
    assert " --mem 3000" in call
    assert "--cpus-per-task=2" in call  # threads -> cpus per task
    assert "--ntasks=1" in call
    assert "--gpus" not in call and "--gres" not in call  # gpu=0 requests nothing


def test_plugin_gpu_job_mapping() -> None:
    call = _sbatch(_Job(threads=4, mem_mb=8000, runtime=60, gpu=1))
    assert call.endswith(" --gpus=1")
    assert "--ntasks=" not in call  # GPU jobs leave task geometry to SLURM
    assert "--cpus-per-task=4" in call
    assert _sbatch(_Job(gpu=2, gpu_model="a100")).endswith(" --gpus=a100:2")
    assert " --gres=gpu:1" in _sbatch(_Job(gres="gpu:1"))
    assert "--cpus-per-gpu=8" in _sbatch(_Job(threads=1, gpu=1, cpus_per_gpu=8))


# --- a real cluster --------------------------------------------------------------------------------


# --- the paper-scale preset --------------------------------------------------------------------

PER_PROMPT_RULES = [
    "sample",
    "attribute",
    "embed",
    "cluster",
    "baselines",
    "steer",
    "cluster_summary",
]
GPU_RULES = {"sample", "attribute", "steer"}


def test_paper_preset_dry_runs_through_the_profile_with_per_prompt_jobs(tmp_path) -> None:
    """The Qwen3-8B preset plans one job per AmbigQA prompt and stage, sized from the config.

    The AmbigQA fixture (tests/ambigqa_data.py, a saved Hugging Face DatasetDict) stands in for
    the real data: a second config file sets only ``ambigqa.path``; every other key is the
    preset's (100 groups drawn from the fixture's 5 give all 5, 10 prompts)."""
    data = write_saved_dataset(tmp_path / "ambigqa")
    extra = tmp_path / "data.yaml"
    extra.write_text(yaml.safe_dump({"ambigqa": {"path": str(data)}}))
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run(
        [
            snakemake,
            "-n",
            "--profile",
            str(PROFILE.parent),
            "--configfile",
            str(REPO / "config" / "paper.yaml"),
            str(extra),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    n_prompts = len(ALL_IDS)
    for pid in ALL_IDS:
        assert f"results/paper/samples/{pid}.parquet" in out, pid
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", out, re.M)}
    for rule in PER_PROMPT_RULES:
        assert counts.get(rule) == n_prompts, (rule, counts)
    assert counts.get("aggregate_clustering") == 1 and counts.get("aggregate_steering") == 1
    assert counts.get("ambigqa_prompts") == 1
    requested: dict[str, str] = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\nrule )", out):
        m = re.search(r"^rule (\w+):", block, re.M)
        r = re.search(r"^\s+resources: (.*)$", block, re.M)
        if m and r:
            requested.setdefault(m.group(1), r.group(1))
    print("\nresources requested per job by the paper-scale preset:")
    for rule in sorted(requested):
        print(f"  {rule:28s} {requested[rule]}")
    for rule in PER_PROMPT_RULES:
        res = dict(kv.split("=", 1) for kv in requested[rule].split(", "))
        # Clustering jobs size memory from their input files, which a dry run cannot know yet.
        assert res["mem_mb"] == "<TBD>" or int(res["mem_mb"]) > 0, (rule, res)
        assert int(res["runtime"]) > 0, (rule, res)
        assert (int(res.get("gpu", 0)) == 1) == (rule in GPU_RULES), (rule, res)
    # Model jobs are sized for an 8B model in bfloat16: more than its 16 GB of weights.
    assert all(
        int(dict(kv.split("=", 1) for kv in requested[r].split(", "))["mem_mb"]) > 16000
        for r in GPU_RULES
    )
