"""Feature bases for attribution and steering (METHOD §3, §7), and the generic model layout
they rely on.

A *feature basis* says what a node at (layer l, prefix position p, feature f) is: an activation
α read from the running model and a decoder vector d ∈ R^d_model that the node writes into the
MLP output. Two bases exist:

* ``mlp_neurons`` (default): the MLP hidden units. α is the activation that feeds the down
  projection (for gated MLPs the product act(gate)·up), d the matching down-projection column.
  The MLP output is exactly Σ_f α_f d_f + bias, so there are no error nodes.
* ``transcoder``: a set of per-layer transcoders in circuit-tracer's format (a local directory
  or a Hugging Face repo id). α = the transcoder's activation on the MLP input, d = its decoder
  row. What the transcoder misses, MLP output − reconstruction, is one *error node* per
  (layer, position).
The format is documented in :mod:`semmech.model.transcoder_format`, loading in
:mod:`semmech.model.transcoders`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch

from .layout import ModelLayout
from .loading import LoadedModel
from .transcoder_format import (
    BasisMismatchError,
    TranscoderSetSpec,
    check_transcoder_set,
    resolve_transcoder_set,
)
from .transcoders import LayerTranscoder, load_transcoder_set

# ---------------------------------------------------------------------------------------------
# Feature bases
# ---------------------------------------------------------------------------------------------


class FeatureBasis(ABC):
    """Nodes (layer, position, feature) with activation α and decoder vector d.

    ``site`` names the tensor α is computed from: ``"down_in"`` (the down projection's input)
    or ``"mlp_in"`` (the MLP module's input). Steering and attribution read that tensor in the
    running pass and call :meth:`encode`, so α always reflects the pass being traced.
    """

    name: str
    site: str
    has_error_nodes: bool

    def __init__(self, layout: ModelLayout):
        self.layout = layout

    @abstractmethod
    def feature_layers(self) -> list[int]:
        """Layers that have feature nodes (ascending)."""

    @abstractmethod
    def n_features(self, layer: int) -> int: ...

    @abstractmethod
    def encode(self, layer: int, site_value: torch.Tensor) -> torch.Tensor:
        """α [..., n_features] from the site tensor [..., width]."""

    @abstractmethod
    def decoder(self, layer: int) -> torch.Tensor:
        """The decoder matrix [n_features, d_model]; row f is d_f."""

    def site_path(self, layer: int) -> str:
        lay = self.layout.layers[layer]
        return lay.down if self.site == "down_in" else lay.mlp

    def directions(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """Decoder rows d_f for the given feature indices [k, d_model]."""
        return self.decoder(layer)[features]


class MlpNeuronBasis(FeatureBasis):
    """MLP hidden units: exact, so no error nodes."""

    name = "mlp_neurons"
    site = "down_in"
    has_error_nodes = False

    def __init__(self, layout: ModelLayout, hf: torch.nn.Module):
        super().__init__(layout)
        self._decoders = [
            _down_columns(hf.get_submodule(lay.down), layout.d_mlp, verify=lay.index == 0)
            for lay in layout.layers
        ]

    def feature_layers(self) -> list[int]:
        return list(range(self.layout.n_layers))

    def n_features(self, layer: int) -> int:
        return self.layout.d_mlp

    def encode(self, layer: int, site_value: torch.Tensor) -> torch.Tensor:
        return site_value

    def decoder(self, layer: int) -> torch.Tensor:
        return self._decoders[layer]


def _down_columns(down: torch.nn.Module, d_mlp: int, verify: bool = True) -> torch.Tensor:
    """[d_mlp, d_model]: what each hidden unit writes, i.e. down(e_f) − down(0).

    A view of the weight for nn.Linear ([out, in], so transposed) and GPT-2's Conv1D ([in, out]),
    checked against a probe of the module (first layer); any other linear module is probed.
    Computed outside any trace: calling a module inside an nnsight trace would be traced too.
    """
    weight = getattr(down, "weight", None)
    view = None
    if isinstance(down, torch.nn.Linear):
        view = weight.detach().T
    elif type(down).__name__ == "Conv1D":
        view = weight.detach()
    if view is not None and not verify:
        return view
    p = next(down.parameters())
    eye = torch.eye(d_mlp, device=p.device, dtype=p.dtype)
    with torch.no_grad():
        probed = (down(eye) - down(torch.zeros_like(eye[:1]))).detach()
    if (
        view is None
        or view.shape != probed.shape
        or not torch.allclose(
            view.float(), probed.float(), rtol=1e-2, atol=1e-2 * float(probed.abs().max())
        )
    ):
        return probed
    return view


class TranscoderBasis(FeatureBasis):
    """Per-layer transcoders; the MLP output minus the reconstruction is an error node."""

    name = "transcoder"
    site = "mlp_in"
    has_error_nodes = True

    def __init__(self, layout: ModelLayout, transcoders: dict[int, LayerTranscoder]):
        super().__init__(layout)
        for layer in transcoders:
            if not 0 <= layer < layout.n_layers:
                raise BasisMismatchError(
                    f"transcoder for layer {layer}, but the model has layers 0..{layout.n_layers - 1}"
                )
        self.transcoders = dict(sorted(transcoders.items()))

    @classmethod
    def load(
        cls,
        layout: ModelLayout,
        source: str | Path | TranscoderSetSpec,
        device: torch.device,
        dtype: torch.dtype,
        allow_download: bool = False,
    ) -> TranscoderBasis:
        """A set in circuit-tracer's format (a local directory or a Hugging Face repo id, or
        an already resolved spec), checked against the model before any tensor is read."""
        spec = (
            source
            if isinstance(source, TranscoderSetSpec)
            else resolve_transcoder_set(source, allow_download, n_layers=layout.n_layers)
        )
        check_transcoder_set(spec, layout.d_model, layout.n_layers)
        return cls(layout, load_transcoder_set(spec, device, dtype))

    def feature_layers(self) -> list[int]:
        return list(self.transcoders)

    def n_features(self, layer: int) -> int:
        return self.transcoders[layer].n_features

    def encode(self, layer: int, site_value: torch.Tensor) -> torch.Tensor:
        return self.transcoders[layer].activation(site_value)

    def decoder(self, layer: int) -> torch.Tensor:
        """The whole decoder of a layer (read from its file; for small sets and tests)."""
        tc = self.transcoders[layer]
        return tc.decoder_rows(torch.arange(tc.n_features))

    def directions(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        return self.transcoders[layer].decoder_rows(features)


def load_basis(
    name: str,
    model: LoadedModel,
    layout: ModelLayout | None = None,
    transcoder_dir: str | Path | TranscoderSetSpec | None = None,
    allow_download: bool = False,
) -> FeatureBasis:
    """Build a basis by its config name (``attribution.basis``); ``transcoder_dir`` is a set in
    circuit-tracer's format: a local directory or a Hugging Face repo id."""
    layout = layout or ModelLayout.discover(model)
    if name == "mlp_neurons":
        return MlpNeuronBasis(layout, model.hf)
    if name == "transcoder":
        if not transcoder_dir:
            raise ValueError("attribution.basis is 'transcoder' but no transcoder set was given")
        return TranscoderBasis.load(
            layout, transcoder_dir, model.device, model.dtype, allow_download
        )
    raise ValueError(f"unknown feature basis {name!r}; expected mlp_neurons or transcoder")
