"""Entry points of ``workflow/rules/report.smk``: per-prompt cluster summaries, the cluster
browser and the page of every table; and the table writers the aggregate stages share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import io
from ..report.browser import render_browser
from ..report.summaries import summarise_prompt
from ..report.tables import (
    STEERING_COLUMNS,
    TableDataError,
    case_study,
    case_study_latex,
    cluster_summary_latex,
    cluster_summary_table,
    render_tables_html,
    steering_latex,
)
from .inputs import read_prompt_record, read_signatures

__all__ = [
    "write_steering_comparison",
    "run_cluster_summary",
    "run_cluster_browser",
    "run_tables_page",
]


def write_steering_comparison(
    table: pd.DataFrame, csv_path: str | Path, tex_path: str | Path
) -> None:
    """tables/steering_comparison.{csv,tex}: the CSV columns per the steering contract
    (:data:`~semmech.report.tables.STEERING_COLUMNS`) and Table 2's LaTeX."""
    io.require_columns(
        table,
        STEERING_COLUMNS,
        "steering comparison table",
        error=TableDataError,
        allow_empty=False,
    )
    io.write_csv(table[STEERING_COLUMNS], csv_path)
    io.write_text(steering_latex(table), tex_path)


def run_cluster_summary(
    *,
    prompt_id: str,
    samples: str | Path,
    prompt: str | Path,
    labels: str | Path,
    clusters: str | Path,
    sweep: str | Path,
    nodes: str | Path,
    signatures: str | Path,
    embeddings: str | Path,
    configs: Sequence[Sequence[float]],
    n_representatives: int,
    n_features: int,
    n_browser_features: int,
    out_json: str | Path,
    out_csv: str | Path,
    out_tex: str | Path,
) -> dict[str, Any]:
    """One prompt's cluster summary as JSON (for the browser) and CSV + LaTeX (tables)."""
    s = io.read_parquet(samples, ["sample_idx", "text", "weight"])
    lab = io.read_parquet(labels, ["beta", "gamma", "sample_idx", "label"])
    arr = io.read_npz(clusters, ["H0", "scale", "beta", "gamma"])
    nod = io.read_parquet(nodes, ["node_idx", "kind", "layer", "position", "feature", "token_str"])
    sig, _ = read_signatures(signatures)
    emb = io.read_npz(embeddings, ["embeddings"])["embeddings"]
    sw = io.read_parquet(sweep)
    record = read_prompt_record(prompt)
    summary = summarise_prompt(
        prompt_id,
        record.get("text", ""),
        s,
        lab,
        arr,
        nod,
        sig,
        emb,
        configs,
        n_features=max(n_features, n_browser_features),
        sweep=sw,
    )
    summary["model"] = record["model"]
    io.write_json(summary, out_json)
    table = cluster_summary_table(summary, n_representatives, n_features)
    io.write_csv(table, out_csv)
    io.write_text(cluster_summary_latex(summary, table, n_representatives, n_features), out_tex)
    return summary


def run_cluster_browser(
    *,
    summaries: Sequence[str | Path],
    run: str,
    n_representatives: int,
    max_members: int | None,
    out_html: str | Path,
) -> None:
    """The cluster browser from the per-prompt summary JSON files."""
    loaded = [io.read_json(p) for p in summaries]
    io.write_text(
        render_browser(
            loaded, run=run, n_representatives=n_representatives, max_members=max_members
        ),
        out_html,
    )


def run_tables_page(*, tables: Mapping[str, str | Path], title: str, out_html: str | Path) -> None:
    """The run's aggregate CSV tables, by name, as one HTML page."""
    frames = {}
    for name, path in tables.items():
        frames[name] = io.read_csv(path)
    io.write_text(render_tables_html(frames, title), out_html)


def run_case_study(*, curves: str | Path, out_csv: str | Path, out_tex: str | Path) -> pd.DataFrame:
    """tables/case_study.{csv,tex}: amplify / suppress effects of the example prompt's steered
    clusters, RD against Single (:func:`semmech.report.tables.case_study`)."""
    table = case_study(io.read_parquet(curves))
    io.write_csv(table, out_csv)
    io.write_text(case_study_latex(table), out_tex)
    return table
