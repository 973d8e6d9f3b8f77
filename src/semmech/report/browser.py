"""The cluster browser: one self-contained HTML page listing every prompt's clusters.

The page has no external scripts, styles, fonts or network requests, so it opens from disk,
inside the Snakemake report's iframe, and in headless browsers without errors.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from .summaries import ReportDataError

__all__ = ["render_browser"]


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
        rows.append(
            f'<tr class="{"rep" if k < n_representatives else ""}"><td>{_e(m["text"])}</td>'
            f'<td class="num">{m["weight"]:.4f}</td><td class="num">{m["distance"]:.3f}</td></tr>'
        )
    if len(shown) < len(cl["members"]):
        rows.append(
            f'<tr><td colspan="3" class="meta">and {len(cl["members"]) - len(shown)} more '
            "(farther from the centres)</td></tr>"
        )
    feats = _features_html(
        cl["features"],
        "no distinctive features: the cluster's median signature is the "
        "prompt's median (as for a single cluster)",
    )
    return (
        f'<details class="cluster" open data-cluster="{cl["cluster"]}"><summary>Cluster {cl["cluster"]}'
        f" &middot; mass {cl['mass']:.3f} &middot; {cl['n_members']} continuation"
        f'{"s" if cl["n_members"] != 1 else ""}</summary><div class="cols">'
        f'<div><table class="continuations"><thead><tr><th>continuation (closest to the centres first; '
        f"highlighted: representatives)</th><th>P<sub>n</sub></th><th>distortion</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        f"<div>{feats}</div></div></details>"
    )


def _features_html(
    features: Sequence[Mapping[str, Any]], empty: str, deviation: bool = True
) -> str:
    if not features:
        return f'<p class="meta">{_e(empty)}</p>'
    rows = "".join(
        f'<tr><td class="num">{f["layer"]}</td><td class="num">{f["position"]}</td>'
        f'<td><code>&quot;{_e(f["token"])}&quot;</code></td><td class="num">{f["feature"]}</td>'
        f'<td class="num">{f["value"]:+.4g}</td>'
        + (f'<td class="num">{f["deviation"]:+.4g}</td>' if deviation else "")
        + "</tr>"
        for f in features
    )
    head = (
        "<tr><th>layer</th><th>pos</th><th>prefix token</th><th>feature</th>"
        "<th>median attr.</th>" + ("<th>vs prompt median</th>" if deviation else "") + "</tr>"
    )
    return f'<table class="features"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def render_browser(
    summaries: Sequence[Mapping[str, Any]],
    *,
    n_representatives: int,
    run: str = "",
    max_members: int | None = None,
) -> str:
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
        nav.append(
            f'<li data-prompt-id="{_e(pid)}"><a href="#{_e(_anchor(pid))}">{_e(pid)}</a> '
            f'<span class="meta">({ks})</span></li>'
        )
        cfgs = []
        for c in s["configs"]:
            stats = " &middot; ".join(
                f"{k} = {c[k]:.3f}" for k in ("H", "D_e", "D_a", "L") if k in c
            )
            cfgs.append(
                f'<div class="config" data-beta="{c["beta"]:g}" data-gamma="{c["gamma"]:g}">'
                f"<h3>&beta; = {c['beta']:g}, &gamma; = {c['gamma']:g}: K = {c['K']}"
                f"{' &middot; ' + stats if stats else ''}</h3>"
                + "".join(_cluster_html(cl, n_representatives, max_members) for cl in c["clusters"])
                + "</div>"
            )
        body.append(
            f'<section class="prompt" id="{_e(_anchor(pid))}" data-prompt-id="{_e(pid)}">'
            f'<h2>{_e(pid)}</h2><p class="ptext">{_e(s.get("text", ""))}</p>'
            f'<p class="meta">{s["n_continuations"]} distinct continuations &middot; '
            f"{s.get('n_feature_nodes', '?')} feature nodes of {s.get('n_nodes', '?')} nodes"
            f"{' &middot; model ' + _e(s['model']) if s.get('model') else ''}</p>"
            '<details class="median"><summary>Prompt-wide median signature H0: top '
            "features</summary>"
            + _features_html(s.get("median_features", []), "no feature nodes", deviation=False)
            + "</details>"
            + "".join(cfgs)
            + "</section>"
        )
    title = f"semmech cluster browser{' — run ' + run if run else ''}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{len(summaries)} prompts. Each cluster lists its "
        "continuations (closest to the cluster's semantic and mechanistic centres first) and its "
        "top feature nodes: those whose median attribution departs most from the prompt-wide "
        "median.</p></header><main>"
        f'<nav><input id="filter" type="search" placeholder="filter prompts and continuations" '
        f'aria-label="filter"><ul id="prompt-index">{"".join(nav)}</ul></nav>'
        f'<div class="content">{"".join(body)}</div></main>'
        f"<script>{_JS}</script></body></html>\n"
    )
