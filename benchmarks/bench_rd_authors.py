"""Rate–distortion clustering against the authors' clusterer, configuration by configuration.

Usage (from the repository root):

    python benchmarks/bench_rd_authors.py --harness DIR [--authors-repo DIR] [--n 500 2000]

The authors' code is not part of semmech and is not installed with it: fetch or check out
https://github.com/Merenova/distribution-level-feature-discovery yourself (this benchmark
only imports it, from ``--authors-repo``; directory 5_gaussian_clustering is what runs).
``--harness`` is the directory of ``bench_authors.py``, a small measurement harness outside
this repository that exposes ``run_authors(E, A_tilde, P, beta, gamma) -> (labels, seconds)``:
it builds the authors' input dict and times their ``cluster.run_clustering`` with the paper's
settings (L1 attribution metric, 50 iterations, convergence threshold 1e-3), on CPU.
Without both, the benchmark stops with a message saying what is missing.

Data: ``semmech.cluster.synthetic.make_two_view_data`` (the planted two-view data of
tests/test_rd.py: four joint modes, two per view) at N ∈ {500, 2000}, d_e = 384,
d_a = 5,000, with heavy-tailed node scales and a 64-node mechanistic support. Both clusterers
get the same arrays after the same normalisation (ã = (a − H0) / s, METHOD §5); for the
grid β ∈ {1, 4, 8} × γ ∈ {0.1, 0.5, 0.9} both run in this one process, alternating which goes
first, on one thread each (BLAS, torch and numba pinned; the workflow's cluster rule runs
on one thread too). Ours is timed end to end (``RateDistortionClustering.fit`` on the raw
signatures: input checks, normalisation, the per-prompt row sort and the descent), theirs
around ``run_clustering`` only (their normalisation excluded); ``speedup_descent_only``
leaves our normalisation and row sort out as well. Ours is cheap, so its time is
the median of ``--reps`` runs (all give the same labels); theirs is one run.

Both labellings are scored under METHOD's objective: ``partition_cost`` with
β_e = γβ, β_a = (1 − γ)β on the same normalised arrays (optimal centres of each labelling:
P-weighted means and medians; the authors' own descent renormalises semantic centres, so
their internal L differs, and is recorded as ``authors_internal_L``). Load averages are
recorded around every configuration: the reference machine has 2 cores shared with others.

Writes benchmarks/rd_vs_authors.json.
"""

from __future__ import annotations

import argparse
import os
import sys

# Pin every thread pool before numpy / torch / numba load.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

import importlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from semmech import io  # noqa: E402
from semmech.cluster.estimator import RateDistortionClustering, RDWorkspace  # noqa: E402
from semmech.cluster.objective import partition_cost  # noqa: E402
from semmech.cluster.synthetic import make_two_view_data  # noqa: E402

BETAS = [1.0, 4.0, 8.0]
GAMMAS = [0.1, 0.5, 0.9]
D_E, D_A = 384, 5000
DATA = dict(
    d_e=D_E,
    d_a=D_A,
    sem_sep=2.0,
    mech_sep=0.6,
    noise_a=0.3,
    mech_support=64,
    heavy_tail=1.0,
    weights="lognormal",
    seed=0,
)
TARGET_RATIO = 20.0


def load_harness(harness: Path, repo: Path):
    """``run_authors`` from the harness, or exit naming what is missing."""
    problems = []
    if not (harness / "bench_authors.py").is_file():
        problems.append(f"no bench_authors.py in --harness {harness}")
    if not (repo / "5_gaussian_clustering" / "cluster.py").is_file():
        problems.append(
            f"--authors-repo {repo} is not a checkout of "
            "Merenova/distribution-level-feature-discovery (no 5_gaussian_clustering/cluster.py)"
        )
    if problems:
        sys.exit(
            "bench_rd_authors: cannot run the authors' clusterer: "
            + "; ".join(problems)
            + ". Fetch the authors' repository and give both paths (see --help)."
        )
    os.environ["AUTHORS_REPO"] = str(repo)
    sys.path.insert(0, str(harness))
    return importlib.import_module("bench_authors").run_authors


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _ours(d: dict, beta: float, gamma: float) -> tuple[np.ndarray, float, float, dict]:
    """``fit`` on the raw signatures, in its two parts: the workspace (input checks, the
    normalisation, the per-coordinate row sort) and the descent."""
    t0, c0 = time.perf_counter(), time.process_time()
    ws = RDWorkspace(d["E"], d["A"], d["P"])
    t1 = time.perf_counter()
    m = RateDistortionClustering(beta=beta, gamma=gamma).fit_workspace(ws)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    info = {"rounds": m.n_rounds_, "converged": bool(m.converged_), "descent_s": wall - (t1 - t0)}
    return m.labels_, wall, cpu, info


def _authors(run_authors, ws: RDWorkspace, beta: float, gamma: float):
    c0 = time.process_time()
    labels, seconds, info = run_authors(ws.E, ws.At, ws.P, beta, gamma, return_result=True)
    cpu = time.process_time() - c0
    return labels, seconds, cpu, info


def _score(labels: np.ndarray, ws: RDWorkspace, beta: float, gamma: float) -> dict:
    pc = partition_cost(labels, ws.E, ws.At, ws.P, gamma * beta, (1.0 - gamma) * beta)
    return {"K": pc.K, "L": pc.L, "H": pc.H, "D_e": pc.D_e, "D_a": pc.D_a}


def run_n(n: int, run_authors, reps: int) -> dict:
    d = make_two_view_data(n // 4, **DATA)
    t0 = time.perf_counter()
    ws = RDWorkspace(d["E"], d["A"], d["P"])
    workspace_s = time.perf_counter() - t0
    rows = []
    for i, (beta, gamma) in enumerate((b, g) for b in BETAS for g in GAMMAS):
        load_before = _load()
        ours_first = i % 2 == 1
        ours_runs: list[tuple] = []
        theirs = None
        for turn in ("ours", "authors") if ours_first else ("authors", "ours"):
            if turn == "authors":
                theirs = _authors(run_authors, ws, beta, gamma)
            else:
                ours_runs = [_ours(d, beta, gamma) for _ in range(reps)]
        assert theirs is not None
        labels = ours_runs[0][0]
        if any(not np.array_equal(labels, r[0]) for r in ours_runs[1:]):
            raise RuntimeError(f"N={n} β={beta} γ={gamma}: repeated fits gave different labels")
        ours_s = statistics.median(r[1] for r in ours_runs)
        row = {
            "beta": beta,
            "gamma": gamma,
            "first": "ours" if ours_first else "authors",
            "ours_seconds": ours_s,
            "ours_seconds_all": [r[1] for r in ours_runs],
            "ours_cpu_seconds": statistics.median(r[2] for r in ours_runs),
            "ours_descent_seconds": statistics.median(r[3]["descent_s"] for r in ours_runs),
            "ours": {
                **_score(labels, ws, beta, gamma),
                "rounds": ours_runs[0][3]["rounds"],
                "converged": ours_runs[0][3]["converged"],
            },
            "authors_seconds": theirs[1],
            "authors_cpu_seconds": theirs[2],
            "authors": {
                **_score(theirs[0], ws, beta, gamma),
                "iterations": theirs[3]["n_iterations"],
                "converged": bool(theirs[3]["converged"]),
                "authors_internal_L": theirs[3]["L_RD"],
            },
            "load_before": load_before,
            "load_after": _load(),
        }
        row["speedup"] = row["authors_seconds"] / ours_s
        row["speedup_descent_only"] = row["authors_seconds"] / row["ours_descent_seconds"]
        row["L_ours_minus_authors"] = row["ours"]["L"] - row["authors"]["L"]
        row["L_no_worse"] = row["ours"]["L"] <= row["authors"]["L"] * (1 + 1e-12)
        rows.append(row)
        print(
            f"N={n} β={beta} γ={gamma}: ours {ours_s:.3f}s K={row['ours']['K']} "
            f"L={row['ours']['L']:.4f} | authors {theirs[1]:.2f}s K={row['authors']['K']} "
            f"L={row['authors']['L']:.4f} | {row['speedup']:.1f}x "
            f"(descent only {row['speedup_descent_only']:.1f}x)",
            flush=True,
        )
    speed = [r["speedup"] for r in rows]
    descent = [r["speedup_descent_only"] for r in rows]
    return {
        "n": n,
        "workspace_seconds": workspace_s,
        "configs": rows,
        "summary": {
            "speedup_min": min(speed),
            "speedup_median": statistics.median(speed),
            "speedup_max": max(speed),
            "configs_at_target": sum(s >= TARGET_RATIO for s in speed),
            "descent_only_speedup_min": min(descent),
            "descent_only_speedup_median": statistics.median(descent),
            "descent_only_configs_at_target": sum(s >= TARGET_RATIO for s in descent),
            "L_no_worse": sum(r["L_no_worse"] for r in rows),
            "configs": len(rows),
        },
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--harness", required=True, type=Path, help="directory of bench_authors.py")
    ap.add_argument(
        "--authors-repo",
        type=Path,
        default=None,
        help="checkout of Merenova/distribution-level-feature-discovery (default: <harness>/repo)",
    )
    ap.add_argument("--n", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--reps", type=int, default=3, help="runs of ours per configuration")
    ap.add_argument("--out", default=str(Path(__file__).with_name("rd_vs_authors.json")))
    args = ap.parse_args(argv)
    run_authors = load_harness(args.harness, args.authors_repo or args.harness / "repo")
    torch.set_num_threads(1)

    # compile / load our kernels and import the authors' modules before anything is timed
    warm = make_two_view_data(20, **{**DATA, "d_e": 8, "d_a": 16, "mech_support": 8})
    ws = RDWorkspace(warm["E"], warm["A"], warm["P"])
    RateDistortionClustering(beta=8.0, gamma=0.5).fit(warm["E"], warm["A"], warm["P"])
    run_authors(ws.E, ws.At, ws.P, 1.0, 0.5)

    out = {
        "description": __doc__.split("\n\n")[0],
        "data": {"generator": "semmech.cluster.synthetic.make_two_view_data", **DATA},
        "grid": {"betas": BETAS, "gammas": GAMMAS},
        "target_speedup": TARGET_RATIO,
        "threads": 1,
        "timing": "ours: fit() end to end (workspace + descent), median of reps; "
        "authors: run_clustering only (their normalisation excluded), once",
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "torch": torch.__version__,
        },
        "load_before": _load(),
        "results": [run_n(n, run_authors, args.reps) for n in args.n],
    }
    out["load_after"] = _load()
    io.write_json(out, args.out)
    return out


if __name__ == "__main__":
    main()
