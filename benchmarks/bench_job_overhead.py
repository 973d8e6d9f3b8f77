"""Fixed cost of a model job: what ``sample``, ``attribute`` and ``steer`` spend before their
first useful forward pass, on the default model.

Each job kind runs in a fresh interpreter, the way Snakemake runs a rule's script: the
script preamble (which unpickles Snakemake's job object, so it imports ``snakemake``), then
the workflow script's imports and its ``run_<rule>`` call inside ``job_logging`` with the
rule's thread count, on real inputs (``--inputs``, a finished default run). A global forward
pre-hook stops the job at the model's first forward pass. Phases, in seconds from the
process start:

- ``interpreter``: from spawning the process to its first line;
- ``preamble``: ``import snakemake.iocontainers`` (what unpickling the job object needs);
- ``imports``: the workflow script's imports (the stage module and everything it pulls in);
- ``before_load``: reading inputs and the cheap checks before the model is loaded;
- ``model_load``: ``load_configured_model`` (tokenizer, config, weights, nnsight wrapper);
- ``after_load``: from the loaded model to the first forward (feature basis, node setup);
- ``total``: spawn to first forward; ``cpu``: the child's CPU seconds up to then.

Jobs without a model (clustering, baselines, figures, reports, the manifest) are measured
too, as ``imports_without_model``: their script's imports in a fresh interpreter, and whether
torch got imported (``semmech.logs`` used to import it for every job: ``torch_import_s``).

Writes benchmarks/job_overhead.json. Run from the repository root:
    python benchmarks/bench_job_overhead.py [--inputs results/default] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).with_name("job_overhead.json")
KINDS = ("sample", "attribute", "steer")
STAGE = {
    "sample": "semmech.stages.sampling",
    "attribute": "semmech.stages.attribution",
    "steer": "semmech.stages.steering",
}


class _FirstForward(BaseException):
    """Raised by the forward pre-hook: the job has reached its first forward pass."""


def _probe(kind: str, inputs: Path, prompt: str, out_dir: Path) -> dict:
    """Runs in the child: the rule's script, stopped at the first forward."""
    marks = {"start": time.time()}
    import snakemake.iocontainers  # noqa: F401  (the script preamble unpickles a Snakemake object)

    marks["preamble"] = time.time()
    import importlib

    from semmech.logs import job_logging

    stage = importlib.import_module(STAGE[kind])
    run = getattr(stage, f"run_{kind}")
    marks["imports"] = time.time()

    import torch
    import yaml

    from semmech.config import validate_config

    cfg = validate_config(yaml.safe_load(Path("config/config.yaml").read_text()))
    prompts = {p["id"]: p["text"] for p in yaml.safe_load(Path(cfg["prompts"]).read_text())}

    real_load = stage.load_configured_model

    def timed_load(*a, **k):
        marks.setdefault("load_start", time.time())
        model = real_load(*a, **k)
        marks.setdefault("load_end", time.time())
        return model

    stage.load_configured_model = timed_load

    def hook(module, args):
        if type(module).__name__.endswith("ForCausalLM"):
            marks["first_forward"] = time.time()
            raise _FirstForward

    torch.nn.modules.module.register_module_forward_pre_hook(hook)
    res = inputs
    common = dict(prompt_id=prompt, model_cfg=cfg["model"])
    if kind == "sample":
        args = dict(
            text=prompts[prompt],
            sampling_cfg=cfg["sampling"],
            seed=1,
            out_table=out_dir / "t.parquet",
            out_prompt=out_dir / "p.json",
        )
    elif kind == "attribute":
        args = dict(
            samples=res / "samples" / f"{prompt}.parquet",
            prompt=res / "samples" / f"{prompt}.prompt.json",
            attribution_cfg=cfg["attribution"],
            transcoder_dir=None,
            out_signatures=out_dir / "s.safetensors",
            out_nodes=out_dir / "n.parquet",
            out_completeness=out_dir / "c.json",
        )
    else:
        args = dict(
            samples=res / "samples" / f"{prompt}.parquet",
            prompt=res / "samples" / f"{prompt}.prompt.json",
            signatures=res / "attribution" / f"{prompt}.safetensors",
            nodes=res / "attribution" / f"{prompt}.nodes.parquet",
            embeddings=res / "embeddings" / f"{prompt}.npz",
            clusters=res / "clusters" / f"{prompt}.npz",
            baseline_labels=res / "baselines" / f"{prompt}.labels.parquet",
            attribution_cfg=cfg["attribution"],
            steering_cfg=cfg["steering"],
            sampling_cfg=cfg["sampling"],
            transcoder_dir=None,
            seed=1,
            out_curves=out_dir / "cu.parquet",
            out_metrics=out_dir / "m.parquet",
            out_generations=out_dir / "g.parquet",
            out_stats=out_dir / "st.json",
        )
    marks["setup_done"] = time.time()
    try:
        with job_logging(out_dir / "job.log", 1):
            run(**common, **args)
    except _FirstForward:
        pass
    if "first_forward" not in marks:
        raise RuntimeError(f"{kind}: the job finished without a forward pass of the model")
    marks["cpu"] = time.process_time()
    return marks


OTHER_STAGES = ("clustering", "figures", "report", "manifest")


def _import_cost(code: str) -> dict:
    """Wall and CPU seconds of running ``code`` in a fresh interpreter (startup included)."""
    probe = (
        "import time, sys, resource\n"
        f"{code}\n"
        "u = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print('COST', u.ru_utime + u.ru_stime, 'torch' in sys.modules)\n"
    )
    t = time.time()
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    wall = time.time() - t
    _, cpu, torch_loaded = [x for x in out.stdout.splitlines() if x.startswith("COST")][-1].split()
    return {"wall_s": wall, "cpu_s": float(cpu), "imports_torch": torch_loaded == "True"}


def _phases(spawn: float, m: dict) -> dict:
    return {
        "interpreter": m["start"] - spawn,
        "preamble": m["preamble"] - m["start"],
        "imports": m["imports"] - m["preamble"],
        "before_load": m["load_start"] - m["setup_done"],
        "model_load": m["load_end"] - m["load_start"],
        "after_load": m["first_forward"] - m["load_end"],
        "total": m["first_forward"] - spawn - (m["setup_done"] - m["imports"]),
        "cpu": m["cpu"],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", default="results/default", help="a finished default run")
    ap.add_argument("--prompt", default="mercury")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--probe", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--probe-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        marks = _probe(args.probe, Path(args.inputs), args.prompt, Path(args.probe_out))
        print("MARKS " + json.dumps(marks), flush=True)
        return marks

    missing = [
        k
        for k in ("samples", "attribution", "embeddings", "clusters", "baselines")
        if not (Path(args.inputs) / k).is_dir()
    ]
    if missing:
        sys.exit(f"--inputs {args.inputs} is not a finished run (no {', '.join(missing)}/)")
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {k: [] for k in KINDS}
    bare = []
    for _rep in range(args.reps):
        t = time.time()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.time() - t)
        for kind in KINDS:  # interleaved, so load changes hit every kind alike
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [
                    sys.executable,
                    __file__,
                    "--probe",
                    kind,
                    "--probe-out",
                    tmp,
                    "--inputs",
                    args.inputs,
                    "--prompt",
                    args.prompt,
                ]
                spawn = time.time()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
                if proc.returncode != 0:
                    sys.exit(f"probe {kind} failed:\n{proc.stderr[-3000:]}")
                line = [x for x in proc.stdout.splitlines() if x.startswith("MARKS ")][-1]
                runs[kind].append(_phases(spawn, json.loads(line[6:])))
                print(kind, {k: round(v, 2) for k, v in runs[kind][-1].items()}, flush=True)
    others = {}
    for name in ("torch", *OTHER_STAGES):
        code = (
            "import torch"
            if name == "torch"
            else f"import snakemake.iocontainers\nimport semmech.logs, semmech.stages.{name}"
        )
        costs = [_import_cost(code) for _ in range(args.reps)]
        others[name] = {
            "wall_s": statistics.median(c["wall_s"] for c in costs),
            "cpu_s": statistics.median(c["cpu_s"] for c in costs),
            "imports_torch": costs[0]["imports_torch"],
        }
        print(name, others[name], flush=True)
    summary = {
        kind: {ph: statistics.median(r[ph] for r in rs) for ph in rs[0]}
        for kind, rs in runs.items()
    }
    result = {
        "benchmark": "job_overhead",
        "description": __doc__.split("\n\n")[0],
        "model": "default (SmolLM2-135M-Instruct, float32, CPU), threads 1 as the rules run",
        "prompt": args.prompt,
        "reps": args.reps,
        "bare_interpreter_s": statistics.median(bare),
        "median_s": summary,
        "runs": runs,
        "torch_import_s": others.pop("torch"),
        "imports_without_model": others,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
