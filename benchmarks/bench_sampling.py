"""Sampling throughput on the default model: nnsight-traced generate vs plain transformers.

Both paths sample the same batch with the same seed and return the same thing (new token ids
and their T = 1 log-probs); the ratio is the cost of nnsight tracing. Writes
benchmarks/sampling.json. Run from the repository root: python benchmarks/bench_sampling.py
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from semmech.model.loading import format_prompt, load_model
from semmech.views.sampling import (
    SamplingSettings,
    generate_batch,
    generation_inputs,
    sample_continuations,
    stop_token_mask,
)

OUT = Path(__file__).with_name("sampling.json")


def plain_generate(model, prompt_ids, settings, stop_mask):
    ids, kwargs = generation_inputs(model, prompt_ids, settings, stop_mask)
    out = model.hf.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        output_logits=True,
        return_dict_in_generate=True,
        **kwargs,
    )
    new = out.sequences[:, len(prompt_ids) :]
    lp = torch.stack([l.float().log_softmax(-1) for l in out.logits], dim=1)
    return new, lp.gather(-1, new.unsqueeze(-1)).squeeze(-1).double()


def main(reps: int = 5) -> dict:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    model = load_model("default", device="cpu", dtype="float32")
    settings = SamplingSettings.from_config(
        dict(n_continuations=64, max_new_tokens=20, batch_size=32)
    )
    _, prompt_ids = format_prompt(model.tokenizer, "Who won the World Cup?", True)
    mask = stop_token_mask(model.tokenizer, settings.stop_chars)
    times = {"nnsight": [], "plain": []}
    steps = {"nnsight": [], "plain": []}
    for rep in range(reps + 1):  # the first round warms up both paths
        for name, fn in (("nnsight", generate_batch), ("plain", plain_generate)):
            torch.manual_seed(rep)
            t = time.perf_counter()
            new, _ = fn(model, prompt_ids, settings, mask)
            dt = time.perf_counter() - t
            if rep:
                times[name].append(dt)
                steps[name].append(new.shape[1])
    assert steps["nnsight"] == steps["plain"], "both paths must sample the same sequences"
    t = time.perf_counter()
    df = sample_continuations(model, "bench", prompt_ids, settings, seed=0)
    full = time.perf_counter() - t
    med = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()
    result = {
        "benchmark": "sampling",
        "model": "default (SmolLM2-135M-Instruct, float32, CPU)",
        "threads": torch.get_num_threads(),
        "batch_size": settings.batch_size,
        "max_new_tokens": settings.max_new_tokens,
        "reps": reps,
        "seconds_per_batch_nnsight": med["nnsight"],
        "seconds_per_batch_plain_generate": med["plain"],
        "seconds_per_batch_all": times,
        "nnsight_overhead_ratio": med["nnsight"] / med["plain"],
        "nnsight_overhead_ratio_per_rep": [a / b for a, b in zip(times["nnsight"], times["plain"])],
        "target_overhead_ratio_max": 1.15,
        "distinct_continuations": len(df),
        "seconds_for_64_distinct": full,
        "distinct_continuations_per_second": len(df) / full,
        "load_average_1_5_15_after": load,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
