"""Reviewer-facing artifacts beyond figures and tables: per-prompt cluster summaries, the
cluster browser (one self-contained HTML page listing every prompt) and the paper build.

The browser has no external scripts, styles, fonts or network requests, so it opens from
disk, inside the Snakemake report's iframe, and in headless browsers without errors.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import io

log = logging.getLogger(__name__)

__all__ = [
    "ReportDataError", "PaperBuildError", "display_token", "read_signatures", "top_features",
    "top_feature_sets", "config_index",
    "summarise_prompt", "summarise_prompt_files", "render_browser", "write_browser",
    "result_macros", "build_paper", "PAPER_SOURCES",
]


class ReportDataError(ValueError):
    """Inputs of a summary disagree with each other (row counts, configurations, labels)."""


class PaperBuildError(RuntimeError):
    """The paper cannot be built (latexmk missing, or LaTeX failed)."""


def display_token(token: str) -> str:
    """A BPE / SentencePiece token as text: the space markers become spaces."""
    return (str(token).replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\\n")
            .replace("\n", "\\n"))


def read_signatures(path: str | Path) -> np.ndarray:
    """The "signatures" matrix of attribution/{p}.safetensors as float64, read through numpy
    (importing torch would dominate the run time of these small jobs)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            if "signatures" not in fh.keys():
                raise io.CorruptInputError(f"{path}: missing tensors ['signatures']")
            return np.asarray(fh.get_tensor("signatures"), dtype=np.float64)
    except io.CorruptInputError:
        raise
    except Exception as exc:
        raise io.CorruptInputError(f"{path}: cannot read safetensors ({exc})") from exc


def top_features(centres: np.ndarray, feature_mask: np.ndarray, k: int) -> list[np.ndarray]:
    """For each cluster centre (rows), the node indices of its k feature nodes of largest
    |value|, largest first (ties broken by node index, so the result is reproducible).

    Centres are the mechanistic centres μ^a in the normalised space RD clusters in: the
    cluster's median signature relative to the prompt-wide median H0, in units of s. So a
    cluster's top features are the ones that set it apart; entries that are exactly 0 (no
    departure from H0, e.g. everywhere for a single cluster) are never top features. Error
    and token nodes never count as features.
    """
    centres = np.atleast_2d(np.asarray(centres, dtype=np.float64))
    feature_mask = np.asarray(feature_mask, dtype=bool)
    if centres.shape[1] != feature_mask.shape[0]:
        raise ReportDataError(f"top_features: centres have {centres.shape[1]} nodes, "
                              f"the node table {feature_mask.shape[0]}")
    feat_idx = np.nonzero(feature_mask)[0]
    if feat_idx.size == 0:
        raise ReportDataError("top_features: the node table has no feature nodes")
    out = []
    for row in centres:
        vals = np.abs(row[feat_idx])
        order = np.lexsort((feat_idx, -vals))[: int(k)]
        order = order[vals[order] > 0]
        out.append(feat_idx[order])
    return out


def top_feature_sets(centres: np.ndarray, feature_mask: np.ndarray, k: int) -> list[frozenset[int]]:
    """:func:`top_features` as sets (for Jaccard similarities)."""
    return [frozenset(int(i) for i in idx) for idx in top_features(centres, feature_mask, k)]


def config_index(arrays: Mapping[str, np.ndarray], beta: float, gamma: float) -> int:
    """Row of (β, γ) in a clusters/{p}.npz sweep, or an error listing the sweep's grid."""
    b = np.asarray(arrays["beta"], dtype=np.float64)
    g = np.asarray(arrays["gamma"], dtype=np.float64)
    hit = np.nonzero(np.isclose(b, float(beta)) & np.isclose(g, float(gamma)))[0]
    if hit.size == 0:
        grid = sorted({(float(x), float(y)) for x, y in zip(b, g)})
        raise ReportDataError(f"configuration (beta={beta:g}, gamma={gamma:g}) is not in the sweep; "
                              f"available: {grid}")
    return int(hit[0])


def summarise_prompt(prompt_id: str, prompt_text: str, samples: pd.DataFrame,
                     labels: pd.DataFrame, clusters: Mapping[str, np.ndarray],
                     nodes: pd.DataFrame, signatures: np.ndarray, embeddings: np.ndarray,
                     configs: Sequence[Sequence[float]], n_features: int = 10,
                     sweep: pd.DataFrame | None = None) -> dict[str, Any]:
    """Everything a reader needs about one prompt's clusters at the given (β, γ) pairs.

    Per cluster: mass P̄_c, its members sorted by joint distortion to the cluster's centres
    (β_e‖e − μ^e‖² + β_a‖ã − μ^a‖₁: the first ones are the representatives; the first is
    the member METHOD §7 takes as RD's steering source), and its top feature nodes: those
    whose median attribution departs most from the prompt-wide median H0 (largest |μ^a|,
    see :func:`top_features`), with layer, prefix position, prefix token, the median value
    H0 + s·μ^a and the departure s·μ^a. The prompt's own top features (largest |H0|) come
    once per prompt, as ``median_features``.
    """
    samples = samples.sort_values("sample_idx").reset_index(drop=True)
    N = len(samples)
    if N == 0:
        raise ReportDataError(f"prompt {prompt_id!r}: no continuations")
    if not np.array_equal(samples["sample_idx"].to_numpy(), np.arange(N)):
        raise ReportDataError(f"prompt {prompt_id!r}: sample_idx must be 0..{N - 1}")
    signatures = np.asarray(signatures, dtype=np.float64)
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if signatures.shape[0] != N or embeddings.shape[0] != N:
        raise ReportDataError(f"prompt {prompt_id!r}: {N} samples but {signatures.shape[0]} "
                              f"signatures and {embeddings.shape[0]} embeddings")
    if signatures.shape[1] != len(nodes):
        raise ReportDataError(f"prompt {prompt_id!r}: signatures have {signatures.shape[1]} "
                              f"nodes, the node table {len(nodes)}")
    H0 = np.asarray(clusters["H0"], dtype=np.float64)
    scale = float(np.asarray(clusters["scale"]))
    if H0.shape != (signatures.shape[1],):
        raise ReportDataError(f"prompt {prompt_id!r}: H0 has shape {H0.shape}, "
                              f"signatures {signatures.shape}")
    A_tilde = (signatures - H0) / scale
    nodes = nodes.sort_values("node_idx").reset_index(drop=True)
    if not np.array_equal(nodes["node_idx"].to_numpy(), np.arange(len(nodes))):
        raise ReportDataError(f"prompt {prompt_id!r}: node_idx must be 0..{len(nodes) - 1} "
                              "(column j of the signatures is node j)")
    feat_mask = nodes["kind"].to_numpy() == "feature"
    P = samples["weight"].to_numpy(np.float64)
    texts = samples["text"].astype(str).tolist()
    out_cfgs = []
    for beta, gamma in configs:
        i = config_index(clusters, beta, gamma)
        lab = labels[np.isclose(labels["beta"], float(beta)) & np.isclose(labels["gamma"], float(gamma))]
        lab = lab.sort_values("sample_idx")
        if len(lab) != N:
            raise ReportDataError(f"prompt {prompt_id!r}: {len(lab)} labels at (beta={beta:g}, "
                                  f"gamma={gamma:g}) for {N} samples")
        y = lab["label"].to_numpy(np.int64)
        ce = np.asarray(clusters[f"cfg{i:03d}_centres_e"], dtype=np.float64)
        ca = np.asarray(clusters[f"cfg{i:03d}_centres_a"], dtype=np.float64)
        mass = np.asarray(clusters[f"cfg{i:03d}_weights"], dtype=np.float64)
        K = ce.shape[0]
        if y.min() < 0 or y.max() >= K:
            raise ReportDataError(f"prompt {prompt_id!r}: labels outside 0..{K - 1} at "
                                  f"(beta={beta:g}, gamma={gamma:g})")
        be, ba = float(gamma) * float(beta), (1.0 - float(gamma)) * float(beta)
        dist = (be * ((embeddings - ce[y]) ** 2).sum(1) + ba * np.abs(A_tilde - ca[y]).sum(1))
        cfg: dict[str, Any] = {"beta": float(beta), "gamma": float(gamma), "K": int(K), "clusters": []}
        if sweep is not None:
            row = sweep[np.isclose(sweep["beta"], float(beta)) & np.isclose(sweep["gamma"], float(gamma))]
            if len(row):
                cfg.update({k: float(row.iloc[0][k]) for k in ("L", "H", "D_e", "D_a") if k in row})
        tops = top_features(ca, feat_mask, n_features)
        for c in range(K):
            idx = np.nonzero(y == c)[0]
            order = idx[np.lexsort((idx, dist[idx]))]
            cfg["clusters"].append({
                "cluster": c, "mass": float(mass[c]), "n_members": int(idx.size),
                "weight_sum": float(P[idx].sum()),
                "members": [{"sample_idx": int(n), "text": texts[n], "weight": float(P[n]),
                             "distance": float(dist[n])} for n in order],
                "features": [_feature(nodes, j, H0[j] + scale * ca[c, j], scale * ca[c, j])
                             for j in tops[c]],
            })
        out_cfgs.append(cfg)
    median_top = top_features(H0[None, :], feat_mask, n_features)[0]
    return {"prompt_id": prompt_id, "text": prompt_text, "n_continuations": N,
            "total_weight": float(P.sum()), "n_feature_nodes": int(feat_mask.sum()),
            "n_nodes": int(len(nodes)),
            "median_features": [_feature(nodes, j, H0[j], 0.0) for j in median_top],
            "configs": out_cfgs}


def _feature(nodes: pd.DataFrame, j: int, value: float, deviation: float) -> dict[str, Any]:
    """A feature node as the browser and tables show it: where it sits (layer, prefix position
    and token), its median attribution and that median's departure from the prompt's H0."""
    return {"node_idx": int(j), "layer": int(nodes.at[j, "layer"]),
            "position": int(nodes.at[j, "position"]), "feature": int(nodes.at[j, "feature"]),
            "token": display_token(nodes.at[j, "token_str"]), "value": float(value),
            "deviation": float(deviation)}


def summarise_prompt_files(prompt_id: str, samples: str | Path, prompt_json: str | Path,
                           labels: str | Path, clusters: str | Path, nodes: str | Path,
                           signatures: str | Path, embeddings: str | Path,
                           configs: Sequence[Sequence[float]], out_json: str | Path,
                           out_csv: str | Path, out_tex: str | Path, sweep: str | Path | None = None,
                           n_representatives: int = 3, n_features: int = 5,
                           n_browser_features: int = 10) -> dict[str, Any]:
    """Workflow stage: one prompt's cluster summary as JSON (browser) and CSV + LaTeX (tables)."""
    from .tables import write_cluster_summary

    s = io.read_parquet(samples, ["sample_idx", "text", "weight"])
    lab = io.read_parquet(labels, ["beta", "gamma", "sample_idx", "label"])
    arr = io.read_npz(clusters, ["H0", "scale", "beta", "gamma"])
    nod = io.read_parquet(nodes, ["node_idx", "kind", "layer", "position", "feature", "token_str"])
    sig = read_signatures(signatures)
    emb = io.read_npz(embeddings, ["embeddings"])["embeddings"]
    sw = io.read_parquet(sweep) if sweep else None
    prompt = io.read_json(prompt_json)
    summary = summarise_prompt(prompt_id, prompt.get("text", ""), s, lab, arr, nod,
                               sig, emb, configs,
                               n_features=max(n_features, n_browser_features), sweep=sw)
    summary["model"] = prompt.get("model")
    io.write_json(summary, out_json)
    write_cluster_summary(summary, out_csv, out_tex, n_representatives, n_features)
    return summary


# ======================================================================================
# The cluster browser


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1d;background:#fafafa}
header{background:#1b7837;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;font-size:13px;opacity:.9}
main{display:flex;gap:18px;padding:16px 24px}
nav{min-width:230px;max-width:280px;position:sticky;top:8px;align-self:flex-start;font-size:13px}
nav ul{list-style:none;padding:0;margin:6px 0} nav li{margin:3px 0}
nav a{color:#1b4f8a;text-decoration:none} nav a:hover{text-decoration:underline}
#filter{width:100%;box-sizing:border-box;padding:5px;font-size:13px}
.content{flex:1;min-width:0}
section.prompt{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 16px;margin-bottom:16px}
section.prompt h2{margin:4px 0;font-size:17px} .ptext{font-style:italic;color:#444;margin:2px 0 8px}
.config h3{font-size:14px;margin:10px 0 6px;color:#333}
details.cluster{border-left:4px solid #1b7837;margin:6px 0;padding:2px 10px;background:#f6faf6}
details.cluster summary,details.median summary{cursor:pointer;font-weight:600;font-size:13px;padding:4px 0}
details.median{margin:4px 0 8px;font-size:13px}
.cols{display:flex;gap:16px;flex-wrap:wrap}.cols>div{flex:1;min-width:320px}
table{border-collapse:collapse;font-size:12px;width:100%} th,td{border-bottom:1px solid #e3e3e3;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#eef3ee} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.rep td{background:#fff6d9} code{font-size:12px}
.meta{font-size:12px;color:#555}
"""

_JS = """
(function(){
  var box=document.getElementById('filter');
  if(!box){return;}
  box.addEventListener('input',function(){
    var q=box.value.toLowerCase();
    document.querySelectorAll('section.prompt').forEach(function(s){
      var hit=!q||s.textContent.toLowerCase().indexOf(q)>=0;
      s.style.display=hit?'':'none';
      var li=document.querySelector('nav li[data-prompt-id="'+s.dataset.promptId+'"]');
      if(li){li.style.display=hit?'':'none';}
    });
  });
})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _anchor(pid: str) -> str:
    return f"prompt-{pid}"


def _cluster_html(cl: Mapping[str, Any], n_representatives: int, max_members: int | None) -> str:
    rows = []
    shown = cl["members"] if max_members is None else cl["members"][:max_members]
    for k, m in enumerate(shown):
        rows.append(f'<tr class="{"rep" if k < n_representatives else ""}"><td>{_e(m["text"])}</td>'
                    f'<td class="num">{m["weight"]:.4f}</td><td class="num">{m["distance"]:.3f}</td></tr>')
    if len(shown) < len(cl["members"]):
        rows.append(f'<tr><td colspan="3" class="meta">and {len(cl["members"]) - len(shown)} more '
                    "(farther from the centres)</td></tr>")
    feats = _features_html(cl["features"],
                           "no distinctive features: the cluster's median signature is the "
                           "prompt's median (as for a single cluster)")
    return (
        f'<details class="cluster" open data-cluster="{cl["cluster"]}"><summary>Cluster {cl["cluster"]}'
        f' &middot; mass {cl["mass"]:.3f} &middot; {cl["n_members"]} continuation'
        f'{"s" if cl["n_members"] != 1 else ""}</summary><div class="cols">'
        f'<div><table class="continuations"><thead><tr><th>continuation (closest to the centres first; '
        f'highlighted: representatives)</th><th>P<sub>n</sub></th><th>distortion</th></tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>'
        f'<div>{feats}</div></div></details>')


def _features_html(features: Sequence[Mapping[str, Any]], empty: str, deviation: bool = True) -> str:
    if not features:
        return f'<p class="meta">{_e(empty)}</p>'
    rows = "".join(
        f'<tr><td class="num">{f["layer"]}</td><td class="num">{f["position"]}</td>'
        f'<td><code>&quot;{_e(f["token"])}&quot;</code></td><td class="num">{f["feature"]}</td>'
        f'<td class="num">{f["value"]:+.4g}</td>'
        + (f'<td class="num">{f["deviation"]:+.4g}</td>' if deviation else "") + "</tr>"
        for f in features)
    head = ("<tr><th>layer</th><th>pos</th><th>prefix token</th><th>feature</th>"
            "<th>median attr.</th>" + ("<th>vs prompt median</th>" if deviation else "") + "</tr>")
    return f'<table class="features"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def render_browser(summaries: Sequence[Mapping[str, Any]], run: str = "",
                   n_representatives: int = 3, max_members: int | None = None) -> str:
    """The cluster browser: an index of every prompt, then each prompt's clusters, each
    listing up to ``max_members`` continuations (closest first; None: all), so that the page
    stays light at paper scale (hundreds of prompts, hundreds of continuations each)."""
    if not summaries:
        raise ReportDataError("cluster browser: no prompt summaries")
    ids = [s["prompt_id"] for s in summaries]
    if len(set(ids)) != len(ids):
        raise ReportDataError(f"cluster browser: duplicate prompt ids in {ids}")
    nav, body = [], []
    for s in summaries:
        pid = s["prompt_id"]
        ks = "K = " + " / ".join(str(c["K"]) for c in s["configs"])
        nav.append(f'<li data-prompt-id="{_e(pid)}"><a href="#{_e(_anchor(pid))}">{_e(pid)}</a> '
                   f'<span class="meta">({ks})</span></li>')
        cfgs = []
        for c in s["configs"]:
            stats = " &middot; ".join(f"{k} = {c[k]:.3f}" for k in ("H", "D_e", "D_a", "L") if k in c)
            cfgs.append(f'<div class="config" data-beta="{c["beta"]:g}" data-gamma="{c["gamma"]:g}">'
                        f'<h3>&beta; = {c["beta"]:g}, &gamma; = {c["gamma"]:g}: K = {c["K"]}'
                        f'{" &middot; " + stats if stats else ""}</h3>'
                        + "".join(_cluster_html(cl, n_representatives, max_members)
                                  for cl in c["clusters"])
                        + "</div>")
        body.append(f'<section class="prompt" id="{_e(_anchor(pid))}" data-prompt-id="{_e(pid)}">'
                    f'<h2>{_e(pid)}</h2><p class="ptext">{_e(s.get("text", ""))}</p>'
                    f'<p class="meta">{s["n_continuations"]} distinct continuations &middot; '
                    f'{s.get("n_feature_nodes", "?")} feature nodes of {s.get("n_nodes", "?")} nodes'
                    f'{" &middot; model " + _e(s["model"]) if s.get("model") else ""}</p>'
                    '<details class="median"><summary>Prompt-wide median signature H0: top '
                    'features</summary>'
                    + _features_html(s.get("median_features", []), "no feature nodes",
                                     deviation=False)
                    + "</details>" + "".join(cfgs) + "</section>")
    title = f"semmech cluster browser{' — run ' + run if run else ''}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<link rel=\"icon\" href=\"data:,\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{len(summaries)} prompts. Each cluster lists its "
        "continuations (closest to the cluster's semantic and mechanistic centres first) and its "
        "top feature nodes: those whose median attribution departs most from the prompt-wide "
        "median.</p></header><main>"
        f'<nav><input id="filter" type="search" placeholder="filter prompts and continuations" '
        f'aria-label="filter"><ul id="prompt-index">{"".join(nav)}</ul></nav>'
        f'<div class="content">{"".join(body)}</div></main>'
        f"<script>{_JS}</script></body></html>\n")


def write_browser(summary_paths: Sequence[str | Path], out_html: str | Path, run: str = "",
                  n_representatives: int = 3, max_members: int | None = None) -> None:
    """Workflow stage: the cluster browser from the per-prompt summary JSON files."""
    summaries = [io.read_json(p) for p in summary_paths]
    io.write_text(render_browser(summaries, run, n_representatives, max_members), out_html)


# ======================================================================================
# The paper


def result_macros(run_dir: str | Path) -> dict[str, str]:
    """Headline numbers quoted in the paper's text, read from the run's aggregate CSVs:
    RD's win and tie rates at matched rate (Table 1) and the steering correlations (Table 2)."""
    run_dir = Path(run_dir)
    comp = _read_csv(run_dir / "tables/clustering_comparison.csv",
                     ["method", "n_settings", "rd_win", "rd_tie"])
    rd = comp[comp["method"] == "RD"]
    if rd.empty:
        raise PaperBuildError(f"{run_dir}/tables/clustering_comparison.csv has no RD row")
    rd = rd.iloc[0]
    steer = _read_csv(run_dir / "tables/steering_comparison.csv",
                      ["method", "budget", "pearson_mean", "spearman_mean"])
    parts = []
    for method, grp in steer.groupby("method", sort=False):
        vals = ", ".join(f"{r.pearson_mean:.2f} / {r.spearman_mean:.2f} at B = {int(r.budget)}"
                         for r in grp.itertuples(index=False))
        parts.append(f"{method} {vals}")
    return {"RDWinPercent": f"{100 * float(rd['rd_win']):.0f}",
            "RDTiePercent": f"{100 * float(rd['rd_tie']):.0f}",
            "NSettings": str(int(rd["n_settings"])), "SteeringSummary": "; ".join(parts)}


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise PaperBuildError(f"{path}: cannot read ({exc}); run the workflow first") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PaperBuildError(f"{path}: missing columns {missing}")
    return df


PAPER_SOURCES = ("main.tex", "references.bib", "sections")


def build_paper(run_dir: str | Path, paper_dir: str | Path, out_pdf: str | Path,
                macros: Mapping[str, Any] | None = None,
                aliases: Mapping[str, str] | None = None, latexmk: str = "latexmk",
                log_path: str | Path | None = None, timeout: int = 600) -> Path:
    """Assemble a self-contained LaTeX project in ``out_pdf``'s directory and compile it.

    The project is the manuscript's sources (``paper/main.tex``, ``sections/``,
    ``references.bib``) plus ``generated/``: the run's tables (.tex) and figures (.pdf) and
    ``run.tex``, whose ``\\newcommand``s hold run facts (``macros``) and the headline numbers
    of :func:`result_macros`. ``aliases`` add names under ``generated/tables/`` for run files
    (e.g. the example prompt's cluster summary), so the manuscript never spells a prompt id.
    Pointing ``run_dir`` at another run rebuilds the paper for that run; the build directory
    can be recompiled by hand with ``latexmk -pdf main.tex``.
    """
    from .tables import latex_escape

    exe = shutil.which(latexmk)
    if exe is None:
        raise PaperBuildError(
            f"'{latexmk}' was not found on PATH, so {out_pdf} cannot be built. Install LaTeX "
            "(Debian: apt-get install -y --no-install-recommends latexmk texlive-latex-base "
            "texlive-latex-recommended texlive-latex-extra) and re-run. The figures and tables "
            "under results/<run>/ are complete without it.")
    run_dir, paper_dir, out_pdf = Path(run_dir), Path(paper_dir), Path(out_pdf)
    missing = [n for n in PAPER_SOURCES if not (paper_dir / n).exists()]
    if missing:
        raise PaperBuildError(f"{paper_dir}: manuscript sources {missing} not found")
    build = out_pdf.parent
    build.mkdir(parents=True, exist_ok=True)
    if build.resolve() == paper_dir.resolve():
        raise PaperBuildError("the paper must be built in its own directory (e.g. paper/build/)")
    shutil.copyfile(paper_dir / "main.tex", build / "main.tex")
    shutil.copyfile(paper_dir / "references.bib", build / "references.bib")
    if (build / "sections").exists():
        shutil.rmtree(build / "sections")
    shutil.copytree(paper_dir / "sections", build / "sections")
    gen = build / "generated"
    if gen.exists():
        shutil.rmtree(gen)
    (gen / "tables").mkdir(parents=True)
    (gen / "figures").mkdir(parents=True)
    n_tab = n_fig = 0
    for f in sorted((run_dir / "tables").rglob("*.tex")):
        dest = gen / "tables" / f.relative_to(run_dir / "tables")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest)
        n_tab += 1
    for f in sorted((run_dir / "figures").glob("*.pdf")):
        shutil.copyfile(f, gen / "figures" / f.name)
        n_fig += 1
    for name, rel in sorted((aliases or {}).items()):
        src = run_dir / rel
        if not src.is_file():
            raise PaperBuildError(f"{src} not found (wanted as generated/tables/{name})")
        shutil.copyfile(src, gen / "tables" / name)
    if n_tab == 0 or n_fig == 0:
        raise PaperBuildError(f"{run_dir}: found {n_tab} tables and {n_fig} figures; run the "
                              "workflow first (the paper only typesets its outputs)")
    lines = ["% generated by semmech.report.build_paper from " + run_dir.as_posix()]
    for name, value in sorted({**result_macros(run_dir), **(macros or {})}.items()):
        if not name.isalpha():
            raise PaperBuildError(f"macro name {name!r} must be letters only")
        lines.append(f"\\newcommand{{\\{name}}}{{{latex_escape(value)}}}")
    (gen / "run.tex").write_text("\n".join(lines) + "\n")
    env = dict(os.environ, SOURCE_DATE_EPOCH="0", FORCE_SOURCE_DATE="1")
    cmd = [exe, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", "main.tex"]
    proc = subprocess.run(cmd, cwd=build, env=env, capture_output=True, text=True, timeout=timeout)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise PaperBuildError(f"latexmk failed (exit {proc.returncode}); see {build}/main.log:\n{tail}")
    built = build / "main.pdf"
    if built.resolve() != out_pdf.resolve():
        with io.atomic_path(out_pdf, suffix=".pdf") as tmp:
            shutil.copyfile(built, tmp)
    log.info("paper built: %s (%d tables, %d figures from %s)", out_pdf, n_tab, n_fig, run_dir)
    return out_pdf
