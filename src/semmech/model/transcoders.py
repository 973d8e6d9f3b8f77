"""Per-layer transcoders and their file format.

Transcoder file format
----------------------
A transcoder directory holds one safetensors file per covered layer, named
``layer_<l>.safetensors`` (``l`` = 0-based decoder-layer index, no zero padding). Tensors (any
float dtype; cast to the model's dtype on load):

==========  =========================  ===================================================
name        shape                      meaning
==========  =========================  ===================================================
W_enc       [d_model, n_features]      encoder: pre-activation z = x @ W_enc + b_enc
b_enc       [n_features]               encoder bias
W_dec       [n_features, d_model]      decoder: row f is the vector d_f feature f writes
b_dec       [d_model]                  decoder bias (a constant term in attribution)
threshold   [n_features]  (optional)   JumpReLU: α = z · 1[z > threshold]; absent: α = ReLU(z)
W_skip      [d_model, d_model] (opt.)  linear skip path: output += x @ W_skip
==========  =========================  ===================================================

``x`` is the input of the layer's MLP module (the normalised residual stream the MLP reads) and
the transcoder predicts that module's output: ŷ = α @ W_dec + b_dec (+ x @ W_skip). The optional
string metadata ``layer`` (must equal ``l``), ``activation`` (``relu`` | ``jumprelu``; must agree
with the presence of ``threshold``), ``model``, ``d_model`` and ``n_features`` are checked when
present. Layers without a file have no feature nodes: their whole MLP output is the error node.
``semmech.transcoder_training`` writes this format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import io


class BasisMismatchError(ValueError):
    """A feature basis does not fit the model (dimensions, layer indices)."""


class TranscoderFormatError(ValueError):
    """A transcoder file is unreadable, lacks a tensor, or has a tensor of the wrong shape."""


REQUIRED_TRANSCODER_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec")
OPTIONAL_TRANSCODER_TENSORS = ("threshold", "W_skip")
LAYER_FILE = re.compile(r"^layer_(\d+)\.safetensors$")


@dataclass
class LayerTranscoder:
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    threshold: torch.Tensor | None = None
    W_skip: torch.Tensor | None = None

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_enc + self.b_enc

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pre_activation(x)
        if self.threshold is not None:
            return z * (z > self.threshold).to(z.dtype)
        return torch.relu(z)

    def linear_part(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """α @ W_dec + b_dec (+ x @ W_skip): the reconstruction, linear in α and x."""
        out = alpha @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            out = out + x @ self.W_skip
        return out

    def to(self, device: torch.device, dtype: torch.dtype) -> LayerTranscoder:
        def cast(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return LayerTranscoder(
            *(
                cast(getattr(self, k))
                for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip")
            )
        )


def read_transcoder_file(
    path: str | Path, d_model: int | None = None, layer: int | None = None
) -> LayerTranscoder:
    """Read and validate one ``layer_<l>.safetensors`` file (see the module docstring)."""
    path = Path(path)
    try:
        # user-supplied transcoders have no integrity record; trained ones do and are checked
        arrays, meta = io.read_safetensors(path, required_record=False)
    except io.CorruptInputError as exc:
        raise TranscoderFormatError(str(exc)) from exc
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    missing = [k for k in REQUIRED_TRANSCODER_TENSORS if k not in tensors]
    if missing:
        raise TranscoderFormatError(
            f"{path}: missing tensors {missing}; a transcoder file needs "
            f"{list(REQUIRED_TRANSCODER_TENSORS)} (optional {list(OPTIONAL_TRANSCODER_TENSORS)})"
        )
    unknown = sorted(
        set(tensors) - set(REQUIRED_TRANSCODER_TENSORS) - set(OPTIONAL_TRANSCODER_TENSORS)
    )
    if unknown:
        raise TranscoderFormatError(f"{path}: unexpected tensors {unknown}")
    W_enc = tensors["W_enc"]
    if W_enc.dim() != 2:
        raise TranscoderFormatError(
            f"{path}: W_enc must be 2-D [d_model, n_features], got {tuple(W_enc.shape)}"
        )
    dm, nf = W_enc.shape
    if d_model is not None and dm != d_model:
        raise BasisMismatchError(
            f"{path}: W_enc has d_model {dm} but the model's hidden size is {d_model}; "
            "this transcoder was trained for a different model"
        )
    expected = {
        "b_enc": (nf,),
        "W_dec": (nf, dm),
        "b_dec": (dm,),
        "threshold": (nf,),
        "W_skip": (dm, dm),
    }
    for key, shape in expected.items():
        if key in tensors and tuple(tensors[key].shape) != shape:
            raise TranscoderFormatError(
                f"{path}: {key} has shape {tuple(tensors[key].shape)}, expected {shape} "
                f"(d_model={dm}, n_features={nf} from W_enc)"
            )
    if not all(t.is_floating_point() for t in tensors.values()):
        raise TranscoderFormatError(f"{path}: all transcoder tensors must be floating point")
    if layer is not None and "layer" in meta and str(meta["layer"]) != str(layer):
        raise TranscoderFormatError(
            f"{path}: metadata says layer {meta['layer']} but the file name says {layer}"
        )
    act = meta.get("activation")
    if act is not None and act not in ("relu", "jumprelu"):
        raise TranscoderFormatError(f"{path}: metadata activation {act!r} is not relu or jumprelu")
    if act is not None and (act == "jumprelu") != ("threshold" in tensors):
        raise TranscoderFormatError(
            f"{path}: activation {act!r} disagrees with the presence of 'threshold'"
        )
    return LayerTranscoder(
        W_enc=W_enc,
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        threshold=tensors.get("threshold"),
        W_skip=tensors.get("W_skip"),
    )


def write_transcoder_file(
    tc: LayerTranscoder, path: str | Path, layer: int, model: str = ""
) -> None:
    """Write one layer's transcoder in the documented format (atomically)."""
    tensors = {
        k: getattr(tc, k).detach().float().cpu()
        for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip")
        if getattr(tc, k) is not None
    }
    meta = {
        "layer": str(layer),
        "activation": "jumprelu" if tc.threshold is not None else "relu",
        "model": model,
        "d_model": str(tc.W_enc.shape[0]),
        "n_features": str(tc.W_enc.shape[1]),
    }
    io.write_safetensors(tensors, path, metadata=meta)
