"""Entry points of ``workflow/rules/clustering.smk``: the β × γ rate–distortion sweep of one
prompt, its single-view baselines, and the all-prompt comparison (Table 1) and silhouettes.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import io
from ..cluster import baselines
from ..cluster.diagnosis_table import diagnosis_row
from ..cluster.diagnostics import diagnose
from ..cluster.objective import validate_views
from ..cluster.sweep import RD_PARAM_KEYS, RDSweepResult, rd_sweep, sweep_arrays
from ..report.tables import clustering_comparison_latex, diagnosis_latex
from .inputs import read_prompt_views

log = logging.getLogger("semmech")

__all__ = ["run_cluster", "run_baselines", "run_aggregate_clustering"]

COMPARISON_COLUMNS = ["prompt_id", "beta", "gamma", "method", "match", "D_gamma"]


def run_cluster(
    *,
    prompt_id: str,
    samples: str | Path,
    embeddings: str | Path,
    signatures: str | Path,
    nodes: str | Path,
    clustering_cfg: Mapping[str, Any],
    out_sweep: str | Path,
    out_labels: str | Path,
    out_history: str | Path,
    out_npz: str | Path,
    out_runtime: str | Path,
    out_diagnosis: str | Path,
) -> RDSweepResult:
    """The β × γ sweep of one prompt, written as clusters/{p}.* (``clustering_cfg``: the
    ``clustering`` config section, defaults filled).

    Tables and arrays are byte-reproducible; wall-clock runtimes go to a separate JSON.
    """
    E, A, P = read_prompt_views(prompt_id, samples, embeddings, signatures)
    params = {k: clustering_cfg[k] for k in RD_PARAM_KEYS}
    betas = list(clustering_cfg["betas"])
    gammas = list(clustering_cfg["gammas"])
    log.info(
        "prompt %s: RD sweep over %d betas x %d gammas, N=%d, d_e=%d, d_a=%d",
        prompt_id,
        len(betas),
        len(gammas),
        E.shape[0],
        E.shape[1],
        A.shape[1],
    )
    t0 = time.perf_counter()
    res = rd_sweep(
        E,
        A,
        P,
        betas,
        gammas,
        prompt_id=prompt_id,
        cache_mb=float(clustering_cfg["cache_mb"]),
        beta_units=clustering_cfg["beta_units"],
        view_balance=clustering_cfg["view_balance"],
        **params,
    )
    total = time.perf_counter() - t0
    for r, m in zip(res.table.itertuples(index=False), res.models):
        log.info(
            "beta=%g gamma=%g: K=%d L=%.4f H=%.4f D_e=%.4f D_a=%.4f rounds=%d%s",
            r.beta,
            r.gamma,
            r.K,
            r.L,
            r.H,
            r.D_e,
            r.D_a,
            m.n_rounds_,
            "" if m.converged_ else " (max_rounds reached)",
        )
    io.write_parquet(res.table, out_sweep)
    io.write_parquet(res.labels, out_labels)
    io.write_parquet(res.history, out_history)
    io.write_npz(out_npz, **sweep_arrays(res))
    node_table = io.read_parquet(
        nodes, required=["node_idx", "kind", "layer", "position", "feature", "token_str"]
    )
    diag = diagnose(
        res.workspace,
        gammas,
        node_table.sort_values("node_idx"),
        refine_iter=int(clustering_cfg["split_refine_iter"]),
        power_iter=int(clustering_cfg["split_power_iter"]),
        min_cluster_size=int(clustering_cfg["min_cluster_size"]),
    )
    sweep_k = [
        {"beta": float(r.beta), "gamma": float(r.gamma), "K": int(r.K)}
        for r in res.table.itertuples(index=False)
    ]
    io.write_json({"prompt_id": prompt_id, **diag, "sweep": sweep_k}, out_diagnosis)
    io.write_json(
        {
            "prompt_id": prompt_id,
            "total_s": total,
            "host": platform.node(),
            "configs": [
                {"beta": float(r.beta), "gamma": float(r.gamma), "runtime_s": t}
                for r, t in zip(res.table.itertuples(index=False), res.runtime_s)
            ],
        },
        out_runtime,
    )
    return res


def run_baselines(
    *,
    prompt_id: str,
    samples: str | Path,
    embeddings: str | Path,
    signatures: str | Path,
    sweep: str | Path,
    labels: str | Path,
    clusters: str | Path,
    baselines_cfg: Mapping[str, Any],
    seed: int,
    out_table: str | Path,
    out_labels: str | Path,
    out_silhouette: str | Path,
) -> None:
    """baselines/{p}.parquet, .labels.parquet and .silhouette.parquet of one prompt
    (``baselines_cfg``: the ``baselines`` config section, defaults filled)."""
    E, A, P = read_prompt_views(prompt_id, samples, embeddings, signatures)
    E, A, P = validate_views(E, A, P, prompt_id)
    z = io.read_npz(clusters, required=["H0", "scale"])
    if z["H0"].shape != (A.shape[1],):
        raise io.CorruptInputError(
            f"{clusters}: H0 has {z['H0'].shape}, signatures have {A.shape[1]} nodes"
        )
    A_tilde = (A - z["H0"]) / float(z["scale"])
    table = io.read_parquet(sweep, required=["beta", "gamma", "gamma_eff", "K", "H", "D_e", "D_a"])
    lab = io.read_parquet(labels, required=["beta", "gamma", "sample_idx", "label"])
    rd_labels = {}
    for (b, g), grp in lab.groupby(["beta", "gamma"], sort=False):
        grp = grp.sort_values("sample_idx")
        if not np.array_equal(grp["sample_idx"].to_numpy(), np.arange(E.shape[0])):
            raise io.CorruptInputError(
                f"{labels}: labels of (beta={b}, gamma={g}) do not "
                f"cover sample_idx 0..{E.shape[0] - 1}"
            )
        rd_labels[(float(b), float(g))] = grp["label"].to_numpy()
    log.info(
        "prompt %s: baselines for %d RD configurations, N=%d", prompt_id, len(table), E.shape[0]
    )
    res = baselines.run_baselines(
        E, A_tilde, P, table, rd_labels, seed=seed, cfg=baselines_cfg, prompt_id=prompt_id
    )
    io.write_parquet(res.comparison, out_table)
    io.write_parquet(res.labels, out_labels)
    io.write_parquet(res.silhouette, out_silhouette)


def run_aggregate_clustering(
    *,
    tables: Sequence[str | Path],
    silhouettes: Sequence[str | Path],
    diagnoses: Sequence[str | Path],
    out_csv: str | Path,
    out_tex: str | Path,
    out_silhouette: str | Path,
    out_diagnosis: str | Path,
    out_diagnosis_tex: str | Path,
) -> None:
    """tables/clustering_comparison.{csv,tex} (Table 1), tables/cross_view_silhouette.csv and
    tables/clustering_diagnosis.{csv,tex} (why prompts stay at K = 1) over all prompts."""
    diag = pd.DataFrame(
        [diagnosis_row(d["prompt_id"], d) for d in (io.read_json(p) for p in diagnoses)]
    )
    io.write_csv(diag, out_diagnosis, float_format="%.6g")
    io.write_text(diagnosis_latex(diag), out_diagnosis_tex)
    comp = pd.concat(
        [io.read_parquet(p, required=COMPARISON_COLUMNS) for p in tables], ignore_index=True
    )
    table = baselines.comparison_table(comp)
    io.write_csv(table, out_csv, float_format="%.6g")
    io.write_text(clustering_comparison_latex(table), out_tex)
    sil = pd.concat([io.read_parquet(p) for p in silhouettes], ignore_index=True)
    summary = baselines.silhouette_summary(sil)
    io.write_csv(summary, out_silhouette, float_format="%.6g")
