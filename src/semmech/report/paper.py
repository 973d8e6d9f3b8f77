"""The paper's run-dependent text: the headline numbers quoted in the manuscript and the
``generated/run.tex`` that defines them. Assembling and compiling the LaTeX project is the
paper stage's (:mod:`semmech.stages.paper`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..cluster.diagnosis_table import DIAGNOSIS_COLUMNS
from ..io import require_columns
from .tables import STEERING_COLUMNS, latex_escape

__all__ = [
    "PaperBuildError",
    "PAPER_SOURCES",
    "COMPARISON_COLUMNS",
    "LATEXMK_MISSING",
    "result_macros",
    "run_tex",
]

# The manuscript's sources under paper/: copied into the build directory.
PAPER_SOURCES = ("main.tex", "references.bib", "sections")
# Columns of the aggregate tables the headline numbers are read from.
COMPARISON_COLUMNS = ["method", "n_settings", "rd_win", "rd_tie"]

LATEXMK_MISSING = (
    "'{latexmk}' was not found on PATH, so {out_pdf} cannot be built. Install LaTeX "
    "(Debian: apt-get install -y --no-install-recommends latexmk texlive-latex-base "
    "texlive-latex-recommended texlive-latex-extra) and re-run. The figures and tables "
    "under results/<run>/ are complete without it."
)


class PaperBuildError(RuntimeError):
    """The paper cannot be built (latexmk missing, or LaTeX failed)."""


def result_macros(
    comparison: pd.DataFrame, steering: pd.DataFrame, diagnosis: pd.DataFrame, k_clamp: int
) -> dict[str, str]:
    """Headline numbers quoted in the paper's text, from the run's aggregate tables: RD's win
    and tie rates at matched rate (Table 1), the steering correlations (Table 2), and how many
    prompts the sweep leaves steerable (some 2 ≤ K ≤ ``k_clamp``), at one cluster, or only
    past the clamp (the clustering diagnosis)."""
    require_columns(comparison, COMPARISON_COLUMNS, "clustering comparison", error=PaperBuildError)
    require_columns(steering, STEERING_COLUMNS, "steering comparison", error=PaperBuildError)
    require_columns(diagnosis, DIAGNOSIS_COLUMNS, "clustering diagnosis", error=PaperBuildError)
    k_min = diagnosis["K_min_split"].astype(int)
    rd = comparison[comparison["method"] == "RD"]
    if rd.empty:
        raise PaperBuildError("the clustering comparison has no RD row")
    rd = rd.iloc[0]
    parts = []
    sel = "full" if "full" in set(steering["selection"]) else str(steering["selection"].iloc[0])
    steering = steering[steering["selection"] == sel]
    for method, grp in steering.groupby("method", sort=False):
        vals = ", ".join(
            f"{r.pearson_mean:.2f} / {r.spearman_mean:.2f} at B = {int(r.budget)}"
            for r in grp.itertuples(index=False)
        )
        parts.append(f"{method} {vals}")
    return {
        "SteeringVerdict": steering_verdict(steering),
        "RDWinPercent": f"{100 * float(rd['rd_win']):.0f}",
        "RDTiePercent": f"{100 * float(rd['rd_tie']):.0f}",
        "NSettings": str(int(rd["n_settings"])),
        "SteeringSummary": "; ".join(parts),
        "NPromptsSteerable": str(int(((k_min >= 2) & (k_min <= k_clamp)).sum())),
        "NPromptsOneCluster": str(int((k_min == 1).sum())),
        "NPromptsPastClamp": str(int((k_min > k_clamp).sum())),
        "KClamp": str(int(k_clamp)),
    }


def _interval(r: Any, name: str) -> str:
    mean, lo, hi = (float(getattr(r, f"{name}_{k}")) for k in ("mean", "ci_low", "ci_high"))
    return f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def steering_verdict(steering: pd.DataFrame) -> str:
    """One plain sentence per comparison, at the largest budget: does RD's 95% interval lie
    above the other method's (beats), below it (loses), or do they overlap (no difference
    shown)? For the paper's metric (mean Pearson) and the two-sided extension measure. The
    words come from the numbers, whichever way they fall."""
    B = int(steering["budget"].max())
    at = steering[steering["budget"] == B].set_index("method")
    if "RD" not in at.index or not int(at.loc["RD", "n_clusters"]):
        return f"no RD cluster could be steered at B = {B}"
    rd = at.loc["RD"]
    out = []
    for name, label in (("pearson", "mean Pearson"), ("two_sided", "two-sided response")):
        parts = []
        for m in ("KM-Sem", "Single", "Random"):
            if m not in at.index or not int(at.loc[m, "n_clusters"]):
                parts.append(f"{m}: not measured")
                continue
            o = at.loc[m]
            r_lo, r_hi = float(rd[f"{name}_ci_low"]), float(rd[f"{name}_ci_high"])
            o_lo, o_hi = float(o[f"{name}_ci_low"]), float(o[f"{name}_ci_high"])
            word = (
                "RD higher"
                if r_lo > o_hi
                else "RD lower"
                if r_hi < o_lo
                else "intervals overlap, no difference shown"
            )
            parts.append(f"{m} {_interval(o, name)}: {word}")
        out.append(f"{label}, RD {_interval(rd, name)} against " + "; ".join(parts))
    # the first clause follows the manuscript's "With 95% bootstrap intervals ...,"; the
    # second starts its own sentence
    return f"at B = {B}, for the {out[0]}. For the {out[1]}"


def run_tex(macros: Mapping[str, Any], source: str) -> str:
    """``generated/run.tex``: one ``\\newcommand`` per macro (sorted by name; values escaped),
    under a comment naming the run directory ``source``."""
    lines = ["% generated by semmech.stages.paper from " + source]
    for name, value in sorted(macros.items()):
        if not name.isalpha():
            raise PaperBuildError(f"macro name {name!r} must be letters only")
        lines.append(f"\\newcommand{{\\{name}}}{{{latex_escape(value)}}}")
    return "\n".join(lines) + "\n"
