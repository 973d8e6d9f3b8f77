from pathlib import Path

import pytest
import yaml

from semmech.config import (
    ConfigError,
    config_reference,
    derive_seed,
    load_config,
    section_defaults,
    validate_config,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["config/config.yaml", ".test/config/config.yaml"])
def test_shipped_configs_validate_and_get_defaults(path):
    cfg = load_config(REPO / path)
    assert cfg["sampling"]["top_p"] == pytest.approx(0.9)
    assert cfg["model"]["device"] == "auto"
    assert cfg["clustering"]["max_rounds"] == 100  # a default no shipped config sets


def _base():
    return yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())


def test_unknown_key_is_rejected_with_its_name():
    cfg = _base()
    cfg["sampling"]["n_continuation"] = 3  # typo
    with pytest.raises(ConfigError, match="n_continuation"):
        validate_config(cfg)


def test_unknown_top_level_key_is_rejected():
    cfg = _base()
    cfg["modle"] = {"name": "x"}
    with pytest.raises(ConfigError, match="modle"):
        validate_config(cfg)


def test_wrong_type_is_rejected():
    cfg = _base()
    cfg["sampling"]["max_new_tokens"] = "twenty"
    with pytest.raises(ConfigError, match="twenty"):
        validate_config(cfg)


def test_out_of_range_top_p_is_rejected():
    cfg = _base()
    cfg["sampling"]["top_p"] = 1.5
    with pytest.raises(ConfigError):
        validate_config(cfg)


def test_epsilon_grid_needs_zero():
    cfg = _base()
    cfg["steering"] = {"epsilons": [-1.0, 1.0]}
    with pytest.raises(ConfigError, match="must contain 0"):
        validate_config(cfg)


def test_derived_seeds_depend_only_on_their_keys():
    assert derive_seed(0, "a", "sample") == derive_seed(0, "a", "sample")
    assert derive_seed(0, "a", "sample") != derive_seed(1, "a", "sample")
    assert derive_seed(0, "a", "sample") != derive_seed(0, "b", "sample")


def test_config_readme_is_the_generated_reference_and_documents_every_key():
    """config/README.md is generated from the schema (`semmech config-reference`), and every
    key of the schema carries a description, so the reference documents every key."""
    assert (REPO / "config" / "README.md").read_text() == config_reference()
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    undocumented = []

    def walk(sub, prefix):
        for key, child in sub.get("properties", {}).items():
            if not str(child.get("description", "")).strip():
                undocumented.append(prefix + key)
            walk(child, prefix + key + ".")

    walk(schema, "")
    assert undocumented == []
    assert config_reference().count("\n| `") == sum(1 for _ in _keys(schema))


def _keys(sub, prefix=""):
    for key, child in sub.get("properties", {}).items():
        yield prefix + key
        yield from _keys(child, prefix + key + ".")


def test_section_defaults_come_from_the_schema():
    full = section_defaults("sampling", {"n_continuations": 3})
    assert full["n_continuations"] == 3 and full["top_p"] == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="sampling.n_continuations"):
        section_defaults("sampling", {"n_continuations": "many"})
    assert load_config(REPO / "config" / "config.yaml")["steering"] == section_defaults(
        "steering", load_config(REPO / "config" / "config.yaml")["steering"]
    )


@pytest.mark.parametrize(
    "path", ["config/config.yaml", "config/paper.yaml", ".test/config/config.yaml"]
)
def test_defaults_are_filled_as_snakemake_fills_them(path):
    """validate_config fills defaults itself (the schema parsed once per process); the result
    is what Snakemake's own validate(..., set_default=True) makes of the same config, and
    validating it again changes nothing (the defaults are valid values)."""
    from snakemake.utils import validate

    from semmech.config import SCHEMA_PATH

    raw = yaml.safe_load((REPO / path).read_text())
    ours = validate_config(raw)
    theirs = yaml.safe_load((REPO / path).read_text())
    validate(theirs, str(SCHEMA_PATH), set_default=True)
    assert ours == theirs
    assert validate_config(ours) == ours
