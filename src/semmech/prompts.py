"""Prompt sets, validated before any model loads: ``{id, text}`` records from YAML, CSV or TSV,
or the paper's AmbigQA selection (``prompts: ambigqa``, read from a local copy of the data).

Prompt ids become file names in the DAG, so they must be unique and filesystem-safe: the
whole id must match (a trailing newline is not part of a safe id), and two ids may not differ
only in case (they would name the same file on a case-insensitive filesystem).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml

from .ambigqa import AmbigQAError, AmbigQAPrompt, group_prompts, question_groups, select_groups

# The value of ``prompts`` that selects the AmbigQA prompt set of the ``ambigqa`` config section.
AMBIGQA = "ambigqa"
AMBIGQA_SOURCES = (
    "the AmbigQA site, https://nlp.cs.washington.edu/ambigqa/ (data/ambignq_light.zip holds "
    "train_light.json and dev_light.json), or the Hugging Face dataset sewon/ambig_qa, config "
    "'light', saved with `datasets.load_dataset('sewon/ambig_qa', 'light').save_to_disk(DIR)`"
)
# Split names of the original files (the Hugging Face copy calls the dev split "validation").
_JSON_SPLIT = {"train": "train", "validation": "dev", "dev": "dev"}

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # used with fullmatch only


class PromptFileError(ValueError):
    """The prompt file is missing, empty, or has bad ids or texts."""


class AmbigQADataError(PromptFileError):
    """The local AmbigQA copy is missing or not in a format this module reads."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


def read_prompts(path: str | Path) -> list[Prompt]:
    """Read and validate a prompt file; every problem names the file and the record."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file not found: {path}")
    return check_prompts(_read_records(path), str(path))


def check_prompts(records: list, path: str) -> list[Prompt]:
    """Validate ``{id, text}`` records (of a prompt file, or a generated set named by ``path``)."""
    if not records:
        raise PromptFileError(f"{path}: the prompt file is empty (expected a list of {{id, text}})")
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}  # case-folded id -> id as written
    for i, rec in enumerate(records):
        if (
            not isinstance(rec, dict)
            or set(rec) - {"id", "text"}
            or "id" not in rec
            or "text" not in rec
        ):
            raise PromptFileError(
                f"{path}: record {i} must have exactly the keys 'id' and 'text', got {rec!r}"
            )
        pid, text = rec["id"], rec["text"]
        if not isinstance(pid, str) or not SAFE_ID.fullmatch(pid):
            raise PromptFileError(
                f"{path}: record {i}: unsafe prompt id {pid!r} (ids become file names: use 1-64 "
                "characters from letters, digits, '_' and '-', starting with a letter or digit)"
            )
        if seen.get(pid.casefold()) == pid:
            raise PromptFileError(f"{path}: duplicate prompt id {pid!r}")
        if pid.casefold() in seen:
            raise PromptFileError(
                f"{path}: record {i}: prompt id {pid!r} differs from {seen[pid.casefold()]!r} "
                "only in case (they would share file names on case-insensitive filesystems)"
            )
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"{path}: prompt {pid!r} has empty text")
        seen[pid.casefold()] = pid
        prompts.append(Prompt(pid, text))
    return prompts


def _read_records(path: Path) -> list:
    suffix = path.suffix.lower()
    try:
        if suffix in {".yaml", ".yml", ".json"}:
            data = yaml.safe_load(path.read_text())
            if data is None:
                return []
            if isinstance(data, dict) and "prompts" in data:
                data = data["prompts"]
            if not isinstance(data, list):
                raise PromptFileError(f"{path}: expected a list of {{id, text}} records")
            return data
        if suffix in {".csv", ".tsv"}:
            if path.stat().st_size == 0:
                return []
            df = pd.read_csv(
                path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False
            )
            return df.to_dict("records")
    except PromptFileError:
        raise
    except Exception as exc:
        raise PromptFileError(f"{path}: cannot parse prompt file ({exc})") from exc
    raise PromptFileError(
        f"{path}: unsupported prompt file type {suffix!r} (use .yaml, .csv or .tsv)"
    )


def configured_prompts(cfg: Mapping[str, Any]) -> list[Prompt]:
    """The prompt set of a validated config: the file named by ``prompts``, or the AmbigQA
    selection of the ``ambigqa`` section when ``prompts`` is ``ambigqa``. The workflow calls
    this at parse time, so every job knows the prompt ids before any model loads."""
    if cfg["prompts"] == AMBIGQA:
        records = ambigqa_prompt_records(cfg["ambigqa"])
        return check_prompts(
            [{"id": p.id, "text": p.text} for p in records], f"AmbigQA at {cfg['ambigqa']['path']}"
        )
    return read_prompts(cfg["prompts"])


def ambigqa_prompt_records(ambigqa_cfg: Mapping[str, Any]) -> list[AmbigQAPrompt]:
    """The AmbigQA prompts of an ``ambigqa`` config section (defaults filled)."""
    path = ambigqa_cfg["path"]
    if path is None:
        raise AmbigQADataError(
            "prompts: ambigqa needs ambigqa.path, a local copy of AmbigQA; get it from "
            + AMBIGQA_SOURCES
        )
    rows = read_ambigqa_rows(path, ambigqa_cfg["split"])
    try:
        groups = question_groups(rows)
        if not groups:
            raise AmbigQAError("no row has a non-empty question")
        chosen = select_groups(groups, int(ambigqa_cfg["n_groups"]), int(ambigqa_cfg["seed"]))
        return group_prompts(chosen)
    except AmbigQAError as exc:
        raise AmbigQADataError(f"AmbigQA at {path}: {exc}") from exc


def read_ambigqa_rows(path: str | Path, split: str = "train") -> list[dict[str, Any]]:
    """The rows (``id``, ``question``, ``annotations``) of one AmbigQA split, from

    - a directory written by ``datasets``' ``save_to_disk``: a DatasetDict (``dataset_dict.json``
      and one sub-directory per split) or a single Dataset (``state.json``,
      ``dataset_info.json`` and ``data-*.arrow`` files in Arrow's IPC stream format);
    - the original ``train_light.json`` / ``dev_light.json`` (a JSON list of rows), named
      directly (used as is: the file is the split) or found in the directory by ``split``.
    """
    path = Path(path)
    if not path.exists():
        raise AmbigQADataError(f"AmbigQA data not found at {path}; get it from {AMBIGQA_SOURCES}")
    if path.is_file():
        return _read_ambigqa_json(path)
    if (path / "dataset_dict.json").is_file():
        splits = _read_json_file(path / "dataset_dict.json").get("splits", [])
        if split not in splits:
            raise AmbigQADataError(
                f"{path}: no split {split!r} in this saved DatasetDict (splits: {splits})"
            )
        return _read_saved_dataset(path / split)
    if (path / "state.json").is_file():
        return _read_saved_dataset(path)
    light = path / f"{_JSON_SPLIT.get(split, split)}_light.json"
    if light.is_file():
        return _read_ambigqa_json(light)
    raise AmbigQADataError(
        f"{path} holds neither a saved Hugging Face dataset (dataset_dict.json or state.json) "
        f"nor {light.name}; get AmbigQA from {AMBIGQA_SOURCES}"
    )


_AMBIGQA_COLUMNS = ("id", "question", "annotations")


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AmbigQADataError(f"{path}: cannot read JSON ({exc})") from exc


def _read_ambigqa_json(path: Path) -> list[dict[str, Any]]:
    rows = _read_json_file(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise AmbigQADataError(f"{path}: expected a JSON list of AmbigQA rows")
    if rows and "question" not in rows[0]:
        raise AmbigQADataError(f"{path}: rows have no 'question' field")
    return rows


def _read_saved_dataset(path: Path) -> list[dict[str, Any]]:
    """One split saved by ``save_to_disk``: its arrow files in ``state.json``'s order."""
    state = _read_json_file(path / "state.json") if (path / "state.json").is_file() else None
    files = [f.get("filename") for f in (state or {}).get("_data_files", [])]
    if not files or not all(isinstance(f, str) for f in files):
        raise AmbigQADataError(f"{path}: state.json lists no _data_files (not a saved dataset)")
    tables = []
    for name in files:
        arrow = path / name
        if not arrow.is_file():
            raise AmbigQADataError(f"{path}: data file {name} listed in state.json is missing")
        try:
            with pa.OSFile(str(arrow), "rb") as fh:
                tables.append(pa.ipc.open_stream(fh).read_all())
        except (OSError, pa.ArrowException) as exc:
            raise AmbigQADataError(f"{arrow}: not an Arrow IPC stream ({exc})") from exc
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if "question" not in table.column_names:
        raise AmbigQADataError(
            f"{path}: the dataset has no 'question' column (columns: {table.column_names})"
        )
    keep = [c for c in _AMBIGQA_COLUMNS if c in table.column_names]
    return table.select(keep).to_pylist()
