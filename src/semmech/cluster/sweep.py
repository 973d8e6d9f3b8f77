"""The β × γ sweep of one prompt: every configuration fitted from K = 1 on one shared
:class:`~semmech.cluster.estimator.RDWorkspace`, and the tables and arrays it leaves.

Layout of ``clusters/{p}.history.parquet``: prompt_id, beta, gamma, step, round, kind
(init | assign | split | merge), L and K after the step, predicted_delta (the ΔL the split or
merge test predicted; 0 for assignments).

Layout of ``clusters/{p}.npz`` (:func:`sweep_arrays`):
    H0            (d_a,)       P-weighted coordinate-wise median of the raw signatures
    scale         ()           s = sqrt(mean_n ||a_n − H0||²)   (1.0 when that is 0)
    beta, gamma   (C,)         the configuration of row i of the per-config arrays (nominal)
    beta_e, beta_a (C,)        the weights of D_e and D_a the estimator used (see below)
    beta_crit     (C,)         the nominal β at which the first split pays at that γ (inf: never)
    K             (C,)         number of clusters per configuration
    labels        (C, N)       int64 labels, row i = configuration i, column n = sample_idx n
    cfg{i:03d}_centres_e       (K_i, d_e) semantic centres (P-weighted means)
    cfg{i:03d}_centres_a       (K_i, d_a) mechanistic centres in normalised units
                               (P-weighted medians of ã; raw units: H0 + scale · centre)
    cfg{i:03d}_weights         (K_i,)     cluster masses P̄_c
Cluster c of a configuration is row c of its centres; labels are ordered by descending mass.

Units of (β, γ). With ``beta_units: absolute`` and ``view_balance: none`` (the paper's
setting) the estimator runs at β_e = γβ, β_a = (1 − γ)β exactly as METHOD §5 writes. Two
per-prompt reparametrisations make one grid mean the same thing on every prompt:

* ``view_balance: k1`` measures each view's distortion in units of its own one-cluster value
  (D_e/D_e⁰, D_a/D_a⁰), so that γ = 0.5 weighs the views equally: β_e = γβ/D_e⁰,
  β_a = (1 − γ)β/D_a⁰. Without it, D_a (an L1 sum over thousands of coordinates) dwarfs D_e
  (a squared distance between unit vectors) and every γ < 0.9 clusters by mechanism.
* ``beta_units: critical`` measures β in units of the prompt's critical β at that γ: the β at
  which splitting the whole set in two (the estimator's own first proposal) exactly pays its
  rate, β_crit = P̄·H_b(α) / (γ'ΔD_e + (1 − γ')ΔD_a). β = 1 is that threshold; β = 2 asks the
  first split to be worth twice its rate. It exists because β_crit varies fivefold across
  prompts, so a fixed grid leaves some prompts always at K = 1 and splits others finely.

Either way the estimator sees ordinary weights (β_e, β_a); its split proposals use the
matching γ' = β_e/(β_e + β_a). The sweep table records them, and the nominal (β, γ) label
every configuration downstream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .estimator import RateDistortionClustering, RDStep, RDWorkspace
from .objective import Normalisation, binary_entropy

__all__ = [
    "RD_PARAM_KEYS",
    "BETA_UNITS",
    "VIEW_BALANCES",
    "RDSweepResult",
    "first_split",
    "effective_weights",
    "rd_sweep",
    "sweep_arrays",
]

BETA_UNITS = ("absolute", "critical")
VIEW_BALANCES = ("none", "k1")

# The estimator parameters a sweep takes from the clustering config (the rest of the section
# is the grid and the cache budget).
RD_PARAM_KEYS = (
    "max_rounds",
    "tol",
    "normalize_semantic_centres",
    "split_refine_iter",
    "split_power_iter",
    "min_cluster_size",
)


@dataclass
class RDSweepResult:
    prompt_id: str
    normalisation: Normalisation
    table: (
        pd.DataFrame
    )  # prompt_id, beta, gamma, beta_e, beta_a, gamma_eff, beta_crit, K, L, H, D_e, D_a
    labels: pd.DataFrame  # prompt_id, beta, gamma, sample_idx, label
    history: pd.DataFrame  # prompt_id, beta, gamma, step, round, kind, L, K, predicted_delta
    models: list[RateDistortionClustering] = field(default_factory=list)
    runtime_s: list[float] = field(default_factory=list)
    workspace: RDWorkspace | None = None  # the shared views and caches (for diagnostics)


@dataclass(frozen=True)
class FirstSplit:
    """The estimator's first split of the whole set at one γ: the one-cluster distortions,
    what the split saves in each view, and its rate P̄·H_b(α) (P̄ = 1)."""

    D_e0: float
    D_a0: float
    gain_e: float
    gain_a: float
    rate: float

    def critical_beta(self, gamma: float) -> float:
        """β at which the split pays its rate: rate / (γΔD_e + (1 − γ)ΔD_a); inf if never."""
        gain = gamma * self.gain_e + (1.0 - gamma) * self.gain_a
        return self.rate / gain if gain > 0 else math.inf


def first_split(
    ws: RDWorkspace, gamma: float, refine_iter: int, power_iter: int, min_cluster_size: int = 1
) -> FirstSplit:
    """The split the estimator proposes first at γ (its round 1 from K = 1), scored exactly
    as its split test scores it; one that leaves a child below ``min_cluster_size`` members
    is never accepted, so it never pays (rate inf)."""
    everyone = np.arange(ws.n_samples)
    c0 = ws.centre(everyone)
    de, da = ws.distances(c0)
    w = ws.w
    D_e0, D_a0 = float(w @ de), float(w @ da)
    prop = ws.propose_split(everyone, c0.key, float(gamma), int(refine_iter), int(power_iter))
    if prop is None or prop.smaller_child < min_cluster_size:
        return FirstSplit(D_e0, D_a0, 0.0, 0.0, math.inf)
    m1, m2 = float(w[prop.left].sum()), float(w[~prop.left].sum())
    return FirstSplit(
        D_e0,
        D_a0,
        D_e0 - float(prop.dist_e.sum()),
        D_a0 - float(prop.dist_a.sum()),
        (m1 + m2) * binary_entropy(m1 / (m1 + m2)),
    )


def effective_weights(
    ws: RDWorkspace,
    beta: float,
    gamma: float,
    *,
    beta_units: str,
    view_balance: str,
    refine_iter: int,
    power_iter: int,
    min_cluster_size: int = 1,
) -> tuple[float, float, float]:
    """(β_e, β_a, β_crit) for nominal (β, γ) under the configured units (module docstring);
    β_crit is in nominal units (1 under ``critical`` units when a split can pay at all)."""
    if beta_units not in BETA_UNITS or view_balance not in VIEW_BALANCES:
        raise ValueError(
            f"beta_units must be one of {BETA_UNITS} and view_balance one of "
            f"{VIEW_BALANCES}; got {beta_units!r}, {view_balance!r}"
        )
    if view_balance == "k1":
        one = first_split(ws, 0.5, refine_iter, power_iter)  # D_e0, D_a0 do not depend on γ
        a = gamma / one.D_e0 if one.D_e0 > 0 else 0.0
        b = (1.0 - gamma) / one.D_a0 if one.D_a0 > 0 else 0.0
        unit, gamma_eff = (a + b, a / (a + b)) if a + b > 0 else (1.0, gamma)
    else:
        unit, gamma_eff = 1.0, gamma
    crit = first_split(ws, gamma_eff, refine_iter, power_iter, min_cluster_size).critical_beta(
        gamma_eff
    )
    if beta_units == "critical" and math.isfinite(crit):
        unit = crit
    beta_eff = float(beta) * unit
    return gamma_eff * beta_eff, (1.0 - gamma_eff) * beta_eff, crit / unit


def rd_sweep(
    E: Any,
    A: Any,
    P: Any,
    betas: Sequence[float],
    gammas: Sequence[float],
    *,
    prompt_id: str = "",
    cache_mb: float = 256.0,
    beta_units: str = "absolute",
    view_balance: str = "none",
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
    paper = beta_units == "absolute" and view_balance == "none"
    rows, label_rows, hist_rows, models, runtimes = [], [], [], [], []
    N = ws.n_samples
    for beta in betas:
        for gamma in gammas:
            t0 = time.perf_counter()
            be, ba, crit = effective_weights(
                ws,
                float(beta),
                float(gamma),
                beta_units=beta_units,
                view_balance=view_balance,
                refine_iter=template.split_refine_iter,
                power_iter=template.split_power_iter,
                min_cluster_size=template.min_cluster_size,
            )
            # The paper's parametrisation is passed as given, so its results do not move by
            # the rounding of (β_e + β_a, β_e / (β_e + β_a)).
            b_fit, g_fit = (float(beta), float(gamma)) if paper else (be + ba, be / (be + ba))
            est = RateDistortionClustering(beta=b_fit, gamma=g_fit, **rd_params)
            est.fit_workspace(ws)
            runtimes.append(time.perf_counter() - t0)
            models.append(est)
            o = est.objective_
            rows.append(
                {
                    "prompt_id": prompt_id,
                    "beta": float(beta),
                    "gamma": float(gamma),
                    "beta_e": est.beta_e,
                    "beta_a": est.beta_a,
                    "gamma_eff": g_fit,
                    "beta_crit": crit,
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
    return RDSweepResult(prompt_id, ws.norm, table, labels, history, models, runtimes, ws)


def sweep_arrays(result: RDSweepResult) -> dict[str, np.ndarray]:
    """The arrays of ``clusters/{p}.npz`` (layout in the module docstring)."""
    out: dict[str, np.ndarray] = {
        "H0": result.normalisation.H0.astype(np.float64),
        "scale": np.asarray(result.normalisation.scale, dtype=np.float64),
        "beta": result.table["beta"].to_numpy(np.float64),
        "gamma": result.table["gamma"].to_numpy(np.float64),
        "beta_e": result.table["beta_e"].to_numpy(np.float64),
        "beta_a": result.table["beta_a"].to_numpy(np.float64),
        "beta_crit": result.table["beta_crit"].to_numpy(np.float64),
        "K": result.table["K"].to_numpy(np.int64),
        "labels": np.stack([m.labels_ for m in result.models]).astype(np.int64),
    }
    for i, m in enumerate(result.models):
        out[f"cfg{i:03d}_centres_e"] = m.cluster_centers_e_
        out[f"cfg{i:03d}_centres_a"] = m.cluster_centers_a_
        out[f"cfg{i:03d}_weights"] = m.cluster_weights_
    return out
