"""Config values reach the Snakemake report as literal text, never as reStructuredText markup:
the captions show them in literal blocks, and docutils' raw and include directives are off for
every reStructuredText the report renders (workflow/report/docutils.conf via DOCUTILSCONFIG,
set by common.smk). Payloads from the issue: a raw-HTML element and a local-file include."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake
from docutils.core import publish_parts
from jinja2 import ChainableUndefined, Environment

REPORT_DIR = REPO / "workflow" / "report"
DOCUTILS_CONF = REPORT_DIR / "docutils.conf"
IMG = "<img src=x onerror=alert(7)>"


def payload(secret: Path) -> str:
    """A value that, pasted into reStructuredText, would add an HTML element and two files."""
    return (
        f"x\n\n.. raw:: html\n\n   {IMG}\n\n.. include:: /etc/hostname\n\n"
        f".. include:: {secret}\n\n`click <javascript:alert(8)>`_ :raw-html:`<b>`\n\nend"
    )


def _render(rst_file: Path, config: dict, docutils_config: bool) -> str:
    """Render one caption as the Snakemake report does (Jinja, then docutils to HTML)."""
    env = Environment(trim_blocks=True, lstrip_blocks=True, undefined=ChainableUndefined)

    class Snakemake:  # what the report passes to every caption
        pass

    Snakemake.config = config
    Snakemake.params = ChainableUndefined()
    Snakemake.wildcards = ChainableUndefined()
    text = env.from_string(rst_file.read_text()).render(snakemake=Snakemake)
    old = os.environ.get("DOCUTILSCONFIG")
    os.environ["DOCUTILSCONFIG"] = str(DOCUTILS_CONF) if docutils_config else os.devnull
    try:
        return publish_parts(text, writer="html", settings_overrides={"report_level": 5})[
            "html_body"
        ]
    finally:
        if old is None:
            del os.environ["DOCUTILSCONFIG"]
        else:
            os.environ["DOCUTILSCONFIG"] = old


def _assert_inert(html: str, secret_text: str) -> None:
    assert "<img" not in html and "<b>" not in html
    assert "javascript:" not in re.sub(r"<pre[\s\S]*?</pre>", "", html)  # only as text
    assert secret_text not in html
    assert Path("/etc/hostname").read_text().strip() not in re.findall(r">([^<>]*)<", html)


@pytest.mark.parametrize("docutils_config", [False, True])
def test_every_caption_shows_config_strings_as_literal_text(tmp_path, docutils_config):
    """The literal blocks hold with and without the docutils settings. (The settings alone stop
    raw and include, tested below, but not an inline `javascript:` link: hence both.)"""
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-7f3a")
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg.setdefault("embedding", {})
    p = payload(secret)
    cfg["model"]["name"] = p
    cfg["prompts"] = p
    cfg["embedding"]["model"] = p
    rendered = 0
    for rst in sorted(REPORT_DIR.glob("*.rst")):
        html = _render(rst, copy.deepcopy(cfg), docutils_config)
        _assert_inert(html, "SECRET-7f3a")
        rendered += 1
    assert rendered >= 10
    html = _render(REPORT_DIR / "workflow.rst", cfg, docutils_config)
    assert "&lt;img src=x onerror=alert(7)&gt;" in html  # shown, as text
    assert ".. include:: /etc/hostname" in html


def test_docutils_settings_switch_off_raw_and_include(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-7f3a")
    text = f"Title\n\n.. raw:: html\n\n   {IMG}\n\n.. include:: {secret}\n"
    old = os.environ.get("DOCUTILSCONFIG")
    try:
        os.environ["DOCUTILSCONFIG"] = os.devnull
        unsafe = publish_parts(text, writer="html", settings_overrides={"report_level": 5})
        assert IMG in unsafe["html_body"] and "SECRET-7f3a" in unsafe["html_body"]  # the threat
        os.environ["DOCUTILSCONFIG"] = str(DOCUTILS_CONF)
        safe = publish_parts(text, writer="html", settings_overrides={"report_level": 5})
        assert "<img" not in safe["html_body"] and "SECRET-7f3a" not in safe["html_body"]
    finally:
        if old is None:
            os.environ.pop("DOCUTILSCONFIG", None)
        else:
            os.environ["DOCUTILSCONFIG"] = old


def test_the_workflow_points_docutils_at_its_settings():
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert 'use_report_docutils_settings(Path(workflow.basedir) / "workflow" / "report"' in common
    conf = DOCUTILS_CONF.read_text()
    assert "raw_enabled: no" in conf and "file_insertion_enabled: no" in conf


# --------------------------------------------------------------------------------------------
# The real report of the smoke run, with the payloads in the prompt path and the model name


def _report_text(page: str) -> str:
    """Everything the report shows: the page plus every base64 data URI it embeds, decoded."""
    parts = [page]
    for m in re.finditer(r"data:[a-z/+.-]+;(?:charset=utf8;)?base64,([A-Za-z0-9+/=]+)", page):
        try:
            parts.append(base64.b64decode(m.group(1)).decode("utf-8", "replace"))
        except ValueError:
            continue
    return "\n".join(parts)


@pytest.mark.slow
def test_snakemake_report_shows_payloads_as_text(smoke_run, tmp_path):
    wd, cfg_file = smoke_run
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-7f3a")
    p = payload(secret)
    # a prompt file and a complete model directory whose paths carry the payload
    prompts = Path(f"{tmp_path}/p{p}/prompts.yaml")
    prompts.parent.mkdir(parents=True)
    shutil.copy(REPO / ".test" / "config" / "prompts.yaml", prompts)
    model = Path(f"{tmp_path}/m{p}")
    model.mkdir(parents=True)
    for f in (wd / "resources/models/SmolLM2-135M-Instruct").iterdir():
        (model / f.name).symlink_to(f)
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["prompts"] = str(prompts)
    cfg["model"]["name"] = str(model)
    evil = tmp_path / "evil.yaml"
    evil.write_text(yaml.safe_dump(cfg))
    report = tmp_path / "report.html"
    proc = run_snakemake(wd, "--configfile", str(evil), "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-4000:]
    page = report.read_text()
    shown = _report_text(page)
    assert IMG not in shown and "<b>" not in shown.replace("<b>known", "")
    assert "SECRET-7f3a" not in shown
    host = Path("/etc/hostname").read_text().strip()
    assert not re.search(rf">\s*{re.escape(host)}\s*<", shown)
    assert "onerror=alert(7)" in shown  # the value is there, as text (escaped)
    assert "javascript:alert(8)" not in re.sub(r"<pre[\s\S]*?</pre>", "", shown)
    json.dumps(page[:10])  # the page is text
