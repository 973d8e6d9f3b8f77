"""Sampling throughput on the default model against the floor of a plain forward pass.

For a few prompts of the default prompt set, with the default sampling settings (64 distinct
continuations, batches of at most 32, 20 new tokens, one thread as the ``sample`` rule runs):

- ``sampling``: ``sample_continuations`` as the workflow runs it (nnsight-traced decoding from
  the prompt's shared KV cache, finished rows dropped, batches sized from the dedup rate),
  wall and CPU seconds, the batch schedule and the number of tokens generated;
- ``floor``: a plain forward pass (transformers, no nnsight, no sampling) over the same
  tokens: the prompt once, then every batch's rows teacher-forced in one pass from the
  prompt's cache. Decoding cannot beat it: it must run one step per token position;
- ``hf_generate_batch``: for context, one full batch of the previous implementation's kind
  (``generate`` on ``batch_size`` copies of the prompt, each re-encoding the prompt, every row
  decoded until the longest one stops), same settings.

Reports tokens per second of both and their ratio. Writes benchmarks/sampling.json.
Run from the repository root:  python benchmarks/bench_sampling.py [--prompts 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import StoppingCriteriaList

from semmech.config import section_defaults
from semmech.model.loading import LoadedModel, format_prompt, load_model
from semmech.views import sampling
from semmech.views.sampling import SamplingSettings, stop_token_mask

OUT = Path(__file__).with_name("sampling.json")


class _Clock:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() - self.c


def _row_lengths(ids: torch.Tensor, lps: torch.Tensor, stop_mask, eos: set[int]) -> list[int]:
    """Positions each row really decoded: up to and including its stop token."""
    out = []
    for row in ids.tolist():
        n = len(row)
        for i, t in enumerate(row):
            if t in eos or (t < len(stop_mask) and bool(stop_mask[t])):
                n = i + 1
                break
        out.append(n)
    return out


def _floor(model, prompt_ids: list[int], batches: list[torch.Tensor], lengths) -> float:
    """Seconds of plain forward passes over the same tokens (prompt once, one pass per batch)."""
    with torch.no_grad(), _Clock() as clk:
        ids = torch.tensor([prompt_ids])
        out = model.hf(input_ids=ids, use_cache=True, logits_to_keep=1)
        for rows, lens in zip(batches, lengths):
            width = max(lens)
            cache = copy.deepcopy(out.past_key_values)
            cache.batch_repeat_interleave(rows.shape[0])
            toks = rows[:, :width]
            mask = torch.ones(rows.shape[0], len(prompt_ids) + width, dtype=torch.long)
            for r, n in enumerate(lens):
                mask[r, len(prompt_ids) + n :] = 0
            model.hf(input_ids=toks, attention_mask=mask, past_key_values=cache, use_cache=True)
    return clk.wall


class _SentenceEnd:
    """transformers stopping criterion for the comparison batch: a row is done once it emitted a sentence end or EOS."""

    def __init__(self, stop_mask: torch.Tensor, eos_ids: set[int], prompt_len: int):
        self.stop_mask = stop_mask
        self.eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.prompt_len :].cpu()
        hit = self.stop_mask.to(new.device)[new.clamp(max=len(self.stop_mask) - 1)] | torch.isin(
            new, self.eos
        )
        return hit.any(dim=1).to(input_ids.device)


def generation_inputs(
    model: LoadedModel, prompt_ids: list[int], settings: SamplingSettings, stop_mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The batch of prompt copies and transformers' ``generate`` arguments for METHOD §2's
    sampling: what semmech's own decoder replaced, kept here as the comparison."""
    ids = torch.tensor([prompt_ids] * settings.batch_size, dtype=torch.long, device=model.device)
    stopper = _SentenceEnd(stop_mask, model.eos_token_ids, len(prompt_ids))
    return ids, dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=True,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=0,
        stopping_criteria=StoppingCriteriaList([stopper]),
        pad_token_id=model.tokenizer.pad_token_id,
    )


def _hf_generate_batch(model, prompt_ids, settings, mask, seed: int) -> dict:
    ids, kwargs = generation_inputs(model, prompt_ids, settings, mask)
    torch.manual_seed(seed)
    with torch.no_grad(), _Clock() as clk:
        out = model.hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    steps = out.shape[1] - len(prompt_ids)
    return {
        "rows": int(ids.shape[0]),
        "steps": int(steps),
        "positions_decoded": int(ids.shape[0] * steps),
        "prompt_positions_encoded": int(ids.numel()),
        "wall_s": clk.wall,
        "cpu_s": clk.cpu,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=3, help="first N prompts of the default set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    root = Path(__file__).resolve().parent.parent
    cfg = yaml.safe_load((root / "config" / "config.yaml").read_text())
    prompts = yaml.safe_load((root / cfg["prompts"]).read_text())[: args.prompts]
    settings = SamplingSettings.from_config(section_defaults("sampling", cfg["sampling"]))
    load_before = os.getloadavg()
    model = load_model("default", device="cpu", dtype="float32")
    mask = stop_token_mask(model.tokenizer, settings.stop_chars)
    eos = model.eos_token_ids

    real = sampling.generate_batch
    record: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy(*a, **k):
        ids, lps = real(*a, **k)
        record.append((ids, lps))
        return ids, lps

    sampling.generate_batch = spy
    # warm-up: first calls pay one-off costs (lazy imports, allocator)
    _, warm_ids = format_prompt(model.tokenizer, "Hello?", True)
    sampling.sample_continuations(
        model,
        "warm",
        warm_ids,
        SamplingSettings.from_config(dict(n_continuations=2, max_new_tokens=4, batch_size=2)),
        seed=0,
    )
    results = []
    for k, rec in enumerate(prompts):
        _, prompt_ids = format_prompt(model.tokenizer, rec["text"], cfg["model"]["chat_template"])
        record.clear()
        with _Clock() as clk:
            df = sampling.sample_continuations(model, rec["id"], prompt_ids, settings, seed=k)
        lengths = [_row_lengths(ids, lps, mask, eos) for ids, lps in record]
        tokens = sum(sum(x) for x in lengths)
        floor_s = _floor(model, prompt_ids, [ids for ids, _ in record], lengths)
        gen = _hf_generate_batch(model, prompt_ids, settings, mask, seed=k)
        results.append(
            {
                "prompt": rec["id"],
                "prompt_tokens": len(prompt_ids),
                "distinct_continuations": len(df),
                "batches": [
                    {"rows": int(ids.shape[0]), "steps": int(ids.shape[1]), "tokens": sum(lens)}
                    for (ids, _), lens in zip(record, lengths)
                ],
                "tokens_generated": tokens,
                "sampling_wall_s": clk.wall,
                "sampling_cpu_s": clk.cpu,
                "sampling_tokens_per_s": tokens / clk.wall,
                "floor_wall_s": floor_s,
                "floor_tokens_per_s": tokens / floor_s,
                "ratio_to_floor": clk.wall / floor_s,
                "hf_generate_full_batch": gen,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    sampling.generate_batch = real
    tot_tokens = sum(r["tokens_generated"] for r in results)
    tot_s = sum(r["sampling_wall_s"] for r in results)
    tot_floor = sum(r["floor_wall_s"] for r in results)
    result = {
        "benchmark": "sampling",
        "description": __doc__.split("\n\n")[0],
        "model": "default (SmolLM2-135M-Instruct, float32, CPU)",
        "threads": torch.get_num_threads(),
        "settings": settings.__dict__,
        "prompts": results,
        "tokens_per_s": tot_tokens / tot_s,
        "floor_tokens_per_s": tot_tokens / tot_floor,
        "ratio_to_floor": tot_s / tot_floor,
        "seconds_per_prompt_mean": tot_s / len(results),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    r = main()
    print(
        f"tokens/s {r['tokens_per_s']:.1f}, floor {r['floor_tokens_per_s']:.1f}, "
        f"ratio {r['ratio_to_floor']:.2f}"
    )
