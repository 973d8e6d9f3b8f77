"""The β × γ sweep of one prompt: every configuration fitted from K = 1 on one shared
:class:`~semmech.cluster.estimator.RDWorkspace`, and the tables and arrays it leaves.

Layout of ``clusters/{p}.history.parquet``: prompt_id, beta, gamma, step, round, kind
(init | assign | split | merge), L and K after the step, predicted_delta (the ΔL the split or
merge test predicted; 0 for assignments).

Layout of ``clusters/{p}.npz`` (:func:`sweep_arrays`):
    H0            (d_a,)       P-weighted coordinate-wise median of the raw signatures
    scale         ()           s = sqrt(mean_n ||a_n − H0||²)   (1.0 when that is 0)
    beta, gamma   (C,)         the configuration of row i of the per-config arrays
    K             (C,)         number of clusters per configuration
    labels        (C, N)       int64 labels, row i = configuration i, column n = sample_idx n
    cfg{i:03d}_centres_e       (K_i, d_e) semantic centres (P-weighted means)
    cfg{i:03d}_centres_a       (K_i, d_a) mechanistic centres in normalised units
                               (P-weighted medians of ã; raw units: H0 + scale · centre)
    cfg{i:03d}_weights         (K_i,)     cluster masses P̄_c
Cluster c of a configuration is row c of its centres; labels are ordered by descending mass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .estimator import RateDistortionClustering, RDStep, RDWorkspace
from .objective import Normalisation

__all__ = ["RD_PARAM_KEYS", "RDSweepResult", "rd_sweep", "sweep_arrays"]

# The estimator parameters a sweep takes from the clustering config (the rest of the section
# is the grid and the cache budget).
RD_PARAM_KEYS = (
    "max_rounds",
    "tol",
    "normalize_semantic_centres",
    "split_refine_iter",
    "split_power_iter",
)


@dataclass
class RDSweepResult:
    prompt_id: str
    normalisation: Normalisation
    table: pd.DataFrame  # prompt_id, beta, gamma, K, L, H, D_e, D_a
    labels: pd.DataFrame  # prompt_id, beta, gamma, sample_idx, label
    history: pd.DataFrame  # prompt_id, beta, gamma, step, round, kind, L, K, predicted_delta
    models: list[RateDistortionClustering] = field(default_factory=list)
    runtime_s: list[float] = field(default_factory=list)


def rd_sweep(
    E: Any,
    A: Any,
    P: Any,
    betas: Sequence[float],
    gammas: Sequence[float],
    *,
    prompt_id: str = "",
    cache_mb: float = 256.0,
    **rd_params: Any,
) -> RDSweepResult:
    """Fit RD at every (β, γ) of the grid, each from K = 1, on one shared workspace.

    Configurations are ordered β-major, in the order given. Runtimes are kept out of the
    tables, so that the tables are byte-reproducible.
    """
    template = RateDistortionClustering(**rd_params)  # the estimator's defaults for the rest
    ws = RDWorkspace(
        E,
        A,
        P,
        name=prompt_id or None,
        cache_mb=cache_mb,
        normalize_semantic_centres=template.normalize_semantic_centres,
    )
    rows, label_rows, hist_rows, models, runtimes = [], [], [], [], []
    N = ws.n_samples
    for beta in betas:
        for gamma in gammas:
            t0 = time.perf_counter()
            est = RateDistortionClustering(beta=float(beta), gamma=float(gamma), **rd_params)
            est.fit_workspace(ws)
            runtimes.append(time.perf_counter() - t0)
            models.append(est)
            o = est.objective_
            rows.append(
                {
                    "prompt_id": prompt_id,
                    "beta": float(beta),
                    "gamma": float(gamma),
                    "K": est.n_clusters_,
                    "L": o["L"],
                    "H": o["H"],
                    "D_e": o["D_e"],
                    "D_a": o["D_a"],
                }
            )
            label_rows.append(
                pd.DataFrame(
                    {
                        "prompt_id": prompt_id,
                        "beta": float(beta),
                        "gamma": float(gamma),
                        "sample_idx": np.arange(N, dtype=np.int64),
                        "label": est.labels_.astype(np.int64),
                    }
                )
            )
            h = pd.DataFrame(est.history_, columns=list(RDStep._fields))
            h.insert(0, "step", np.arange(len(h), dtype=np.int64))
            h.insert(0, "gamma", float(gamma))
            h.insert(0, "beta", float(beta))
            h.insert(0, "prompt_id", prompt_id)
            hist_rows.append(h)
    table = pd.DataFrame(rows).astype({"K": np.int64})
    labels = pd.concat(label_rows, ignore_index=True)
    history = pd.concat(hist_rows, ignore_index=True).astype({"round": np.int64, "K": np.int64})
    return RDSweepResult(prompt_id, ws.norm, table, labels, history, models, runtimes)


def sweep_arrays(result: RDSweepResult) -> dict[str, np.ndarray]:
    """The arrays of ``clusters/{p}.npz`` (layout in the module docstring)."""
    out: dict[str, np.ndarray] = {
        "H0": result.normalisation.H0.astype(np.float64),
        "scale": np.asarray(result.normalisation.scale, dtype=np.float64),
        "beta": result.table["beta"].to_numpy(np.float64),
        "gamma": result.table["gamma"].to_numpy(np.float64),
        "K": result.table["K"].to_numpy(np.int64),
        "labels": np.stack([m.labels_ for m in result.models]).astype(np.int64),
    }
    for i, m in enumerate(result.models):
        out[f"cfg{i:03d}_centres_e"] = m.cluster_centers_e_
        out[f"cfg{i:03d}_centres_a"] = m.cluster_centers_a_
        out[f"cfg{i:03d}_weights"] = m.cluster_weights_
    return out
