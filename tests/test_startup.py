"""No bad input gets past start-up: every key of the schema is tried with a wrong type and an
out-of-range or malformed value, plus the inputs the schema cannot see (prompt files, model
folders, cross-key constraints). Each must be refused before any job runs, naming the key.

The cases are generated from workflow/schemas/config.schema.yaml when the test runs, so a key
added later is covered without editing this file. Most are checked in-process with
``semmech.startup.check_startup`` (exactly what workflow/rules/common.smk calls); every case
that passes it, and a sample of those it refuses, go through a real ``snakemake -n``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml
from conftest import REPO, run_snakemake
from safetensors.numpy import save_file

from semmech.config import SCHEMA_PATH, ConfigError, validate_config
from semmech.model.source import (
    ChatTemplateError,
    ModelNotFoundError,
    check_model_available,
    model_dir_problems,
)
from semmech.model.transcoder_format import (
    BasisMismatchError,
    TranscoderFormatError,
    TranscoderNotFoundError,
)
from semmech.prompts import PromptFileError, read_prompts
from semmech.startup import check_startup
from semmech.steer.settings import SteeringInputError
from semmech.views.embedding_source import (
    EmbeddingModelNotFoundError,
    EmbeddingSettingError,
    check_embedding_available,
    check_task_prefix,
)

# Every error type a start-up check raises (each message names its config key).
STARTUP_ERRORS = (
    ConfigError,
    PromptFileError,
    ModelNotFoundError,
    ChatTemplateError,
    EmbeddingModelNotFoundError,
    EmbeddingSettingError,
    SteeringInputError,
    TranscoderFormatError,
    TranscoderNotFoundError,
    BasisMismatchError,
)

SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
BASE = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
BASE["prompts"] = str(REPO / ".test" / "config" / "prompts.yaml")
# How many of the cases refused in-process are also run through `snakemake -n`.
SNAKEMAKE_SAMPLE = 6


# --------------------------------------------------------------------------------------------
# The schema, walked


def _subschemas(node: Any, where: str = "<root>"):
    """Every schema object in ``node`` (properties, items and combinators), with its path."""
    if not isinstance(node, dict):
        return
    yield where, node
    for key, sub in node.get("properties", {}).items():
        yield from _subschemas(sub, f"{where}.{key}" if where != "<root>" else key)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            yield from _subschemas(node[key], f"{where}[{key}]")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(node.get(key, [])):
            yield from _subschemas(sub, f"{where}[{key}{i}]")


def _types(sub: dict) -> set[str]:
    """The JSON types a schema allows, through anyOf/oneOf alternatives, consts and enums."""
    t = sub.get("type", [])
    out = {t} if isinstance(t, str) else set(t)
    for value in [*sub.get("enum", []), *([sub["const"]] if "const" in sub else [])]:
        out.add(_json_type(value))
    for key in ("anyOf", "oneOf"):
        for alt in sub.get(key, []):
            out |= _types(alt)
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _rejected(sub: dict, value: Any) -> bool:
    return any(jsonschema.Draft202012Validator(sub).iter_errors(value))


def leaves(node: dict = SCHEMA, prefix: str = ""):
    """(dotted key, schema) of every key that holds a value rather than a section."""
    for key, sub in node.get("properties", {}).items():
        path = prefix + key
        if "properties" in sub:
            yield from leaves(sub, path + ".")
        else:
            yield path, sub


def sections(node: dict = SCHEMA, prefix: str = ""):
    for key, sub in node.get("properties", {}).items():
        if "properties" in sub:
            yield prefix + key, sub
            yield from sections(sub, prefix + key + ".")


def test_every_object_of_the_schema_refuses_unknown_keys():
    objects = [
        (where, sub)
        for where, sub in _subschemas(SCHEMA)
        if "object" in _types(sub) or "properties" in sub
    ]
    assert len(objects) >= 15
    open_ = [where for where, sub in objects if sub.get("additionalProperties") is not False]
    assert open_ == []


def test_every_pattern_refuses_a_trailing_newline():
    """JSON-schema patterns are searched and `$` also matches before a final newline."""
    import re

    patterns = [(w, s["pattern"]) for w, s in _subschemas(SCHEMA) if "pattern" in s]
    assert len(patterns) >= 4
    for where, pattern in patterns:
        good = _valid_string(where)
        assert re.search(pattern, good), (where, good)
        assert not re.search(pattern, good + "\n"), where


# --------------------------------------------------------------------------------------------
# Bad values generated from the schema


def _valid_string(key: str) -> str:
    """A value of ``key`` that its pattern accepts: the base config's, else the default."""
    value = _get(BASE, key)
    if isinstance(value, str):
        return value
    default = _leaf_schema(key).get("default")
    return default if isinstance(default, str) else "mercury"


def _leaf_schema(key: str) -> dict:
    node = SCHEMA
    for part in key.split("."):
        node = node["properties"][part]
    return node


def _get(cfg: dict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(cfg: dict, key: str, value: Any) -> dict:
    out = copy.deepcopy(cfg)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def wrong_type(sub: dict) -> Any:
    """A value of a JSON type the schema does not allow."""
    types = _types(sub)
    if "integer" in types:
        types.add("number")  # 7 is both
    for value in ((1,) if "boolean" in types else ()) + ("seven", 7, [7], {"seven": 7}):
        if _json_type(value) not in types and _rejected(sub, value):
            return value
    raise LookupError(f"the schema {sub} allows every JSON type")


def malformed(key: str, sub: dict) -> Any:
    """A value of an allowed type that the schema's constraints refuse, derived from them."""
    for alt_key in ("anyOf", "oneOf"):
        for alt in sub.get(alt_key, []):
            try:
                value = malformed(key, {**alt, "default": sub.get("default")})
            except LookupError:
                continue
            if _rejected(sub, value):
                return value
    types = _types(sub)
    if "enum" in sub or "const" in sub:
        return "not-one-of-them"
    if "pattern" in sub:
        return _valid_string(key) + "\n"
    if "boolean" in types:
        return "true"  # the quoted word, a YAML string
    for bound, shift in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1)):
        if bound in sub:
            value = sub[bound] + shift
            return int(value) if "integer" in types else value
    if "minLength" in sub:
        return ""
    if "object" in types and sub.get("additionalProperties") is False:
        return {"not a key!": 1}  # matches no property name or pattern
    if "array" in types:
        items = sub.get("items", {})
        try:
            return [malformed(key + ".0", items)]
        except LookupError:
            if sub.get("minItems"):
                return []
    raise LookupError(
        f"{key}: the schema gives no constraint to violate; add one (pattern, bound, minLength, "
        "enum) or a hand-written case to SEMANTIC_CASES"
    )


def generated_cases() -> list[tuple[str, str, Any]]:
    """(key, kind, value): a wrong type and a malformed value for every leaf key, and a wrong
    type for every section."""
    cases = []
    by_hand = {key for key, _, _ in SEMANTIC_CASES}
    for key, sub in leaves():
        cases.append((key, "wrong type", wrong_type(sub)))
        try:
            value = malformed(key, sub)
        except LookupError:
            if key in by_hand:  # judged by a start-up check, not the schema
                continue
            raise
        assert _rejected(sub, value), f"{key}: generated {value!r} is valid"
        cases.append((key, "malformed", value))
    for key, _ in sections():
        cases.append((key, "wrong type", "seven"))
    for key in ["", *(k + "." for k, _ in sections())]:  # a misspelt key in every object
        cases.append((key + UNKNOWN_KEY, "unknown key", 1))
    return cases


UNKNOWN_KEY = "n_neighbours"  # the example of a misspelt key


def names_key(key: str, message: str) -> bool:
    """The message names ``key``: its last part, and the section it is in."""
    section, _, name = key.rpartition(".")
    return name in message and section in message


# Inputs the schema cannot judge alone: the key named in the error, the override, and
# (optionally) a prompt file's content.
SEMANTIC_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("run", {"run": "x\n"}, None),
    ("run", {"run": "../x"}, None),
    ("prompts", {"prompts": "/no/such/prompts.yaml"}, None),
    ("prompts", {}, '- {id: "abc\\n", text: x}\n'),  # a real trailing newline
    ("prompts", {}, "- {id: Mercury, text: x}\n- {id: mercury, text: y}\n"),
    ("prompts", {}, "- {id: a, text: x}\n- {id: a, text: y}\n"),
    ("prompts", {}, "- {id: '../etc', text: x}\n"),
    ("prompts", {}, ""),
    ("prompts", {}, "- {id: a, text: '  '}\n"),
    ("model.name", {"model.name": "nobody-here/no-such-model"}, None),
    ("model.name", {"model.name": "{only_config}"}, None),
    ("model.name", {"model.name": "{no_weights}"}, None),
    ("model.name", {"model.name": "{missing_shard}"}, None),
    ("embedding.model", {"embedding.model": "nobody-here/no-such-encoder"}, None),
    ("embedding.model", {"embedding.model": "{only_config}"}, None),
    ("attribution.transcoder_dir", {"attribution.transcoder_dir": "/no/such/dir"}, None),
    ("figures.example_prompt", {"figures.example_prompt": "venus"}, None),
    ("steering.budgets", {"steering.budgets": [5, 3000]}, None),
    (
        "steering.budgets",
        {"steering.budgets": [40], "attribution.max_feature_nodes": 32},
        None,
    ),
    ("steering.epsilons", {"steering.epsilons": [-1.0, 1.0]}, None),
    ("steering.epsilons", {"steering.epsilons": [0.0, 1.0, 1.0]}, None),
    ("steering.configs", {"steering.configs": [[9.0, 0.5]]}, None),
    ("figures.configs", {"figures.configs": [[1.0, 0.123]]}, None),
    ("clustering.gammas", {"clustering.gammas": [1.5]}, None),
    # the paper's AmbigQA prompt set: no local copy named, or none at the named path
    ("ambigqa.path", {"prompts": "ambigqa"}, None),
    ("ambigqa.path", {"prompts": "ambigqa", "ambigqa.path": "/no/such/ambigqa"}, None),
    # every steered K needs a K-means labelling; auto steering names no table configuration
    (
        "steering.k_clamp",
        {"steering.configs": "auto", "steering.k_clamp": 13, "figures.configs": [[1.0, 0.5]]},
        None,
    ),
    ("figures.configs", {"steering.configs": "auto"}, None),
    ("model.chat_template_kwargs", {"model.chat_template_kwargs": {"tokenize": False}}, None),
    (
        "model.chat_template_kwargs",
        {"model.chat_template": False, "model.chat_template_kwargs": {"enable_thinking": False}},
        None,
    ),
    ("embedding.task_prefix", {"embedding.task_prefix": "word " * 300}, None),
    # transcoder sets: not found, cross-layer, a layer file missing, made for another model
    ("attribution.transcoder_dir", {"attribution.transcoder_dir": "nobody-here/no-set"}, None),
    (
        "attribution.transcoder_dir",
        {"attribution.basis": "transcoder", "attribution.transcoder_dir": "{cross_layer}"},
        None,
    ),
    (
        "attribution.transcoder_dir",
        {"attribution.basis": "transcoder", "attribution.transcoder_dir": "{missing_layer}"},
        None,
    ),
    (
        "attribution.transcoder_dir",
        {"attribution.basis": "transcoder", "attribution.transcoder_dir": "{other_model_set}"},
        None,
    ),
]


def _model_dirs(root: Path) -> dict[str, str]:
    """Incomplete model folders: config only; config + tokenizer; a shard index whose shard
    is missing."""
    only = root / "only_config"
    only.mkdir()
    (only / "config.json").write_text("{}")
    no_w = root / "no_weights"
    no_w.mkdir()
    (no_w / "config.json").write_text("{}")
    (no_w / "tokenizer.json").write_text("{}")
    shard = root / "missing_shard"
    shard.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (shard / f).write_text("{}")
    (shard / "model-00001-of-00002.safetensors").write_bytes(b"x" * 16)
    (shard / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "a": "model-00001-of-00002.safetensors",
                    "b": "model-00002-of-00002.safetensors",
                }
            }
        )
    )
    return {
        "only_config": str(only),
        "no_weights": str(no_w),
        "missing_shard": str(shard),
    }


def _transcoder_sets(root: Path, n_layers: int) -> dict[str, str]:
    """Transcoder sets that cannot be used: a cross-layer transcoder, a per-layer set missing
    layer 1, and a set with a file for each of the model's ``n_layers`` layers whose d_model
    (8) is not the model's."""

    def layer(d: int, n_features: int = 4) -> dict[str, np.ndarray]:
        z = np.zeros
        return {
            "W_enc": z((n_features, d), np.float32),
            "b_enc": z(n_features, np.float32),
            "W_dec": z((n_features, d), np.float32),
            "b_dec": z(d, np.float32),
        }

    def make(name: str, kind: str, layers: dict[str, dict[str, np.ndarray]]) -> str:
        folder = root / name
        folder.mkdir()
        hooks = "feature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n"
        (folder / "config.yaml").write_text(f"model_kind: {kind}\n{hooks}")
        for file, tensors in layers.items():
            save_file(tensors, str(folder / file))
        return str(folder)

    return {
        "cross_layer": make(
            "cross_layer", "cross_layer_transcoder", {"W_enc_0.safetensors": layer(8)}
        ),
        "missing_layer": make(
            "missing_layer",
            "transcoder_set",
            {"layer_0.safetensors": layer(8), "layer_2.safetensors": layer(8)},
        ),
        "other_model_set": make(
            "other_model_set",
            "transcoder_set",
            {f"layer_{i}.safetensors": layer(8) for i in range(n_layers)},
        ),
    }


def all_cases(root: Path, model_dir: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, description, config) of every bad input, generated and hand-written
    (``model_dir``: the prepared default model, whose layer count the transcoder sets use)."""
    n_layers = json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]
    dirs = {**_model_dirs(root), **_transcoder_sets(root, n_layers)}
    out = []
    for key, kind, value in generated_cases():
        out.append((key, f"{kind} {value!r}", _set(BASE, key, value)))
    for i, (key, overrides, prompts) in enumerate(SEMANTIC_CASES):
        cfg = copy.deepcopy(BASE)
        for k, v in overrides.items():
            cfg = _set(cfg, k, v.format(**dirs) if isinstance(v, str) else v)
        if prompts is not None:
            pfile = root / f"prompts_{i}.yaml"
            pfile.write_text(prompts)
            cfg["prompts"] = str(pfile)
        out.append((key, f"semantic {overrides or prompts!r}", cfg))
    return out


def _dry_run(wd: Path, cfg: dict) -> tuple[Any, float]:
    wd.mkdir(parents=True, exist_ok=True)
    cfg_file = wd / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.perf_counter()
    proc = run_snakemake(wd, "-n", "--configfile", str(cfg_file), timeout=300)
    return proc, time.perf_counter() - t0


def test_every_bad_input_is_refused_at_start_up_naming_its_key(tmp_path, capsys, default_model_dir):
    root = tmp_path / "inputs"
    root.mkdir()
    cases = all_cases(root, default_model_dir)
    n_generated = len(generated_cases())
    assert n_generated >= 2 * len(list(leaves())) + 2 * len(list(sections()))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    refused_in_process, passed_in_process = [], []
    for key, what, cfg in cases:
        try:
            check_startup(cfg)
        except STARTUP_ERRORS as exc:
            assert names_key(key, str(exc)), f"{key} ({what}): the error does not name it: {exc}"
            refused_in_process.append((key, what, cfg))
        else:
            passed_in_process.append((key, what, cfg))
    # nothing written by the checks themselves
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    # what the in-process checks let through (checks of the rule files), and a sample of what
    # they refused, through the real workflow: non-zero exit, the key named, nothing written
    step = max(1, len(refused_in_process) // SNAKEMAKE_SAMPLE)
    sample = refused_in_process[::step][:SNAKEMAKE_SAMPLE]
    times = []
    for i, (key, what, cfg) in enumerate(passed_in_process + sample):
        wd = tmp_path / f"wd{i}"
        proc, seconds = _dry_run(wd, cfg)
        times.append(seconds)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"{key} ({what}) was accepted by snakemake -n:\n{out[-2000:]}"
        assert names_key(key, out), (
            f"{key} ({what}): snakemake's error does not name the key:\n{out[-2000:]}"
        )
        assert not (wd / "results").exists(), f"{key} ({what}) wrote results/"
        assert "Job stats" not in out and "rule sample" not in out
    with capsys.disabled():
        print(
            f"\nbad inputs: {len(cases)} tried ({n_generated} generated from the schema, "
            f"{len(SEMANTIC_CASES)} hand-written); {len(refused_in_process)} refused by "
            f"check_startup, {len(passed_in_process)} more refused by the rule files at "
            f"start-up; {len(passed_in_process) + len(sample)} run through snakemake -n "
            f"(max {max(times):.1f} s); 0 accepted"
        )


# --------------------------------------------------------------------------------------------
# The individual start-up checks


def test_prompt_ids_and_run_names_must_match_whole(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text('- {id: "abc\\n", text: x}\n')
    with pytest.raises(PromptFileError, match="unsafe prompt id 'abc\\\\n'"):
        read_prompts(f)
    with pytest.raises(ConfigError, match="run"):
        validate_config({**BASE, "run": "x\n"})
    assert validate_config({**BASE, "run": "x.y-1"})["run"] == "x.y-1"


def test_prompt_ids_differing_only_in_case_are_refused(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,text\nMercury,What is Mercury?\nmercury,What is mercury?\n")
    with pytest.raises(PromptFileError, match="'mercury' differs from 'Mercury' only in case"):
        read_prompts(f)


def test_steering_budget_above_the_node_budget_is_refused():
    cfg = _set(_set(BASE, "steering.budgets", [5, 64]), "attribution.max_feature_nodes", 32)
    with pytest.raises(ConfigError, match="steering.budgets.*B=64.*max_feature_nodes=32"):
        validate_config(cfg)
    ok = _set(cfg, "attribution.max_feature_nodes", 64)
    assert validate_config(ok)["steering"]["budgets"] == [5, 64]


def test_model_folder_must_hold_config_tokenizer_and_weights(tmp_path, default_model_dir):
    dirs = _model_dirs(tmp_path)
    assert model_dir_problems(default_model_dir) == []
    with pytest.raises(ModelNotFoundError, match="model.name: .*only_config.*lacks a tokenizer"):
        check_model_available(dirs["only_config"])
    with pytest.raises(ModelNotFoundError, match="lacks weights"):
        check_model_available(dirs["no_weights"])
    with pytest.raises(ModelNotFoundError, match="model-00002-of-00002.safetensors"):
        check_model_available(dirs["missing_shard"])
    # a complete copy of the default model passes
    full = tmp_path / "full"
    full.mkdir()
    for f in default_model_dir.iterdir():
        (full / f.name).symlink_to(f)
    check_model_available(str(full))


def test_embedding_model_is_found_offline_at_start_up(tmp_path):
    check_embedding_available("default")
    with pytest.raises(EmbeddingModelNotFoundError, match="embedding.model: .*local copy"):
        check_embedding_available("nobody-here/no-such-encoder")
    dirs = _model_dirs(tmp_path)
    with pytest.raises(EmbeddingModelNotFoundError, match="embedding.model: .*lacks a tokenizer"):
        check_embedding_available(dirs["only_config"])


def test_task_prefix_must_leave_room_in_the_encoder_window():
    """The task prefix is never truncated: with the encoder's special tokens it must leave at
    least one token of the window (the default encoder's is 256) for the continuation."""
    check_task_prefix("default", "task: search result | query: ")
    check_task_prefix("default", "word " * 253)  # 253 + [CLS] + [SEP] = 255 tokens
    with pytest.raises(
        EmbeddingSettingError, match=r"embedding.task_prefix: 256 tokens .* 256-token"
    ):
        check_task_prefix("default", "word " * 254)
