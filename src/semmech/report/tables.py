"""The paper's tables: frames for the CSV files (full precision, for machines) and their LaTeX
(rounded, for the paper), and every table of a run on one HTML page. Writing is the stages'.

One formatter, :func:`latex_tabular`, turns a frame into a booktabs ``tabular`` (no float, no
caption: the paper wraps it), so every number in a ``.tex`` table is the CSV number rounded by
the column's format, which is what ``tests/test_paper.py`` checks in the compiled PDF.

Tables:
- the rate-matched clustering comparison (Table 1): :func:`clustering_comparison_latex` of
  :func:`semmech.cluster.baselines.comparison_table`;
- the steering comparison (Table 2): per method and budget, bootstrap CIs over clusters
  (:func:`steering_comparison`, :func:`steering_latex`);
- per-prompt cluster summaries: mass, representative continuations and the top features
  (layer, position, prefix token) of each cluster of the summarised configurations.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..cluster.diagnosis_table import critical_beta_columns
from ..io import require_columns
from ..stats import bootstrap_ci

__all__ = [
    "TableDataError",
    "Column",
    "latex_escape",
    "format_value",
    "latex_tabular",
    "auto_columns",
    "clustering_comparison_columns",
    "clustering_comparison_latex",
    "STEERING_COLUMNS",
    "steering_comparison",
    "diagnosis_latex",
    "case_study",
    "case_study_latex",
    "CASE_STUDY_COLUMNS",
    "steering_columns",
    "steering_tex_frame",
    "steering_latex",
    "cluster_summary_table",
    "cluster_summary_columns",
    "cluster_summary_latex",
    "render_tables_html",
]


class TableDataError(ValueError):
    """A table's input lacks columns or rows."""


@dataclass(frozen=True)
class Column:
    """One column of a LaTeX table: source column, header (LaTeX), format and alignment.

    ``fmt`` is a format spec ("{:.3f}") or a callable; strings are escaped, formatted
    numbers are not (they are plain ASCII digits, '-', '.', 'e').
    """

    name: str
    header: str
    fmt: str | Callable[[Any], str] | None = None
    align: str = "r"


# Every replacement typesets in OT1 Computer Modern with vector (Type 1) fonts; \$ would not.
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"$\$$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}


_LATIN_LETTERS = set("àáâãäåçèéêëìíîïñòóôõöùúûüýÿÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝßæøÆØœŒ")


def latex_escape(text: Any) -> str:
    """Escape LaTeX specials; replace characters a plain pdflatex set-up (OT1 Computer Modern,
    utf8 input) cannot typeset by '?', so any continuation text compiles."""
    s = str(text)
    s = (
        s.replace("\u2019", "'")
        .replace("\u2018", "'")
        .replace("\u201c", '"')
        .replace("\u201d", '"')
    )
    s = s.replace("\u2013", "-").replace("\u2014", "--").replace("\u2212", "-")
    # Other characters (CJK, emoji, symbols, BPE markers) have no glyph in OT1 Computer Modern.
    s = "".join(
        ch if (" " <= ch <= "~" or ch in _LATIN_LETTERS) else ("?" if ch.isprintable() else " ")
        for ch in s
    )
    s = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in s)
    return re.sub(r"\s+", " ", s).strip()


def format_value(value: Any, fmt: str | Callable[[Any], str] | None = None) -> str:
    """The LaTeX text of one cell: NaN/None -> '--', numbers by ``fmt``, text escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--"
    if callable(fmt):
        return fmt(value)
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return (fmt or "{:d}").format(int(value))
    if isinstance(value, (float, np.floating)):
        out = (fmt or "{:.3f}").format(float(value))
        return out[1:] if re.fullmatch(r"-0(\.0*)?", out) else out  # no "-0.000"
    return latex_escape(value)


_HEADERS = {
    "beta": r"$\beta$",
    "gamma": r"$\gamma$",
    "H": r"$H$",
    "D_e": r"$D_e$",
    "D_a": r"$D_a$",
    "D_gamma": r"$D_\gamma$",
    "K": r"$K$",
    "L": r"$L$",
}


def auto_columns(df: pd.DataFrame, digits: int = 3) -> list[Column]:
    """Columns for a frame: integers as such, floats with ``digits`` decimals, text left."""
    cols = []
    for c in df.columns:
        header = _HEADERS.get(c, latex_escape(c.replace("_", " ")))
        if pd.api.types.is_bool_dtype(df[c]):
            cols.append(Column(c, header, None, "c"))
        elif pd.api.types.is_integer_dtype(df[c]):
            cols.append(Column(c, header, "{:d}", "r"))
        elif pd.api.types.is_float_dtype(df[c]):
            cols.append(Column(c, header, f"{{:.{digits}f}}", "r"))
        else:
            cols.append(Column(c, header, None, "l"))
    return cols


def latex_tabular(
    df: pd.DataFrame,
    columns: Sequence[Column] | None = None,
    col_spec: str | None = None,
    group_by: str | None = None,
    env: str = "tabular",
    caption: str | None = None,
) -> str:
    """A booktabs ``tabular`` (or ``longtable``, which breaks across pages and repeats its
    header) of ``df``; ``group_by`` puts a \\midrule where its value changes. A ``caption``
    (LaTeX) is only allowed for a longtable, which cannot sit in a table float."""
    if env not in ("tabular", "longtable"):
        raise TableDataError(f"latex_tabular: env must be tabular or longtable, got {env!r}")
    columns = list(columns) if columns is not None else auto_columns(df)
    require_columns(df, [c.name for c in columns], "latex_tabular", error=TableDataError)
    spec = col_spec or "".join(c.align for c in columns)
    if caption is not None and env != "longtable":
        raise TableDataError("latex_tabular: only a longtable carries its own caption")
    lines = [f"\\begin{{{env}}}{{{spec}}}"]
    if caption is not None:
        lines.append(f"\\caption{{{caption}}}\\\\")
    lines += [r"\toprule", " & ".join(c.header for c in columns) + r" \\", r"\midrule"]
    if env == "longtable":
        lines.append(r"\endhead")
    prev = None
    for _, row in df.iterrows():
        if group_by is not None:
            if prev is not None and row[group_by] != prev:
                lines.append(r"\midrule")
            prev = row[group_by]
        lines.append(" & ".join(format_value(row[c.name], c.fmt) for c in columns) + r" \\")
    lines += [r"\bottomrule", f"\\end{{{env}}}", ""]
    return "\n".join(lines)


# ======================================================================================
# Table 1: the rate-matched clustering comparison


def clustering_comparison_columns() -> list[Column]:
    """Table 1's columns: K with two decimals, the rates and distortions with three, and RD's
    win rate in percent ("--" where undefined). Plain format calls, not format specs: a rate
    that rounds to zero from below keeps its "-0.000", so the table's bytes stay as they were."""
    f2 = lambda v: f"{v:.2f}"  # noqa: E731
    f3 = lambda v: f"{v:.3f}"  # noqa: E731
    return [
        Column("method", "Method", None, "l"),
        Column("K", r"$\bar K$", f2),
        Column("H", "$H$", f3),
        Column("D_e", "$D_e$", f3),
        Column("D_a", "$D_a$", f3),
        Column("D_gamma", r"$D_\gamma$", f3),
        Column("rd_win", "RD lower", lambda v: f"{100 * v:.0f}\\%"),
    ]


def clustering_comparison_latex(table: pd.DataFrame) -> str:
    """Table 1 (:func:`semmech.cluster.baselines.comparison_table`) as a booktabs tabular."""
    return latex_tabular(table, clustering_comparison_columns())


def diagnosis_latex(diag: pd.DataFrame) -> str:
    """The clustering diagnosis (:func:`semmech.cluster.diagnosis_table.diagnosis_row` rows): per
    prompt the K of each swept configuration, the critical β of the first split and of
    isolating one continuation at each γ, the effective dimension of ã and the share of its
    top-10 coordinates."""
    f2 = "{:.2f}"
    cols = [
        Column("prompt_id", "prompt", None, "l"),
        Column("K_swept", "$K$ on the grid", None, "l"),
        *[
            Column(c, f"$\\beta^*_{{\\gamma={g:g}}}$", f2)
            for g, c in critical_beta_columns(diag.columns, "split")
        ],
        *[
            Column(c, f"$\\beta^1_{{\\gamma={g:g}}}$", f2)
            for g, c in critical_beta_columns(diag.columns, "singleton")
        ],
        Column("effective_dimension", "$d_\\mathrm{eff}$", "{:.1f}"),
        Column("top10_share", "top-10 share", f2),
    ]
    return latex_tabular(diag, cols)


# ======================================================================================
# Table 2: the steering comparison


STEERING_COLUMNS = [
    "selection",
    "method",
    "budget",
    "n_clusters",
    "pearson_mean",
    "pearson_ci_low",
    "pearson_ci_high",
    "spearman_mean",
    "spearman_ci_low",
    "spearman_ci_high",
    "frac_moved_mean",
    "specificity_mean",
    "two_sided_mean",
    "two_sided_ci_low",
    "two_sided_ci_high",
    "two_sided_specificity_mean",
    "two_sided_specificity_ci_low",
    "two_sided_specificity_ci_high",
]
STEERING_METHODS = ("RD", "KM-Sem", "Single", "Random")


def steering_comparison(metrics: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Per selection, method and budget: mean Pearson / Spearman (the paper's Table 2) and the
    extension measure (two-sided response and its specificity over the other clusters), each
    with a percentile-bootstrap 95% CI over steered clusters (every prompt and configuration),
    plus the mean fraction moved and the slope specificity.

    ``metrics``: the steering/{p}.metrics.parquet rows of all prompts. Each (selection, method,
    budget) draws from its own seeded generator, so adding a method does not change the others.
    """
    require_columns(
        metrics,
        [
            "selection",
            "method",
            "budget",
            "pearson",
            "spearman",
            "frac_moved",
            "specificity",
            "two_sided",
            "two_sided_specificity",
        ],
        "steering_comparison",
        error=TableDataError,
    )
    rows = []
    order = {m: i for i, m in enumerate(STEERING_METHODS)}
    keys = sorted(
        metrics.groupby(["selection", "method", "budget"]).groups,
        key=lambda k: (str(k[0]), int(k[2]), order.get(k[1], len(order)), str(k[1])),
    )
    for selection, method, budget in keys:
        grp = metrics[
            (metrics["selection"] == selection)
            & (metrics["method"] == method)
            & (metrics["budget"] == budget)
        ]
        rng = np.random.default_rng(
            [int(seed), int(budget), *map(ord, str(method)), *map(ord, str(selection))]
        )
        row = {
            "selection": str(selection),
            "method": str(method),
            "budget": int(budget),
            "n_clusters": int(len(grp)),
        }
        for col, name in (
            ("pearson", "pearson"),
            ("spearman", "spearman"),
            ("two_sided", "two_sided"),
            ("two_sided_specificity", "two_sided_specificity"),
        ):
            v = grp[col].to_numpy(np.float64)
            lo, hi = bootstrap_ci(v, n_boot, rng)
            row[f"{name}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = lo, hi
        row["frac_moved_mean"] = _nanmean(grp["frac_moved"])
        row["specificity_mean"] = _nanmean(grp["specificity"])
        rows.append(row)
    return pd.DataFrame(rows, columns=STEERING_COLUMNS)


def _nanmean(s: pd.Series) -> float:
    v = s.to_numpy(np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def steering_columns() -> list[Column]:
    f2 = "{:.2f}"
    return [
        Column("selection", "selection", None, "l"),
        Column("method", "method", None, "l"),
        Column("budget", "$B$", "{:d}"),
        Column("n_clusters", "clusters", "{:d}"),
        Column("pearson_mean", "Pearson", f2),
        Column("pearson_ci", "95\\% CI", None, "c"),
        Column("spearman_mean", "Spearman", f2),
        Column("spearman_ci", "95\\% CI", None, "c"),
        Column("frac_moved_mean", "moved", f2),
        Column("two_sided_mean", "two-sided", "{:.3f}"),
        Column("two_sided_ci", "95\\% CI", None, "c"),
        Column("two_sided_specificity_mean", "2s-spec.", "{:.3f}"),
        Column("two_sided_specificity_ci", "95\\% CI", None, "c"),
    ]


def steering_tex_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The steering table with its CIs as '[lo, hi]' cells (the precision of their means)."""
    require_columns(
        df, STEERING_COLUMNS, "steering comparison table", error=TableDataError, allow_empty=False
    )
    out = df.copy()
    for k, fmt in (
        ("pearson", "{:.2f}"),
        ("spearman", "{:.2f}"),
        ("two_sided", "{:.3f}"),
        ("two_sided_specificity", "{:.3f}"),
    ):
        out[f"{k}_ci"] = [
            "--"
            if not (np.isfinite(lo) and np.isfinite(hi))
            else f"[{format_value(float(lo), fmt)}, {format_value(float(hi), fmt)}]"
            for lo, hi in zip(out[f"{k}_ci_low"], out[f"{k}_ci_high"])
        ]
    out["block"] = [f"{s}, B = {b}" for s, b in zip(out["selection"], out["budget"])]
    return out


def steering_latex(df: pd.DataFrame) -> str:
    """Table 2: the steering comparison (:data:`STEERING_COLUMNS`) as a booktabs tabular, one
    block per (source selection, budget)."""
    return latex_tabular(steering_tex_frame(df), steering_columns(), group_by="block")


CASE_STUDY_COLUMNS = [
    "prompt_id",
    "beta",
    "gamma",
    "selection",
    "budget",
    "cluster",
    "method",
    "n_members",
    "amplify",
    "moved_amplify",
    "suppress",
    "moved_suppress",
]


def case_study(curves: pd.DataFrame, methods: Sequence[str] = ("RD", "Single")) -> pd.DataFrame:
    """The held-out transfer case study (the authors' project page): for each steered cluster
    of one prompt, the mean change of its held-out members' demeaned logit at the strongest
    amplification (largest ε) and suppression (smallest ε), and the share of them moved the
    right way, per method. One configuration (the first steered one), the largest budget and
    the first selection, so that the methods face the same clusters."""
    require_columns(curves, CURVE_COLUMNS_FOR_CASES, "case study curves", error=TableDataError)
    own = curves[curves["own"].astype(bool) & curves["method"].isin(list(methods))]
    if own.empty:
        return pd.DataFrame(columns=CASE_STUDY_COLUMNS)
    first = own.iloc[0]
    own = own[
        (own["beta"] == first["beta"])
        & (own["gamma"] == first["gamma"])
        & (own["selection"] == first["selection"])
        & (own["budget"] == own["budget"].max())
    ]
    hi, lo = own["epsilon"].max(), own["epsilon"].min()
    rows = []
    for (c, m), g in own.groupby(["source_cluster", "method"], sort=True):
        at = g.set_index("epsilon")
        rows.append(
            {
                "prompt_id": str(first["prompt_id"]),
                "beta": float(first["beta"]),
                "gamma": float(first["gamma"]),
                "selection": str(first["selection"]),
                "budget": int(g["budget"].iloc[0]),
                "cluster": int(c),
                "method": str(m),
                "n_members": int(g["n_members"].iloc[0]),
                "amplify": float(at.loc[hi, "delta"]),
                "moved_amplify": float(at.loc[hi, "frac_moved"]),
                "suppress": float(at.loc[lo, "delta"]),
                "moved_suppress": float(at.loc[lo, "frac_moved"]),
            }
        )
    order = {m: i for i, m in enumerate(methods)}
    out = pd.DataFrame(rows, columns=CASE_STUDY_COLUMNS)
    return out.sort_values(
        ["cluster", "method"],
        key=lambda s: s.map(order) if s.name == "method" else s,
        kind="stable",
    ).reset_index(drop=True)


CURVE_COLUMNS_FOR_CASES = [
    "prompt_id",
    "method",
    "selection",
    "budget",
    "beta",
    "gamma",
    "source_cluster",
    "own",
    "epsilon",
    "delta",
    "n_members",
    "frac_moved",
]


def case_study_latex(df: pd.DataFrame) -> str:
    f3 = "{:.3f}"
    cols = [
        Column("cluster", "cluster", "{:d}"),
        Column("method", "method", None, "l"),
        Column("n_members", "held out", "{:d}"),
        Column("amplify", "amplify $\\Delta$", f3),
        Column("moved_amplify", "moved", "{:.2f}"),
        Column("suppress", "suppress $\\Delta$", f3),
        Column("moved_suppress", "moved", "{:.2f}"),
    ]
    return latex_tabular(df, cols, group_by="cluster")


# ======================================================================================
# Per-prompt cluster summaries


def cluster_summary_table(
    summary: Mapping[str, Any], n_representatives: int, n_features: int
) -> pd.DataFrame:
    """One row per cluster of each summarised configuration of one prompt.

    ``summary``: the dict of :func:`semmech.report.summaries.summarise_prompt`. Representatives are
    the members closest to their cluster's centres under the joint distortion; features
    are the nodes whose median attribution in the cluster departs most from the prompt's
    median, with that departure (empty for a cluster that does not depart, e.g. K = 1).
    """
    rows = []
    for cfg in summary["configs"]:
        for cl in cfg["clusters"]:
            reps = [m["text"] for m in cl["members"][:n_representatives]]
            reps += [""] * (n_representatives - len(reps))
            feats = "; ".join(_feature_label(f) for f in cl["features"][:n_features])
            rows.append(
                {
                    "prompt_id": summary["prompt_id"],
                    "beta": float(cfg["beta"]),
                    "gamma": float(cfg["gamma"]),
                    "cluster": int(cl["cluster"]),
                    "mass": float(cl["mass"]),
                    "n_members": int(cl["n_members"]),
                    **{f"representative_{i + 1}": r for i, r in enumerate(reps)},
                    "top_features": feats,
                }
            )
    cols = (
        ["prompt_id", "beta", "gamma", "cluster", "mass", "n_members"]
        + [f"representative_{i + 1}" for i in range(n_representatives)]
        + ["top_features"]
    )
    return pd.DataFrame(rows, columns=cols)


def _feature_label(f: Mapping[str, Any]) -> str:
    """'L5 p3 " Mercury" f812 (+0.041)': layer, prefix position, prefix token, feature index
    and the departure of the cluster's median attribution from the prompt's median."""
    return (
        f'L{int(f["layer"])} p{int(f["position"])} "{f["token"]}" f{int(f["feature"])} '
        f"({float(f['deviation']):+.3g})"
    )


def cluster_summary_columns(n_representatives: int) -> list[Column]:
    rep_w = "5.2cm" if n_representatives <= 3 else "4cm"
    cols = [
        Column("cfg", r"$\beta$/$\gamma$", None, "l"),
        Column("cluster", "$c$", "{:d}"),
        Column("mass", r"$\bar P_c$", "{:.3f}"),
        Column("n_members", "$n$", "{:d}"),
        Column(
            "representatives",
            "representative continuations",
            lambda v: v,
            f">{{\\raggedright\\arraybackslash}}p{{{rep_w}}}",
        ),
        Column(
            "features",
            "top features (layer, position, prefix token, feature, departure "
            "from the prompt's median)",
            lambda v: v,
            r">{\raggedright\arraybackslash}p{5.6cm}",
        ),
    ]
    return cols


def _tex_list(items: Sequence[str]) -> str:
    items = [i for i in items if i]
    return r" \newline ".join(items) if items else "--"


def cluster_summary_latex(
    summary: Mapping[str, Any], table: pd.DataFrame, n_representatives: int, n_features: int
) -> str:
    """One prompt's cluster summary as a LaTeX longtable; ``table`` is its
    :func:`cluster_summary_table`."""
    df = table
    tex = pd.DataFrame(
        {
            "cfg": [f"{b:g}/{g:g}" for b, g in zip(df["beta"], df["gamma"])],
            "cluster": df["cluster"],
            "mass": df["mass"],
            "n_members": df["n_members"],
            "representatives": [
                _tex_list(
                    [
                        r"\textit{" + latex_escape(_clip(t, 70)) + "}"
                        for t in row
                        if isinstance(t, str) and t
                    ]
                )
                for row in df[
                    [f"representative_{i + 1}" for i in range(n_representatives)]
                ].itertuples(index=False)
            ],
            "features": [
                _tex_list(
                    [
                        r"{\footnotesize " + latex_escape(_feature_label(f)) + "}"
                        for f in cl["features"][:n_features]
                    ]
                )
                for cfg in summary["configs"]
                for cl in cfg["clusters"]
            ],
        }
    )
    caption = (
        f"Clusters of prompt \\texttt{{{latex_escape(summary['prompt_id'])}}} "
        f"({latex_escape(_clip(summary.get('text', ''), 80))}): mass, representative "
        "continuations (closest to the cluster's centres) and the features whose median "
        "attribution departs most from the prompt's median."
    )
    return latex_tabular(
        tex,
        cluster_summary_columns(n_representatives),
        group_by="cfg",
        env="longtable",
        caption=caption,
    )


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


# ======================================================================================
# Every table of a run on one self-contained HTML page (for the Snakemake report)


def render_tables_html(
    tables: Mapping[str, pd.DataFrame], title: str = "semmech tables", digits: int = 4
) -> str:
    """One page with each table under its name; floats shown with ``digits`` significant
    digits (the CSV files beside it keep full precision). No external resources."""

    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "--" if not np.isfinite(v) else f"{float(v):.{digits}g}"
        return html.escape(str(v))

    parts = []
    for name, df in tables.items():
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
            for row in df.itertuples(index=False)
        )
        parts.append(
            f'<section id="{html.escape(name)}"><h2>{html.escape(name)}</h2>'
            f"<p>{len(df)} rows</p><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></section>"
        )
    css = (
        "body{font-family:system-ui,sans-serif;margin:20px;color:#1d1d1d}"
        "table{border-collapse:collapse;font-size:13px;margin-bottom:8px}"
        "th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}"
        "th{background:#eef3ee}td:first-child,th:first-child{text-align:left}"
        "h2{font-size:16px;margin:18px 0 4px}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{css}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>\n"
    )
