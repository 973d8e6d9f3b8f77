"""Prompt sets: ``{id, text}`` records from YAML, CSV or TSV, validated before any model loads.

Prompt ids become file names in the DAG, so they must be unique and filesystem-safe: the
whole id must match (a trailing newline is not part of a safe id), and two ids may not differ
only in case (they would name the same file on a case-insensitive filesystem).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # used with fullmatch only


class PromptFileError(ValueError):
    """The prompt file is missing, empty, or has bad ids or texts."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


def read_prompts(path: str | Path) -> list[Prompt]:
    """Read and validate a prompt file; every problem names the file and the record."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file not found: {path}")
    records = _read_records(path)
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
