"""Transcoder sets in circuit-tracer's on-disk format: where a set comes from, what its files
must hold, and whether it fits a model. Torch-free: the Snakefile imports this module to check
a configured set at start-up, before any job runs.

On-disk format (circuit-tracer's ``transcoder_set``, the one format semmech reads and writes)
-------------------------------------------------------------------------------------------
A set is a directory (or a Hugging Face repo) holding ``config.yaml`` and one safetensors file
per decoder layer, ``layer_<l>.safetensors`` for every layer l = 0..n_layers-1.

``config.yaml`` keys read here: ``model_kind`` (must be ``transcoder_set``; a
``cross_layer_transcoder`` is refused), ``feature_input_hook`` (must be ``mlp.hook_in``, the
MLP module's input), ``feature_output_hook`` (must be ``mlp.hook_out``, the MLP module's
output) and, optionally, ``transcoders``: a list indexed by layer of file references, each a
path (relative paths are relative to the set's directory) or ``hf://org/repo/file[?revision=r]``.
Without that list the layer files are ``layer_<l>.safetensors`` next to ``config.yaml``.
Other keys (``model_name``, ``scan``, ``d_model``, ...) are kept but not interpreted.

Tensors of ``layer_<l>.safetensors`` (any float dtype; cast to the compute dtype on load):

==================================  ===================  ==========================================
name                                shape                meaning
==================================  ===================  ==========================================
``W_enc``                           [n_features, d]      encoder: z = x @ W_enc.T + b_enc
``b_enc``                           [n_features]         encoder bias
``W_dec``                           [n_features, d]      decoder: row f is what feature f writes
``b_dec``                           [d]                  decoder bias (a constant in attribution)
``activation_function.threshold``   [n_features]         optional; JumpReLU α = z · 1[z > threshold],
                                                         absent: α = ReLU(z)
``W_skip``                          [d, d]               optional; skip path: output += x @ W_skip.T
==================================  ===================  ==========================================

``x`` is the layer's MLP input (the normalised residual stream the MLP reads) and the
transcoder predicts the MLP module's output ŷ = α @ W_dec + b_dec (+ x @ W_skip.T). As
circuit-tracer requires, every layer has the same n_features, and ``W_skip`` is in every layer
or in none. ``W_enc`` and ``W_skip`` are laid out [out, in] (torch's ``F.linear``), the
transpose of the x @ W convention.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from safetensors import safe_open

from .. import io
from .source import model_config_json

CONFIG_FILE = "config.yaml"
LAYER_FILE = re.compile(r"^layer_(\d+)\.safetensors$")
MODEL_KIND = "transcoder_set"
INPUT_HOOK = "mlp.hook_in"
OUTPUT_HOOK = "mlp.hook_out"
THRESHOLD = "activation_function.threshold"
REQUIRED_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec")
OPTIONAL_TENSORS = (THRESHOLD, "W_skip")
ENCODER_SIDE = ("W_enc", "b_enc", "b_dec", THRESHOLD, "W_skip")  # resident; W_dec is mapped
FLOAT_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
CROSS_LAYER_FILE = re.compile(r"^W_(enc|dec)_\d+\.safetensors$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class BasisMismatchError(ValueError):
    """A feature basis does not fit the model (dimensions, layer indices)."""


class TranscoderFormatError(ValueError):
    """A transcoder set is unreadable, incomplete, of an unsupported kind, or a tensor has the
    wrong name or shape."""


class TranscoderNotFoundError(FileNotFoundError):
    """A transcoder set is neither a local directory nor in the offline Hugging Face cache."""


@dataclass(frozen=True)
class LayerFile:
    """One ``layer_<l>.safetensors``: its path and its tensors' (dtype, shape), from the header."""

    layer: int
    path: Path
    tensors: Mapping[str, tuple[str, tuple[int, ...]]]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name][1]

    @property
    def n_features(self) -> int:
        return self.shape("W_enc")[0]

    @property
    def d_model(self) -> int:
        return self.shape("W_enc")[1]

    def elements(self, names: tuple[str, ...]) -> int:
        total = 0
        for name in names:
            if name in self.tensors:
                n = 1
                for s in self.shape(name):
                    n *= s
                total += n
        return total


@dataclass(frozen=True)
class TranscoderSetSpec:
    """A resolved, format-checked transcoder set (nothing but headers read)."""

    source: str
    config: Mapping[str, Any]
    layers: tuple[LayerFile, ...] = field(default_factory=tuple)  # layers[l].layer == l

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_features(self) -> int:
        return self.layers[0].n_features

    @property
    def d_model(self) -> int:
        return self.layers[0].d_model

    @property
    def has_skip(self) -> bool:
        return "W_skip" in self.layers[0].tensors

    def memory_mb(self, bytes_per_element: int) -> int:
        """Memory a job holding this set needs: the encoder side of every layer (resident, in
        the compute dtype) plus one layer's decoder (decoders are memory-mapped and read row by
        row; at most one layer's rows are materialised at a time)."""
        resident = sum(lf.elements(ENCODER_SIDE) for lf in self.layers)
        decoder = max(lf.elements(("W_dec",)) for lf in self.layers)
        return int((resident + decoder) * bytes_per_element / 1e6) + 1


def is_hub_id(source: str) -> bool:
    """``org/name`` or ``org/name@revision`` (and not an existing local path)."""
    return bool(HUB_ID.match(source)) and not Path(source).expanduser().exists()


def resolve_transcoder_set(
    source: str | Path, allow_download: bool = False, n_layers: int | None = None
) -> TranscoderSetSpec:
    """Find a set (local directory, or Hugging Face repo id through the Hugging Face cache) and
    check its format from the file headers. Hub files are downloaded only with
    ``allow_download``; otherwise a set missing from the cache is a TranscoderNotFoundError.
    ``n_layers`` (the model's layer count) names the layer files of a hub repo whose
    config.yaml does not list them; without it the cached ones are used."""
    source = str(source)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TranscoderFormatError(
                f"transcoder set {source}: not a directory (a set is a directory with "
                f"{CONFIG_FILE} and layer_<l>.safetensors files)"
            )
        config = _read_config(path / CONFIG_FILE, source)
        _check_kind(config, source, [f.name for f in path.iterdir()])
        files = _local_files(config, path, source, allow_download)
    elif is_hub_id(source):
        repo, _, revision = source.partition("@")
        cfg_path = _hub_file(repo, CONFIG_FILE, revision or None, allow_download, source)
        config = _read_config(Path(cfg_path), source)
        snapshot = Path(cfg_path).parent
        _check_kind(config, source, [f.name for f in snapshot.iterdir()])
        files = _hub_files(config, repo, revision or None, snapshot, allow_download, n_layers)
    else:
        raise TranscoderNotFoundError(
            f"transcoder set {source!r} is neither a local directory nor a Hugging Face repo id "
            "(org/name); set attribution.transcoder_dir to one of them"
        )
    return TranscoderSetSpec(source=source, config=config, layers=_check_files(files, source))


def check_transcoder_set(spec: TranscoderSetSpec, d_model: int, n_layers: int) -> None:
    """The set fits the model: its d_model is the model's hidden size and it has exactly one
    layer file for each of the model's layers."""
    if spec.d_model != d_model:
        raise BasisMismatchError(
            f"transcoder set {spec.source} has d_model {spec.d_model} but the model's hidden "
            f"size is {d_model}; this set was made for a different model"
        )
    if spec.n_layers < n_layers:
        raise TranscoderFormatError(
            f"transcoder set {spec.source}: missing layer files for layers "
            f"{list(range(spec.n_layers, n_layers))}; the model has {n_layers} layers and a "
            "set needs one transcoder per layer"
        )
    if spec.n_layers > n_layers:
        raise BasisMismatchError(
            f"transcoder set {spec.source} has {spec.n_layers} layers but the model has "
            f"{n_layers}; this set was made for a different model"
        )


def check_configured_transcoders(
    source: str | Path,
    model_name: str,
    allow_download: bool = False,
    resources_dir: str | Path = ".",
) -> TranscoderSetSpec:
    """Resolve a configured set and check it against the model's config.json (hidden size and
    layer count) when that is on disk; nothing heavier than file headers is read, so this runs
    at start-up and at the top of each job, before any model loads."""
    model = model_config_json(model_name, resources_dir)
    d_model = n_layers = None
    if model is not None:
        d_model = model.get("hidden_size", model.get("n_embd"))
        n_layers = model.get("num_hidden_layers", model.get("n_layer"))
    spec = resolve_transcoder_set(source, allow_download, n_layers=n_layers)
    if d_model is not None and n_layers is not None:
        check_transcoder_set(spec, int(d_model), int(n_layers))
    return spec


def transcoder_set_config(model_name: str, scan: str, d_model: int, n_features: int) -> dict:
    """The ``config.yaml`` semmech writes next to its layer files (circuit-tracer's keys)."""
    return {
        "model_name": model_name,
        "model_kind": MODEL_KIND,
        "feature_input_hook": INPUT_HOOK,
        "feature_output_hook": OUTPUT_HOOK,
        "scan": scan,
        "d_model": int(d_model),
        "d_transcoder": int(n_features),
    }


# ---------------------------------------------------------------------------------------------


def _read_config(path: Path, source: str) -> dict[str, Any]:
    if not path.is_file():
        raise TranscoderFormatError(
            f"transcoder set {source}: no {CONFIG_FILE}; a set in circuit-tracer's format needs "
            f"one with model_kind: {MODEL_KIND}, feature_input_hook: {INPUT_HOOK}, "
            f"feature_output_hook: {OUTPUT_HOOK}"
        )
    try:
        io.verify_integrity(path, required=False)  # a set semmech wrote has a record
    except io.CorruptInputError as exc:
        raise TranscoderFormatError(str(exc)) from exc
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TranscoderFormatError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise TranscoderFormatError(f"{path}: expected a mapping of keys")
    return config


def _check_kind(config: Mapping[str, Any], source: str, names: list[str]) -> None:
    kind = config.get("model_kind")
    if kind == "cross_layer_transcoder" or any(CROSS_LAYER_FILE.match(n) for n in names):
        raise TranscoderFormatError(
            f"transcoder set {source} is a cross-layer transcoder (CLT), which is not "
            f"supported: the transcoder basis needs per-layer transcoders (model_kind: {MODEL_KIND})"
        )
    if kind != MODEL_KIND:
        raise TranscoderFormatError(
            f"transcoder set {source}: {CONFIG_FILE} has model_kind {kind!r}; expected {MODEL_KIND!r}"
        )
    hooks = (config.get("feature_input_hook"), config.get("feature_output_hook"))
    if hooks != (INPUT_HOOK, OUTPUT_HOOK):
        raise TranscoderFormatError(
            f"transcoder set {source}: hooks {hooks[0]!r} -> {hooks[1]!r} are not supported; the "
            f"transcoder basis reads the MLP input ({INPUT_HOOK}) and replaces the MLP output "
            f"({OUTPUT_HOOK})"
        )


def _listed(config: Mapping[str, Any], source: str) -> list[str] | None:
    listed = config.get("transcoders")
    if listed is None:
        return None
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise TranscoderFormatError(
            f"transcoder set {source}: {CONFIG_FILE} 'transcoders' must be a list of file paths"
        )
    return listed


def _local_files(
    config: Mapping[str, Any], directory: Path, source: str, allow_download: bool
) -> dict[int, Path]:
    listed = _listed(config, source)
    if listed is None:
        return {
            int(m.group(1)): f
            for f in sorted(directory.iterdir())
            if (m := LAYER_FILE.match(f.name))
        }
    files = {}
    for layer, ref in enumerate(listed):
        if ref.startswith("hf://"):
            repo, name, revision = _parse_hf_uri(ref, source)
            files[layer] = Path(_hub_file(repo, name, revision, allow_download, source))
        else:
            p = Path(ref).expanduser()
            files[layer] = p if p.is_absolute() else directory / p
    return files


def _hub_files(
    config: Mapping[str, Any],
    repo: str,
    revision: str | None,
    snapshot: Path,
    allow_download: bool,
    n_layers: int | None,
) -> dict[int, Path]:
    source = repo + (f"@{revision}" if revision else "")
    listed = _listed(config, source)
    if listed is None:
        if n_layers is None:
            return {
                int(m.group(1)): f
                for f in sorted(snapshot.iterdir())
                if (m := LAYER_FILE.match(f.name))
            }
        listed = [f"layer_{l}.safetensors" for l in range(n_layers)]
    files = {}
    for layer, ref in enumerate(listed):
        if ref.startswith("hf://"):
            r, name, rev = _parse_hf_uri(ref, source)
        else:
            r, name, rev = repo, ref, revision
        files[layer] = Path(_hub_file(r, name, rev, allow_download, source))
    return files


def _parse_hf_uri(uri: str, source: str) -> tuple[str, str, str | None]:
    parsed = urlparse(uri)
    parts = parsed.path.lstrip("/").split("/", 1)
    if not parsed.netloc or len(parts) != 2 or not parts[1]:
        raise TranscoderFormatError(
            f"transcoder set {source}: {uri!r} is not an hf://org/repo/file reference"
        )
    revision = parse_qs(parsed.query).get("revision", [None])[0] or None
    return f"{parsed.netloc}/{parts[0]}", parts[1], revision


def _hub_file(
    repo: str, filename: str, revision: str | None, allow_download: bool, source: str
) -> str:
    try:
        hit = try_to_load_from_cache(repo, filename, revision=revision)
    except Exception as exc:  # malformed repo ids raise validation errors
        raise TranscoderNotFoundError(f"transcoder set {source}: bad repo id ({exc})") from exc
    if isinstance(hit, str):
        return hit
    if not allow_download:
        raise TranscoderNotFoundError(
            f"transcoder set {source}: not a local directory, and {repo}/{filename} is not in "
            "the offline Hugging Face cache. Download the set once where the hub is reachable "
            f"(`huggingface-cli download {repo}`), point attribution.transcoder_dir at a local "
            "copy, or set model.allow_download: true"
        )
    return hf_hub_download(repo, filename, revision=revision)


def _header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    try:
        with safe_open(str(path), framework="numpy") as fh:
            out = {}
            for name in fh.keys():
                sl = fh.get_slice(name)
                out[name] = (str(sl.get_dtype()), tuple(int(s) for s in sl.get_shape()))
            return out
    except Exception as exc:
        raise TranscoderFormatError(f"{path}: cannot read safetensors ({exc})") from exc


def _check_files(files: Mapping[int, Path], source: str) -> tuple[LayerFile, ...]:
    if not files:
        raise TranscoderFormatError(f"transcoder set {source}: no layer_<l>.safetensors files")
    missing = sorted(set(range(max(files) + 1)) - set(files))
    if missing:
        raise TranscoderFormatError(
            f"transcoder set {source}: missing layer files for layers {missing}; a set needs "
            "one transcoder per layer, from layer 0"
        )
    layers = []
    for layer in sorted(files):
        path = Path(files[layer])
        if not path.is_file():
            raise TranscoderFormatError(
                f"transcoder set {source}: the file of layer {layer}, {path}, does not exist"
            )
        layers.append(LayerFile(layer, path, _check_tensors(path, _header(path))))
    first = layers[0]
    for lf in layers[1:]:
        if lf.shape("W_enc") != first.shape("W_enc"):
            raise TranscoderFormatError(
                f"transcoder set {source}: layer {lf.layer} has W_enc {lf.shape('W_enc')} but "
                f"layer 0 has {first.shape('W_enc')}; every layer needs the same n_features "
                "and d_model"
            )
        if ("W_skip" in lf.tensors) != ("W_skip" in first.tensors):
            raise TranscoderFormatError(
                f"transcoder set {source}: W_skip must be in every layer or in none "
                f"(layer 0: {'W_skip' in first.tensors}, layer {lf.layer}: {'W_skip' in lf.tensors})"
            )
    return tuple(layers)


def _check_tensors(
    path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]
) -> dict[str, tuple[str, tuple[int, ...]]]:
    missing = [k for k in REQUIRED_TENSORS if k not in tensors]
    if missing:
        raise TranscoderFormatError(
            f"{path}: missing tensors {missing}; a layer file needs {list(REQUIRED_TENSORS)} "
            f"(optional {list(OPTIONAL_TENSORS)})"
        )
    unknown = sorted(set(tensors) - set(REQUIRED_TENSORS) - set(OPTIONAL_TENSORS))
    if unknown:
        raise TranscoderFormatError(
            f"{path}: unexpected tensors {unknown}; a layer file holds only "
            f"{list(REQUIRED_TENSORS + OPTIONAL_TENSORS)}"
        )
    bad = sorted(k for k, (dt, _) in tensors.items() if dt not in FLOAT_DTYPES)
    if bad:
        raise TranscoderFormatError(f"{path}: tensors {bad} are not floating point")
    W_enc = tensors["W_enc"][1]
    if len(W_enc) != 2:
        raise TranscoderFormatError(f"{path}: W_enc must be 2-D [n_features, d_model], got {W_enc}")
    nf, dm = W_enc
    expected = {
        "b_enc": (nf,),
        "W_dec": (nf, dm),
        "b_dec": (dm,),
        THRESHOLD: (nf,),
        "W_skip": (dm, dm),
    }
    for key, shape in expected.items():
        if key in tensors and tensors[key][1] != shape:
            raise TranscoderFormatError(
                f"{path}: {key} has shape {tensors[key][1]}, expected {shape} "
                f"(n_features={nf}, d_model={dm} from W_enc [n_features, d_model])"
            )
    return tensors
