"""Atomic, standard-format reads and writes shared by every stage, with an integrity record.

Every writer goes through :func:`atomic_path`, so a killed job never leaves a
half-written file that a resumed run would mistake for a finished one. The same step records
the file's sha256 beside it, in ``<file>.sha256`` (``sha256sum`` format, so
``sha256sum -c <file>.sha256`` checks it too). Every reader verifies that record before it
parses the file and names the file when they differ, so an intermediate changed after it was
written (a flipped byte, a copy from another run) stops the next stage instead of flowing
silently into the tables; the manifest records these hashes rather than re-hashing the disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
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

SIDECAR_SUFFIX = ".sha256"
_SIDECAR_LINE = re.compile(r"([0-9a-f]{64})  (.+)\n")  # sha256sum's "<hex>  <name>" line


class CorruptInputError(ValueError):
    """An intermediate file exists but cannot be read or has the wrong shape."""


class IntegrityError(CorruptInputError):
    """A file does not match the sha256 recorded when it was written, or has no record."""


class SampleMismatchError(ValueError):
    """Sample tables do not fit the model (token ids, prompt tokenisation, model name)."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<file>.sha256``: the integrity record written with ``path``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def is_sidecar(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the integrity record of a file that exists beside it."""
    path = Path(path)
    return (
        path.name.endswith(SIDECAR_SUFFIX)
        and path.with_name(path.name.removesuffix(SIDECAR_SUFFIX)).is_file()
    )


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 recorded for ``path`` when it was written; None when it has no record."""
    side = sidecar_path(path)
    try:
        text = side.read_text()
    except FileNotFoundError:
        return None
    except Exception as exc:
        raise IntegrityError(f"{path}: cannot read its integrity record {side} ({exc})") from exc
    m = _SIDECAR_LINE.fullmatch(text)
    if m is None or m.group(2) != Path(path).name:
        raise IntegrityError(
            f"{path}: its integrity record {side} is malformed (expected one line "
            f"'<sha256>  {Path(path).name}')"
        )
    return m.group(1)


def verify_integrity(path: str | os.PathLike, required: bool = True) -> str | None:
    """Check ``path`` against the sha256 recorded when it was written; return that hash.

    A file without a record fails when ``required`` (every intermediate of the workflow has
    one); files from outside the workflow (user-supplied transcoders) pass ``required=False``
    and are still checked when a record exists.
    """
    recorded = recorded_sha256(path)
    if recorded is None:
        if required and Path(path).is_file():
            raise IntegrityError(
                f"{path}: no integrity record {sidecar_path(path).name} beside it (every "
                "intermediate is written with its sha256); re-run the rule that makes this file"
            )
        return None
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise CorruptInputError(f"{path}: cannot read ({exc})") from exc
    if actual != recorded:
        raise IntegrityError(
            f"{path}: content does not match the sha256 recorded when it was written "
            f"({sidecar_path(path).name}: {recorded[:12]}..., file: {actual[:12]}...); the file "
            "changed after it was written. Re-run the rule that makes it (delete the file, or "
            "snakemake --forcerun <rule>)"
        )
    return recorded


def write_sidecar(path: str | os.PathLike, digest: str) -> Path:
    """Write the integrity record of ``path`` atomically (used by :func:`atomic_path`)."""
    path = Path(path)
    side = sidecar_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{side.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{digest}  {path.name}\n")
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, side)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return side


def remove_orphan_sidecars(root: str | os.PathLike) -> list[Path]:
    """Delete integrity records whose file is gone (Snakemake removes a failed job's outputs
    but knows nothing of their records); return what was removed."""
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for side in sorted(root.rglob("*" + SIDECAR_SUFFIX)):
        if side.is_file() and not side.with_name(side.name.removesuffix(SIDECAR_SUFFIX)).exists():
            side.unlink()
            removed.append(side)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success only, rename it over ``path`` and
    record its sha256 in ``<path>.sha256`` (the record follows the data immediately: a crash in
    between leaves a file whose record is missing or stale, which every reader refuses)."""
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
        digest = sha256_file(tmp_path)
        os.replace(tmp_path, path)
        write_sidecar(path, digest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Parquet without pandas' index and with a fixed writer, so bytes are reproducible."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")


def read_parquet(path: str | os.PathLike, required: list[str] | None = None) -> pd.DataFrame:
    """Read a table and name the file if it is corrupt, changed since written, or lacks
    columns."""
    verify_integrity(path)
    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several unrelated types
        raise CorruptInputError(f"{path}: cannot read parquet table ({exc})") from exc
    return require_columns(df, required or [], str(path))


def write_csv(df: pd.DataFrame, path: str | os.PathLike, float_format: str | None = None) -> None:
    """A table as CSV without pandas' index and with "\n" line ends, atomically, with its
    integrity record; floats at full precision (pandas' shortest round trip) unless
    ``float_format`` says otherwise."""
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n", float_format=float_format)


def read_csv(path: str | os.PathLike, required: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV table the workflow wrote (integrity record checked); name the file when it
    is corrupt, changed since written, or lacks columns."""
    verify_integrity(path)
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise CorruptInputError(f"{path}: cannot read CSV table ({exc})") from exc
    return require_columns(df, list(required), str(path))


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


def read_json(path: str | os.PathLike, required_record: bool = True) -> Any:
    """Parse a JSON file after checking it against its integrity record."""
    verify_integrity(path, required=required_record)
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
    verify_integrity(path)
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
    path: str | os.PathLike, required: list[str] | None = None, required_record: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Return (numpy arrays, metadata); name the file when it is unreadable, incomplete or
    changed since written (``required_record=False``: files made outside the workflow may
    lack an integrity record)."""
    verify_integrity(path, required=required_record)
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
