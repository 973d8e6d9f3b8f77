"""Benchmark of the steering stage on the default model: seconds per prompt and forward passes.

Usage (from the repository root):
    python benchmarks/bench_steering.py [--run results/default] [--prompts world_cup_winner]
        [--config config/config.yaml] [--max-measured 8 ...] [--threads 1] [--out benchmarks/steering.json]

Steering needs a prompt's samples, attribution, embeddings, clusters and baselines. With
``--run`` they are read from an existing run directory; without it the upstream stages are run
for the given prompts (default config, seeded) into a scratch directory first (not timed).

For each prompt and each ``max_measured`` setting (``none`` = every member, the config's
default) the stage is timed end to end (model load, measurement, steered generation) and
its forward-pass accounting is recorded from steering/{p}.stats.json:

- ``forwards``: prefix forwards (one per chunk of ``batch_size`` interventions) plus
  continuation forwards (one per batch of ``batch_size`` (intervention, continuation) rows);
- ``min_forwards``: the least the design needs at that batch size, ceil(interventions / bs) +
  ceil(rows / bs): the gap is the last, partly filled batch of each prefix chunk;
- ``naive_forwards``: one forward per (intervention, continuation) row, i.e. no batching;
- ``tokens`` against ``tokens_full_sequence``: prefix sharing runs each row's continuation
  only, instead of prefix + continuation.
Wall-clock and process CPU time are both recorded with the load average: on a shared machine
contention inflates wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from semmech import io
from semmech.config import derive_seed, validate_config
from semmech.prompts import read_prompts
from semmech.stages.attribution import run_attribute
from semmech.stages.clustering import run_baselines, run_cluster
from semmech.stages.embedding import run_embed
from semmech.stages.sampling import run_sample
from semmech.stages.steering import run_steer

REPO = Path(__file__).resolve().parents[1]


def _paths(run: Path, p: str) -> dict[str, str]:
    return {
        k: str(run / v.format(p=p))
        for k, v in {
            "samples": "samples/{p}.parquet",
            "prompt": "samples/{p}.prompt.json",
            "signatures": "attribution/{p}.safetensors",
            "nodes": "attribution/{p}.nodes.parquet",
            "completeness": "attribution/{p}.completeness.json",
            "embeddings": "embeddings/{p}.npz",
            "sweep": "clusters/{p}.sweep.parquet",
            "labels": "clusters/{p}.labels.parquet",
            "history": "clusters/{p}.history.parquet",
            "clusters": "clusters/{p}.npz",
            "runtime": "clusters/{p}.runtime.json",
            "diagnosis": "clusters/{p}.diagnosis.json",
            "baselines": "baselines/{p}.parquet",
            "baseline_labels": "baselines/{p}.labels.parquet",
            "silhouette": "baselines/{p}.silhouette.parquet",
        }.items()
    }


def build_inputs(run: Path, prompts: list[str], cfg: dict) -> None:
    """The upstream stages of the workflow, called directly (what the rules would run)."""
    texts = {p.id: p.text for p in read_prompts(REPO / cfg["prompts"])}
    for p in prompts:
        f = _paths(run, p)
        if not Path(f["samples"]).exists():
            run_sample(
                prompt_id=p,
                text=texts[p],
                model_cfg=cfg["model"],
                sampling_cfg=cfg["sampling"],
                seed=derive_seed(cfg["seed"], p, "sample"),
                out_table=f["samples"],
                out_prompt=f["prompt"],
            )
        if not Path(f["signatures"]).exists():
            run_attribute(
                prompt_id=p,
                samples=f["samples"],
                prompt=f["prompt"],
                model_cfg=cfg["model"],
                attribution_cfg=cfg["attribution"],
                transcoder_dir=None,
                out_signatures=f["signatures"],
                out_nodes=f["nodes"],
                out_completeness=f["completeness"],
            )
        if not Path(f["embeddings"]).exists():
            run_embed(
                prompt_id=p,
                samples=f["samples"],
                prompt=f["prompt"],
                embedding_cfg=cfg["embedding"],
                out_npz=f["embeddings"],
            )
        if not Path(f["clusters"]).exists():
            run_cluster(
                prompt_id=p,
                samples=f["samples"],
                embeddings=f["embeddings"],
                signatures=f["signatures"],
                nodes=f["nodes"],
                clustering_cfg=cfg["clustering"],
                out_sweep=f["sweep"],
                out_labels=f["labels"],
                out_history=f["history"],
                out_npz=f["clusters"],
                out_runtime=f["runtime"],
                out_diagnosis=f["diagnosis"],
            )
        if not Path(f["baseline_labels"]).exists():
            run_baselines(
                prompt_id=p,
                samples=f["samples"],
                embeddings=f["embeddings"],
                signatures=f["signatures"],
                sweep=f["sweep"],
                labels=f["labels"],
                clusters=f["clusters"],
                baselines_cfg=cfg["baselines"],
                seed=derive_seed(cfg["seed"], p, "baselines"),
                out_table=f["baselines"],
                out_labels=f["baseline_labels"],
                out_silhouette=f["silhouette"],
            )


def time_stage(run: Path, p: str, cfg: dict, steering: dict, out_dir: Path) -> dict:
    f = _paths(run, p)
    out = {
        k: str(out_dir / f"{p}.{k}.{ext}")
        for k, ext in (
            ("curves", "parquet"),
            ("metrics", "parquet"),
            ("generations", "parquet"),
            ("stats", "json"),
        )
    }
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    run_steer(
        prompt_id=p,
        samples=f["samples"],
        prompt=f["prompt"],
        signatures=f["signatures"],
        nodes=f["nodes"],
        embeddings=f["embeddings"],
        clusters=f["clusters"],
        baseline_labels=f["baseline_labels"],
        model_cfg=cfg["model"],
        attribution_cfg=cfg["attribution"],
        steering_cfg=steering,
        sampling_cfg=cfg["sampling"],
        transcoder_dir=None,
        seed=derive_seed(cfg["seed"], p, "steer"),
        out_curves=out["curves"],
        out_metrics=out["metrics"],
        out_generations=out["generations"],
        out_stats=out["stats"],
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = io.read_json(out["stats"])
    samples = pd.read_parquet(f["samples"])
    M = len(io.read_json(f["prompt"])["prompt_token_ids"])
    metrics = pd.read_parquet(out["metrics"])
    labels = np.load(f["clusters"])
    K = {f"{b:g}/{g:g}": int(k) for b, g, k in zip(labels["beta"], labels["gamma"], labels["K"])}
    return {
        "prompt": p,
        "n_continuations": len(samples),
        "prompt_tokens": M,
        "mean_continuation_tokens": float(samples["n_tokens"].mean()),
        "K": {f"{b:g}/{g:g}": K[f"{b:g}/{g:g}"] for b, g in steering["configs"]},
        "max_measured": steering.get("max_measured"),
        "batch_size": steering["batch_size"],
        "seconds_total": wall,
        "cpu_seconds_total": cpu,
        "seconds": stats["seconds"],
        "load_avg_before": load0,
        "load_avg_after": os.getloadavg()[0],
        "forwards": stats["forwards"],
        "prefix_forwards": stats["prefix_forwards"],
        "continuation_forwards": stats["continuation_forwards"],
        "min_forwards": stats["min_forwards"],
        "naive_forwards": stats["naive_forwards"],
        "interventions": stats["interventions"],
        "rows": stats["rows"],
        "tokens": stats["tokens"],
        "tokens_full_sequence": int(stats["rows"] * (M + samples["n_tokens"].mean() - 1)),
        "measure_tokens_per_second": stats["tokens"] / max(stats["seconds"]["measure"], 1e-9),
        "sources": stats["sources"],
        "n_metric_rows": len(metrics),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--run", type=Path, default=None, help="existing run directory with upstream outputs"
    )
    ap.add_argument("--prompts", default="world_cup_winner", help="comma-separated prompt ids")
    ap.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    ap.add_argument(
        "--max-measured",
        nargs="+",
        default=["none"],
        help="max_measured settings to time ('none' = all members)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "steering.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.chdir(REPO)  # the default model is resolved relative to the repository
    cfg = validate_config(yaml.safe_load(args.config.read_text()))
    prompts = [p for p in args.prompts.split(",") if p]
    scratch = Path(tempfile.mkdtemp(prefix="bench_steering_"))
    run = args.run or scratch / "run"
    if args.run is None:
        t = time.perf_counter()
        build_inputs(run, prompts, cfg)
        print(f"built upstream inputs in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    results = []
    for mm in args.max_measured:
        steering = dict(cfg["steering"])
        steering["max_measured"] = None if mm == "none" else int(mm)
        for p in prompts:
            r = time_stage(run, p, cfg, steering, scratch / f"steering_{mm}")
            results.append(r)
            print(
                json.dumps(
                    {
                        k: r[k]
                        for k in (
                            "prompt",
                            "max_measured",
                            "seconds_total",
                            "forwards",
                            "min_forwards",
                            "naive_forwards",
                            "tokens",
                        )
                    }
                ),
                file=sys.stderr,
            )
    by_mm = {}
    for mm in args.max_measured:
        rs = [
            r
            for r in results
            if (r["max_measured"] is None) == (mm == "none")
            and (mm == "none" or r["max_measured"] == int(mm))
        ]
        by_mm[mm] = {
            "seconds_per_prompt": float(np.mean([r["seconds_total"] for r in rs])),
            "measure_seconds_per_prompt": float(np.mean([r["seconds"]["measure"] for r in rs])),
            "forwards_per_prompt": float(np.mean([r["forwards"] for r in rs])),
            "min_forwards_per_prompt": float(np.mean([r["min_forwards"] for r in rs])),
            "naive_forwards_per_prompt": float(np.mean([r["naive_forwards"] for r in rs])),
        }
    out = {
        "benchmark": "steering",
        "model": "default (SmolLM2-135M-Instruct, float32, CPU)"
        if cfg["model"]["name"] == "default"
        else cfg["model"]["name"],
        "config": str(args.config),
        "steering": cfg["steering"],
        "threads": args.threads,
        "summary": by_mm,
        "prompts": results,
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
    }
    io.write_json(out, args.out)
    return out


if __name__ == "__main__":
    print(json.dumps(main()["summary"], indent=2))
