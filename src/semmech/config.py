"""Configuration: one place that validates a config and derives per-prompt seeds.

Snakemake validates ``config/config.yaml`` at start-up with the same JSON schema
(``workflow/schemas/config.schema.yaml``), so the workflow and the tests agree on
what a valid config is and on its defaults.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The config is malformed: unknown keys, wrong types or impossible values."""


def validate_config(cfg: dict[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Return a validated copy of ``cfg`` with schema defaults filled in.

    The workflow calls this at start-up (through :func:`semmech.startup.check_startup`), so the
    rules see exactly what tests see. Defaults are filled as Snakemake's ``validate(...,
    set_default=True)`` fills them (a test compares the two); the schema is parsed once per
    process, which keeps start-up fast.
    """
    schema = (
        _schema()
        if Path(schema_path).resolve() == SCHEMA_PATH
        else yaml.safe_load(Path(schema_path).read_text())
    )
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(cfg)
    )
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        raise ConfigError(f"invalid config at {where}: {error.message}")
    out = copy.deepcopy(cfg)
    _fill_defaults(out, schema)
    _check_semantics(out)
    return out


def load_config(path: str | Path, schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as fh:
        cfg = yaml.safe_load(fh) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: config must be a mapping, got {type(cfg).__name__}")
    return validate_config(cfg, schema_path)


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def section_defaults(name: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of config section ``name`` with the schema's defaults filled in and its keys
    validated, for callers that hold a partial section (tests, notebooks). The schema is the
    one place where defaults live; code reads the filled section, never restates a default."""
    sub = _schema()["properties"].get(name)
    if sub is None:
        raise ConfigError(f"no config section {name!r} in the schema")
    out = copy.deepcopy(dict(values or {}))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(sub).iter_errors(out))
    if error is not None:
        where = ".".join([name, *(str(p) for p in error.absolute_path)])
        raise ConfigError(f"invalid config at {where}: {error.message}")
    _fill_defaults(out, sub)
    return out


def _fill_defaults(value: Any, schema: Mapping[str, Any]) -> None:
    """Fill schema defaults into nested objects, as Snakemake's ``validate`` does."""
    if not isinstance(value, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            _fill_defaults(value[key], sub)


def _type_name(sub: Mapping[str, Any]) -> str:
    t = sub.get("type", "")
    name = " or ".join(t) if isinstance(t, list) else str(t)
    if "enum" in sub:
        name += ": " + " / ".join(f"`{v}`" for v in sub["enum"])
    if "pattern" in sub:
        name += f" matching `{sub['pattern']}`"
    for key, op in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤")):
        if key in sub:
            name += f", {op} {sub[key]}"
    if sub.get("minLength") == 1:
        name += ", non-empty"
    return name


def config_reference() -> str:
    """``config/README.md``: every key of the schema with its type, default and meaning,
    generated from the schema so that the two cannot drift apart (a test compares them)."""
    schema = _schema()
    lines = [
        "# Configuration reference",
        "",
        "Generated from `workflow/schemas/config.schema.yaml` by `semmech config-reference`;",
        "a test fails when the two differ. Every key is optional unless marked required;",
        "unknown keys are errors. Nested keys are written with dots.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]

    def walk(sub: Mapping[str, Any], prefix: str, required: set[str]) -> None:
        for key, child in sub.get("properties", {}).items():
            path = f"{prefix}{key}"
            default = (
                json.dumps(child["default"])
                if "default" in child
                else ("required" if key in required else "")
            )
            desc = str(child.get("description", "")).replace("|", "\\|")
            if child.get("type") == "object" and "properties" in child:
                lines.append(f"| `{path}` | section | | {desc} |")
                walk(child, path + ".", set(child.get("required", [])))
            else:
                kind = _type_name(child).replace("|", "\\|")
                lines.append(f"| `{path}` | {kind} | {default} | {desc} |")

    walk(schema, "", set(schema.get("required", [])))
    return "\n".join(lines) + "\n"


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
    budgets = steering.get("budgets") or []
    max_nodes = cfg.get("attribution", {}).get("max_feature_nodes")
    if budgets and max_nodes is not None and max(budgets) > max_nodes:
        raise ConfigError(
            f"steering.budgets: budget B={max(budgets)} exceeds attribution.max_feature_nodes="
            f"{max_nodes}, the most feature nodes a signature can hold; lower steering.budgets "
            "or raise attribution.max_feature_nodes"
        )
