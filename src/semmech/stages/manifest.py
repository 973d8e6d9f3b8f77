"""Entry point of ``workflow/rules/manifest.smk``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io import remove_orphan_sidecars
from ..manifest import write_manifest
from ..model.source import model_weights_sha256


def run_manifest(
    *,
    run_dir: str | Path,
    producers: Mapping[str, str],
    config: Mapping[str, Any],
    model_name: str,
    out: str | Path,
) -> Path:
    """``manifest.json``: every artifact's recorded hash and producing rule, the config,
    versions and the model's weight hash. Integrity records left by files Snakemake deleted
    (failed or re-run jobs) are removed first."""
    remove_orphan_sidecars(run_dir)
    return write_manifest(run_dir, producers, config, model_weights_sha256(model_name), out=out)
