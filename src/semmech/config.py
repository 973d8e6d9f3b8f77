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
    import jsonschema
    from snakemake.utils import validate

    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        raise ConfigError(f"invalid config at {where}: {error.message}")
    out = copy.deepcopy(cfg)
    validate(out, str(schema_path), set_default=True)  # fills defaults exactly as the workflow does
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
