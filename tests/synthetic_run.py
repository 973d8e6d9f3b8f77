"""A small synthetic run directory shaped exactly like the workflow's outputs, no model needed.

Samples, embeddings, signatures and steering results are synthetic; the clustering, the
baselines and Table 1 are made by the real stage functions from them, so the figures,
tables, browser and paper are tested on files in the real formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from semmech import io
from semmech.cluster.grid import config_index
from semmech.cluster.synthetic import make_two_view_data
from semmech.config import section_defaults
from semmech.report.tables import steering_comparison
from semmech.stages.clustering import run_aggregate_clustering, run_baselines, run_cluster
from semmech.stages.report import write_steering_comparison

# The second prompt's text carries LaTeX and HTML specials and non-Latin text on purpose.
PROMPTS = [
    ("mercury", "What is Mercury?"),
    ("java", "What is Java <b>known</b> for? 50% & $5 «café» 日本 \\ ~^_#{}"),
    ("bank_visit", "Why would someone go to the bank?"),
]
BETAS = [0.5, 1.0, 2.0]
GAMMAS = [0.3, 0.5, 0.7]
STEER_CONFIG = [1.0, 0.5]
BUDGETS = [5, 10]
EPSILONS = [-1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0]
METHODS = {"RD": 0.8, "KM-Sem": 0.0, "Single": 0.4, "Random": 0.0}


def write_signatures(
    path: Path,
    A: np.ndarray | torch.Tensor,
    metadata: dict[str, str] | None = None,
    record: dict | None = None,
    rows: Sequence[dict] | None = None,
) -> None:
    """``attribution/{p}.safetensors`` and its ``.completeness.json`` as the attribute stage
    writes them: every continuation's ``prefix_kept`` is its signature row's sum (``rows``:
    the attribution's own completeness rows, when there are any)."""
    A = A.detach().float().numpy() if isinstance(A, torch.Tensor) else np.asarray(A, np.float32)
    io.write_safetensors(
        {"signatures": torch.from_numpy(np.ascontiguousarray(A))}, path, metadata=metadata
    )
    if rows is None:
        rows = [{"prefix_kept": float(r.astype(np.float64).sum())} for r in A]
    io.write_json(
        {**(record or {}), "continuations": [{"sample_idx": n, **r} for n, r in enumerate(rows)]},
        path.with_name(path.name.removesuffix(".safetensors") + ".completeness.json"),
    )


_ANSWERS = {
    0: [
        "It is the closest planet to the Sun.",
        "Mercury is the smallest planet.",
        "A planet that orbits the Sun quickly.",
        "The first planet of the solar system.",
    ],
    1: [
        "A planet named after a Roman god.",
        "The innermost planet, named for a god.",
        "Mercury is a rocky planet.",
        "A small, hot planet.",
    ],
    2: [
        "It is a liquid metal.",
        "Quicksilver, a toxic metal.",
        "Element number 80.",
        "A heavy metal used in thermometers.",
    ],
    3: [
        "The Roman messenger god.",
        "A god with winged sandals.",
        "Messenger of the gods.",
        "Hermes in Greek myth.",
    ],
}

N_FEATURES, PROMPT_LEN, D_E = 48, 7, 16


def _samples(prompt_id: str, data: dict, rng: np.random.Generator) -> pd.DataFrame:
    n = data["E"].shape[0]
    texts = [f"{_ANSWERS[int(m)][i % 4]} ({prompt_id} #{i})" for i, m in enumerate(data["mode"])]
    lengths = rng.integers(3, 12, n)
    logps = [np.sort(rng.normal(-1.0, 0.6, k)).astype(np.float64) for k in lengths]
    mean_lp = np.array([lp.mean() for lp in logps])
    order = np.argsort(-mean_lp, kind="stable")
    rows = []
    for new, old in enumerate(order):
        rows.append(
            {
                "prompt_id": prompt_id,
                "sample_idx": new,
                "text": texts[old],
                "token_ids": rng.integers(0, 1000, lengths[old]).astype(np.int64).tolist(),
                "token_logprobs": logps[old].tolist(),
                "n_tokens": int(lengths[old]),
                "mean_logprob": float(mean_lp[old]),
                "weight": float(np.exp(mean_lp[old])),
                "stop_reason": "sentence",
            }
        )
    return pd.DataFrame(rows), order


def _nodes() -> pd.DataFrame:
    tokens = ["<|im_start|>", "user", "Ċ", "What", "Ġis", "ĠMercury", "?"]
    rows = []
    for j in range(N_FEATURES):
        pos = 1 + j % (PROMPT_LEN - 1)
        rows.append(
            {
                "node_idx": j,
                "kind": "feature",
                "layer": j % 4,
                "position": pos,
                "feature": 100 + 7 * j,
                "token_id": 10 + pos,
                "token_str": tokens[pos],
                "alpha": 0.1 * (j + 1),
            }
        )
    for pos in range(1, PROMPT_LEN):
        rows.append(
            {
                "node_idx": len(rows),
                "kind": "token",
                "layer": -1,
                "position": pos,
                "feature": -1,
                "token_id": 10 + pos,
                "token_str": tokens[pos],
                "alpha": 1.0,
            }
        )
    return pd.DataFrame(rows)


def _steering(prompt_id: str, K: int, rng: np.random.Generator):
    curves, metrics, gens = [], [], []
    b, g = STEER_CONFIG
    for method, slope in METHODS.items():
        for B in BUDGETS:
            for c in range(K):
                effects = []
                for m in range(K):
                    own = m == c
                    s = (slope if own else slope * 0.2) * B / 5 + rng.normal(0, 0.05)
                    effects.append(s)
                    for eps in EPSILONS:
                        d = 0.0 if eps == 0 else s * eps + rng.normal(0, 0.02)
                        curves.append(
                            {
                                "prompt_id": prompt_id,
                                "method": method,
                                "selection": "full",
                                "budget": B,
                                "beta": b,
                                "gamma": g,
                                "source_cluster": c,
                                "measured_cluster": m,
                                "own": own,
                                "epsilon": eps,
                                "delta": d,
                                "delta_sem": 0.02,
                                "n_members": 4,
                                "frac_moved": np.nan if eps == 0 else float(rng.uniform(0.4, 1.0)),
                            }
                        )
                pear = float(np.clip(slope + rng.normal(0, 0.1), -1, 1))
                two = [min(e, e) for e in effects]  # linear curves: amplify = -suppress = slope
                metrics.append(
                    {
                        "prompt_id": prompt_id,
                        "method": method,
                        "selection": "full",
                        "budget": B,
                        "beta": b,
                        "gamma": g,
                        "cluster": c,
                        "mass": 1.0 / K,
                        "n_heldout": 4,
                        "pearson": pear,
                        "spearman": float(np.clip(pear - 0.02, -1, 1)),
                        "frac_moved": float(rng.uniform(0.4, 0.9)),
                        "specificity": float(
                            effects[c] - max([e for i, e in enumerate(effects) if i != c] or [0.0])
                        ),
                        "amplify": effects[c],
                        "suppress": -effects[c],
                        "two_sided": two[c],
                        "two_sided_specificity": float(
                            two[c] - max([e for i, e in enumerate(two) if i != c] or [0.0])
                        ),
                    }
                )
                for eps in (-1.0, 0.0, 1.0):
                    gens.append(
                        {
                            "method": method,
                            "selection": "full",
                            "cluster": c,
                            "epsilon": eps,
                            "sample": 0,
                            "text": f"steered {method} c{c} eps {eps}",
                        }
                    )
    return pd.DataFrame(curves), pd.DataFrame(metrics), pd.DataFrame(gens)


def make_synthetic_run(
    run_dir: str | Path,
    prompts: Sequence[tuple[str, str]] = PROMPTS,
    n_per_mode: int = 8,
    seed: int = 0,
) -> Path:
    """Write a complete synthetic results/<run>/ (minus figures, summaries and the manifest)."""
    run = Path(run_dir)
    nodes = _nodes()
    all_metrics = []
    for k, (pid, text) in enumerate(prompts):
        rng = np.random.default_rng([seed, k])
        data = make_two_view_data(
            n_per_mode,
            d_e=D_E,
            d_a=len(nodes),
            sem_sep=1.5,
            mech_sep=2.0,
            weights="lognormal",
            seed=seed + k,
        )
        samples, order = _samples(pid, data, rng)
        io.write_parquet(samples, run / f"samples/{pid}.parquet")
        io.write_json(
            {
                "prompt_id": pid,
                "text": text,
                "model_input": text,
                "prompt_token_ids": list(range(10, 10 + PROMPT_LEN)),
                "model": "synthetic",
                "chat_template": False,
            },
            run / f"samples/{pid}.prompt.json",
        )
        E = data["E"][order].astype(np.float32)
        A = data["A"][order].astype(np.float32)
        write_signatures(
            run / f"attribution/{pid}.safetensors",
            A,
            metadata={"basis": "mlp_neurons", "model": "synthetic"},
            record={"prompt_id": pid, "max_rel_error": 1e-6, "passed": True},
        )
        io.write_parquet(nodes, run / f"attribution/{pid}.nodes.parquet")
        io.write_npz(
            run / f"embeddings/{pid}.npz",
            embeddings=E,
            sample_idx=np.arange(E.shape[0], dtype=np.int64),
        )
        c = run / "clusters"
        views = dict(
            samples=run / f"samples/{pid}.parquet",
            embeddings=run / f"embeddings/{pid}.npz",
            signatures=run / f"attribution/{pid}.safetensors",
        )
        run_cluster(
            prompt_id=pid,
            **views,
            nodes=run / f"attribution/{pid}.nodes.parquet",
            clustering_cfg=section_defaults("clustering", {"betas": BETAS, "gammas": GAMMAS}),
            out_sweep=c / f"{pid}.sweep.parquet",
            out_labels=c / f"{pid}.labels.parquet",
            out_history=c / f"{pid}.history.parquet",
            out_npz=c / f"{pid}.npz",
            out_runtime=c / f"{pid}.runtime.json",
            out_diagnosis=c / f"{pid}.diagnosis.json",
        )
        b = run / "baselines"
        run_baselines(
            prompt_id=pid,
            **views,
            sweep=c / f"{pid}.sweep.parquet",
            labels=c / f"{pid}.labels.parquet",
            clusters=c / f"{pid}.npz",
            baselines_cfg=section_defaults("baselines", {"silhouette_k": [2, 3, 4, 5]}),
            seed=seed + k,
            out_table=b / f"{pid}.parquet",
            out_labels=b / f"{pid}.labels.parquet",
            out_silhouette=b / f"{pid}.silhouette.parquet",
        )
        sweep = io.read_parquet(c / f"{pid}.sweep.parquet")
        K = int(sweep["K"].iloc[config_index(sweep["beta"], sweep["gamma"], *STEER_CONFIG)])
        curves, metrics, gens = _steering(pid, max(K, 1), rng)
        io.write_parquet(curves, run / f"steering/{pid}.curves.parquet")
        io.write_parquet(metrics, run / f"steering/{pid}.metrics.parquet")
        io.write_parquet(gens, run / f"steering/{pid}.generations.parquet")
        all_metrics.append(metrics)
    ids = [p for p, _ in prompts]
    run_aggregate_clustering(
        tables=[run / f"baselines/{p}.parquet" for p in ids],
        silhouettes=[run / f"baselines/{p}.silhouette.parquet" for p in ids],
        diagnoses=[run / f"clusters/{p}.diagnosis.json" for p in ids],
        out_csv=run / "tables/clustering_comparison.csv",
        out_tex=run / "tables/clustering_comparison.tex",
        out_silhouette=run / "tables/cross_view_silhouette.csv",
        out_diagnosis=run / "tables/clustering_diagnosis.csv",
        out_diagnosis_tex=run / "tables/clustering_diagnosis.tex",
    )
    table = steering_comparison(pd.concat(all_metrics, ignore_index=True), n_boot=200, seed=seed)
    write_steering_comparison(
        table, run / "tables/steering_comparison.csv", run / "tables/steering_comparison.tex"
    )
    return run
