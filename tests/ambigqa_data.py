"""A small AmbigQA ("light") fixture written in both public formats.

- ``write_light_json``: the original ``train_light.json`` / ``dev_light.json`` (a JSON list;
  ``annotations`` is a list of ``{"type": "singleAnswer", "answer": [...]}`` or
  ``{"type": "multipleQAs", "qaPairs": [{"question", "answer"}, ...]}``).
- ``write_saved_dataset``: what ``datasets.DatasetDict.save_to_disk`` writes for the Hugging
  Face copy ``sewon/ambig_qa`` (config ``light``): ``dataset_dict.json`` plus one folder per
  split with ``data-00000-of-00001.arrow`` (Arrow IPC *stream*), ``dataset_info.json`` and
  ``state.json``; ``annotations`` is a struct of per-annotation lists and a singleAnswer
  annotation has an empty qaPairs entry. (Checked once against datasets 5.2.0's own
  ``save_to_disk`` / ``load_from_disk``: same schema, same file names and keys.)

The rows are chosen so that the paper's draw ``random.Random(42).sample(range(5), 2)`` = [0, 4]
picks a multipleQAs group (one distinct sub-question after dropping a repeat, a copy of the main
question and an empty one) and a singleAnswer group: three prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa


def _single(*answers: str) -> dict:
    return {"type": "singleAnswer", "answer": list(answers)}


def _multi(*pairs: tuple[str, list[str]]) -> dict:
    return {
        "type": "multipleQAs",
        "qaPairs": [{"question": q, "answer": a} for q, a in pairs],
    }


ROWS = [
    {
        "id": "-6631915997977101143",
        "question": "who won the world cup",
        "annotations": [
            _multi(
                ("who won the world cup in 1990", ["west germany"]),
                (" who won the world cup in 1990 ", ["germany"]),
                ("who won the world cup", ["italy"]),
                ("", []),
            ),
            _single("germany", "west germany"),
        ],
    },
    {"id": "4921", "question": "   ", "annotations": [_single("nothing")]},
    {
        "id": "-2",
        "question": "what is java",
        "annotations": [
            _single("an island"),
            _multi(("what is java the island", ["island"]), ("what is java the drink", ["coffee"])),
        ],
    },
    {
        "id": "17",
        "question": "who was the first president",
        "annotations": [
            _multi(
                ("who was the first president of the bank", ["he"]),
                ("who was the first president of the team", ["she"]),
            )
        ],
    },
    {
        "id": "8080",
        "question": "what is mercury",
        "annotations": [
            _multi(("what is mercury the planet", ["planet"]), ("what is mercury the element", []))
        ],
    },
    {"id": "99", "question": "where is the tall tower", "annotations": [_single("the city")]},
]
# Groups are the rows with a non-empty question (row 1 has none).
N_GROUPS = 5
ALL_IDS = [
    "ambigqa_-6631915997977101143_main",
    "ambigqa_-6631915997977101143_sub1",
    "ambigqa_-2_main",
    "ambigqa_17_main",
    "ambigqa_17_sub1",
    "ambigqa_17_sub2",
    "ambigqa_8080_main",
    "ambigqa_8080_sub1",
    "ambigqa_8080_sub2",
    "ambigqa_99_main",
]
# random.Random(42).sample(range(5), 2) == [0, 4]
DRAWN_2_IDS = [
    "ambigqa_-6631915997977101143_main",
    "ambigqa_-6631915997977101143_sub1",
    "ambigqa_99_main",
]


def _with_extras(row: dict) -> dict:
    """The other fields of the light files, which the reader must ignore."""
    return {
        **row,
        "viewed_doc_titles": ["A page"],
        "used_queries": [{"query": row["question"], "results": []}],
        "nq_answer": ["x"],
        "nq_doc_title": "A page",
    }


def write_light_json(path: Path, rows: list[dict] = ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([_with_extras(r) for r in rows]))
    return path


def hf_annotations(annotations: list[dict]) -> dict:
    """The Hugging Face light layout of one row's annotations (a struct of lists)."""
    out: dict = {"type": [], "answer": [], "qaPairs": []}
    for a in annotations:
        out["type"].append(a["type"])
        if a["type"] == "singleAnswer":
            out["answer"].append(list(a["answer"]))
            out["qaPairs"].append({"question": [], "answer": []})
        else:
            out["answer"].append([])
            out["qaPairs"].append(
                {
                    "question": [p["question"] for p in a["qaPairs"]],
                    "answer": [list(p["answer"]) for p in a["qaPairs"]],
                }
            )
    return out


_STR = pa.string()
SCHEMA = pa.schema(
    [
        ("id", _STR),
        ("question", _STR),
        (
            "annotations",
            pa.struct(
                [
                    ("type", pa.list_(_STR)),
                    ("answer", pa.list_(pa.list_(_STR))),
                    (
                        "qaPairs",
                        pa.list_(
                            pa.struct(
                                [
                                    ("question", pa.list_(_STR)),
                                    ("answer", pa.list_(pa.list_(_STR))),
                                ]
                            )
                        ),
                    ),
                ]
            ),
        ),
        ("nq_answer", pa.list_(_STR)),
        ("nq_doc_title", _STR),
    ]
)


def _value(dtype: str = "string") -> dict:
    return {"dtype": dtype, "_type": "Value"}


def _list(feature: dict) -> dict:
    return {"feature": feature, "_type": "List"}


FEATURES = {
    "id": _value(),
    "question": _value(),
    "annotations": {
        "type": _list(_value()),
        "answer": _list(_list(_value())),
        "qaPairs": _list({"question": _list(_value()), "answer": _list(_list(_value()))}),
    },
    "nq_answer": _list(_value()),
    "nq_doc_title": _value(),
}


def _write_split(folder: Path, rows: list[dict], split: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    records = [
        {
            "id": r["id"],
            "question": r["question"],
            "annotations": hf_annotations(r["annotations"]),
            "nq_answer": ["x"],
            "nq_doc_title": "A page",
        }
        for r in rows
    ]
    info = {
        "citation": "",
        "description": "",
        "features": FEATURES,
        "homepage": "",
        "license": "",
    }
    meta = {b"huggingface": json.dumps({"info": {"features": FEATURES}}).encode()}
    table = pa.Table.from_pylist(records, schema=SCHEMA.with_metadata(meta))
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2))
    state = {
        "_data_files": [{"filename": "data-00000-of-00001.arrow"}],
        "_fingerprint": "0123456789abcdef",
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (folder / "state.json").write_text(json.dumps(state, indent=2))


def write_saved_dataset(folder: Path, rows: list[dict] = ROWS) -> Path:
    """A DatasetDict with splits train (the rows) and validation (the first two rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_split(folder / "train", rows, "train")
    _write_split(folder / "validation", rows[:2], "validation")
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    return folder
