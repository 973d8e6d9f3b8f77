"""Shared fixtures: repository paths and a runner for the real workflow in a scratch directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/tiny_models.py
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def write_config(
    path: Path, base: str | Path = REPO / ".test" / "config" / "config.yaml", **overrides
) -> Path:
    """A config file based on ``base`` with top-level or dotted-key overrides."""
    cfg = yaml.safe_load(Path(base).read_text())
    for key, value in overrides.items():
        node = cfg
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_snakemake(workdir: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile with ``workdir`` as working directory.

    The prepared default model is shared through a symlink to the repository's resources/
    so that each scratch run does not dequantise it again.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    res = workdir / "resources"
    if not res.exists() and (REPO / "resources").exists():
        res.symlink_to(REPO / "resources")
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The prepared offline default model (prepared once if the workflow has not done it yet)."""
    from semmech.model.loading import prepare_gguf_model
    from semmech.model.source import DEFAULT_MODEL_DIR, default_gguf_file

    out = REPO / DEFAULT_MODEL_DIR
    if not (out / "config.json").is_file():
        prepare_gguf_model(default_gguf_file(), out)
    return out


@pytest.fixture(scope="session")
def default_model(default_model_dir):
    from semmech.model.loading import load_model

    return load_model("default", device="cpu", dtype="float32", resources_dir=REPO)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, default_model_dir):
    """One full smoke reproduction (every stage, real default model), shared by all tests.

    It runs .test/config/config.yaml exactly as a user would (config/ and .test/ linked into the
    scratch dir), so
    its results are the reference that CI's SLURM check compares with: when
    SEMMECH_SMOKE_REFERENCE names a path, the results dir is copied there before any test can
    touch it (complete or not at all: copied aside, then renamed; DIR.failed on failure).
    """
    wd = tmp_path_factory.mktemp("smoke")
    (wd / "config").symlink_to(REPO / "config")
    (wd / ".test").symlink_to(REPO / ".test")
    cfg = wd / ".test" / "config" / "config.yaml"
    proc = run_snakemake(wd, "--cores", "all", "--configfile", ".test/config/config.yaml")
    dest = os.environ.get("SEMMECH_SMOKE_REFERENCE")
    if dest and proc.returncode != 0:
        Path(dest + ".failed").write_text(proc.stderr[-4000:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    if dest and not Path(dest).exists():
        partial = Path(dest + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(wd / "results", partial, symlinks=True)
        partial.rename(dest)
    return wd, cfg
