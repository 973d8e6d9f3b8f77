"""The paper's prompt set: AmbigQA question groups selected as the authors did (METHOD §1).

Every row of the split with a non-empty question is a *group*, in dataset order. A seeded draw,
``random.Random(seed).sample(range(n_groups_total), n_groups)``, picks the groups (all of them,
in dataset order, when ``n_groups`` is at least their number); the draw order is kept. Each
drawn group gives its main question, then its distinct disambiguated sub-questions: the
question list of the *first* annotation's ``qaPairs`` (none when that annotation is a
``singleAnswer`` one, even if a later annotator wrote sub-questions), stripped, skipping
empty ones, the main question itself and repeats.

Two row layouts are understood, the ones the two public copies of AmbigQA ("light" version)
use for ``annotations``:

- the original ``train_light.json`` / ``dev_light.json``: a list of annotation dicts
  ``{"type": "singleAnswer", "answer": [...]}`` or
  ``{"type": "multipleQAs", "qaPairs": [{"question": str, "answer": [...]}, ...]}``;
- the Hugging Face dataset ``sewon/ambig_qa`` (config ``light``): one dict of per-annotation
  lists, ``{"type": [...], "answer": [[...], ...], "qaPairs": [{"question": [...],
  "answer": [[...], ...]}, ...]}``, where a singleAnswer annotation's qaPairs entry is empty.

This module sees rows (mappings), never files: :func:`semmech.prompts.read_ambigqa_rows` reads
them.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AmbigQAError",
    "SubQuestion",
    "QuestionGroup",
    "AmbigQAPrompt",
    "question_groups",
    "select_groups",
    "group_prompts",
    "prompt_id",
]

ID_PREFIX = "ambigqa"
MAX_ID = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class AmbigQAError(ValueError):
    """AmbigQA rows that cannot be turned into prompts (missing fields, clashing ids)."""


@dataclass(frozen=True)
class SubQuestion:
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class QuestionGroup:
    """One AmbigQA row with a non-empty question."""

    index: int  # position among the groups (dataset order)
    row: int  # row number in the split
    row_id: str  # the dataset's own id
    question: str
    answers: tuple[str, ...]
    subs: tuple[SubQuestion, ...]


@dataclass(frozen=True)
class AmbigQAPrompt:
    """One prompt: a group's main question (``role`` "main") or a sub-question ("sub1", ...)."""

    id: str
    text: str
    group: int
    row_id: str
    role: str
    question_index: int
    main_question: str
    answers: tuple[str, ...]


def _strings(value: Any) -> list[str]:
    """Stripped non-empty strings of a (nested) answer value, in order."""
    out: list[str] = []
    if isinstance(value, str):
        if value.strip():
            out.append(value.strip())
    elif isinstance(value, (list, tuple)):
        for item in value:
            out.extend(_strings(item))
    return out


def _dedup(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _first_pairs(annotations: Any) -> list[tuple[Any, Any]]:
    """(question, answer) pairs of the first annotation, in either layout."""
    if isinstance(annotations, Mapping):  # Hugging Face: a dict of per-annotation lists
        pairs = annotations.get("qaPairs") or []
        first = pairs[0] if isinstance(pairs, (list, tuple)) and pairs else None
        if not isinstance(first, Mapping):
            return []
        questions = first.get("question") or []
        answers = first.get("answer") or []
        if isinstance(questions, str):
            questions, answers = [questions], [answers]
        return [(q, answers[i] if i < len(answers) else []) for i, q in enumerate(questions)]
    if isinstance(annotations, (list, tuple)):  # original JSON: a list of annotation dicts
        first = next((a for a in annotations if isinstance(a, Mapping)), None)
        if first is None:
            return []
        pairs = first.get("qaPairs") or []
        if isinstance(pairs, Mapping):  # a list-of-structs copy keeps the lists inside
            return _first_pairs({"qaPairs": [pairs]})
        return [(p.get("question"), p.get("answer")) for p in pairs if isinstance(p, Mapping)]
    return []


def _main_answers(annotations: Any) -> tuple[str, ...]:
    if isinstance(annotations, Mapping):
        return _dedup(_strings(annotations.get("answer")))
    if isinstance(annotations, (list, tuple)):
        return _dedup(
            s for a in annotations if isinstance(a, Mapping) for s in _strings(a.get("answer"))
        )
    return ()


def question_groups(rows: Iterable[Mapping[str, Any]]) -> list[QuestionGroup]:
    """Every row with a non-empty question, in order, with its distinct sub-questions."""
    groups: list[QuestionGroup] = []
    for r, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise AmbigQAError(f"row {r} is not a record (got {type(row).__name__})")
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            continue
        main = question.strip()
        annotations = row.get("annotations")
        seen = {main}
        subs: list[SubQuestion] = []
        for q, answers in _first_pairs(annotations):
            if not isinstance(q, str) or not q.strip() or q.strip() in seen:
                continue
            seen.add(q.strip())
            subs.append(SubQuestion(q.strip(), _dedup(_strings(answers))))
        row_id = row.get("id")
        groups.append(
            QuestionGroup(
                index=len(groups),
                row=r,
                row_id=str(row_id) if row_id is not None else str(r),
                question=main,
                answers=_main_answers(annotations),
                subs=tuple(subs),
            )
        )
    return groups


def select_groups(
    groups: Sequence[QuestionGroup], n_groups: int, seed: int = 42
) -> list[QuestionGroup]:
    """The authors' draw: all groups when ``n_groups`` covers them, else a seeded sample
    of positions (``random.Random(seed).sample``), kept in draw order."""
    if n_groups < 1:
        raise AmbigQAError(f"n_groups must be at least 1, got {n_groups}")
    if n_groups >= len(groups):
        return list(groups)
    rng = random.Random(seed)
    return [groups[i] for i in rng.sample(range(len(groups)), n_groups)]


def prompt_id(row_id: str, role: str) -> str:
    """``ambigqa_<row id>_<role>``: letters, digits, '_' and '-' only, at most 64 characters
    (an over-long row id is shortened and tagged with a hash of the original)."""
    safe = _UNSAFE.sub("_", row_id)
    pid = f"{ID_PREFIX}_{safe}_{role}"
    if len(pid) > MAX_ID:
        tag = hashlib.sha256(row_id.encode()).hexdigest()[:10]
        keep = MAX_ID - len(ID_PREFIX) - len(role) - len(tag) - 2
        pid = f"{ID_PREFIX}_{safe[:keep]}{tag}_{role}"
    return pid


def group_prompts(groups: Sequence[QuestionGroup]) -> list[AmbigQAPrompt]:
    """Main question first, then the sub-questions, group after group; ids must not clash."""
    prompts: list[AmbigQAPrompt] = []
    owner: dict[str, int] = {}
    for g in groups:
        questions = [("main", g.question, g.answers)] + [
            (f"sub{k}", s.question, s.answers) for k, s in enumerate(g.subs, start=1)
        ]
        for k, (role, text, answers) in enumerate(questions):
            pid = prompt_id(g.row_id, role)
            if pid in owner:
                raise AmbigQAError(
                    f"rows {owner[pid]} and {g.row} both give prompt id {pid!r} "
                    f"(AmbigQA row ids must be unique; got {g.row_id!r} twice)"
                )
            owner[pid] = g.row
            prompts.append(
                AmbigQAPrompt(
                    id=pid,
                    text=text,
                    group=g.index,
                    row_id=g.row_id,
                    role=role,
                    question_index=k,
                    main_question=g.question,
                    answers=answers,
                )
            )
    return prompts
