"""Benchmark of rate-distortion clustering: seconds per (β, γ) configuration.

Usage:  python benchmarks/bench_rd.py [--out benchmarks/rd.json] [--threads 1 2] [--quick]

Measured on signature-like synthetic views (``semmech.cluster.synthetic.make_signature_like_data``: unit-norm
semantic vectors, low-rank heavy-tailed signatures, four modes) at d_e = 384, d_a = 5,000:

- ``sweep``: the 20-configuration grid of METHOD §5 through ``rd_sweep`` (what the workflow
  runs; configurations share one workspace, so centres and split proposals already computed
  for the same member sets are reused). Reported per configuration, normalisation included.
- ``cold``: single configurations, each on a fresh workspace (no reuse); the per-prompt
  workspace (normalisation and row order) is timed separately (``normalise_s``).
- ``scaling``: the sweep's cost per configuration at several N (single thread; the
  workload itself changes with N, since K does), and ``primitives``: the operations a
  configuration is made of, per N·d: one P-weighted median of all N signatures (a walk
  along the per-prompt row order, linear) and one L1 distance pass to four centres
  (linear); plus the per-prompt row sort (N log N, once per prompt, not per configuration).

Wall-clock and process CPU seconds are both recorded, with the load average before and after:
on a shared machine contention inflates wall-clock time, while single-thread CPU time stays
close to what an idle core would take.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from semmech import io
from semmech.cluster.estimator import RateDistortionClustering, RDWorkspace
from semmech.cluster.medians import argsort_rows, weighted_median_sorted
from semmech.cluster.objective import l1_distances
from semmech.cluster.sweep import rd_sweep
from semmech.cluster.synthetic import make_signature_like_data

BETAS = [0.5, 0.75, 1.0, 1.25]
GAMMAS = [0.1, 0.3, 0.5, 0.7, 0.9]
D_E, D_A = 384, 5000


def _machine() -> dict:
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
    }


def _sweep(d: dict, threads: int) -> dict:
    with threadpool_limits(threads):
        torch.set_num_threads(threads)
        t0, c0 = time.perf_counter(), time.process_time()
        res = rd_sweep(d["E"], d["A"], d["P"], BETAS, GAMMAS)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    n_cfg = len(res.runtime_s)
    return {
        "threads": threads,
        "total_s": total,
        "per_config_s": total / n_cfg,
        "cpu_per_config_s": cpu / n_cfg,
        "per_config_max_s": max(res.runtime_s),
        "K": res.table["K"].tolist(),
        "rounds": [m.n_rounds_ for m in res.models],
    }


def _cold(d: dict, threads: int, configs: list[tuple[float, float]]) -> dict:
    rows = []
    with threadpool_limits(threads):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        RDWorkspace(d["E"], d["A"], d["P"])
        normalise = time.perf_counter() - t0
        for beta, gamma in configs:
            ws = RDWorkspace(d["E"], d["A"], d["P"])  # fresh caches, not timed
            t0, c0 = time.perf_counter(), time.process_time()
            m = RateDistortionClustering(beta=beta, gamma=gamma).fit_workspace(ws)
            rows.append(
                {
                    "beta": beta,
                    "gamma": gamma,
                    "K": m.n_clusters_,
                    "rounds": m.n_rounds_,
                    "seconds": time.perf_counter() - t0,
                    "cpu_seconds": time.process_time() - c0,
                }
            )
    secs = [r["seconds"] for r in rows]
    return {
        "threads": threads,
        "normalise_s": normalise,
        "mean_s": float(np.mean(secs)),
        "cpu_mean_s": float(np.mean([r["cpu_seconds"] for r in rows])),
        "median_s": float(np.median(secs)),
        "max_s": float(np.max(secs)),
        "configs": rows,
    }


def _primitives(d: dict, threads: int) -> dict:
    """CPU seconds of one full weighted median and one L1 pass, per N·d (nanoseconds), and of
    the per-prompt row sort that the medians walk."""
    ws = RDWorkspace(d["E"], d["A"], d["P"])
    n, da = ws.At.shape
    with threadpool_limits(threads):
        torch.set_num_threads(threads)
        c0 = time.process_time()
        argsort_rows(ws.AtT)
        t_order = time.process_time() - c0
        weighted_median_sorted(ws.AtT, ws.order, ws.w)  # compiled / loaded before timing
        c0 = time.process_time()
        med = weighted_median_sorted(ws.AtT, ws.order, ws.w)
        t_med = time.process_time() - c0
        c0 = time.process_time()
        l1_distances(ws.At, np.stack([med] * 4))
        t_l1 = time.process_time() - c0
    return {
        "n": n,
        "row_order_once_per_prompt_cpu_s": t_order,
        "median_cpu_s": t_med,
        "median_ns_per_Nd": 1e9 * t_med / (n * da),
        "l1_4_centres_cpu_s": t_l1,
        "l1_ns_per_Nd": 1e9 * t_l1 / (n * da),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("rd.json")))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="N=500 only (about a minute)")
    args = ap.parse_args(argv)

    out: dict = {
        "description": __doc__.split("\n\n")[0],
        "d_e": D_E,
        "d_a": D_A,
        "grid": {"betas": BETAS, "gammas": GAMMAS},
        "machine_before": _machine(),
    }
    all_cfg = [(b, g) for b in BETAS for g in GAMMAS]
    warm = make_signature_like_data(40, d_e=8, d_a=16, seed=1)  # compile / load the kernels
    RateDistortionClustering(beta=1.25, gamma=0.1).fit(warm["E"], warm["A"], warm["P"])
    d500 = make_signature_like_data(500, d_e=D_E, d_a=D_A, seed=0)
    out["n500"] = {
        "sweep": [_sweep(d500, t) for t in args.threads],
        "cold": [_cold(d500, t, all_cfg) for t in args.threads],
    }
    print(
        "N=500:",
        {t["threads"]: round(t["per_config_s"], 3) for t in out["n500"]["sweep"]},
        flush=True,
    )
    if not args.quick:
        t = min(args.threads)
        scaling, primitives = [], []
        for n in (500, 1000, 2000, 5000):
            d = d500 if n == 500 else make_signature_like_data(n, d_e=D_E, d_a=D_A, seed=0)
            primitives.append(_primitives(d, t))
            s = _sweep(d, t)
            s.update(
                n=n,
                per_config_per_Nd_us=1e6 * s["per_config_s"] / (n * (D_E + D_A)),
                cpu_per_config_per_Nd_us=1e6 * s["cpu_per_config_s"] / (n * (D_E + D_A)),
            )
            scaling.append(s)
            print(f"N={n}: {s['per_config_s']:.3f} s per configuration", flush=True)
            if n == 5000:
                out["n5000"] = {
                    "sweep": [s],
                    "cold": [_cold(d, t, [(1.0, 0.5), (0.75, 0.3), (1.25, 0.9)])],
                }
        out["scaling"] = scaling
        out["primitives"] = primitives
        base, pbase = scaling[0], primitives[0]
        out["scaling_summary"] = {
            f"N={s['n']}": {
                "Nd_ratio": s["n"] / base["n"],
                "sweep_cpu_ratio": s["cpu_per_config_s"] / base["cpu_per_config_s"],
                "median_cpu_ratio": p["median_cpu_s"] / pbase["median_cpu_s"],
                "l1_cpu_ratio": p["l1_4_centres_cpu_s"] / pbase["l1_4_centres_cpu_s"],
            }
            for s, p in zip(scaling, primitives)
        }
    out["machine_after"] = _machine()
    io.write_json(out, args.out)
    return out


if __name__ == "__main__":
    main()
