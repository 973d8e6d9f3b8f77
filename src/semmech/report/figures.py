"""The paper's figures (METHOD §8): one function per figure, tidy data in, Figure out.

Plotting functions take small tidy frames (columns documented per function), so tests feed
them synthetic frames shaped like the workflow's outputs and no model is needed. The
functions after them turn the workflow's tables and arrays (read by
:mod:`semmech.stages.figures`, which also saves the figures) into those frames.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state), so
building many figures in one process neither leaks memory nor depends on a GUI backend.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import io
from ..cluster.diagnosis_table import critical_beta_columns
from ..cluster.grid import close_to
from ..numba_cache import load_umap
from .summaries import top_feature_sets

__all__ = [
    "clustering_diagnosis",
    "FigureDataError",
    "METHOD_COLOURS",
    "BASELINE_NAMES",
    "HOUSE_STYLE",
    "rate_distortion",
    "gamma_sweep",
    "iteration_trace",
    "two_view_scatter",
    "cross_view_silhouette",
    "feature_lineage",
    "steering_response",
    "umap_2d",
    "lineage_table",
    "rate_distortion_points",
    "silhouette_long",
    "steering_units",
    "two_view_maps",
    "lineage_data",
]


class FigureDataError(ValueError):
    """The data handed to a figure cannot be drawn (missing columns, no rows, bad config)."""


# Fixed colours per method, so a method has the same colour in every figure.
METHOD_COLOURS = {
    "RD": "#1b7837",
    "KM-Sem": "#2166ac",
    "KM-Att": "#b2182b",
    "Single": "#e08214",
    "Random": "#7f7f7f",
    "HDBSCAN-Sem": "#5e3c99",
    "HDBSCAN-Att": "#c51b7d",
}
KIND_MARKERS = {"init": "s", "assign": "o", "split": "^", "merge": "v"}
NOISE_COLOUR = "#bdbdbd"

# Embed TrueType fonts (no Type 3 fonts in the paper) and fix the SVG id salt; with no
# creation date in the metadata the files are byte-reproducible.
HOUSE_STYLE = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.hashsalt": "semmech",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "figure.dpi": 100,
}


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure under the house style (rcParams are read while artists are made)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(HOUSE_STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _method_colour(method: str, i: int = 0) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return matplotlib.colormaps["tab10"](i % 10)


def _cluster_colours(labels: Sequence[int]) -> dict[int, Any]:
    """Colour per cluster label (stable: sorted labels, tab10 then tab20); noise (-1) grey."""
    uniq = sorted(int(l) for l in set(np.asarray(labels).tolist()) if int(l) >= 0)
    cmap = matplotlib.colormaps["tab10" if len(uniq) <= 10 else "tab20"]
    out: dict[int, Any] = {l: cmap(i % cmap.N) for i, l in enumerate(uniq)}
    out[-1] = NOISE_COLOUR
    return out


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> pd.DataFrame:
    return io.require_columns(df, columns, what, error=FigureDataError, allow_empty=False)


def _new_figure(
    ncols: int, nrows: int = 1, width: float = 3.2, height: float = 2.7, **kw: Any
) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _panel_grid(
    n: int, max_cols: int, width: float, height: float, **kw: Any
) -> tuple[Figure, list[Any]]:
    """n panels in rows of at most ``max_cols`` (unused cells removed), so wide sweeps stay
    legible at paper width."""
    ncols = max(1, min(n, max_cols))
    nrows = math.ceil(n / ncols)
    fig, axes = _new_figure(ncols, nrows, width=width, height=height, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _mean_se(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se


# ======================================================================================
# 1. Rate–distortion curves over β: RD against the rate-matched K-means baselines


@_styled
def rate_distortion(points: pd.DataFrame) -> Figure:
    """Distortion D_γ against rate H, one panel per γ, one curve per method over β.

    ``points``: prompt_id, method, beta, gamma, H, D_gamma (one row per prompt, method and
    configuration; baselines at the K matched to RD's rate). Each point is the mean over
    prompts, with the standard error of D_γ as an error bar; RD's points are labelled by β.
    """
    _require(points, ["prompt_id", "method", "beta", "gamma", "H", "D_gamma"], "rate_distortion")
    gammas = sorted(points["gamma"].unique())
    methods = _method_order(points["method"].unique())
    fig, axes = _panel_grid(len(gammas), 3, width=3.0, height=2.6)
    for j, g in enumerate(gammas):
        ax = axes[j]
        sub = points[points["gamma"] == g]
        for i, m in enumerate(methods):
            sm = sub[sub["method"] == m]
            if sm.empty:
                continue
            agg = []
            for b, grp in sm.groupby("beta", sort=True):
                h, _ = _mean_se(grp["H"].clip(lower=0.0).round(12))  # no -0.0 / 1e-16 rates
                d, se = _mean_se(grp["D_gamma"])
                agg.append((b, h, d, se))
            agg_a = np.array(agg, dtype=np.float64)
            ax.errorbar(
                agg_a[:, 1],
                agg_a[:, 2],
                yerr=agg_a[:, 3],
                marker="o",
                ms=4,
                lw=1.4,
                capsize=2,
                color=_method_colour(m, i),
                label=m,
                ls="-" if m == "RD" else "--",
                zorder=3 if m == "RD" else 2,
            )
            if m == "RD":  # one label per distinct point: equal solutions share it
                spots: dict[tuple[float, float], list[str]] = {}
                for b, h, d, _ in agg:
                    spots.setdefault((round(h, 9), round(d, 9)), []).append(f"{b:g}")
                for (h, d), bs in spots.items():
                    ax.annotate(
                        "β=" + ", ".join(bs),
                        (h, d),
                        textcoords="offset points",
                        xytext=(4, 3),
                        fontsize=7,
                        color=_method_colour(m),
                    )
        lo, hi = ax.get_xlim()
        if hi - lo < 1e-6:  # every partition has one cluster (H = 0): show a sane rate axis
            ax.set_xlim(-0.05, 0.5)
        ax.set_title(f"γ = {g:g}")
        ax.set_xlabel("rate H(C) [nats]")
        ax.set_ylabel("distortion $D_\\gamma$" if j % 3 == 0 else "")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    fig.suptitle(
        f"Rate–distortion over β (mean over {points['prompt_id'].nunique()} prompts, "
        "baselines rate-matched)"
    )
    return fig


def _method_order(methods: Sequence[str]) -> list[str]:
    known = [m for m in METHOD_COLOURS if m in set(methods)]
    return known + sorted(set(methods) - set(known))


# ======================================================================================
# 2. The γ sweep: K and the two distortions as γ moves


@_styled
def gamma_sweep(sweep: pd.DataFrame) -> Figure:
    """K, D_e and D_a against γ, one line per β (mean over prompts, ±1 SE band).

    ``sweep``: prompt_id, beta, gamma, K, D_e, D_a (the clusters/{p}.sweep.parquet rows).
    """
    _require(sweep, ["prompt_id", "beta", "gamma", "K", "D_e", "D_a"], "gamma_sweep")
    betas = sorted(sweep["beta"].unique())
    cmap = matplotlib.colormaps["viridis"]
    panels = [
        ("K", "clusters K"),
        ("D_e", "semantic distortion $D_e$"),
        ("D_a", "mechanistic distortion $D_a$"),
    ]
    fig, axes = _new_figure(3, width=3.0, height=2.7)
    for j, (col, ylabel) in enumerate(panels):
        ax = axes[0, j]
        for i, b in enumerate(betas):
            sb = sweep[sweep["beta"] == b]
            rows = [(g, *_mean_se(grp[col])) for g, grp in sb.groupby("gamma", sort=True)]
            a = np.array(rows, dtype=np.float64)
            colour = cmap(i / max(1, len(betas) - 1) * 0.9)
            ax.plot(a[:, 0], a[:, 1], marker="o", ms=3.5, color=colour, label=f"β = {b:g}")
            ax.fill_between(
                a[:, 0], a[:, 1] - a[:, 2], a[:, 1] + a[:, 2], color=colour, alpha=0.18, lw=0
            )
        ax.set_xlabel("γ (weight of the semantic view)")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel.split(" $")[0] if "$" in ylabel else ylabel)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(frameon=False)
    fig.suptitle(f"γ sweep (mean ± SE over {sweep['prompt_id'].nunique()} prompts)")
    return fig


# ======================================================================================
# 3. Iteration trace of L for one prompt


@_styled
def iteration_trace(
    history: pd.DataFrame, gamma: float | None = None, prompt_id: str | None = None
) -> Figure:
    """L after each step (init, assign, split, merge), one panel per β at one γ.

    ``history``: beta, gamma, step, kind, L, K (one prompt's clusters/{p}.history.parquet).
    The number of clusters K is drawn as a grey step line on a second axis.
    """
    _require(history, ["beta", "gamma", "step", "kind", "L", "K"], "iteration_trace")
    if gamma is None:
        gammas = sorted(history["gamma"].unique())
        gamma = gammas[len(gammas) // 2]
    sub = history[close_to(history["gamma"], gamma)]
    if sub.empty:
        raise FigureDataError(
            f"iteration_trace: no history rows at γ = {gamma} "
            f"(have {sorted(history['gamma'].unique())})"
        )
    betas = sorted(sub["beta"].unique())
    fig, axes = _panel_grid(len(betas), 2, width=3.3, height=2.5)
    for j, b in enumerate(betas):
        ax = axes[j]
        h = sub[sub["beta"] == b].sort_values("step")
        ax.plot(h["step"], h["L"], color="#444444", lw=1.0, zorder=1)
        for kind, marker in KIND_MARKERS.items():
            hk = h[h["kind"] == kind]
            if not hk.empty:
                ax.scatter(
                    hk["step"],
                    hk["L"],
                    marker=marker,
                    s=26,
                    zorder=2,
                    label=kind,
                    color={
                        "init": "#000000",
                        "assign": "#1f78b4",
                        "split": "#33a02c",
                        "merge": "#e31a1c",
                    }[kind],
                )
        ax2 = ax.twinx()
        ax2.step(h["step"], h["K"], where="post", color="#999999", lw=0.9, ls=":", label="K")
        ax2.set_ylabel("K", color="#777777")
        ax2.yaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"β = {b:g}, γ = {float(gamma):g}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("step")
        ax.set_ylabel("objective L")
        ax.grid(alpha=0.3)
    kinds = {}
    for ax in axes:
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            kinds.setdefault(lb, hd)
    fig.legend(
        list(kinds.values()),
        list(kinds),
        loc="outside lower center",
        ncols=len(kinds),
        frameon=False,
    )
    who = f" for prompt '{prompt_id}'" if prompt_id else ""
    fig.suptitle(f"Descent of $L = H + \\beta_e D_e + \\beta_a D_a${who} (grey dotted: K)")
    return fig


# ======================================================================================
# 4. Two-view scatter: shared semantics, divergent mechanisms


@_styled
def two_view_scatter(
    coords: Mapping[str, np.ndarray],
    labelings: Mapping[str, np.ndarray],
    weights: np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """2-D maps of each view (columns), coloured by each clustering (rows).

    ``coords``: view name -> (N, 2) map of that view (UMAP of the semantic and of the
    mechanistic vectors). ``labelings``: clustering name -> (N,) labels (−1 = noise, drawn
    grey). ``weights``: P_n, setting marker areas.
    """
    if not coords or not labelings:
        raise FigureDataError("two_view_scatter: needs at least one view and one labelling")
    n = None
    for name, xy in coords.items():
        xy = np.asarray(xy)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise FigureDataError(
                f"two_view_scatter: coords[{name!r}] must be (N, 2), got {xy.shape}"
            )
        n = xy.shape[0] if n is None else n
        if xy.shape[0] != n:
            raise FigureDataError("two_view_scatter: views have different numbers of points")
    for name, lab in labelings.items():
        if np.asarray(lab).shape != (n,):
            raise FigureDataError(
                f"two_view_scatter: labels {name!r} must have shape ({n},), "
                f"got {np.asarray(lab).shape}"
            )
    if weights is None:
        sizes = np.full(n, 18.0)
    else:
        w = np.asarray(weights, dtype=np.float64)
        sizes = 8.0 + 60.0 * w / w.max() if w.max() > 0 else np.full(n, 18.0)
    views = list(coords)
    fig, axes = _new_figure(len(views), len(labelings), width=3.1, height=2.6)
    for i, (lname, lab) in enumerate(labelings.items()):
        lab = np.asarray(lab).astype(np.int64)
        colours = _cluster_colours(lab)
        for j, view in enumerate(views):
            ax = axes[i, j]
            xy = np.asarray(coords[view], dtype=np.float64)
            for c in sorted(colours):
                sel = lab == c
                if not sel.any():
                    continue
                style = (
                    {"marker": "x", "linewidths": 0.8}
                    if c < 0
                    else {"marker": "o", "linewidths": 0.3, "edgecolors": "white"}
                )
                ax.scatter(
                    xy[sel, 0],
                    xy[sel, 1],
                    s=sizes[sel],
                    color=colours[c],
                    label="noise" if c < 0 else f"{c}",
                    **style,
                )
            if i == 0:
                ax.set_title(f"{view} (UMAP)", fontweight="bold")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("UMAP 1" if i == len(labelings) - 1 else "")
            ax.set_ylabel(f"coloured by {lname}" if j == 0 else "")
        n_groups = len(set(lab.tolist()) - {-1})
        axes[i, -1].legend(
            title=f"{n_groups} cluster{'' if n_groups == 1 else 's'}",
            frameon=False,
            fontsize=7,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            markerscale=0.8,
        )
    fig.suptitle(title or "Semantic vs mechanistic view")
    return fig


def umap_2d(
    X: np.ndarray, metric: str, seed: int, *, n_neighbors: int, min_dist: float
) -> np.ndarray:
    """Deterministic 2-D UMAP map (fixed random_state, which also makes UMAP single-threaded);
    ``n_neighbors`` and ``min_dist`` are the ``figures.umap`` settings.

    Small sets (fewer than 5 points) are mapped by their first two principal components:
    UMAP's neighbour graph is not meaningful there.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise FigureDataError(f"umap_2d: needs a non-empty (N, d) array, got {X.shape}")
    if not np.isfinite(X).all():
        raise FigureDataError("umap_2d: the array has NaN/inf values")
    n = X.shape[0]
    if n < 5:
        Xc = X - X.mean(0)
        u, s, _ = np.linalg.svd(Xc, full_matrices=False)
        out = np.zeros((n, 2))
        k = min(2, u.shape[1])
        out[:, :k] = u[:, :k] * s[:k]
        return out
    umap = load_umap()  # numba's disk cache switched on before umap's first compilation
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(int(n_neighbors), n - 1)),
        min_dist=float(min_dist),
        metric=metric,
        random_state=int(seed),
        init="spectral" if n > 20 else "random",
        n_jobs=1,
    )
    return np.asarray(reducer.fit_transform(X), dtype=np.float64)


# ======================================================================================
# 5. Cross-view silhouette


@_styled
def cross_view_silhouette(sil: pd.DataFrame) -> Figure:
    """Silhouette in each view of partitions made in one view (K on the x axis).

    ``sil``: prompt_id, clustered_view, score_view, K, silhouette. One panel per view the
    partition was made in ("semantic", "mechanistic" for K-means; any other name, e.g.
    "both (RD)", for joint partitions); bars per view it is scored in; mean ± SE over prompts.
    """
    _require(
        sil,
        ["prompt_id", "clustered_view", "score_view", "K", "silhouette"],
        "cross_view_silhouette",
    )
    order = {"semantic": 0, "mechanistic": 1}
    cviews = sorted(sil["clustered_view"].unique(), key=lambda v: (order.get(v, 2), v))
    sviews = sorted(sil["score_view"].unique(), key=lambda v: (order.get(v, 2), v))
    view_colour = {"semantic": "#2166ac", "mechanistic": "#b2182b"}
    fig, axes = _new_figure(len(cviews), width=3.2, height=2.7, sharey=True)
    width = 0.8 / len(sviews)
    for j, cv in enumerate(cviews):
        ax = axes[0, j]
        part_cv = sil[sil["clustered_view"] == cv]
        ks = sorted(int(k) for k in part_cv["K"].unique())
        for i, sv in enumerate(sviews):
            part = part_cv[part_cv["score_view"] == sv]
            stats = [_mean_se(part[part["K"] == k]["silhouette"]) for k in ks]
            x = np.arange(len(ks)) + (i - (len(sviews) - 1) / 2) * width
            ax.bar(
                x,
                [s[0] for s in stats],
                width=width * 0.95,
                yerr=[s[1] for s in stats],
                capsize=2,
                label=f"scored in {sv}",
                color=view_colour.get(sv, matplotlib.colormaps["tab10"](i)),
            )
        ax.axhline(0.0, color="black", lw=0.7)
        ax.set_xticks(np.arange(len(ks)), [str(k) for k in ks])
        ax.set_xlabel("K (K-means)" if cv in order else "K")
        ax.set_ylabel("silhouette" if j == 0 else "")
        ax.set_title(f"clustered in the {cv} view" if cv in order else f"clustered in {cv}")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(frameon=False)
    fig.suptitle(f"Cross-view silhouette (mean ± SE over {sil['prompt_id'].nunique()} prompts)")
    return fig


# ======================================================================================
# 6. Feature lineage across β


def lineage_table(levels: Sequence[tuple[float, list[frozenset[int]], np.ndarray]]) -> pd.DataFrame:
    """Jaccard of top-feature sets between clusters of consecutive β levels (NaN where a set
    is empty: a cluster that does not depart from the prompt-wide median, as a single
    cluster never does, has no features to inherit or pass on).

    ``levels``: (β, top-feature set per cluster, cluster masses), in increasing β.
    Returns beta_from, beta_to, cluster_from, cluster_to, mass_from, mass_to, jaccard.
    """
    rows = []
    for (b0, s0, m0), (b1, s1, m1) in zip(levels[:-1], levels[1:]):
        for i, a in enumerate(s0):
            for j, b in enumerate(s1):
                union = len(a | b)
                rows.append(
                    {
                        "beta_from": float(b0),
                        "beta_to": float(b1),
                        "cluster_from": i,
                        "cluster_to": j,
                        "mass_from": float(m0[i]),
                        "mass_to": float(m1[j]),
                        "jaccard": len(a & b) / union if a and b else math.nan,
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "beta_from",
            "beta_to",
            "cluster_from",
            "cluster_to",
            "mass_from",
            "mass_to",
            "jaccard",
        ],
    )


@_styled
def feature_lineage(
    lineage: pd.DataFrame,
    gamma: float | None = None,
    prompt_id: str | None = None,
    top_k: int | None = None,
) -> Figure:
    """Heatmaps of Jaccard(top features) between the clusters of consecutive β levels.

    ``lineage``: beta_from, beta_to, cluster_from, cluster_to, jaccard (see
    :func:`lineage_table`). One panel per consecutive pair; each cell is annotated.
    """
    _require(
        lineage,
        ["beta_from", "beta_to", "cluster_from", "cluster_to", "jaccard"],
        "feature_lineage",
    )
    pairs = sorted({(float(a), float(b)) for a, b in zip(lineage["beta_from"], lineage["beta_to"])})
    fig, axes = _panel_grid(len(pairs), 3, width=2.8, height=2.8)
    im = None
    for j, (b0, b1) in enumerate(pairs):
        ax = axes[j]
        part = lineage[(lineage["beta_from"] == b0) & (lineage["beta_to"] == b1)]
        mat = part.pivot(index="cluster_from", columns="cluster_to", values="jaccard").sort_index()
        mat = mat.reindex(sorted(mat.columns), axis=1)
        cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="#e0e0e0")
        im = ax.imshow(mat.to_numpy(), vmin=0.0, vmax=1.0, cmap=cmap, aspect="auto")
        for (r, c), v in np.ndenumerate(mat.to_numpy()):
            if mat.size <= 64:
                ax.text(
                    c,
                    r,
                    "n/a" if np.isnan(v) else f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white" if v > 0.55 else "black",
                )
        ax.set_xticks(range(mat.shape[1]), [str(c) for c in mat.columns])
        ax.set_yticks(range(mat.shape[0]), [str(r) for r in mat.index])
        ax.set_xlabel(f"cluster at β = {b1:g}")
        ax.set_ylabel(f"cluster at β = {b0:g}")
        ax.set_title(f"β {b0:g} → {b1:g}")
    fig.colorbar(im, ax=axes, label="Jaccard of top features", shrink=0.85)
    bits = [
        f"prompt '{prompt_id}'" if prompt_id else None,
        f"γ = {float(gamma):g}" if gamma is not None else None,
        f"top {top_k} features" if top_k else None,
    ]
    fig.suptitle(
        "Feature lineage across β (" + ", ".join(b for b in bits if b) + ")"
        if any(bits)
        else "Feature lineage across β"
    )
    return fig


# ======================================================================================
# 7. Steering response curves


@_styled
def steering_response(curves: pd.DataFrame) -> Figure:
    """Mean change Δ of the own cluster's demeaned logit against ε, per method, with 95% bands.

    ``curves``: method, budget, epsilon, delta, unit, and optionally delta_sem. ``unit``
    names one steered cluster (prompt, configuration, source cluster); the line is the mean
    over units and the band ±1.96 SE across units (with a single unit, its own SE over
    held-out members). One panel per budget B.
    """
    _require(curves, ["method", "budget", "epsilon", "delta", "unit"], "steering_response")
    budgets = sorted(curves["budget"].unique())
    methods = _method_order(curves["method"].unique())
    fig, axes = _new_figure(len(budgets), width=3.3, height=2.8, sharey=True)
    for j, B in enumerate(budgets):
        ax = axes[0, j]
        sub = curves[curves["budget"] == B]
        for i, m in enumerate(methods):
            sm = sub[sub["method"] == m]
            if sm.empty:
                continue
            rows = []
            for eps, grp in sm.groupby("epsilon", sort=True):
                mean, se = _mean_se(grp["delta"])
                if grp["unit"].nunique() < 2 and "delta_sem" in grp:
                    se = float(np.nan_to_num(grp["delta_sem"].to_numpy(np.float64)).mean())
                rows.append((eps, mean, se, grp["unit"].nunique()))
            a = np.array(rows, dtype=np.float64)
            colour = _method_colour(m, i)
            ax.plot(
                a[:, 0],
                a[:, 1],
                marker="o",
                ms=3.5,
                color=colour,
                label=f"{m} (n={int(a[:, 3].max())})",
            )
            ax.fill_between(
                a[:, 0],
                a[:, 1] - 1.96 * a[:, 2],
                a[:, 1] + 1.96 * a[:, 2],
                color=colour,
                alpha=0.18,
                lw=0,
            )
        ax.axhline(0.0, color="black", lw=0.6)
        ax.axvline(0.0, color="black", lw=0.6)
        ax.set_title(f"budget B = {int(B)} features")
        ax.set_xlabel("steering strength ε")
        ax.set_ylabel("Δ demeaned logit (own cluster)" if j == 0 else "")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(frameon=False, fontsize=7)
    fig.suptitle("Steering response on held-out members (mean, 95% band)")
    return fig


# ======================================================================================
# From the workflow's tables and arrays to the frames above


BASELINE_NAMES = {
    "rd": "RD",
    "km_sem": "KM-Sem",
    "km_att": "KM-Att",
    "hdbscan_sem": "HDBSCAN-Sem",
    "hdbscan_att": "HDBSCAN-Att",
}


def rate_distortion_points(baselines: pd.DataFrame) -> pd.DataFrame:
    """RD and the rate-matched K-means baselines as (prompt_id, method, beta, gamma, H,
    D_gamma) from the baselines/{p}.parquet rows (RD's own rows have match == "self", the
    baselines at the K whose rate is closest to RD's have match == "rate")."""
    df = baselines
    keep = ((df["method"] == "rd") & (df["match"] == "self")) | (
        df["method"].isin(["km_sem", "km_att"]) & (df["match"] == "rate")
    )
    out = df[keep].copy()
    if out.empty:
        raise FigureDataError("baselines: no RD or rate-matched K-means rows")
    out["method"] = out["method"].map(BASELINE_NAMES)
    return out[["prompt_id", "method", "beta", "gamma", "H", "D_gamma"]].reset_index(drop=True)


def silhouette_long(silhouettes: pd.DataFrame) -> pd.DataFrame:
    """Long form of the baselines/{p}.silhouette.parquet rows: K-means on one view (km_sem,
    km_att) and RD's joint partitions, each scored in both views (K = 1 partitions have none)."""
    df = silhouettes
    clustered = {"km_sem": "semantic", "km_att": "mechanistic", "rd": "both (RD)"}
    df = df[df["method"].isin(list(clustered)) & (df["K"] >= 2)]
    rows = []
    for view in ("semantic", "mechanistic"):
        rows.append(
            pd.DataFrame(
                {
                    "prompt_id": df["prompt_id"],
                    "K": df["K"].astype(np.int64),
                    "clustered_view": df["method"].map(clustered),
                    "score_view": view,
                    "silhouette": df[f"silhouette_{view}"].astype(np.float64),
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    out = out[np.isfinite(out["silhouette"])]  # undefined, e.g. K = N (every point alone)
    if out.empty:
        raise FigureDataError("silhouettes: no partitions with 2 <= K < N")
    return out


def steering_units(curves: pd.DataFrame) -> pd.DataFrame:
    """The own-cluster rows of all prompts' steering curves, one ``unit`` per steered cluster,
    for one source selection (``full`` when it was measured, else the first one)."""
    sel = "full" if "full" in set(curves["selection"]) else str(curves["selection"].iloc[0])
    df = curves[curves["own"].astype(bool) & (curves["selection"] == sel)].copy()
    if df.empty:
        raise FigureDataError("steering curves have no own-cluster rows")
    df["unit"] = (
        df["prompt_id"].astype(str)
        + "|"
        + df["beta"].map("{:g}".format)
        + "|"
        + df["gamma"].map("{:g}".format)
        + "|"
        + df["source_cluster"].astype(str)
    )
    return df


def two_view_maps(
    E: np.ndarray,
    A_tilde: np.ndarray,
    rd_labels: np.ndarray,
    hdbscan_labels: pd.DataFrame,
    beta: float,
    gamma: float,
    seed: int,
    umap_params: Mapping[str, Any],
    what: str = "hdbscan labels",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """UMAP maps of both views of one prompt and its RD / single-view HDBSCAN labellings.

    The mechanistic view is the normalised signature ã = (a − H0)/s, mapped under the L1
    metric (the metric of D_a); the semantic view is mapped under the Euclidean metric.
    ``hdbscan_labels``: the baselines/{p}.labels.parquet rows (method, sample_idx, label).
    """
    n = rd_labels.shape[0]
    if E.shape[0] != n or A_tilde.shape[0] != n:
        raise FigureDataError(
            f"two_view: {n} samples, {E.shape[0]} embeddings, {A_tilde.shape[0]} signatures"
        )
    hd = hdbscan_labels.assign(
        method=hdbscan_labels["method"].map(lambda m: BASELINE_NAMES.get(m, m))
    )
    coords = {
        "semantic view": umap_2d(E, "euclidean", seed, **umap_params),
        "mechanistic view": umap_2d(A_tilde, "manhattan", seed, **umap_params),
    }
    labelings = {f"RD (β={beta:g}, γ={gamma:g})": rd_labels}
    for method, name in (
        ("HDBSCAN-Sem", "HDBSCAN on semantics"),
        ("HDBSCAN-Att", "HDBSCAN on mechanisms"),
    ):
        part = hd[hd["method"] == method].sort_values("sample_idx")
        if len(part) != n:
            raise FigureDataError(f"{what}: {len(part)} {method} labels for {n} samples")
        labelings[name] = part["label"].to_numpy(np.int64)
    return coords, labelings


def lineage_data(
    clusters: Mapping[str, np.ndarray],
    feature_mask: np.ndarray,
    gamma: float,
    top_k: int,
    what: str = "clusters",
) -> pd.DataFrame:
    """Lineage table of one prompt at one γ: top-k feature sets of every cluster's
    mechanistic centre μ^a (see :func:`semmech.report.summaries.top_features`) at each β,
    compared between consecutive β. ``clusters``: the arrays of clusters/{p}.npz."""
    arr = clusters
    sel = np.nonzero(close_to(arr["gamma"], gamma))[0]
    if sel.size == 0:
        raise FigureDataError(
            f"{what}: no configuration at γ = {gamma:g} (have {sorted(set(arr['gamma'].tolist()))})"
        )
    levels = []
    for i in sorted(sel, key=lambda i: float(arr["beta"][i])):
        levels.append(
            (
                float(arr["beta"][i]),
                top_feature_sets(arr[f"cfg{i:03d}_centres_a"], feature_mask, top_k),
                arr[f"cfg{i:03d}_weights"],
            )
        )
    if len(levels) < 2:
        raise FigureDataError(
            f"{what}: feature lineage needs at least two β levels at γ = {gamma:g}"
        )
    return lineage_table(levels)


# ======================================================================================
# Clustering diagnosis: why a prompt stays at K = 1


@_styled
def clustering_diagnosis(diag: pd.DataFrame, paper_betas: Sequence[float]) -> Figure:
    """Left: the critical β of the first split against γ, one line per prompt (paper units,
    log scale), with the paper's β grid as dashed lines: a prompt whose line lies above the
    grid stays at K = 1 there. Dotted, in the same colour: the β at which isolating one
    continuation already pays; far below the solid line, the first split sets off many more.
    Right: the share of ‖ã‖² in the top-10 coordinates against the
    effective dimension (‖ã‖₁/‖ã‖₂)², one point per prompt.

    ``diag``: rows of :func:`semmech.cluster.diagnosis_table.diagnosis_row`.
    """
    _require(diag, ["prompt_id", "effective_dimension", "top10_share"], "clustering_diagnosis")
    split = critical_beta_columns(diag.columns, "split")
    single = critical_beta_columns(diag.columns, "singleton")
    if not split:
        raise FigureDataError("clustering_diagnosis: no beta_crit_<gamma> columns")
    gammas = [g for g, _ in split]
    fig, axes = _new_figure(2, width=3.6, height=3.0)
    ax = axes[0, 0]
    cmap = matplotlib.colormaps["tab20"]
    values = diag[[c for _, c in split]].to_numpy(np.float64)
    for i, (pid, y) in enumerate(zip(diag["prompt_id"], values)):
        ax.plot(gammas, y, marker="o", ms=3, lw=1, color=cmap(i % 20), label=str(pid))
    if single:
        low = diag[[c for _, c in single]].to_numpy(np.float64)
        for i, y in enumerate(low):
            ax.plot([g for g, _ in single], y, ls=":", lw=0.8, color=cmap(i % 20))
    for b in paper_betas:
        ax.axhline(float(b), color="0.3", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("γ (weight of the semantic view)")
    ax.set_ylabel("critical β of the first split")
    ax.set_title("first split pays above the line")
    ax.grid(alpha=0.3, which="both")
    ax = axes[0, 1]
    ax.scatter(diag["effective_dimension"], diag["top10_share"], s=14, color="#1b7837")
    for r in diag.itertuples(index=False):
        ax.annotate(
            str(r.prompt_id),
            (r.effective_dimension, r.top10_share),
            fontsize=6,
            xytext=(2, 2),
            textcoords="offset points",
        )
    ax.set_xlabel("effective dimension (‖ã‖₁/‖ã‖₂)²")
    ax.set_ylabel("share of ‖ã‖² in the top-10 nodes")
    ax.set_title("how concentrated the signatures are")
    ax.grid(alpha=0.3)
    fig.legend(
        *axes[0, 0].get_legend_handles_labels(),
        loc="lower center",
        ncol=5,
        fontsize=6,
        frameon=False,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.suptitle(f"Clustering diagnosis ({len(diag)} prompts; dashed: the paper's β grid)")
    return fig
