"""The clustering diagnosis as a table: one row per prompt from :func:`diagnose`'s record
(clusters/{p}.diagnosis.json), and the names of its critical-β columns. Kept apart from the
computation so that the table and figure jobs read it without importing the estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["DIAGNOSIS_COLUMNS", "TOP_K", "critical_beta_columns", "diagnosis_row"]

TOP_K = 10

DIAGNOSIS_COLUMNS = [
    "prompt_id",
    "n",
    "D_e0",
    "D_a0",
    "effective_dimension",
    "top10_share",
    "top_node_share",
    "top_nodes",
    "K_swept",
    "K_min_split",
]


def diagnosis_row(prompt_id: str, diag: dict[str, Any]) -> dict[str, Any]:
    """One table row: the headline numbers; the K of every swept configuration (``K_swept``, in
    sweep order) and the smallest K > 1 among them (``K_min_split``; 1 when the prompt never
    splits, so a value above the steering clamp marks a jump from one cluster to many); the
    critical β per γ of the first split (beta_crit_<γ>) and of isolating one continuation
    (beta_crit_singleton_<γ>); and the three heaviest nodes as
    '<kind initial> L<layer>#<feature>@<position> <token>' (the feature index tells apart two
    neurons of one layer at one position)."""
    row = {
        "prompt_id": prompt_id,
        "n": diag["n"],
        "D_e0": diag["D_e0"],
        "D_a0": diag["D_a0"],
        "effective_dimension": diag["effective_dimension"],
        "top10_share": diag[f"top{TOP_K}_share"],
        "top_node_share": sum(t["share"] for t in diag["top_nodes"]),
        "top_nodes": "; ".join(
            f"{t['kind'][0]} L{t['layer']}#{t['feature']}@{t['position']} {t['token']!r}"
            for t in diag["top_nodes"][:3]
        ),
        "K_swept": " ".join(str(int(c["K"])) for c in diag["sweep"]),
        "K_min_split": min((int(c["K"]) for c in diag["sweep"] if int(c["K"]) > 1), default=1),
    }
    for s in diag["first_split"]:
        row[f"beta_crit_{s['gamma']:g}"] = s["beta_crit"]
    for s in diag["first_split"]:
        row[f"beta_crit_singleton_{s['gamma']:g}"] = s["beta_crit_singleton"]
    return row


CRITICAL_PREFIX = {"split": "beta_crit_", "singleton": "beta_crit_singleton_"}


def critical_beta_columns(columns: Sequence[str], kind: str = "split") -> list[tuple[float, str]]:
    """(γ, column) of a diagnosis table's critical-β columns of one ``kind`` (``split``: the
    estimator's first split; ``singleton``: isolating one continuation), in order of γ."""
    prefix = CRITICAL_PREFIX[kind]
    out = []
    for c in columns:
        rest = c[len(prefix) :] if c.startswith(prefix) else ""
        try:
            out.append((float(rest), c))
        except ValueError:
            continue
    return sorted(out)
