"""Entry point of ``workflow/rules/figures.smk``: read a figure's inputs, draw it, save it.

Each figure has a builder from the rule's named inputs and params to a
:class:`~matplotlib.figure.Figure` (:data:`FIGURES`); :func:`run_figure` is the one entry.
Figures are saved as PNG + PDF atomically and without timestamps, so the same inputs give the
same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import io
from ..cluster.diagnosis_table import diagnosis_row
from ..cluster.grid import config_index
from ..report.figures import (
    HOUSE_STYLE,
    FigureDataError,
    clustering_diagnosis,
    cross_view_silhouette,
    feature_lineage,
    gamma_sweep,
    iteration_trace,
    lineage_data,
    rate_distortion,
    rate_distortion_points,
    silhouette_long,
    steering_response,
    steering_units,
    two_view_maps,
    two_view_scatter,
)
from ..report.summaries import config_labels
from .inputs import read_signatures

log = logging.getLogger(__name__)

__all__ = ["FIGURES", "run_figure", "save_figure", "read_tables"]

SWEEP_COLUMNS = ["prompt_id", "beta", "gamma", "K", "L", "H", "D_e", "D_a"]
BASELINE_COLUMNS = ["prompt_id", "method", "match", "beta", "gamma", "H", "D_gamma"]
HISTORY_COLUMNS = ["beta", "gamma", "step", "kind", "L", "K"]
SILHOUETTE_COLUMNS = ["prompt_id", "method", "K", "silhouette_semantic", "silhouette_mechanistic"]
CURVE_COLUMNS = [
    "prompt_id",
    "method",
    "budget",
    "beta",
    "gamma",
    "source_cluster",
    "own",
    "epsilon",
    "delta",
]


def save_figure(fig: Figure, png: str | Path, pdf: str | Path | None, dpi: int) -> None:
    """Write ``fig`` as PNG (and PDF) atomically, with no timestamp in either file."""
    with matplotlib.rc_context(HOUSE_STYLE):
        with io.atomic_path(png, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
        if pdf is not None:
            with io.atomic_path(pdf, suffix=".pdf") as tmp:
                fig.savefig(
                    tmp,
                    format="pdf",
                    metadata={
                        "CreationDate": None,
                        "ModDate": None,
                        "Producer": None,
                        "Creator": "semmech",
                    },
                )


def read_tables(paths: Sequence[str | Path], required: Sequence[str]) -> pd.DataFrame:
    """The rows of every prompt's table, each file checked for the ``required`` columns."""
    if not paths:
        raise FigureDataError("no input files")
    return pd.concat([io.read_parquet(p, list(required)) for p in paths], ignore_index=True)


def _pair(value: Any, what: str) -> tuple[float, float]:
    try:
        b, g = (float(v) for v in value)
    except Exception as exc:
        raise FigureDataError(f"{what} must be a (beta, gamma) pair, got {value!r}") from exc
    return b, g


def _rate_distortion(inp: Mapping[str, Any], par: Mapping[str, Any]) -> Figure:
    return rate_distortion(rate_distortion_points(read_tables(inp["baselines"], BASELINE_COLUMNS)))


def _gamma_sweep(inp: Mapping[str, Any], par: Mapping[str, Any]) -> Figure:
    return gamma_sweep(read_tables(inp["sweeps"], SWEEP_COLUMNS))


def _iteration_trace(inp: Mapping[str, Any], par: Mapping[str, Any]) -> Figure:
    _, g = _pair(par["config"], "config")
    return iteration_trace(
        io.read_parquet(inp["history"], HISTORY_COLUMNS), gamma=g, prompt_id=par["prompt"]
    )


def _two_view_scatter(inp: Mapping[str, Any], par: Mapping[str, Any]) -> Figure:
    b, g = _pair(par["config"], "config")
    E = io.read_npz(inp["embeddings"], ["embeddings"])["embeddings"].astype(np.float64)
    A, _ = read_signatures(inp["signatures"])
    arr = io.read_npz(inp["clusters"], ["H0", "scale", "beta", "gamma"])
    config_index(arr["beta"], arr["gamma"], b, g)  # a clear error when (β, γ) is not in the sweep
    At = (A - arr["H0"]) / float(arr["scale"])
    s = io.read_parquet(inp["samples"], ["sample_idx", "weight"]).sort_values("sample_idx")
    rd = config_labels(
        io.read_parquet(inp["labels"], ["beta", "gamma", "sample_idx", "label"]),
        b,
        g,
        len(s),
        str(inp["labels"]),
    )
    coords, labelings = two_view_maps(
        E,
        At,
        rd,
        io.read_parquet(inp["hdbscan"], ["method", "sample_idx", "label"]),
        b,
        g,
        seed=int(par["seed"]),
        umap_params=par["umap"],
        what=str(inp["hdbscan"]),
    )
    title = f"Prompt '{par['prompt']}': shared semantics, divergent mechanisms"
    return two_view_scatter(coords, labelings, s["weight"].to_numpy(np.float64), title=title)


def _cross_view_silhouette(inp: Mapping[str, Any], par: Mapping[str, Any]) -> Figure:
    sil = read_tables(inp["silhouettes"], SILHOUETTE_COLUMNS)
    return cross_view_silhouette(silhouette_long(sil))


def _feature_lineage(inp: Mapping[str, Any], par: Mapping[str, Any]) -> Figure:
    _, g = _pair(par["config"], "config")
    k = int(par["top_k"])
    arr = io.read_npz(inp["clusters"], ["H0", "scale", "beta", "gamma", "K"])
    nodes = io.read_parquet(inp["nodes"], ["node_idx", "kind"]).sort_values("node_idx")
    lineage = lineage_data(arr, nodes["kind"].to_numpy() == "feature", g, k, str(inp["clusters"]))
    return feature_lineage(lineage, gamma=g, prompt_id=par["prompt"], top_k=k)


def _steering_response(inp: Mapping[str, Any], par: Mapping[str, Any]) -> Figure:
    return steering_response(steering_units(read_tables(inp["curves"], CURVE_COLUMNS)))


def _clustering_diagnosis(inp: Mapping[str, Any], par: Mapping[str, Any]) -> Figure:
    rows = [diagnosis_row(d["prompt_id"], d) for d in (io.read_json(p) for p in inp["diagnoses"])]
    return clustering_diagnosis(pd.DataFrame(rows), par["paper_betas"])


# Figure name -> builder from the rule's named inputs (paths) and params.
FIGURES: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], Figure]] = {
    "rate_distortion": _rate_distortion,
    "gamma_sweep": _gamma_sweep,
    "iteration_trace": _iteration_trace,
    "two_view_scatter": _two_view_scatter,
    "cross_view_silhouette": _cross_view_silhouette,
    "feature_lineage": _feature_lineage,
    "steering_response": _steering_response,
    "clustering_diagnosis": _clustering_diagnosis,
}


def run_figure(
    *,
    name: str,
    inputs: Mapping[str, Any],
    params: Mapping[str, Any],
    png: str | Path,
    pdf: str | Path,
) -> None:
    """Draw figure ``name`` from the rule's named inputs and params; save it as PNG and PDF
    at ``params["dpi"]``."""
    if name not in FIGURES:
        raise FigureDataError(f"unknown figure {name!r}; known: {sorted(FIGURES)}")
    inputs = {
        k: ([str(x) for x in v] if isinstance(v, (list, tuple)) else str(v))
        for k, v in inputs.items()
    }
    fig = FIGURES[name](inputs, dict(params))
    save_figure(fig, png, pdf, dpi=int(params["dpi"]))
    log.info("figure %s -> %s, %s", name, png, pdf)
