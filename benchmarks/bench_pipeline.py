"""The full default reproduction, timed: wall time, peak memory and each stage's share.

Runs `snakemake --cores 2` on config/config.yaml in a fresh scratch directory (config/ and
the prepared model under resources/ are linked from the repository, so the one-time model
preparation is not part of the measurement unless --with-model-prep is given), then
`snakemake --report`, exactly as the README's reproduce command does. While it runs, the
memory of the whole process tree (Snakemake and every job) is sampled; afterwards each
stage's share is taken from the per-job files Snakemake's `benchmark:` directive wrote.

Writes benchmarks/pipeline.json. Run from the repository root:

    .venv/bin/python benchmarks/bench_pipeline.py [--cores 2] [--configfile config/config.yaml]

Budget: at most 12 minutes and under 4 GB on 2 CPU cores (issue #12); target 8 minutes (issue #15).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).with_name("pipeline.json")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
LIMITS = {"wall_s": 12 * 60, "peak_memory_mb": 4096}
TARGET_WALL_S = 8 * 60

# Rule name -> stage (prefix match, first hit wins); anything else is reported as its own stage.
STAGES = [
    ("prepare_model", "model preparation"),
    ("sample", "sampling"),
    ("transcoder", "attribution"),
    ("attribut", "attribution"),
    ("embed", "embedding"),
    ("cluster_summary", "figures, tables and report"),
    ("cluster_browser", "figures, tables and report"),
    ("cluster", "clustering"),
    ("baselines", "clustering"),
    ("aggregate_clustering", "clustering"),
    ("steer", "steering"),
    ("aggregate_steering", "steering"),
    ("figure_", "figures, tables and report"),
    ("table", "figures, tables and report"),
    ("manifest", "manifest"),
    ("paper", "paper"),
]


def stage_of(rule: str) -> str:
    for prefix, stage in STAGES:
        if rule.startswith(prefix):
            return stage
    return rule


class TreeMemory(threading.Thread):
    """Peak summed memory of a process and all its descendants, sampled every `interval` s.

    PSS counts shared pages (torch's libraries, the model file mapped by several jobs) once
    across processes; RSS counts them per process, an upper bound."""

    def __init__(self, pid: int, interval: float = 1.0):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = self.peak_pss = 0
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rss = pss = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    info = p.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", info.rss)
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.samples += 1
            self.stop.wait(self.interval)


def run_measured(cmd: list[str], cwd: Path, log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONHASHSEED="0"),
        )
        mon = TreeMemory(proc.pid)
        mon.start()
        rc = proc.wait()
        mon.stop.set()
        mon.join()
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit {rc}:\n{tail}")
    return {
        "wall_s": wall,
        "peak_pss_mb": mon.peak_pss / 2**20,
        "peak_rss_mb": mon.peak_rss / 2**20,
        "memory_samples": mon.samples,
    }


def read_benchmarks(bench_dir: Path) -> list[dict]:
    """One record per job: rule, wildcard part of the file name, seconds, max RSS, CPU time."""
    jobs = []
    for f in sorted(bench_dir.rglob("*.tsv")):
        rel = f.relative_to(bench_dir)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        with open(f) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        for row in rows:

            def num(key, row=row):
                try:
                    return float(row.get(key, "nan"))
                except ValueError:
                    return float("nan")

            jobs.append(
                {
                    "rule": rule,
                    "job": rel.with_suffix("").as_posix(),
                    "s": num("s"),
                    "max_rss_mb": num("max_rss"),
                    "cpu_time_s": num("cpu_time"),
                }
            )
    return jobs


def summarise(jobs: list[dict]) -> tuple[dict, dict]:
    rules: dict[str, dict] = defaultdict(
        lambda: {"n_jobs": 0, "job_seconds": 0.0, "cpu_seconds": 0.0, "max_job_rss_mb": 0.0}
    )
    for j in jobs:
        r = rules[j["rule"]]
        r["n_jobs"] += 1
        r["job_seconds"] += j["s"]
        r["cpu_seconds"] += j["cpu_time_s"] if j["cpu_time_s"] == j["cpu_time_s"] else 0.0
        r["max_job_rss_mb"] = max(
            r["max_job_rss_mb"], j["max_rss_mb"] if j["max_rss_mb"] == j["max_rss_mb"] else 0.0
        )
    total = sum(r["job_seconds"] for r in rules.values()) or 1.0
    stages: dict[str, dict] = defaultdict(
        lambda: {
            "rules": [],
            "n_jobs": 0,
            "job_seconds": 0.0,
            "cpu_seconds": 0.0,
            "max_job_rss_mb": 0.0,
        }
    )
    for name, r in sorted(rules.items()):
        r["share_of_job_seconds"] = r["job_seconds"] / total
        st = stages[stage_of(name)]
        st["rules"].append(name)
        st["n_jobs"] += r["n_jobs"]
        st["job_seconds"] += r["job_seconds"]
        st["cpu_seconds"] += r["cpu_seconds"]
        st["max_job_rss_mb"] = max(st["max_job_rss_mb"], r["max_job_rss_mb"])
    for st in stages.values():
        st["share_of_job_seconds"] = st["job_seconds"] / total
    order = sorted(stages, key=lambda s: -stages[s]["job_seconds"])
    return {k: dict(rules[k]) for k in sorted(rules)}, {k: stages[k] for k in order}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument(
        "--workdir", default=None, help="scratch directory (default: a new temporary one)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument(
        "--with-model-prep",
        action="store_true",
        help="do not link the prepared model: measure its preparation too",
    )
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    cfg_path = Path(args.configfile).resolve()
    cfg = yaml.safe_load(cfg_path.read_text())
    run = cfg.get("run", "default")
    wd = Path(args.workdir or tempfile.mkdtemp(prefix="semmech-bench-"))
    wd.mkdir(parents=True, exist_ok=True)
    if (wd / "results").exists():
        raise SystemExit(f"{wd}/results exists: the benchmark needs a fresh directory")
    (wd / "config").symlink_to(REPO / "config")
    if not args.with_model_prep and (REPO / "resources").exists():
        (wd / "resources").symlink_to(REPO / "resources")
    base = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(wd),
        "--configfile",
        str(cfg_path),
    ]
    try:
        main_run = run_measured(base + ["--cores", str(args.cores)], wd, wd / "snakemake.log")
        report = wd / "results" / "report.html"
        report_run = run_measured(base + ["--report", str(report)], wd, wd / "report.log")
        jobs = read_benchmarks(wd / "results" / run / "benchmarks")
        rules, stages = summarise(jobs)
        total_wall = main_run["wall_s"] + report_run["wall_s"]
        peak = max(main_run["peak_pss_mb"], report_run["peak_pss_mb"])
        import snakemake

        shown_cfg = cfg_path.relative_to(REPO) if cfg_path.is_relative_to(REPO) else cfg_path
        result = {
            "benchmark": "pipeline",
            "command": f"snakemake --cores {args.cores} --configfile {shown_cfg} "
            "&& snakemake --report results/report.html",
            "run": run,
            "cores": args.cores,
            "model_prep_included": bool(args.with_model_prep),
            "n_prompts": None,
            "n_jobs": len(jobs),
            "wall_s": total_wall,
            "workflow_wall_s": main_run["wall_s"],
            "report_wall_s": report_run["wall_s"],
            "peak_memory_mb": peak,
            "peak_pss_mb": main_run["peak_pss_mb"],
            "peak_rss_sum_mb": main_run["peak_rss_mb"],
            "max_single_job_rss_mb": max((j["max_rss_mb"] for j in jobs), default=0.0),
            "job_seconds_total": sum(r["job_seconds"] for r in rules.values()),
            "limits": LIMITS,
            "within_limits": {
                "wall": total_wall <= LIMITS["wall_s"],
                "memory": peak <= LIMITS["peak_memory_mb"],
            },
            "target_wall_s": TARGET_WALL_S,
            "within_target": total_wall <= TARGET_WALL_S,
            "stages": stages,
            "rules": rules,
            "report_bytes": report.stat().st_size,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                "python": sys.version.split()[0],
                "snakemake": snakemake.__version__,
            },
        }
        prompts_file = wd / cfg.get("prompts", "config/prompts.yaml")
        if prompts_file.is_file() and prompts_file.suffix in (".yaml", ".yml"):
            result["n_prompts"] = len(yaml.safe_load(prompts_file.read_text()) or [])
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    res = main()
    print(
        json.dumps(
            {k: res[k] for k in ("wall_s", "peak_memory_mb", "within_limits", "n_jobs")}, indent=2
        )
    )
    for stage, st in res["stages"].items():
        print(
            f"{stage:32s} {st['job_seconds']:8.1f} job-s  {100 * st['share_of_job_seconds']:5.1f}%  "
            f"max job RSS {st['max_job_rss_mb']:.0f} MB"
        )
