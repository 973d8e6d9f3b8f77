"""Configuration: one place that validates a config and derives per-prompt seeds.

Snakemake validates ``config/config.yaml`` at start-up with the same JSON schema
(``workflow/schemas/config.schema.yaml``), so the workflow and the tests agree on
what a valid config is and on its defaults.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The config is malformed: unknown keys, wrong types or impossible values."""


def validate_config(cfg: dict[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Return a validated copy of ``cfg`` with schema defaults filled in.

    Uses Snakemake's own ``validate`` so that the rules see exactly what tests see.
    """
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    out = copy.deepcopy(cfg)
    try:
        validate(out, str(schema_path), set_default=True)
    except WorkflowError as exc:
        raise ConfigError(_short_validation_message(exc)) from None
    _check_semantics(out)
    return out


def load_config(path: str | Path, schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as fh:
        cfg = yaml.safe_load(fh) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: config must be a mapping, got {type(cfg).__name__}")
    return validate_config(cfg, schema_path)


def derive_seed(seed: int, *keys: object) -> int:
    """A seed for one unit of work that depends only on the config seed and its own keys,
    so a prompt's result never depends on which other prompts run."""
    digest = hashlib.sha256(":".join([str(seed), *map(str, keys)]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _check_semantics(cfg: dict[str, Any]) -> None:
    """Constraints that JSON schema cannot express neatly."""
    steering = cfg.get("steering", {})
    eps = steering.get("epsilons")
    if eps is not None and 0 not in [float(e) for e in eps]:
        raise ConfigError("steering.epsilons must contain 0 (the unsteered reference)")
    clustering = cfg.get("clustering", {})
    for g in clustering.get("gammas", []):
        if not 0.0 <= float(g) <= 1.0:
            raise ConfigError(f"clustering.gammas: {g} is outside [0, 1]")


def _short_validation_message(exc: Exception) -> str:
    """Snakemake's message embeds the whole config; keep the part that names the problem."""
    text = str(exc)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = lines[0] if lines else text
    for ln in lines:
        if "Failed validating" in ln or "is not valid" in ln or "Additional properties" in ln \
                or "is a required property" in ln or "is not of type" in ln or "is less than" in ln:
            head = ln.strip()
            break
    return f"invalid config: {head}"
