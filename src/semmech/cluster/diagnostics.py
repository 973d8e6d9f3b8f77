"""Why a prompt stays at K = 1: the numbers that decide the first split.

RD splits the whole set only when the distortion its first split saves, weighted by β, pays
the split's rate. So the critical β of the first split (per γ) says at once whether a grid can
find structure on a prompt. Two properties of the normalised signatures ã explain it:

* the effective dimension (‖ã‖₁/‖ã‖₂)², the number of coordinates a signature effectively
  spreads over (D_a is an L1 distortion, so few coordinates mean little to gain);
* the share of ‖ã‖² held by its top-10 coordinates, and which nodes those are: nodes that
  every continuation shares (a chat-template token, the last prefix position) dominate the
  view without separating anything.

The critical β of the estimator's first split is a property of its proposal (a balanced cut
along the principal direction). The objective itself may pay much earlier for isolating a
single low-probability continuation far from the median: doing so saves at least
P_n·(γd^e_n + (1 − γ)d^a_n) of distortion at a rate of H_b(P_n). The lowest such β over the
continuations (``beta_crit_singleton``, an upper bound, since re-centring the rest only saves
more) explains the jumps from K = 1 to many clusters: once the descent's first split is
accepted, the children's proposals find those outliers, all cheaper than the first split.

Values are in the paper's units (METHOD §5: β_e = γβ, β_a = (1 − γ)β), whatever units the
sweep itself used, so prompts and runs compare directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .diagnosis_table import TOP_K
from .estimator import RDWorkspace
from .objective import binary_entropy
from .sweep import first_split

__all__ = ["diagnose"]


def diagnose(
    ws: RDWorkspace,
    gammas: Sequence[float],
    nodes: pd.DataFrame,
    *,
    refine_iter: int,
    power_iter: int,
    min_cluster_size: int = 1,
    top_k: int = TOP_K,
) -> dict[str, Any]:
    """The diagnosis of one prompt's views (``nodes``: the attribution node table, one row per
    signature column in order)."""
    At = ws.At
    if len(nodes) != At.shape[1]:
        raise ValueError(f"{len(nodes)} nodes for {At.shape[1]} signature columns")
    w = ws.w
    sq = At * At
    l2sq = sq.sum(1)
    l1 = np.abs(At).sum(1)
    live = l2sq > 0
    d_eff = (l1[live] ** 2 / l2sq[live]) if live.any() else np.zeros(1)
    k = min(top_k, At.shape[1])
    top_share = (
        np.sort(sq, axis=1)[:, ::-1][:, :k].sum(1)[live] / l2sq[live] if live.any() else [0.0]
    )
    mass = w @ sq  # each node's P-weighted share of the squared norm
    order = np.argsort(-mass, kind="stable")[:k]
    total = float(mass.sum()) or 1.0
    top_nodes = [
        {
            "node_idx": int(j),
            "kind": str(nodes["kind"].iloc[j]),
            "feature": int(nodes["feature"].iloc[j]),
            "layer": int(nodes["layer"].iloc[j]),
            "position": int(nodes["position"].iloc[j]),
            "token": str(nodes["token_str"].iloc[j]),
            "share": float(mass[j] / total),
        }
        for j in order
    ]
    one = first_split(ws, 0.5, refine_iter, power_iter)  # D_e0, D_a0 do not depend on γ
    de, da = ws.distances(ws.centre(np.arange(ws.n_samples)))
    rate_one = np.array([binary_entropy(float(p)) for p in w])
    splits = []
    for g in gammas:
        fs = first_split(ws, float(g), refine_iter, power_iter, min_cluster_size)
        saved = w * (float(g) * de + (1.0 - float(g)) * da)
        ok = (saved > 0) & (rate_one > 0)
        singleton = float(np.min(rate_one[ok] / saved[ok])) if ok.any() else float("inf")
        splits.append(
            {
                "gamma": float(g),
                "beta_crit": fs.critical_beta(float(g)),
                "beta_crit_singleton": singleton,
                "gain_e": fs.gain_e,
                "gain_a": fs.gain_a,
                "rate": fs.rate,
            }
        )
    return {
        "n": int(ws.n_samples),
        "n_nodes": int(At.shape[1]),
        "D_e0": one.D_e0,
        "D_a0": one.D_a0,
        "effective_dimension": float(np.median(d_eff)),
        f"top{k}_share": float(np.median(top_share)),
        "top_nodes": top_nodes,
        "first_split": splits,
    }
