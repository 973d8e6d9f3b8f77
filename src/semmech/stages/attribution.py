"""Entry points of ``workflow/rules/attribution.smk``."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .. import io
from ..model.bases import load_basis
from ..model.layout import ModelLayout
from ..model.loading import check_prompt_record, check_token_ids, load_configured_model
from ..model.transcoder_format import check_configured_transcoders
from ..model.transcoder_training import TranscoderTrainingSettings, train_transcoders
from ..views.attribution import COMPLETENESS_TOLERANCE, AttributionResult, attribute, select_nodes
from .inputs import read_prompt_record, read_samples

log = logging.getLogger("semmech")


def attribution_model_config(
    model_cfg: Mapping[str, Any], attribution_cfg: Mapping[str, Any]
) -> dict[str, Any]:
    """The model config attribution loads with: ``attribution.dtype`` (float32 by default)
    overrides the model's dtype, because half precision breaks completeness (relative errors
    ~3e-3 in bfloat16 on the default model) and decorrelates the signatures from the exact
    ones; "model" keeps the model's own dtype."""
    cfg = dict(model_cfg)
    if attribution_cfg["dtype"] != "model":
        cfg["dtype"] = attribution_cfg["dtype"]
    return cfg


def run_attribute(
    *,
    prompt_id: str,
    samples: str | Path,
    prompt: str | Path,
    model_cfg: Mapping[str, Any],
    attribution_cfg: Mapping[str, Any],
    transcoder_dir: str | Path | None,
    out_signatures: str | Path,
    out_nodes: str | Path,
    out_completeness: str | Path,
) -> AttributionResult:
    """Attribution signatures, node table and completeness diagnostic of one prompt."""
    max_nodes = int(attribution_cfg["max_feature_nodes"])
    basis_name = attribution_cfg["basis"]
    aggregate = attribution_cfg["aggregate"]
    tc_dir = transcoder_dir or attribution_cfg["transcoder_dir"]
    tc_spec = None
    if basis_name == "transcoder":
        if not tc_dir:
            raise ValueError(
                "attribution.basis is 'transcoder' but attribution.transcoder_dir is not set "
                "and no trained transcoder was given"
            )
        # A set that cannot fit the model fails here, before the model loads.
        tc_spec = check_configured_transcoders(
            tc_dir, model_cfg["name"], model_cfg["allow_download"]
        )
    conts, _ = read_samples(samples)
    record = read_prompt_record(prompt)
    model = load_configured_model(attribution_model_config(model_cfg, attribution_cfg))
    prompt_ids = check_prompt_record(model, record, prompt_id, model_cfg, str(prompt))
    check_token_ids(model, prompt_ids, conts)
    basis = load_basis(basis_name, model, transcoder_dir=tc_spec)
    log.info(
        "prompt %s: %d continuations, %d prompt tokens, basis %s, %s over tokens",
        prompt_id,
        len(conts),
        len(prompt_ids),
        basis.name,
        aggregate,
    )
    nodes = select_nodes(model, basis, prompt_ids, max_nodes)
    with tqdm(total=len(conts), desc=f"attribute {prompt_id}", unit="cont") as bar:
        result = attribute(
            model,
            basis,
            prompt_ids,
            conts,
            max_nodes,
            batch_size=int(attribution_cfg["batch_size"]),
            nodes=nodes,
            progress=bar.update,
            aggregate=aggregate,
        )
    meta = {
        "basis": basis.name,
        "model": model_cfg["name"],
        "prompt_id": prompt_id,
        "n_feature_nodes": str(nodes.n_feature_nodes),
        "n_error_nodes": str(nodes.n_error_nodes),
        "n_token_nodes": str(nodes.n_token_nodes),
        "prompt_len": str(nodes.prompt_len),
        "target": f"{aggregate} demeaned logit over the continuation's tokens",
        "aggregate": aggregate,
        "max_feature_nodes": str(max_nodes),
    }
    rows = [{"sample_idx": n, **row} for n, row in enumerate(result.completeness)]
    shares = [r["prefix_share"] for r in rows]
    diag = {
        "prompt_id": prompt_id,
        "basis": basis.name,
        "model": model_cfg["name"],
        "prompt_len": nodes.prompt_len,
        "n_nodes": nodes.n_nodes,
        "n_feature_nodes": nodes.n_feature_nodes,
        "n_error_nodes": nodes.n_error_nodes,
        "n_token_nodes": nodes.n_token_nodes,
        "aggregate": aggregate,
        "tolerance": COMPLETENESS_TOLERANCE,
        "max_rel_error": result.max_rel_error,
        "passed": bool(result.max_rel_error <= COMPLETENESS_TOLERANCE),
        "mean_prefix_share": float(np.mean(shares)),
        "median_prefix_share": float(np.median(shares)),
        "continuations": rows,
    }
    if not diag["passed"]:
        log.warning(
            "prompt %s: completeness relative error %.2e exceeds %.0e",
            prompt_id,
            result.max_rel_error,
            COMPLETENESS_TOLERANCE,
        )
    log.info(
        "prompt %s: %d nodes, max completeness error %.2e, mean prefix share %.3f",
        prompt_id,
        nodes.n_nodes,
        result.max_rel_error,
        diag["mean_prefix_share"],
    )
    io.write_safetensors({"signatures": result.signatures.float()}, out_signatures, metadata=meta)
    io.write_parquet(nodes.table(model.tokenizer), out_nodes)
    io.write_json(diag, out_completeness)
    return result


def run_train_transcoder(
    *,
    samples: Sequence[str | Path],
    prompts: Sequence[str | Path],
    model_cfg: Mapping[str, Any],
    training_cfg: Mapping[str, Any],
    seed: int,
    out_dir: str | Path,
) -> None:
    """Train transcoders for ``transcoder_training.layers`` (empty: all layers) on the sample
    tables, into ``out_dir``.

    Writes into a temporary sibling directory and renames it, so a killed job leaves no
    half-trained directory behind.
    """
    if len(samples) != len(prompts):
        raise ValueError("one prompt file per sample table is needed")
    settings = TranscoderTrainingSettings.from_config(training_cfg)
    model = load_configured_model(model_cfg)
    prompt_ids, conts = [], []
    for table, pfile in zip(samples, prompts):
        record = read_prompt_record(pfile)
        if record["model"] != model_cfg["name"]:
            raise ValueError(
                f"{pfile}: samples were made with model {record['model']!r}, "
                f"not the configured {model_cfg['name']!r}"
            )
        rows, _ = read_samples(table)
        ids = [int(i) for i in record["prompt_token_ids"]]
        check_token_ids(model, ids, rows)
        prompt_ids.append(ids)
        conts.append(rows)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    layout = ModelLayout.discover(model)
    n_layers = len(settings.layers) or layout.n_layers
    with tqdm(total=n_layers * settings.steps, desc="train transcoder", unit="step") as bar:
        stats = train_transcoders(
            model, prompt_ids, conts, settings, seed, tmp, progress=bar.update, layout=layout
        )
    io.write_json(
        {
            "model": model_cfg["name"],
            "seed": seed,
            "settings": settings.__dict__,
            "layers": {str(l): s for l, s in stats.items()},
        },
        tmp / "training.json",
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
