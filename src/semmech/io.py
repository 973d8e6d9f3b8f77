"""Atomic, standard-format reads and writes shared by every stage.

Every writer goes through :func:`atomic_path`, so a killed job never leaves a
half-written file that a resumed run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from safetensors import safe_open
from safetensors.numpy import save as save_numpy

_UMASK = os.umask(0)
os.umask(_UMASK)


class CorruptInputError(ValueError):
    """An intermediate file exists but cannot be read or has the wrong shape."""


class SampleMismatchError(ValueError):
    """Sample tables do not fit the model (token ids, prompt tokenisation, model name)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(
                tmp_path, 0o666 & ~_UMASK
            )  # mkstemp creates 0600; outputs are for reviewers too
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Parquet without pandas' index and with a fixed writer, so bytes are reproducible."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")


def read_parquet(path: str | os.PathLike, required: list[str] | None = None) -> pd.DataFrame:
    """Read a table and name the file if it is corrupt or lacks columns."""
    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several unrelated types
        raise CorruptInputError(f"{path}: cannot read parquet table ({exc})") from exc
    return require_columns(df, required or [], str(path))


def require_columns(
    df: pd.DataFrame,
    columns: Sequence[str],
    what: str,
    *,
    error: type[Exception] = CorruptInputError,
    allow_empty: bool = True,
) -> pd.DataFrame:
    """``df`` itself if it is a DataFrame with all of ``columns`` (and at least one row unless
    ``allow_empty``); otherwise ``error`` naming ``what`` and the missing columns."""
    if not isinstance(df, pd.DataFrame):
        raise error(f"{what}: expected a DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise error(f"{what}: missing columns {missing} (has {list(df.columns)})")
    if not allow_empty and df.empty:
        raise error(f"{what}: no rows")
    return df


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except Exception as exc:
        raise CorruptInputError(f"{path}: cannot read JSON ({exc})") from exc


def write_yaml(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=True))


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Uncompressed npz: numpy's zip writer stamps no wall-clock time, so bytes repeat."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_npz(path: str | os.PathLike, required: list[str] | None = None) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as exc:
        raise CorruptInputError(f"{path}: cannot read npz ({exc})") from exc
    missing = [k for k in (required or []) if k not in out]
    if missing:
        raise CorruptInputError(f"{path}: missing arrays {missing}")
    return out


def write_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Save arrays (numpy, or CPU torch tensors in a numpy dtype) atomically, with a canonical
    header so that equal content gives equal bytes.

    safetensors writes its JSON header from a hash map, so key order (metadata and tensor
    entries) varies between processes; the header is re-serialised with sorted keys. Tensor
    data and offsets are untouched. Written through numpy, so this module needs no torch.
    """
    arrays = {
        k: np.ascontiguousarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        for k, v in tensors.items()
    }
    raw = save_numpy(arrays, metadata=dict(metadata) if metadata else None)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to 8-byte alignment
    with atomic_path(path, suffix=".safetensors") as tmp:
        tmp.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + n :])


def read_safetensors(
    path: str | os.PathLike, required: list[str] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Return (numpy arrays, metadata); name the file when it is unreadable or incomplete."""
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise CorruptInputError(f"{path}: cannot read safetensors ({exc})") from exc
    missing = [k for k in (required or []) if k not in tensors]
    if missing:
        raise CorruptInputError(f"{path}: missing tensors {missing}")
    return tensors, meta


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
