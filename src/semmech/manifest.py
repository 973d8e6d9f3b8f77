"""A reviewer's manifest: every artifact of a run with its sha256 and the rule that made it,
plus the config, seed, package versions and the model's weight hash, and a verifier.

Logs and Snakemake benchmark files are left out: they record wall-clock times and differ
between otherwise identical runs.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from . import io

MANIFEST_NAME = "manifest.json"
EXCLUDED_DIRS = ("logs", "benchmarks")
SNAKEMAKE_MARKER = ".snakemake_timestamp"  # Snakemake's mark in a directory() output
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


class ManifestError(ValueError):
    """The manifest is missing, unreadable or not a manifest: nothing can be verified."""


def sha256_file(path: str | Path) -> str:
    return io.sha256_file(path)


def artifact_paths(run_dir: str | Path) -> list[Path]:
    """Every file of a run that a reviewer checks, relative to the run directory, sorted.

    Leaves out logs and Snakemake benchmark files (wall-clock times), the manifest itself, the
    integrity record ``<file>.sha256`` of a file that exists beside it (checked together with
    that file) and Snakemake's ``.snakemake_timestamp`` markers of directory outputs. Every
    other file counts, dot-files included: the temporary files of atomic writes never remain
    after a successful run, so a hidden file is something a reviewer must see."""
    run_dir = Path(run_dir)
    out = []
    for p in sorted(run_dir.rglob("*")):
        rel = p.relative_to(run_dir)
        if not p.is_file() or rel.parts[0] in EXCLUDED_DIRS:
            continue
        if rel.as_posix() in (MANIFEST_NAME, MANIFEST_NAME + io.SIDECAR_SUFFIX):
            continue
        if rel.name == SNAKEMAKE_MARKER or io.is_sidecar(p):
            continue
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
    """The manifest of a finished run. Each artifact's ``sha256`` is the hash recorded when
    the file was written (``<file>.sha256``), not a fresh hash of whatever is on disk now, so
    a file changed after it was written shows up in ``semmech verify``. A file without a
    record was not written by the workflow: the manifest refuses it, naming it."""
    run_dir = Path(run_dir)
    artifacts = []
    for rel in artifact_paths(run_dir):
        full = run_dir / rel
        recorded = io.recorded_sha256(full)
        if recorded is None:
            raise ManifestError(
                f"{full}: no integrity record {io.sidecar_path(full).name}: the workflow did not "
                "write this file (remove it, or re-run the rule that makes it)"
            )
        artifacts.append(
            {
                "path": rel.as_posix(),
                "sha256": recorded,
                "bytes": full.stat().st_size,
                "rule": rule_for(full.as_posix(), producers),
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


def read_manifest(run_dir: str | Path) -> list[dict[str, Any]]:
    """The artifact list of ``run_dir/manifest.json``; :class:`ManifestError` (one line)
    when the manifest is missing, unreadable or malformed."""
    path = Path(run_dir) / MANIFEST_NAME
    if not Path(run_dir).is_dir():
        raise ManifestError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (build it with snakemake, target manifest)")
    try:
        manifest = json.loads(path.read_text())
    except Exception as exc:
        raise ManifestError(
            f"{path}: not a readable JSON manifest ({type(exc).__name__}: {exc})"
        ) from None
    artifacts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if not isinstance(artifacts, list) or not artifacts:
        raise ManifestError(f"{path}: not a manifest (no 'artifacts' list, or it is empty)")
    for i, art in enumerate(artifacts):
        if not (
            isinstance(art, dict)
            and isinstance(art.get("path"), str)
            and art["path"]
            and isinstance(art.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", art["sha256"])
        ):
            raise ManifestError(
                f"{path}: artifact {i} is malformed (needs a 'path' and a 64-hex 'sha256'): "
                f"{str(art)[:120]}"
            )
    return artifacts


def inside(run_dir: Path, rel: str) -> bool:
    """Whether manifest path ``rel`` names a file inside ``run_dir`` (relative, no '..', and
    no symbolic link leading out)."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel or rel != pure.as_posix():
        return False
    root = run_dir.resolve()
    return (run_dir / pure).resolve().is_relative_to(root)


def verify(run_dir: str | Path) -> list[str]:
    """Re-hash every listed artifact; return one line per problem (empty when all match).

    Raises :class:`ManifestError` when there is no usable manifest."""
    run_dir = Path(run_dir)
    artifacts = read_manifest(run_dir)
    problems = []
    listed = set()
    for art in artifacts:
        rel, rule = art["path"], art.get("rule", "unknown")
        if not inside(run_dir, rel):
            problems.append(f"OUTSIDE  {rel} (a manifest path must stay inside {run_dir})")
            continue
        listed.add(PurePosixPath(rel).as_posix())
        f = run_dir / rel
        if not f.is_file():
            problems.append(f"MISSING  {rel}")
            continue
        if io.sha256_file(f) != art["sha256"]:
            problems.append(f"MISMATCH {rel} (made by rule {rule})")
        side = io.sidecar_path(f)
        try:
            recorded = io.recorded_sha256(f)
        except io.IntegrityError:
            recorded = "malformed"
        if recorded is None:
            problems.append(f"MISSING  {rel}{io.SIDECAR_SUFFIX} (integrity record of {rel})")
        elif recorded != art["sha256"]:
            problems.append(f"MISMATCH {side.relative_to(run_dir).as_posix()} (integrity record)")
    for rel in artifact_paths(run_dir):
        if rel.as_posix() not in listed:
            problems.append(f"UNLISTED {rel.as_posix()}")
    return problems
