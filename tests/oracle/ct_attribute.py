"""circuit-tracer's attribution graphs, for the oracle test (tests/test_circuit_tracer.py).

Runs inside the circuit-tracer venv (circuit-tracer 0.5.0, nnsight 0.6.3, transformers 4.57;
made by envs/install.sh), never in semmech's own environment:

    .venv-circuit-tracer/bin/python tests/oracle/ct_attribute.py JOB.json OUT_DIR

JOB.json::

    {"model_dir": "/abs/model", "batch_size": 64,
     "runs": [{"name": "random", "transcoders": "/abs/set",
               "sequences": [{"input_ids": [1, 5, 9], "target": 12}, ...]}, ...]}

For every run the transcoder set directory is loaded by circuit-tracer's own public entry point,
``ReplacementModel.from_pretrained(model_dir, set_dir, backend="nnsight")`` (the set must load
there unchanged). For every sequence, ``circuit_tracer.attribute`` builds the full graph with
the given token as the only logit target and every active feature kept, and
``OUT_DIR/<name>_<k>.npz`` receives the graph's logit row with its column layout:

    input_tokens [n_pos]   the tokens circuit-tracer ran (a BOS is prepended when the first
                           token is not a special token; the test refuses that case)
    row [n_cols]           the logit node's adjacency row, logit columns dropped
    kind [n_cols]          0 feature, 1 error, 2 token: circuit-tracer's node order is selected
                           features, then error nodes layer-major (layer l, position p at
                           n_features + l * n_pos + p), then token nodes by position
    layer, pos, feature    per column (-1 where it does not apply)
    activation [n_cols]    the feature's activation (0 for error and token columns)
    demeaned_logit ()      the target's logit minus the mean logit at the last position

A model directory written by transformers 5 is first mirrored into a temporary directory that
transformers 4.57 reads correctly (rope_theta restored from rope_parameters, the tokenizer class
named PreTrainedTokenizerFast); every other file is a symbolic link. Prints one JSON line of
timings. Exit status 2 with a message on stderr when a run cannot be loaded.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# Offline, and with an empty circuit-tracer cache, so only the given directory can be loaded.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["CIRCUIT_TRACER_CACHE_DIR"] = tempfile.mkdtemp(prefix="ct-cache-")


def readable_model_dir(src: Path, dst: Path) -> Path:
    """A transformers-4.57 view of a (possibly transformers-5) model directory."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        target = dst / f.name
        if f.name == "config.json":
            cfg = json.loads(f.read_text())
            rope = cfg.get("rope_parameters")
            if isinstance(rope, dict) and "rope_theta" not in cfg:
                if "rope_theta" not in rope and all(isinstance(v, dict) for v in rope.values()):
                    rope = rope.get("full_attention") or next(iter(rope.values()))
                cfg["rope_theta"] = rope["rope_theta"]
                if rope.get("rope_type", "default") != "default" and not cfg.get("rope_scaling"):
                    cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
            target.write_text(json.dumps(cfg, indent=2))
        elif f.name == "tokenizer_config.json":
            tok = json.loads(f.read_text())
            tok["tokenizer_class"] = "PreTrainedTokenizerFast"  # tokenizer.json holds the rest
            target.write_text(json.dumps(tok, indent=2))
        else:
            target.symlink_to(f.resolve())
    return dst


def logit_row(graph, n_layers: int) -> dict[str, np.ndarray]:
    """The logit node's row of the adjacency matrix and the layout of its columns."""
    n_pos = len(graph.input_tokens)
    selected = graph.selected_features.cpu()
    feats = graph.active_features.cpu()[selected]  # (layer, pos, feature) per feature column
    n_sel = len(selected)
    n_cols = n_sel + n_layers * n_pos + n_pos
    adj = graph.adjacency_matrix.cpu()
    if adj.shape != (n_cols + 1, n_cols + 1):
        raise RuntimeError(f"unexpected adjacency shape {tuple(adj.shape)} for {n_cols} columns")
    err = np.arange(n_layers * n_pos)
    none = np.full(n_pos, -1)
    return {
        "input_tokens": graph.input_tokens.cpu().numpy().astype(np.int64),
        "row": adj[-1, :n_cols].double().numpy(),
        "kind": np.concatenate([np.zeros(n_sel), np.ones(n_layers * n_pos), np.full(n_pos, 2)]),
        "layer": np.concatenate([feats[:, 0].numpy(), err // n_pos, none]).astype(np.int64),
        "pos": np.concatenate([feats[:, 1].numpy(), err % n_pos, np.arange(n_pos)]),
        "feature": np.concatenate([feats[:, 2].numpy(), np.full(n_cols - n_sel, -1)]),
        "activation": np.concatenate(
            [
                graph.activation_values.cpu()[selected].double().numpy(),
                np.zeros(n_cols - n_sel),
            ]
        ),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(job.get("threads", 1)))
    t0 = time.perf_counter()
    from circuit_tracer import ReplacementModel, attribute

    timings = {"import": time.perf_counter() - t0}
    tmp = Path(tempfile.mkdtemp(prefix="ct-model-"))
    model_dir = readable_model_dir(Path(job["model_dir"]).resolve(), tmp / "model")
    cpu = torch.device("cpu")
    for run in job["runs"]:
        t = time.perf_counter()
        set_dir = str(Path(run["transcoders"]).resolve())
        try:
            model = ReplacementModel.from_pretrained(
                str(model_dir), set_dir, backend="nnsight", device=cpu, dtype=torch.float32
            )
        except Exception as exc:
            print(f"error: circuit-tracer cannot load {set_dir}: {exc!r}", file=sys.stderr)
            return 2
        timings[f"{run['name']}:load"] = time.perf_counter() - t
        n_layers = model.cfg.n_layers
        for k, seq in enumerate(run["sequences"]):
            t = time.perf_counter()
            ids = torch.tensor(seq["input_ids"], dtype=torch.long)
            graph = attribute(
                ids,
                model,
                attribution_targets=torch.tensor([int(seq["target"])]),
                batch_size=int(job.get("batch_size", 64)),
                max_feature_nodes=None,
                verbose=False,
            )
            arrays = logit_row(graph, n_layers)
            logits, _ = model.get_activations(graph.input_tokens)
            last = logits.reshape(-1, logits.shape[-1])[-1].double()
            arrays["demeaned_logit"] = np.float64(last[int(seq["target"])] - last.mean())
            np.savez(out / f"{run['name']}_{k}.npz", **arrays)
            timings[f"{run['name']}:{k}"] = time.perf_counter() - t
    print(json.dumps({k: round(v, 2) for k, v in timings.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
