"""One prompt's clusters as a reader sees them (METHOD §7, §8): members ordered by their
distortion to the cluster's centres, and the feature nodes whose median attribution departs
most from the prompt's median. The browser, the cluster tables and the feature-lineage figure
are built from these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..cluster.grid import config_index, config_mask

__all__ = [
    "ReportDataError",
    "display_token",
    "top_features",
    "top_feature_sets",
    "config_labels",
    "summarise_prompt",
]


class ReportDataError(ValueError):
    """Inputs of a summary disagree with each other (row counts, configurations, labels)."""


def display_token(token: str) -> str:
    """A BPE / SentencePiece token as text: the space markers become spaces."""
    return (
        str(token)
        .replace("\u0120", " ")
        .replace("\u2581", " ")
        .replace("\u010a", "\\n")
        .replace("\n", "\\n")
    )


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
        raise ReportDataError(
            f"top_features: centres have {centres.shape[1]} nodes, "
            f"the node table {feature_mask.shape[0]}"
        )
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


def config_labels(
    labels: pd.DataFrame, beta: float, gamma: float, n_samples: int, what: str
) -> np.ndarray:
    """The labels of configuration (β, γ) in a ``clusters/{p}.labels.parquet`` table (columns
    beta, gamma, sample_idx, label), entry n for sample_idx n; an error naming ``what`` unless
    there is exactly one label per sample."""
    lab = labels[config_mask(labels["beta"], labels["gamma"], beta, gamma)]
    lab = lab.sort_values("sample_idx")
    if len(lab) != n_samples:
        raise ReportDataError(
            f"{what}: {len(lab)} labels at (beta={beta:g}, gamma={gamma:g}) for {n_samples} samples"
        )
    return lab["label"].to_numpy(np.int64)


def summarise_prompt(
    prompt_id: str,
    prompt_text: str,
    samples: pd.DataFrame,
    labels: pd.DataFrame,
    clusters: Mapping[str, np.ndarray],
    nodes: pd.DataFrame,
    signatures: np.ndarray,
    embeddings: np.ndarray,
    configs: Sequence[Sequence[float]],
    n_features: int,
    sweep: pd.DataFrame | None = None,
) -> dict[str, Any]:
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
        raise ReportDataError(
            f"prompt {prompt_id!r}: {N} samples but {signatures.shape[0]} "
            f"signatures and {embeddings.shape[0]} embeddings"
        )
    if signatures.shape[1] != len(nodes):
        raise ReportDataError(
            f"prompt {prompt_id!r}: signatures have {signatures.shape[1]} "
            f"nodes, the node table {len(nodes)}"
        )
    H0 = np.asarray(clusters["H0"], dtype=np.float64)
    scale = float(np.asarray(clusters["scale"]))
    if H0.shape != (signatures.shape[1],):
        raise ReportDataError(
            f"prompt {prompt_id!r}: H0 has shape {H0.shape}, signatures {signatures.shape}"
        )
    A_tilde = (signatures - H0) / scale
    nodes = nodes.sort_values("node_idx").reset_index(drop=True)
    if not np.array_equal(nodes["node_idx"].to_numpy(), np.arange(len(nodes))):
        raise ReportDataError(
            f"prompt {prompt_id!r}: node_idx must be 0..{len(nodes) - 1} "
            "(column j of the signatures is node j)"
        )
    feat_mask = nodes["kind"].to_numpy() == "feature"
    P = samples["weight"].to_numpy(np.float64)
    texts = samples["text"].astype(str).tolist()
    out_cfgs = []
    for beta, gamma in configs:
        i = config_index(clusters["beta"], clusters["gamma"], beta, gamma)
        y = config_labels(labels, beta, gamma, N, f"prompt {prompt_id!r}")
        ce = np.asarray(clusters[f"cfg{i:03d}_centres_e"], dtype=np.float64)
        ca = np.asarray(clusters[f"cfg{i:03d}_centres_a"], dtype=np.float64)
        mass = np.asarray(clusters[f"cfg{i:03d}_weights"], dtype=np.float64)
        K = ce.shape[0]
        if y.min() < 0 or y.max() >= K:
            raise ReportDataError(
                f"prompt {prompt_id!r}: labels outside 0..{K - 1} at "
                f"(beta={beta:g}, gamma={gamma:g})"
            )
        be, ba = float(gamma) * float(beta), (1.0 - float(gamma)) * float(beta)
        dist = be * ((embeddings - ce[y]) ** 2).sum(1) + ba * np.abs(A_tilde - ca[y]).sum(1)
        cfg: dict[str, Any] = {
            "beta": float(beta),
            "gamma": float(gamma),
            "K": int(K),
            "clusters": [],
        }
        if sweep is not None:
            row = sweep[config_mask(sweep["beta"], sweep["gamma"], beta, gamma)]
            if len(row):
                cfg.update({k: float(row.iloc[0][k]) for k in ("L", "H", "D_e", "D_a") if k in row})
        tops = top_features(ca, feat_mask, n_features)
        for c in range(K):
            idx = np.nonzero(y == c)[0]
            order = idx[np.lexsort((idx, dist[idx]))]
            cfg["clusters"].append(
                {
                    "cluster": c,
                    "mass": float(mass[c]),
                    "n_members": int(idx.size),
                    "weight_sum": float(P[idx].sum()),
                    "members": [
                        {
                            "sample_idx": int(n),
                            "text": texts[n],
                            "weight": float(P[n]),
                            "distance": float(dist[n]),
                        }
                        for n in order
                    ],
                    "features": [
                        _feature(nodes, j, H0[j] + scale * ca[c, j], scale * ca[c, j])
                        for j in tops[c]
                    ],
                }
            )
        out_cfgs.append(cfg)
    median_top = top_features(H0[None, :], feat_mask, n_features)[0]
    return {
        "prompt_id": prompt_id,
        "text": prompt_text,
        "n_continuations": N,
        "total_weight": float(P.sum()),
        "n_feature_nodes": int(feat_mask.sum()),
        "n_nodes": int(len(nodes)),
        "median_features": [_feature(nodes, j, H0[j], 0.0) for j in median_top],
        "configs": out_cfgs,
    }


def _feature(nodes: pd.DataFrame, j: int, value: float, deviation: float) -> dict[str, Any]:
    """A feature node as the browser and tables show it: where it sits (layer, prefix position
    and token), its median attribution and that median's departure from the prompt's H0."""
    return {
        "node_idx": int(j),
        "layer": int(nodes.at[j, "layer"]),
        "position": int(nodes.at[j, "position"]),
        "feature": int(nodes.at[j, "feature"]),
        "token": display_token(nodes.at[j, "token_str"]),
        "value": float(value),
        "deviation": float(deviation),
    }
