"""Readers of the intermediates that several stages consume, each checking what it reads.

A stage reads another stage's files only through these functions (or ``semmech.io`` for a
file only one stage reads), so a corrupt or mismatched file fails with one error that names
it, before any expensive work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors import safe_open

from .. import io
from ..io import SampleMismatchError

SAMPLE_COLUMNS = ["prompt_id", "sample_idx", "token_ids", "n_tokens"]
PROMPT_KEYS = ("prompt_id", "model_input", "prompt_token_ids", "model", "chat_template")


def read_samples(path: str | Path) -> tuple[list[list[int]], pd.DataFrame]:
    """Continuation token ids (row n = sample_idx n) and the whole sample table."""
    df = io.read_parquet(path, required=SAMPLE_COLUMNS)
    if list(df["sample_idx"]) != list(range(len(df))):
        raise SampleMismatchError(f"{path}: sample_idx must be 0..N-1 in order")
    conts = [[int(t) for t in row] for row in df["token_ids"]]
    for n, (c, k) in enumerate(zip(conts, df["n_tokens"])):
        if len(c) != int(k):
            raise SampleMismatchError(f"{path}: row {n} has n_tokens {k} but {len(c)} token ids")
    return conts, df


def read_prompt_record(path: str | Path) -> dict[str, Any]:
    """``samples/{p}.prompt.json``: the exact model input of a prompt and its token ids."""
    record = io.read_json(path)
    if not isinstance(record, dict):
        raise SampleMismatchError(f"{path}: expected a JSON object")
    for key in PROMPT_KEYS:
        if key not in record:
            raise SampleMismatchError(f"{path}: missing key {key!r}")
    return record


def completeness_path(signatures: str | Path) -> Path:
    """``attribution/{p}.completeness.json``, written by the same job as the signatures."""
    signatures = Path(signatures)
    return signatures.with_name(signatures.name.removesuffix(".safetensors") + ".completeness.json")


def read_signatures(path: str | Path) -> tuple[np.ndarray, dict[str, str]]:
    """The ``signatures`` matrix of ``attribution/{p}.safetensors`` as float64 and the file's
    metadata, read through numpy (importing torch would dominate small jobs).

    The file is checked against its integrity record, and every row against the prefix sum
    the attribution stage stored beside it (``prefix_kept`` of each continuation in
    ``attribution/{p}.completeness.json``, the same job's output), so signatures that do not
    belong to their completeness record are refused before any clustering or steering."""
    io.verify_integrity(path)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            if "signatures" not in fh.keys():
                raise io.CorruptInputError(f"{path}: missing tensors ['signatures']")
            meta = fh.metadata() or {}
            A = np.asarray(fh.get_tensor("signatures"), dtype=np.float64)
    except io.CorruptInputError:
        raise
    except Exception as exc:
        raise io.CorruptInputError(f"{path}: cannot read safetensors ({exc})") from exc
    if A.ndim != 2:
        raise io.CorruptInputError(f"{path}: signatures must be 2-D, found shape {A.shape}")
    check_completeness_sums(path, A)
    return A, dict(meta)


def check_completeness_sums(path: str | Path, A: np.ndarray) -> None:
    """Row n of the signatures must sum to the ``prefix_kept`` recorded for continuation n
    (up to float summation order: 1e-6 of the row's absolute sum; rows with NaN/inf are left
    to the clustering's finite check)."""
    record_path = completeness_path(path)
    record = io.read_json(record_path)
    rows = record.get("continuations") if isinstance(record, dict) else None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("prefix_kept"), (int, float)) for r in rows
    ):
        raise io.CorruptInputError(
            f"{record_path}: expected 'continuations' with a numeric 'prefix_kept' per "
            f"continuation, to check {Path(path).name} against"
        )
    if len(rows) != A.shape[0]:
        raise io.CorruptInputError(
            f"{path}: {A.shape[0]} signature rows but {record_path.name} records "
            f"{len(rows)} continuations"
        )
    kept = np.array([float(r["prefix_kept"]) for r in rows])
    with np.errstate(invalid="ignore", over="ignore"):
        sums = A.sum(axis=1)
        scale = np.abs(A).sum(axis=1)
        # rows holding NaN/inf are left to the clustering's own finite check, which names them
        bad = np.isfinite(A).all(axis=1) & ~(np.abs(sums - kept) <= 1e-6 * scale + 1e-12)
    if bad.any():
        n = int(np.flatnonzero(bad)[0])
        raise io.CorruptInputError(
            f"{path}: signature row {n} sums to {sums[n]!r} but {record_path.name} records "
            f"prefix_kept {kept[n]!r} ({int(bad.sum())} of {len(kept)} rows differ): the "
            "signatures do not match the attribution that wrote them"
        )


def read_prompt_views(
    prompt_id: str, samples: str | Path, embeddings: str | Path, signatures: str | Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E (embeddings), raw A (signatures) and P (weights) of one prompt, row n = sample_idx n,
    with row counts checked against the sample table before any clustering work."""
    table = io.read_parquet(samples, required=["sample_idx", "weight"])
    n = len(table)
    if not np.array_equal(table["sample_idx"].to_numpy(), np.arange(n)):
        raise io.CorruptInputError(f"{samples}: sample_idx is not 0..N-1 in order")
    E = io.read_npz(embeddings, required=["embeddings"])["embeddings"]
    A, _ = read_signatures(signatures)
    for path, X in ((embeddings, E), (signatures, A)):
        if X.ndim != 2 or X.shape[0] != n:
            raise io.CorruptInputError(
                f"{path}: expected {n} rows (one per continuation of "
                f"prompt {prompt_id!r}), found shape {X.shape}"
            )
    return E.astype(np.float64), A, table["weight"].to_numpy(np.float64)
