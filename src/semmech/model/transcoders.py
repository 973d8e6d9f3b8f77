"""Per-layer transcoders in memory: the encoder side resident on the compute device, the decoder
memory-mapped from its file and read row by row.

The on-disk format is circuit-tracer's (documented in :mod:`semmech.model.transcoder_format`,
which also finds and checks a set without torch). :func:`load_transcoder_set` reads a checked
set; :func:`write_transcoder_set` writes one (``semmech.model.transcoder_training`` uses it), so
a set semmech writes loads in circuit-tracer unchanged and vice versa.

A set of an 8B model is tens of GB, mostly encoders and decoders. Encoders are needed for every
token, so they are loaded (in the compute dtype). Decoders are only needed at the features that
are active: they stay in the page cache of a memory-mapped file and only the rows of active
features are read, one layer at a time (:class:`MappedDecoder`, and
:meth:`LayerTranscoder.linear_part`, whose backward re-reads the rows instead of keeping them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open

from .. import io
from .transcoder_format import (
    CONFIG_FILE,
    THRESHOLD,
    BasisMismatchError,
    TranscoderFormatError,
    TranscoderSetSpec,
    transcoder_set_config,
)

__all__ = [
    "BasisMismatchError",
    "LayerTranscoder",
    "MappedDecoder",
    "TranscoderFormatError",
    "load_transcoder_set",
    "write_transcoder_set",
]


class MappedDecoder:
    """``W_dec`` [n_features, d_model] of one layer file, memory-mapped: :meth:`rows` reads only
    the requested rows (from the page cache, shared between jobs on a node) and casts them to
    the compute device and dtype."""

    def __init__(self, path: str | Path, shape: tuple[int, int], device, dtype):
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.device = torch.device(device)
        self.dtype = dtype
        self._slice: Any = None
        self._handle: Any = None

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        if self._slice is None:
            self._handle = safe_open(str(self.path), framework="pt")
            self._slice = self._handle.get_slice("W_dec")
        idx = idx.detach().to("cpu", torch.long)
        if idx.numel() == 0:
            return torch.zeros(0, self.shape[1], device=self.device, dtype=self.dtype)
        return self._slice[idx].to(device=self.device, dtype=self.dtype)

    def full(self) -> torch.Tensor:
        return self.rows(torch.arange(self.shape[0]))

    def to(self, device, dtype) -> MappedDecoder:
        return MappedDecoder(self.path, self.shape, device, dtype)


@dataclass
class LayerTranscoder:
    """One layer's transcoder (circuit-tracer's layout: ``W_enc`` [F, d], ``W_skip`` [d, d] used
    as x @ W_skip.T). ``W_dec`` is a tensor (in memory) or a :class:`MappedDecoder`."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor | MappedDecoder
    b_dec: torch.Tensor
    threshold: torch.Tensor | None = None
    W_skip: torch.Tensor | None = None

    @property
    def n_features(self) -> int:
        return int(self.W_enc.shape[0])

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.W_enc, self.b_enc)

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """JumpReLU z · 1[z > threshold] with a threshold, else ReLU (circuit-tracer's)."""
        z = self.pre_activation(x)
        if self.threshold is not None:
            return z * (z > self.threshold).to(z.dtype)
        return torch.relu(z)

    def decoder_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Decoder rows d_f [k, d_model] of the given features, on the encoder's device/dtype."""
        if isinstance(self.W_dec, MappedDecoder):
            return self.W_dec.rows(idx)
        return self.W_dec[idx.to(self.W_dec.device)]

    def skip(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.W_skip is None else F.linear(x, self.W_skip)

    def linear_part(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """α @ W_dec + b_dec (+ x @ W_skip.T): the reconstruction, linear in α and x.

        Only the features active somewhere in ``alpha`` are decoded; gradients reach ``alpha``
        and ``x`` (through the skip path)."""
        flat = alpha.detach().reshape(-1, alpha.shape[-1])
        active = (flat != 0).any(0).nonzero().flatten()
        out = _DecodeActive.apply(alpha.index_select(-1, active), active, self) + self.b_dec
        skip = self.skip(x)
        return out if skip is None else out + skip

    def to(self, device: torch.device, dtype: torch.dtype) -> LayerTranscoder:
        def cast(t):
            return None if t is None else t.to(device, dtype)

        return LayerTranscoder(
            *(
                cast(getattr(self, k))
                for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip")
            )
        )

    @classmethod
    def inactive(cls, d_model: int, n_features: int) -> LayerTranscoder:
        """A transcoder with no active feature (all weights zero): its layer's MLP output is
        wholly the error node. Fills layers a partial training run did not cover."""
        return cls(
            W_enc=torch.zeros(n_features, d_model),
            b_enc=torch.zeros(n_features),
            W_dec=torch.zeros(n_features, d_model),
            b_dec=torch.zeros(d_model),
        )


class _DecodeActive(torch.autograd.Function):
    """a @ rows for the active features' decoder rows; the backward reads the rows again
    instead of saving them, so at most one layer's rows exist at a time."""

    @staticmethod
    def forward(ctx, a, active, tc):  # type: ignore[override]
        ctx.save_for_backward(active)
        ctx.tc = tc
        return a @ tc.decoder_rows(active).to(a.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (active,) = ctx.saved_tensors
        return g @ ctx.tc.decoder_rows(active).to(g.dtype).T, None, None


def load_transcoder_set(
    spec: TranscoderSetSpec, device: torch.device, dtype: torch.dtype
) -> dict[int, LayerTranscoder]:
    """The layers of a checked set: encoder side loaded in ``dtype`` on ``device``, decoders
    memory-mapped. A layer file with an integrity record (a set semmech trained) is checked
    against it first; sets made elsewhere have none and are read as they are."""
    out = {}
    for lf in spec.layers:
        try:
            io.verify_integrity(lf.path, required=False)
        except io.CorruptInputError as exc:
            raise TranscoderFormatError(str(exc)) from exc
        try:
            with safe_open(str(lf.path), framework="pt") as fh:
                t = {k: fh.get_tensor(k).to(device, dtype) for k in fh.keys() if k != "W_dec"}
        except Exception as exc:
            raise TranscoderFormatError(f"{lf.path}: cannot read safetensors ({exc})") from exc
        out[lf.layer] = LayerTranscoder(
            W_enc=t["W_enc"],
            b_enc=t["b_enc"],
            W_dec=MappedDecoder(lf.path, lf.shape("W_dec"), device, dtype),
            b_dec=t["b_dec"],
            threshold=t.get(THRESHOLD),
            W_skip=t.get("W_skip"),
        )
    return out


def layer_tensors(tc: LayerTranscoder) -> dict[str, torch.Tensor]:
    """The tensors of one layer file (float32, CPU), named as circuit-tracer names them."""
    W_dec = tc.W_dec.full() if isinstance(tc.W_dec, MappedDecoder) else tc.W_dec
    tensors = {"W_enc": tc.W_enc, "b_enc": tc.b_enc, "W_dec": W_dec, "b_dec": tc.b_dec}
    if tc.threshold is not None:
        tensors[THRESHOLD] = tc.threshold
    if tc.W_skip is not None:
        tensors["W_skip"] = tc.W_skip
    return {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}


def write_transcoder_set(
    transcoders: Mapping[int, LayerTranscoder],
    out_dir: str | Path,
    model_name: str,
    scan: str,
    extra_config: Mapping[str, Any] | None = None,
) -> None:
    """Write a complete set (layers 0..n-1) in circuit-tracer's format: ``layer_<l>.safetensors``
    per layer and ``config.yaml`` (atomically, file by file)."""
    layers = sorted(transcoders)
    if layers != list(range(len(layers))) or not layers:
        raise ValueError(f"a transcoder set needs layers 0..n-1, got {layers}")
    first = transcoders[0]
    widths = {transcoders[l].W_enc.shape for l in layers}
    skips = {transcoders[l].W_skip is not None for l in layers}
    if len(widths) > 1 or len(skips) > 1:
        raise ValueError(
            f"every layer of a set needs the same W_enc shape and W_skip in all or none; "
            f"got shapes {sorted(widths)} and skip {sorted(skips)}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for l in layers:
        io.write_safetensors(layer_tensors(transcoders[l]), out_dir / f"layer_{l}.safetensors")
    config = transcoder_set_config(model_name, scan, first.W_enc.shape[1], first.n_features)
    io.write_yaml({**config, **(extra_config or {})}, out_dir / CONFIG_FILE)
