"""Entry points of ``workflow/rules/steering.smk``."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import io
from ..cluster.grid import ConfigNotInSweepError, config_index
from ..config import derive_seed
from ..model.bases import load_basis
from ..model.loading import check_prompt_record, check_token_ids, load_configured_model
from ..report.tables import STEERING_COLUMNS, steering_comparison
from ..steer.intervention import steered_generate
from ..steer.measure import (
    METRIC_COLUMNS,
    MeasureStats,
    SteeringResult,
    curves_frame,
    generations_frame,
    metrics_frame,
    steer_sources,
)
from ..steer.settings import SteeringInputError, SteeringSettings
from ..steer.sources import METHODS, PromptInputs, plan_sources
from .inputs import read_prompt_record, read_samples, read_signatures
from .report import write_steering_comparison

log = logging.getLogger("semmech")


def read_steering_inputs(
    prompt_id: str,
    samples_path: Any,
    prompt_path: Any,
    signatures_path: Any,
    nodes_path: Any,
    embeddings_path: Any,
    clusters_npz: Any,
    baseline_labels_path: Any,
    settings: SteeringSettings,
    basis_name: str,
    model_name: str,
) -> PromptInputs:
    """Read and cross-check one prompt's inputs (no model needed), failing with one clear
    error naming the file before any expensive work."""
    conts, samples = read_samples(samples_path)
    if "weight" not in samples.columns:
        raise io.CorruptInputError(f"{samples_path}: missing column 'weight'")
    N = len(conts)
    prompt = read_prompt_record(prompt_path)
    A, meta = read_signatures(signatures_path)
    got_basis = meta.get("basis")
    if got_basis != basis_name:
        raise SteeringInputError(
            f"{signatures_path}: signatures were computed in basis {got_basis!r}, but the "
            f"configured attribution.basis is {basis_name!r}; re-run attribution or configure "
            "the same basis"
        )
    if meta.get("model") not in (None, model_name):
        raise SteeringInputError(
            f"{signatures_path}: signatures belong to model {meta.get('model')!r}, "
            f"not the configured {model_name!r}"
        )
    nodes = io.read_parquet(
        nodes_path, required=["node_idx", "kind", "layer", "position", "feature"]
    )
    if A.ndim != 2 or A.shape[0] != N:
        raise io.CorruptInputError(f"{signatures_path}: expected {N} rows, found shape {A.shape}")
    if len(nodes) != A.shape[1] or not np.array_equal(
        nodes["node_idx"].to_numpy(), np.arange(A.shape[1])
    ):
        raise io.CorruptInputError(
            f"{nodes_path}: node_idx must be 0..{A.shape[1] - 1}, one per "
            f"signature column ({len(nodes)} rows)"
        )
    E = io.read_npz(embeddings_path, required=["embeddings"])["embeddings"].astype(np.float64)
    if E.ndim != 2 or E.shape[0] != N:
        raise io.CorruptInputError(f"{embeddings_path}: expected {N} rows, found shape {E.shape}")
    z = io.read_npz(
        clusters_npz,
        required=["H0", "scale", "beta", "gamma", "beta_e", "beta_a", "K", "labels"],
    )
    if z["H0"].shape != (A.shape[1],):
        raise io.CorruptInputError(
            f"{clusters_npz}: H0 has shape {z['H0'].shape}, signatures have {A.shape[1]} nodes"
        )
    km_all = io.read_parquet(baseline_labels_path, required=["method", "k", "sample_idx", "label"])
    km_all = km_all[km_all["method"] == "km_sem"]
    rd, km = {}, {}
    configs = settings.steered_configs(z["beta"], z["gamma"], z["K"])
    for beta, gamma in configs:
        try:
            i = config_index(z["beta"], z["gamma"], beta, gamma)
        except ConfigNotInSweepError as exc:
            raise SteeringInputError(f"{clusters_npz}: steering {exc}") from exc
        labels = z["labels"][i].astype(np.int64)
        if labels.shape != (N,):
            raise io.CorruptInputError(
                f"{clusters_npz}: labels of configuration {i} have shape "
                f"{labels.shape}, expected ({N},)"
            )
        ce, ca = z.get(f"cfg{i:03d}_centres_e"), z.get(f"cfg{i:03d}_centres_a")
        K = int(labels.max()) + 1
        if (
            ce is None
            or ca is None
            or ce.shape[0] < K
            or ca.shape != (ce.shape[0], A.shape[1])
            or ce.shape[1] != E.shape[1]
        ):
            raise io.CorruptInputError(
                f"{clusters_npz}: centres of configuration {i} are missing "
                f"or do not match {K} clusters of the views"
            )
        rd[(beta, gamma)] = {
            "labels": labels,
            "centres_e": ce.astype(np.float64),
            "centres_a": ca.astype(np.float64),
            "beta_e": float(z["beta_e"][i]),
            "beta_a": float(z["beta_a"][i]),
        }
        k = min(int(z["K"][i]), N)
        sub = km_all[km_all["k"] == k].sort_values("sample_idx")
        if not np.array_equal(sub["sample_idx"].to_numpy(), np.arange(N)):
            raise io.CorruptInputError(
                f"{baseline_labels_path}: no complete KM-Sem labelling with k={k} (RD's K at "
                f"beta={beta:g}, gamma={gamma:g})"
            )
        km[(beta, gamma)] = sub["label"].to_numpy(np.int64)
    inp = PromptInputs(
        prompt_id=prompt_id,
        prompt_ids=[int(t) for t in prompt["prompt_token_ids"]],
        continuations=conts,
        weights=samples["weight"].to_numpy(np.float64),
        signatures=A,
        nodes=nodes,
        embeddings=E,
        H0=z["H0"].astype(np.float64),
        scale=float(z["scale"]),
        rd=rd,
        km_sem=km,
        configs=configs,
        basis=basis_name,
    )
    n_feat = inp.feature_cols.size
    if max(settings.budgets) > n_feat:
        raise SteeringInputError(
            f"{nodes_path}: steering budget B={max(settings.budgets)} exceeds the {n_feat} feature "
            "nodes of the attribution; lower steering.budgets or raise attribution.max_feature_nodes"
        )
    return inp


def run_steer(
    *,
    prompt_id: str,
    samples: str | Path,
    prompt: str | Path,
    signatures: str | Path,
    nodes: str | Path,
    embeddings: str | Path,
    clusters: str | Path,
    baseline_labels: str | Path,
    model_cfg: Mapping[str, Any],
    attribution_cfg: Mapping[str, Any],
    steering_cfg: Mapping[str, Any],
    sampling_cfg: Mapping[str, Any],
    transcoder_dir: str | Path | None,
    seed: int,
    out_curves: str | Path,
    out_metrics: str | Path,
    out_generations: str | Path,
    out_stats: str | Path,
) -> SteeringResult:
    """steering/{p}.curves.parquet, .metrics.parquet, .generations.parquet and
    .stats.json (forward-pass counts and timings) of one prompt."""
    t0 = time.perf_counter()
    settings = SteeringSettings.from_config(steering_cfg)
    basis_name = attribution_cfg["basis"]
    tc_dir = transcoder_dir or attribution_cfg["transcoder_dir"]
    if basis_name == "transcoder" and not tc_dir:
        raise SteeringInputError(
            "attribution.basis is 'transcoder' but no transcoder directory is set"
        )
    inp = read_steering_inputs(
        prompt_id,
        samples,
        prompt,
        signatures,
        nodes,
        embeddings,
        clusters,
        baseline_labels,
        settings,
        basis_name,
        model_cfg["name"],
    )
    sources, partitions, skipped = plan_sources(inp, settings, seed)
    for note in skipped:
        log.warning("prompt %s: skipped %s", prompt_id, note)
    counts = {m: sum(s.method == m for s in sources) for m in METHODS}
    log.info(
        "prompt %s: %d sources %s, budgets %s, %d epsilons, selections %s",
        prompt_id,
        len(sources),
        counts,
        list(settings.budgets),
        len(settings.epsilons),
        list(settings.selections),
    )

    model = load_configured_model(dict(model_cfg))
    check_prompt_record(model, read_prompt_record(prompt), prompt_id, model_cfg, str(prompt))
    check_token_ids(model, inp.prompt_ids, inp.continuations)
    basis = load_basis(basis_name, model, transcoder_dir=tc_dir)
    t_load = time.perf_counter()
    if sources:
        result = steer_sources(model, basis, inp, sources, partitions, settings, seed)
    else:
        log.warning("prompt %s: no cluster with at least 2 members; nothing to steer", prompt_id)
        result = SteeringResult(curves_frame([]), metrics_frame([]), MeasureStats())
    result.skipped = skipped
    t_measure = time.perf_counter()

    gen_rows = []
    # Inspection generations: the heaviest RD cluster of the first steered configuration, at
    # the largest budget and the first selection.
    first = inp.configs[0] if inp.configs else None
    rd_sources = [
        s
        for s in sources
        if s.method == "RD"
        and s.budget == max(settings.budgets)
        and s.selection == settings.selections[0]
        and (s.beta, s.gamma) == first
    ]
    if rd_sources and settings.n_generate > 0:
        P = inp.weights
        labels = partitions[("RD", *first)]
        src = max(rd_sources, key=lambda s: (P[labels == s.cluster].sum(), -s.cluster))
        gen = steered_generate(
            model,
            basis,
            inp.prompt_ids,
            inp.node_keys(src.columns),
            src.signs,
            (-1.0, 0.0, 1.0),
            settings.n_generate,
            sampling_cfg,
            derive_seed(seed, "generate"),
        )
        for e, i, toks, text, reason in gen:
            gen_rows.append(
                {
                    "prompt_id": prompt_id,
                    "method": src.method,
                    "selection": src.selection,
                    "budget": src.budget,
                    "beta": src.beta,
                    "gamma": src.gamma,
                    "cluster": src.cluster,
                    "epsilon": e,
                    "sample": i,
                    "text": text,
                    "token_ids": np.asarray(toks, dtype=np.int64),
                    "stop_reason": reason,
                }
            )
    t_gen = time.perf_counter()
    st = result.stats
    log.info(
        "prompt %s: %d forwards (%d prefix + %d continuation; minimum %d), %d rows, "
        "%d tokens; measure %.1fs, generate %.1fs",
        prompt_id,
        st.forwards,
        st.prefix_forwards,
        st.continuation_forwards,
        st.min_forwards,
        st.rows,
        st.tokens,
        t_measure - t_load,
        t_gen - t_measure,
    )
    io.write_parquet(result.curves, out_curves)
    io.write_parquet(result.metrics, out_metrics)
    io.write_parquet(generations_frame(gen_rows), out_generations)
    io.write_json(
        {
            "prompt_id": prompt_id,
            "basis": basis_name,
            **st.as_dict(),
            "sources": counts,
            "skipped": skipped,
            "noise_floor": result.noise_floor,
            "naive_forwards": int(st.rows),
            "seconds": {
                "load": t_load - t0,
                "measure": t_measure - t_load,
                "generate": t_gen - t_measure,
                "total": t_gen - t0,
            },
        },
        out_stats,
    )
    return result


def run_aggregate_steering(
    *,
    metrics: Sequence[str | Path],
    steering_cfg: Mapping[str, Any],
    seed: int,
    out_csv: str | Path,
    out_tex: str | Path,
) -> pd.DataFrame:
    """tables/steering_comparison.{csv,tex} — per selection, method and budget, mean Pearson /
    Spearman and the two-sided extension measure over all prompts' and configurations' steered
    clusters with seeded bootstrap 95% CIs (:func:`semmech.report.tables.steering_comparison`).
    Every (selection, method, budget) gets a row, with n_clusters = 0 and NaNs where nothing
    could be steered."""
    settings = SteeringSettings.from_config(steering_cfg)
    frames = [io.read_parquet(p, required=METRIC_COLUMNS) for p in metrics]
    table = steering_comparison(
        pd.concat(frames, ignore_index=True) if frames else metrics_frame([]),
        n_boot=settings.bootstrap,
        seed=int(seed),
    )
    # Every (selection, method, budget) gets a row, in the configured order.
    full = pd.DataFrame(
        [
            {"selection": sel, "method": m, "budget": int(b)}
            for sel in settings.selections
            for b in settings.budgets
            for m in METHODS
        ]
    )
    table = full.merge(table, on=["selection", "method", "budget"], how="left")
    table["n_clusters"] = table["n_clusters"].fillna(0)
    table = table[STEERING_COLUMNS].astype({"budget": np.int64, "n_clusters": np.int64})
    write_steering_comparison(table, out_csv, out_tex)
    return table
