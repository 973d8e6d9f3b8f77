"""Attribution throughput on the default model (CPU, 2 threads): the linearised nnsight pass vs a
plain torch forward + backward over the same batch, peak memory, and the default-config total
for the stage (12 prompts x 64 continuations of ~20 tokens, prompts ~35 tokens with the chat
template). Writes benchmarks/attribution.json.

The plain reference is what any gradient-based attribution must at least do: the model's own
forward (full logits) and ``loss.backward()`` with parameter gradients, on the same objective
(sum over rows of the mean demeaned logit of the continuation tokens). A second reference
without parameter gradients is reported too. Timings of the two paths are interleaved batch by
batch so that load from other processes affects both alike.

Per-batch seconds are the minimum over repetitions (the least-disturbed run on a shared
machine); medians are kept beside them.

Run from the repository root: python benchmarks/bench_attribution.py [--prompts 12] [--reps 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

OUT = Path(__file__).with_name("attribution.json")
N_CONT, MIN_LEN, MAX_LEN = 64, 15, 20


def _setup(threads: int, n_prompts: int):
    from semmech.model.bases import load_basis
    from semmech.model.loading import format_prompt, load_model
    from semmech.prompts import read_prompts

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    model = load_model("default", device="cpu", dtype="float32")
    basis = load_basis("mlp_neurons", model)
    prompts = read_prompts("config/prompts.yaml")[:n_prompts]
    ids = [format_prompt(model.tokenizer, p.text, True)[1] for p in prompts]
    return model, basis, ids


def _continuations(seed: int, n: int = N_CONT) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(MIN_LEN, MAX_LEN + 1, (n,), generator=g)
    return [torch.randint(1000, 40000, (int(k),), generator=g).tolist() for k in lengths]


def plain_forward_backward(model, prompt, conts, param_grads: bool = True) -> None:
    """The same objective through the unmodified model: full forward, loss.backward()."""
    M = len(prompt)
    S = M + max(len(c) for c in conts) - 1
    ids = torch.full((len(conts), S), model.tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for r, c in enumerate(conts):
        ids[r, : M + len(c) - 1] = torch.tensor(prompt + c[:-1])
        mask[r, : M + len(c) - 1] = 1
    flags = [p.requires_grad for p in model.hf.parameters()]
    for p in model.hf.parameters():
        p.requires_grad_(param_grads)
    try:
        emb = model.hf.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model.hf(inputs_embeds=emb, attention_mask=mask).logits
        loss = 0
        for r, c in enumerate(conts):
            lt = logits[r, M - 1 : M - 1 + len(c)]
            loss = loss + (lt[torch.arange(len(c)), torch.tensor(c)] - lt.mean(-1)).mean()
        loss.backward()
    finally:
        model.hf.zero_grad(set_to_none=True)
        for p, f in zip(model.hf.parameters(), flags):
            p.requires_grad_(f)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


class _PeakRSS:
    """Peak resident memory while the block runs, polled every 2 ms (ru_maxrss cannot be reset,
    and model loading peaks higher than attribution does)."""

    def __enter__(self):
        import threading

        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _peak_child(mode: str, threads: int, batch: int, queue) -> None:
    """Peak resident memory of one mode, in its own process (after the model is loaded)."""
    from semmech.views.attribution import attribute_batch, select_nodes

    model, basis, ids = _setup(threads, 1)
    conts = _continuations(0)[:batch]
    nodes = select_nodes(model, basis, ids[0], 2048)
    with _PeakRSS() as rss:
        for _ in range(2):
            if mode == "attribution":
                attribute_batch(model, basis, nodes, conts)
            else:
                plain_forward_backward(model, ids[0], conts, param_grads=True)
    queue.put((mode, rss.start, rss.peak))


def main(n_prompts: int = 12, reps: int = 8, threads: int = 2, batch: int = 8) -> dict:
    import os

    from semmech.views.attribution import attribute, attribute_batch, select_nodes

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    model, basis, prompts = _setup(threads, n_prompts)
    load_s = time.perf_counter() - t0

    # 1. Interleaved per-batch timing on the first prompt.
    nodes = select_nodes(model, basis, prompts[0], 2048)
    conts = _continuations(0)
    times = {"attribution": [], "plain_fwd_bwd": [], "plain_fwd_bwd_input_grads_only": []}
    for rep in range(reps + 1):  # the first round warms up every path
        batch_conts = conts[(rep * batch) % N_CONT : (rep * batch) % N_CONT + batch]
        for name in times:
            t = time.perf_counter()
            if name == "attribution":
                attribute_batch(model, basis, nodes, batch_conts)
            else:
                plain_forward_backward(model, prompts[0], batch_conts, name == "plain_fwd_bwd")
            if rep:
                times[name].append(time.perf_counter() - t)
    # The minimum over repetitions is the least-disturbed run on a shared machine; the ratio is
    # taken between minima (medians are reported as well).
    med = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"per-batch minima: {med}, medians: {median}", file=sys.stderr, flush=True)

    # 2. Peak memory, each path in a fresh process.
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    peaks = {}
    for mode in ("attribution", "plain_fwd_bwd"):
        proc = ctx.Process(target=_peak_child, args=(mode, threads, batch, queue))
        proc.start()
        m, base, peak = queue.get()
        proc.join()
        print(f"memory {m}: {base:.0f} -> {peak:.0f} MB", file=sys.stderr, flush=True)
        peaks[m] = {
            "peak_rss_mb": round(peak, 1),
            "rss_before_mb": round(base, 1),
            "peak_increase_mb": round(peak - base, 1),
        }

    # 3. The default-config stage: every prompt, 64 continuations, selection included.
    per_prompt = []
    errors = []
    for k, prompt in enumerate(prompts):
        t = time.perf_counter()
        res = attribute(
            model, basis, prompt, _continuations(k + 1), max_feature_nodes=2048, batch_size=batch
        )
        per_prompt.append(time.perf_counter() - t)
        errors += [(r["abs_error"], r["rel_error"], abs(r["target"])) for r in res.completeness]
        print(f"prompt {k}: {per_prompt[-1]:.1f} s", file=sys.stderr, flush=True)
    total = sum(per_prompt)
    result = {
        "benchmark": "attribution",
        "model": "default (SmolLM2-135M-Instruct, float32, CPU)",
        "basis": "mlp_neurons",
        "max_feature_nodes": 2048,
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "reps": reps,
        "prompt_tokens": [len(p) for p in prompts],
        "continuation_tokens": f"uniform {MIN_LEN}..{MAX_LEN}",
        "seconds_per_batch_median": median,
        "seconds_per_batch_attribution": med["attribution"],
        "seconds_per_batch_plain_fwd_bwd": med["plain_fwd_bwd"],
        "seconds_per_batch_plain_fwd_bwd_input_grads_only": med["plain_fwd_bwd_input_grads_only"],
        "continuations_per_second": batch / med["attribution"],
        "ratio_to_plain_fwd_bwd": med["attribution"] / med["plain_fwd_bwd"],
        "ratio_to_plain_fwd_bwd_input_grads_only": med["attribution"]
        / med["plain_fwd_bwd_input_grads_only"],
        "target_ratio_max": 1.5,
        "all_batch_seconds": times,
        "memory": peaks,
        "stage_prompts": len(prompts),
        "stage_continuations_per_prompt": N_CONT,
        "stage_seconds_total_excluding_model_load": total,
        "stage_seconds_per_prompt": per_prompt,
        "stage_continuations_per_second": len(prompts) * N_CONT / total,
        "model_load_seconds": load_s,
        "stage_estimate_seconds_with_one_model_load_per_job": total + len(prompts) * load_s,
        # Random tokens have mean demeaned logits near 0 (unlike sampled ones, ~20), so the
        # relative error is reported for targets of magnitude >= 1 and the absolute one for all.
        "stage_max_completeness_abs_error": max(e[0] for e in errors),
        "stage_max_completeness_rel_error_targets_ge_1": max(
            (e[1] for e in errors if e[2] >= 1), default=None
        ),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "note": "2 shared CPU cores; timings vary with other load on the machine (see load averages)",
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    res = main(a.prompts, a.reps, a.threads, a.batch)
    print(json.dumps({k: v for k, v in res.items() if k != "all_batch_seconds"}, indent=2))
