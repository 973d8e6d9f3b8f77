from pathlib import Path

import pytest

from semmech.prompts import PromptFileError, read_prompts

REPO = Path(__file__).resolve().parents[1]


def test_default_prompt_set_has_at_least_twelve_unique_prompts():
    prompts = read_prompts(REPO / "config" / "prompts.yaml")
    assert len(prompts) >= 12
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(p.text.strip().endswith("?") or p.text.strip().endswith(".") for p in prompts)


def test_yaml_and_csv_and_tsv_agree(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "- {id: a, text: 'Who won?'}\n- {id: b-2, text: 'What is it?'}\n"
    )
    (tmp_path / "p.csv").write_text('id,text\na,Who won?\nb-2,"What is it?"\n')
    (tmp_path / "p.tsv").write_text("id\ttext\na\tWho won?\nb-2\tWhat is it?\n")
    got = [read_prompts(tmp_path / f) for f in ("p.yaml", "p.csv", "p.tsv")]
    assert got[0] == got[1] == got[2]
    assert [p.id for p in got[0]] == ["a", "b-2"]


@pytest.mark.parametrize(
    "content,match",
    [
        ("", "empty"),
        ("[]\n", "empty"),
        ("- {id: a, text: x}\n- {id: a, text: y}\n", "duplicate prompt id 'a'"),
        ("- {id: ../etc, text: x}\n", "unsafe prompt id"),
        ("- {id: 'a/b', text: x}\n", "unsafe prompt id"),
        ("- {id: '', text: x}\n", "unsafe prompt id"),
        ("- {id: a, text: '   '}\n", "empty text"),
        ("- {id: a}\n", "exactly the keys"),
        ("- {id: a, text: x, extra: 1}\n", "exactly the keys"),
        ("{a: 1}\n", "list"),
    ],
)
def test_bad_prompt_files_name_the_problem(tmp_path, content, match):
    f = tmp_path / "p.yaml"
    f.write_text(content)
    with pytest.raises(PromptFileError, match=match):
        read_prompts(f)


def test_missing_file(tmp_path):
    with pytest.raises(PromptFileError, match="not found"):
        read_prompts(tmp_path / "nope.yaml")
