"""Single-view baselines against which rate–distortion clustering is compared (METHOD §6).

- HDBSCAN after UMAP on the semantic view alone and on the mechanistic view alone (noise
  points, label −1, count as one group of their own in every metric).
- K-means on each view (KM-Sem on e, KM-Att on ã), P-weighted and seeded, at the K of each RD
  solution and at the K whose rate H is closest to RD's (the rate-matched comparison on
  D_γ = γ D_e + (1 − γ) D_a).
- The cross-view silhouette table: cluster in one view (K-means, K = 2..5, and every RD
  solution), score in both views.

Every partition is scored with the RD objective's own centres (P-weighted mean of e,
P-weighted median of ã), so all methods are measured on the same footing.

Settings come from the ``baselines`` config section with its schema defaults filled in
(:func:`semmech.config.validate_config`, or :func:`semmech.config.section_defaults`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import hdbscan
import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from ..numba_cache import load_umap
from .metrics import ari, cross_view_silhouette, d_gamma, rate_match, win_rate
from .objective import RDInputError, partition_cost

__all__ = [
    "BaselineResult",
    "COMPARISON_ROWS",
    "adapt_umap_params",
    "adapt_hdbscan_params",
    "umap_hdbscan",
    "kmeans_labels",
    "run_baselines",
    "comparison_table",
    "silhouette_summary",
]

SEMANTIC_METRIC = "euclidean"  # e is unit-norm: Euclidean is the D_e geometry
MECHANISTIC_METRIC = "manhattan"  # the L1 geometry of D_a
MIN_DENSITY_SAMPLES = 4  # below this, density clustering is not attempted


# --------------------------------------------------------------------------------------
# Density baseline: UMAP then HDBSCAN, parameters adapted to small N


def adapt_umap_params(n: int, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """UMAP arguments valid for ``n`` samples from the ``baselines.umap`` settings:
    n_neighbors < n, n_components ≤ n − 2, and a random initialisation where the spectral one
    needs more points than there are."""
    n_neighbors = max(2, min(int(cfg["n_neighbors"]), n - 1))
    n_components = max(1, min(int(cfg["n_components"]), n - 2))
    init = "spectral" if n > max(n_components + 2, 2 * n_neighbors) else "random"
    return {
        "n_neighbors": n_neighbors,
        "n_components": n_components,
        "min_dist": float(cfg["min_dist"]),
        "init": init,
    }


def adapt_hdbscan_params(n: int, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """HDBSCAN arguments for ``n`` samples from the ``baselines.hdbscan`` settings: a minimum
    cluster size of at most n / 4 (so a handful of continuations can still form groups) and at
    least 2."""
    mcs = max(2, min(int(cfg["min_cluster_size"]), n // 4))
    ms = cfg["min_samples"]
    ms = mcs if ms is None else max(1, min(int(ms), n - 1))
    return {"min_cluster_size": mcs, "min_samples": ms}


def umap_hdbscan(
    X: np.ndarray,
    metric: str,
    seed: int,
    umap_cfg: Mapping[str, Any],
    hdbscan_cfg: Mapping[str, Any],
) -> np.ndarray:
    """Density clusters of one view: UMAP (seeded, single-threaded, so deterministic) to a
    few dimensions, then HDBSCAN. Returns labels with −1 for noise; with fewer than
    ``MIN_DENSITY_SAMPLES`` samples, or all rows identical, everything is one group."""
    n = X.shape[0]
    if n < MIN_DENSITY_SAMPLES or np.all(X == X[0]):
        return np.zeros(n, dtype=np.int64)
    umap = load_umap()  # numba's disk cache switched on before umap's first compilation
    up = adapt_umap_params(n, umap_cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs=1 under random_state; small-graph notices
        Y = umap.UMAP(metric=metric, random_state=int(seed), n_jobs=1, **up).fit_transform(X)
        labels = hdbscan.HDBSCAN(**adapt_hdbscan_params(n, hdbscan_cfg)).fit_predict(Y)
    return np.asarray(labels, dtype=np.int64)


# --------------------------------------------------------------------------------------
# K-means baselines


def kmeans_labels(
    X: np.ndarray, k: int, sample_weight: np.ndarray, seed: int, n_init: int = 10
) -> np.ndarray:
    """P-weighted K-means (scikit-learn, seeded); k is capped at the number of samples."""
    n = X.shape[0]
    k = int(min(max(k, 1), n))
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct points than k: fewer groups, fine
        km = KMeans(n_clusters=k, n_init=int(n_init), random_state=int(seed))
        return km.fit_predict(X, sample_weight=sample_weight).astype(np.int64)


# --------------------------------------------------------------------------------------
# One prompt


@dataclass
class BaselineResult:
    comparison: pd.DataFrame  # one row per (β, γ, method, match)
    labels: pd.DataFrame  # prompt_id, method, K, sample_idx, label
    silhouette: pd.DataFrame  # cross-view silhouettes of K-means and RD partitions


def _score(labels, E, At, P):
    pc = partition_cost(_dense(labels), E, At, P)
    return {"K": pc.K, "H": pc.H, "D_e": pc.D_e, "D_a": pc.D_a}


def _dense(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1]


def run_baselines(
    E: np.ndarray,
    A_tilde: np.ndarray,
    P: np.ndarray,
    rd_table: pd.DataFrame,
    rd_labels: Mapping[tuple[float, float], np.ndarray],
    *,
    seed: int,
    cfg: Mapping[str, Any],
    prompt_id: str = "",
) -> BaselineResult:
    """All baselines of one prompt, compared with its RD sweep.

    ``A_tilde`` is the normalised mechanistic view (the RD stage's H0 and s applied);
    ``rd_table`` has one row per (beta, gamma) with RD's K, H, D_e, D_a; ``rd_labels`` maps
    (beta, gamma) to RD's labels; ``cfg`` is the ``baselines`` config section.
    """
    where = f" (prompt {prompt_id!r})" if prompt_id else ""
    E = np.asarray(E, dtype=np.float64)
    A_tilde = np.asarray(A_tilde, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    n = E.shape[0]
    if A_tilde.shape[0] != n or P.shape[0] != n:
        raise RDInputError(
            f"mismatched row counts: E {E.shape[0]}, A {A_tilde.shape[0]}, P {P.shape[0]}{where}"
        )
    for name, X in (("E", E), ("A", A_tilde), ("P", P)):
        if not np.isfinite(X).all():
            raise RDInputError(f"{name} has NaN/inf values{where}")
    if not P.sum() > 0:
        raise RDInputError(f"all sample weights are zero{where}")
    n_init = int(cfg["kmeans"]["n_init"])
    k_max = int(cfg["kmeans"]["k_max"])
    sil_k = [int(k) for k in cfg["silhouette_k"]]
    views = {"sem": E, "att": A_tilde}

    # K-means on each view over a grid of K: every RD K, 1..k_max, and the silhouette Ks
    ks = sorted({min(k, n) for k in [*range(1, k_max + 1), *rd_table["K"].tolist(), *sil_k]})
    km: dict[tuple[str, int], np.ndarray] = {}
    km_score: dict[tuple[str, int], dict] = {}
    for view, X in views.items():
        for k in ks:
            km[view, k] = kmeans_labels(X, k, P, seed, n_init)
            km_score[view, k] = _score(km[view, k], E, A_tilde, P)
    # density baselines, once per view
    hd = {
        view: umap_hdbscan(
            X,
            SEMANTIC_METRIC if view == "sem" else MECHANISTIC_METRIC,
            seed,
            cfg["umap"],
            cfg["hdbscan"],
        )
        for view, X in views.items()
    }
    hd_score = {view: _score(lab, E, A_tilde, P) for view, lab in hd.items()}

    rows = []
    for r in rd_table.itertuples(index=False):
        beta, gamma = float(r.beta), float(r.gamma)
        # D_γ weighs the views as the configuration's own objective did (γ itself in the
        # paper's parametrisation; β_e / (β_e + β_a) with balanced views).
        gamma_eff = float(r.gamma_eff)
        rd_lab = np.asarray(rd_labels[(beta, gamma)])
        base = {"prompt_id": prompt_id, "beta": beta, "gamma": gamma}

        def add(method, match, sc, labels, base=base, gamma=gamma_eff, rd_lab=rd_lab):
            rows.append(
                {
                    **base,
                    "method": method,
                    "match": match,
                    "K": int(sc["K"]),
                    "H": sc["H"],
                    "D_e": sc["D_e"],
                    "D_a": sc["D_a"],
                    "D_gamma": float(d_gamma(sc["D_e"], sc["D_a"], gamma)),
                    "ari_rd": ari(rd_lab, labels),
                }
            )

        add("rd", "self", {"K": r.K, "H": r.H, "D_e": r.D_e, "D_a": r.D_a}, rd_lab)
        cand_k = min(int(r.K), n)
        for view in views:
            add(f"km_{view}", "k", km_score[view, cand_k], km[view, cand_k])
            cands = pd.DataFrame([{"k": k, **km_score[view, k]} for k in ks])
            best = cands.loc[rate_match(r.H, cands)]
            add(f"km_{view}", "rate", km_score[view, int(best["k"])], km[view, int(best["k"])])
        for view in views:
            add(f"hdbscan_{view}", "none", hd_score[view], hd[view])
    comparison = pd.DataFrame(rows).astype({"K": np.int64})

    lab_rows = []
    for (view, k), lab in km.items():
        lab_rows.append(
            pd.DataFrame(
                {
                    "prompt_id": prompt_id,
                    "method": f"km_{view}",
                    "k": k,
                    "sample_idx": np.arange(n),
                    "label": lab,
                }
            )
        )
    for view, lab in hd.items():
        lab_rows.append(
            pd.DataFrame(
                {
                    "prompt_id": prompt_id,
                    "method": f"hdbscan_{view}",
                    "k": -1,
                    "sample_idx": np.arange(n),
                    "label": lab,
                }
            )
        )
    labels = pd.concat(lab_rows, ignore_index=True).astype(
        {"k": np.int64, "sample_idx": np.int64, "label": np.int64}
    )

    parts = []
    for view in views:
        for k in sil_k:
            if k <= n:
                parts.append(
                    {
                        "prompt_id": prompt_id,
                        "method": f"km_{view}",
                        "beta": np.nan,
                        "gamma": np.nan,
                        "K": k,
                        "labels": km[view, k],
                    }
                )
    for r in rd_table.itertuples(index=False):
        parts.append(
            {
                "prompt_id": prompt_id,
                "method": "rd",
                "beta": float(r.beta),
                "gamma": float(r.gamma),
                "K": int(r.K),
                "labels": rd_labels[(float(r.beta), float(r.gamma))],
            }
        )
    sil = cross_view_silhouette(
        {"semantic": (E, SEMANTIC_METRIC), "mechanistic": (A_tilde, MECHANISTIC_METRIC)}, parts
    )
    sil = sil.astype({"K": np.int64})
    return BaselineResult(comparison, labels, sil)


# --------------------------------------------------------------------------------------
# All prompts: the paper's Table 1 and the cross-view silhouette summary

# (method, match, row label) of Table 1, in order
COMPARISON_ROWS = [
    ("rd", "self", "RD"),
    ("km_sem", "rate", "KM-Sem (rate-matched)"),
    ("km_att", "rate", "KM-Att (rate-matched)"),
    ("km_sem", "k", "KM-Sem (K-matched)"),
    ("km_att", "k", "KM-Att (K-matched)"),
    ("hdbscan_sem", "none", "HDBSCAN-Sem"),
    ("hdbscan_att", "none", "HDBSCAN-Att"),
]


def comparison_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Table 1: mean H, D_e, D_a, D_γ per method over all (prompt, β, γ) settings, and how
    often RD's D_γ is lower. For the RD row, ``rd_win`` / ``rd_tie`` are the fractions of
    settings where RD is strictly lowest / tied for lowest against both rate-matched
    K-means baselines; for a baseline row, the fraction where RD is strictly below it."""
    key = ["prompt_id", "beta", "gamma"]
    rd = comparison[comparison["method"] == "rd"].set_index(key).sort_index()
    out = []
    for method, match, label in COMPARISON_ROWS:
        sub = comparison[(comparison["method"] == method) & (comparison["match"] == match)]
        if sub.empty:
            continue
        sub = sub.set_index(key).sort_index().loc[rd.index]
        row = {
            "method": label,
            "n_settings": int(len(sub)),
            "K": float(sub["K"].mean()),
            "H": float(sub["H"].mean()),
            "D_e": float(sub["D_e"].mean()),
            "D_a": float(sub["D_a"].mean()),
            "D_gamma": float(sub["D_gamma"].mean()),
        }
        if method == "rd":
            others = [
                comparison[(comparison["method"] == m) & (comparison["match"] == "rate")]
                .set_index(key)
                .sort_index()
                .loc[rd.index, "D_gamma"]
                .to_numpy()
                for m in ("km_sem", "km_att")
            ]
            wr = win_rate(rd["D_gamma"].to_numpy(), others)
            row.update(rd_win=wr["win"], rd_tie=wr["tie"])
        else:
            wr = win_rate(rd["D_gamma"].to_numpy(), [sub["D_gamma"].to_numpy()])
            row.update(rd_win=wr["win"], rd_tie=wr["tie"])
        out.append(row)
    return pd.DataFrame(out)


def silhouette_summary(silhouettes: pd.DataFrame) -> pd.DataFrame:
    """Mean and count of both views' silhouettes per method, K and configuration over all
    prompts (tables/cross_view_silhouette.csv)."""
    summary = (
        silhouettes.groupby(["method", "K", "beta", "gamma"], dropna=False)[
            ["silhouette_semantic", "silhouette_mechanistic"]
        ]
        .agg(["mean", "count"])
        .reset_index()
    )
    summary.columns = [
        "_".join(c).rstrip("_") if isinstance(c, tuple) else c for c in summary.columns
    ]
    return summary
