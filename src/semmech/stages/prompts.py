"""Entry point of ``workflow/rules/prompts.smk``: the AmbigQA prompt set as an artifact.

The workflow already knows the prompts at parse time (``common.smk`` calls
:func:`semmech.prompts.configured_prompts`, which runs the same selection); this rule writes
that selection down, so the run's prompt file and the metadata of every prompt (group, role,
answers) sit beside the results and in the manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .. import io
from ..prompts import ambigqa_prompt_records, check_prompts

log = logging.getLogger("semmech")

__all__ = ["run_ambigqa_prompts"]


def run_ambigqa_prompts(
    *, ambigqa_cfg: Mapping[str, Any], out_prompts: str | Path, out_metadata: str | Path
) -> None:
    """prompts/ambigqa.yaml (``{id, text}`` records, a valid prompt file) and
    prompts/ambigqa.parquet (one row per prompt: group, row id, role, answers)."""
    records = ambigqa_prompt_records(ambigqa_cfg)
    prompts = [{"id": p.id, "text": p.text} for p in records]
    check_prompts(prompts, f"AmbigQA at {ambigqa_cfg['path']}")
    log.info(
        "AmbigQA (%s, split %s): %d prompts from %d groups",
        ambigqa_cfg["path"],
        ambigqa_cfg["split"],
        len(records),
        len({p.group for p in records}),
    )
    meta = pd.DataFrame(
        {
            "prompt_id": [p.id for p in records],
            "text": [p.text for p in records],
            "group": pd.array([p.group for p in records], dtype="int64"),
            "row_id": [p.row_id for p in records],
            "role": [p.role for p in records],
            "question_index": pd.array([p.question_index for p in records], dtype="int64"),
            "main_question": [p.main_question for p in records],
            "answers": [list(p.answers) for p in records],
        }
    )
    io.write_yaml(prompts, out_prompts)
    io.write_parquet(meta, out_metadata)
