"""Why a prompt stays at K = 1: the numbers that decide the first split.

RD splits the whole set only when the distortion its first split saves, weighted by β, pays
the split's rate. So the critical β of the first split (per γ) says at once whether a grid can
find structure on a prompt. Two properties of the normalised signatures ã explain it:

* the effective dimension (‖ã‖₁/‖ã‖₂)², the number of coordinates a signature effectively
  spreads over (D_a is an L1 distortion, so few coordinates mean little to gain);
* the share of ‖ã‖² held by its top-10 coordinates, and which nodes those are: nodes that
  every continuation shares (a chat-template token, the last prefix position) dominate the
  view without separating anything.

Values are in the paper's units (METHOD §5: β_e = γβ, β_a = (1 − γ)β), whatever units the
sweep itself used, so prompts and runs compare directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .estimator import RDWorkspace
from .sweep import first_split

__all__ = ["DIAGNOSIS_COLUMNS", "diagnose", "diagnosis_row"]

TOP_K = 10


def diagnose(
    ws: RDWorkspace,
    gammas: Sequence[float],
    nodes: pd.DataFrame,
    *,
    refine_iter: int,
    power_iter: int,
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
            "layer": int(nodes["layer"].iloc[j]),
            "position": int(nodes["position"].iloc[j]),
            "token": str(nodes["token_str"].iloc[j]),
            "share": float(mass[j] / total),
        }
        for j in order
    ]
    one = first_split(ws, 0.5, refine_iter, power_iter)  # D_e0, D_a0 do not depend on γ
    splits = []
    for g in gammas:
        fs = first_split(ws, float(g), refine_iter, power_iter)
        splits.append(
            {
                "gamma": float(g),
                "beta_crit": fs.critical_beta(float(g)),
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


DIAGNOSIS_COLUMNS = [
    "prompt_id",
    "n",
    "D_e0",
    "D_a0",
    "effective_dimension",
    "top10_share",
    "top_node_share",
    "top_nodes",
]


def diagnosis_row(prompt_id: str, diag: dict[str, Any]) -> dict[str, Any]:
    """One table row: the headline numbers, the critical β per γ (columns beta_crit_<γ>) and
    the three heaviest nodes as 'L<layer>@<position> <token>'."""
    row = {
        "prompt_id": prompt_id,
        "n": diag["n"],
        "D_e0": diag["D_e0"],
        "D_a0": diag["D_a0"],
        "effective_dimension": diag["effective_dimension"],
        "top10_share": diag[f"top{TOP_K}_share"],
        "top_node_share": sum(t["share"] for t in diag["top_nodes"]),
        "top_nodes": "; ".join(
            f"{t['kind'][0]} L{t['layer']}@{t['position']} {t['token']!r}"
            for t in diag["top_nodes"][:3]
        ),
    }
    for s in diag["first_split"]:
        row[f"beta_crit_{s['gamma']:g}"] = s["beta_crit"]
    return row
