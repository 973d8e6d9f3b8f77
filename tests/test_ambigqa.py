"""The paper's AmbigQA prompt set (METHOD §1): selection, both data formats, ids, errors, rule."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from ambigqa_data import (
    ALL_IDS,
    DRAWN_2_IDS,
    N_GROUPS,
    ROWS,
    write_light_json,
    write_saved_dataset,
)
from conftest import run_snakemake, write_config

from semmech.ambigqa import AmbigQAError, group_prompts, prompt_id, question_groups, select_groups
from semmech.config import section_defaults
from semmech.prompts import (
    SAFE_ID,
    AmbigQADataError,
    ambigqa_prompt_records,
    configured_prompts,
    read_ambigqa_rows,
    read_prompts,
)
from semmech.stages.prompts import run_ambigqa_prompts


def _cfg(path, **kw) -> dict:
    return section_defaults("ambigqa", {"path": str(path), **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The fixture in every layout the reader accepts."""
    root = tmp_path_factory.mktemp("ambigqa")
    return {
        "json_file": write_light_json(root / "light" / "train_light.json"),
        "json_dir": root / "light",
        "saved_dict": write_saved_dataset(root / "hf"),
        "saved_split": root / "hf" / "train",
    }


def test_defaults_are_the_authors():
    cfg = section_defaults("ambigqa")
    assert cfg == {"path": None, "split": "train", "n_groups": 100, "seed": 42}


@pytest.mark.parametrize("layout", ["json_file", "json_dir", "saved_dict", "saved_split"])
def test_every_layout_gives_the_same_prompts(data, layout):
    records = ambigqa_prompt_records(_cfg(data[layout]))
    assert [p.id for p in records] == ALL_IDS
    assert all(SAFE_ID.match(p.id) for p in records)


def test_groups_main_question_then_distinct_subs_of_the_first_annotation(data):
    records = ambigqa_prompt_records(_cfg(data["saved_dict"]))
    by_id = {p.id: p for p in records}
    # Row 0: the first annotator's pairs, stripped; a repeat, the main question and "" dropped.
    main = by_id["ambigqa_-6631915997977101143_main"]
    sub = by_id["ambigqa_-6631915997977101143_sub1"]
    assert (main.text, main.role, main.question_index) == ("who won the world cup", "main", 0)
    assert main.answers == ("germany", "west germany")
    assert (sub.text, sub.role, sub.question_index) == ("who won the world cup in 1990", "sub1", 1)
    assert sub.answers == ("west germany",) and sub.main_question == main.text
    # Row 1 has a blank question: not a group. Row 2's first annotation is singleAnswer, so it
    # has no sub-question although the second annotator wrote two.
    assert not [p for p in records if p.row_id == "4921"]
    assert [p.role for p in records if p.row_id == "-2"] == ["main"]
    assert [p.group for p in records if p.row_id == "99"] == [4]
    assert [p.text for p in records if p.row_id == "17"] == [
        "who was the first president",
        "who was the first president of the bank",
        "who was the first president of the team",
    ]


def test_the_draw_is_random_42_sample_in_draw_order(data):
    groups = question_groups(read_ambigqa_rows(data["json_file"]))
    assert len(groups) == N_GROUPS
    assert [p.id for p in ambigqa_prompt_records(_cfg(data["json_file"], n_groups=2))] == (
        DRAWN_2_IDS
    )
    for n in range(1, N_GROUPS):
        drawn = select_groups(groups, n, 42)
        assert [g.index for g in drawn] == random.Random(42).sample(range(N_GROUPS), n)
    assert [g.index for g in select_groups(groups, 3, 42)] == [0, 4, 2]  # not sorted
    assert select_groups(groups, N_GROUPS + 7, 42) == groups  # all, in dataset order
    other = [g.index for g in select_groups(groups, 2, 1)]
    assert other == random.Random(1).sample(range(N_GROUPS), 2)


def test_a_hundred_of_many_groups(tmp_path):
    rows = [
        {"id": str(1000 + i), "question": f"q{i}", "annotations": [{"type": "singleAnswer"}]}
        for i in range(250)
    ]
    records = ambigqa_prompt_records(_cfg(write_light_json(tmp_path / "t.json", rows)))
    expected = random.Random(42).sample(range(250), 100)
    assert [p.group for p in records] == expected
    assert [p.id for p in records] == [f"ambigqa_{1000 + i}_main" for i in expected]


def test_prompt_ids_are_safe_and_name_the_row():
    assert prompt_id("-4469503464110108318", "sub2") == "ambigqa_-4469503464110108318_sub2"
    weird = prompt_id("a/b c.d", "main")
    assert weird == "ambigqa_a_b_c_d_main" and SAFE_ID.match(weird)
    long_a, long_b = prompt_id("x" * 80 + "a", "sub12"), prompt_id("x" * 80 + "b", "sub12")
    assert SAFE_ID.match(long_a) and len(long_a) == 64 and long_a.endswith("_sub12")
    assert long_a != long_b


def test_clashing_row_ids_are_one_clear_error():
    rows = [
        {"id": "7", "question": "a", "annotations": []},
        {"id": "7", "question": "b", "annotations": []},
    ]
    with pytest.raises(AmbigQAError, match="rows 0 and 1 both give prompt id 'ambigqa_7_main'"):
        group_prompts(question_groups(rows))


def test_missing_or_unreadable_data_is_one_clear_error(tmp_path, data):
    with pytest.raises(AmbigQADataError, match="not found at .*sewon/ambig_qa"):
        read_ambigqa_rows(tmp_path / "nowhere")
    with pytest.raises(AmbigQADataError, match="neither a saved Hugging Face dataset"):
        read_ambigqa_rows(tmp_path)
    with pytest.raises(AmbigQADataError, match="no split 'test'"):
        read_ambigqa_rows(data["saved_dict"], "test")
    with pytest.raises(AmbigQADataError, match="needs ambigqa.path"):
        ambigqa_prompt_records(section_defaults("ambigqa"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "state.json").write_text(json.dumps({"_data_files": [{"filename": "d.arrow"}]}))
    (bad / "d.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(AmbigQADataError, match="not an Arrow IPC stream"):
        read_ambigqa_rows(bad)
    blank = write_light_json(tmp_path / "blank.json", [ROWS[1]])
    with pytest.raises(AmbigQADataError, match="no row has a non-empty question"):
        ambigqa_prompt_records(_cfg(blank))


def test_the_dev_split_is_found_by_either_name(tmp_path, data):
    write_light_json(tmp_path / "dev_light.json", ROWS[3:4])
    assert [r["id"] for r in read_ambigqa_rows(tmp_path, "validation")] == ["17"]
    assert [r["id"] for r in read_ambigqa_rows(data["saved_dict"], "validation")] == [
        "-6631915997977101143",
        "4921",
    ]


def test_the_rule_writes_the_parse_time_selection(tmp_path, data):
    cfg = _cfg(data["saved_dict"], n_groups=2)
    out_yaml, out_meta = tmp_path / "p" / "ambigqa.yaml", tmp_path / "p" / "ambigqa.parquet"
    run_ambigqa_prompts(ambigqa_cfg=cfg, out_prompts=out_yaml, out_metadata=out_meta)
    parse_time = configured_prompts({"prompts": "ambigqa", "ambigqa": cfg})
    assert read_prompts(out_yaml) == parse_time
    assert [p.id for p in parse_time] == DRAWN_2_IDS
    meta = pd.read_parquet(out_meta)
    assert meta["prompt_id"].tolist() == DRAWN_2_IDS
    assert meta["role"].tolist() == ["main", "sub1", "main"]
    assert meta["group"].tolist() == [0, 0, 4]
    assert meta["row_id"].tolist() == ["-6631915997977101143"] * 2 + ["99"]
    assert list(meta["answers"].iloc[2]) == ["the city"]
    first = out_yaml.read_bytes()
    run_ambigqa_prompts(ambigqa_cfg=cfg, out_prompts=out_yaml, out_metadata=out_meta)
    assert out_yaml.read_bytes() == first


def test_a_missing_ambigqa_path_fails_before_any_job(tmp_path):
    cfg = write_config(
        tmp_path / "cfg.yaml",
        prompts="ambigqa",
        ambigqa={"path": str(tmp_path / "no" / "ambigqa")},
    )
    proc = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"AmbigQA data not found at {tmp_path / 'no' / 'ambigqa'}" in out
    assert "sewon/ambig_qa" in out and "ambignq_light.zip" in out
    assert not (tmp_path / "results").exists()
