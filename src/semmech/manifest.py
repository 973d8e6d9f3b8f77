"""A reviewer's manifest: every artifact of a run with its sha256 and the rule that made it,
plus the config, seed, package versions and the model's weight hash, and a verifier.

Logs and Snakemake benchmark files are left out: they record wall-clock times and differ
between otherwise identical runs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import io

MANIFEST_NAME = "manifest.json"
EXCLUDED_DIRS = ("logs", "benchmarks")
PACKAGES = (
    "semmech",
    "torch",
    "transformers",
    "nnsight",
    "snakemake",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "scipy",
    "umap-learn",
    "hdbscan",
    "matplotlib",
    "sentence-transformers",
    "safetensors",
    "gguf",
)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def artifact_paths(run_dir: str | Path) -> list[Path]:
    """Every file of a run that a reviewer checks, relative to the run directory, sorted."""
    run_dir = Path(run_dir)
    out = []
    for p in sorted(run_dir.rglob("*")):
        rel = p.relative_to(run_dir)
        if not p.is_file() or rel.parts[0] in EXCLUDED_DIRS or rel.name == MANIFEST_NAME:
            continue
        if rel.name.startswith("."):
            continue  # in-flight temporary files of atomic writes
        out.append(rel)
    return out


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def rule_for(path: str, producers: Mapping[str, str]) -> str:
    """The rule whose output pattern (a regex over paths) matches ``path``."""
    for pattern, rule in producers.items():
        if re.fullmatch(pattern, path):
            return rule
    return "unknown"


def build_manifest(
    run_dir: str | Path,
    producers: Mapping[str, str],
    config: Mapping[str, Any],
    model_weights_sha256: str,
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    artifacts = []
    for rel in artifact_paths(run_dir):
        full = run_dir / rel
        artifacts.append(
            {
                "path": rel.as_posix(),
                "sha256": sha256_file(full),
                "bytes": full.stat().st_size,
                "rule": rule_for((run_dir / rel).as_posix(), producers),
            }
        )
    return {
        "run": config.get("run"),
        "seed": config.get("seed"),
        "config": dict(config),
        "model": {
            "name": config.get("model", {}).get("name"),
            "weights_sha256": model_weights_sha256,
        },
        "packages": package_versions(),
        "python": platform.python_version(),
        "artifacts": artifacts,
    }


def write_manifest(
    run_dir: str | Path,
    producers: Mapping[str, str],
    config: Mapping[str, Any],
    model_weights_sha256: str,
    out: str | Path | None = None,
) -> Path:
    out = Path(out) if out else Path(run_dir) / MANIFEST_NAME
    io.write_json(build_manifest(run_dir, producers, config, model_weights_sha256), out)
    return out


def verify(run_dir: str | Path) -> list[str]:
    """Re-hash every listed artifact; return one line per problem (empty when all match)."""
    run_dir = Path(run_dir)
    manifest = io.read_json(run_dir / MANIFEST_NAME)
    problems = []
    listed = set()
    for art in manifest["artifacts"]:
        listed.add(art["path"])
        f = run_dir / art["path"]
        if not f.is_file():
            problems.append(f"MISSING  {art['path']}")
        elif sha256_file(f) != art["sha256"]:
            problems.append(f"MISMATCH {art['path']} (made by rule {art['rule']})")
    for rel in artifact_paths(run_dir):
        if rel.as_posix() not in listed:
            problems.append(f"UNLISTED {rel.as_posix()}")
    return problems
