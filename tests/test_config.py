from pathlib import Path

import pytest
import yaml

from semmech.config import ConfigError, derive_seed, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml"])
def test_shipped_configs_validate_and_get_defaults(name):
    cfg = load_config(REPO / "config" / name)
    assert cfg["sampling"]["top_p"] == pytest.approx(0.9)
    assert cfg["model"]["device"] == "auto"
    assert cfg["clustering"]["betas"] == [0.5, 0.75, 1.0, 1.25]


def _base():
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


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
