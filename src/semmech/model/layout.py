"""Generic model layout: the modules attribution and steering read and patch.

:class:`ModelLayout` finds the pieces attribution needs in any Llama-, Qwen-, Gemma- or
GPT-2-style ``transformers`` model from its module structure plus a small table of common
attribute names (no per-model code paths), and *verifies* each guess on a probe input: the MLP
output must equal its down projection's output, every normalisation must fit an RMS/Layer norm
formula, and the logits must equal the output embedding applied to the final hidden state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .loading import LoadedModel

# ---------------------------------------------------------------------------------------------
# Module discovery
# ---------------------------------------------------------------------------------------------

LAYER_LIST_NAMES = ("layers", "h", "blocks", "layer", "decoder.layers")
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
DOWN_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "w2", "wo", "fc_out")
QK_SEPARATE_NAMES = (("q_proj", "k_proj"), ("query", "key"), ("wq", "wk"), ("q", "k"))
# Fused projections whose output is [q | k | v] along the last dimension.
QKV_FUSED_NAMES = ("c_attn", "qkv_proj", "W_pack", "Wqkv")
POSITION_EMBEDDING_NAMES = ("wpe", "embed_positions", "position_embeddings")


class UnsupportedModelError(NotImplementedError):
    """The model's structure is outside what the generic layout discovery can verify."""


@dataclass(frozen=True)
class NormSpec:
    """A normalisation y = a ⊙ c(x)/σ(x) + b, identified by probing the module.

    ``center``: LayerNorm-style mean removal; ``gain_offset``: 1 for Gemma's (1 + w) gains;
    ``has_weight`` / ``has_bias``: whether a / b are parameters.
    """

    path: str
    center: bool
    eps: float
    has_weight: bool
    gain_offset: float
    has_bias: bool

    def gain(self, module: torch.nn.Module) -> torch.Tensor | None:
        if not self.has_weight:
            return None
        return module.weight.float() + self.gain_offset

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """σ(x) in float32 (the factor that linearisation freezes)."""
        xf = x.float()
        if self.center:
            xf = xf - xf.mean(-1, keepdim=True)
        return torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)

    def frozen(self, module: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """a ⊙ c(x)/σ for a given (frozen) σ, without the bias: the linear part of the norm."""
        xf = x.float()
        if self.center:
            xf = xf - xf.mean(-1, keepdim=True)
        out = xf / sigma
        g = self.gain(module)
        if g is not None:
            out = out * g
        return out.to(x.dtype)


@dataclass(frozen=True)
class QKSpec:
    """Where queries and keys come from: two separate modules, or the first ``width`` output
    columns of a fused [q | k | v] projection."""

    paths: tuple[str, ...]
    fused_width: int | None = None


@dataclass
class LayerLayout:
    index: int
    path: str
    attention: str
    mlp: str
    down: str
    qk: QKSpec


@dataclass
class ModelLayout:
    """Paths (dotted, relative to the HF model; the same path reaches the nnsight envoy) of the
    modules attribution and steering read and patch, verified on a probe input."""

    base: str
    embed: str
    position_embeddings: list[str]
    layers: list[LayerLayout]
    norms: dict[str, NormSpec]
    bias_modules: list[str]
    lm_head: str
    logit_softcap: float | None
    d_model: int
    d_mlp: int
    vocab_size: int
    order: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @classmethod
    def discover(cls, model: LoadedModel) -> ModelLayout:
        return _discover(model)

    def unembedding(self, hf: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W_U [V, d], b_U [V] or None): logits = h @ W_U.T + b_U before any softcap."""
        head = hf.get_submodule(self.lm_head)
        return head.weight, getattr(head, "bias", None)


def envoy(lm: Any, path: str) -> Any:
    """The nnsight envoy at a dotted module path (ModuleList items are numeric parts)."""
    obj = lm
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _child(module: torch.nn.Module, names: Iterable[str]) -> tuple[str, torch.nn.Module] | None:
    for name in names:
        try:
            return name, module.get_submodule(name)
        except AttributeError:
            continue
    return None


def _text_config(hf: torch.nn.Module) -> Any:
    cfg = hf.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _find_layers(hf: torch.nn.Module, base_path: str, n_layers: int) -> str:
    base = hf.get_submodule(base_path)
    for name in LAYER_LIST_NAMES:
        try:
            mod = base.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n_layers:
            return f"{base_path}.{name}"
    for name, mod in base.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n_layers and name:
            return f"{base_path}.{name}"
    raise UnsupportedModelError(
        f"found no list of {n_layers} decoder layers in {type(hf).__name__}"
    )


def _is_linear_with_bias(mod: torch.nn.Module) -> bool:
    bias = getattr(mod, "bias", None)
    if not isinstance(bias, torch.Tensor):
        return False
    name = type(mod).__name__
    return isinstance(mod, torch.nn.Linear) or name == "Conv1D"


def _probe_norm(path: str, mod: torch.nn.Module, d_model: int) -> NormSpec:
    """Identify y = a ⊙ c(x)/σ + b by comparing candidate formulas on random inputs."""
    param = next(mod.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    x = (
        torch.randn(4, 3, d_model, generator=gen)
        * torch.tensor([0.3, 1.0, 4.0, 20.0])[:, None, None]
    )
    x = (x + torch.randn(4, 1, 1, generator=gen)).to(device)  # a non-zero mean tells RMS from Layer
    weight = getattr(mod, "weight", None)
    bias = getattr(mod, "bias", None)
    eps_attr = next(
        (
            getattr(mod, a)
            for a in ("eps", "variance_epsilon", "epsilon")
            if isinstance(getattr(mod, a, None), float)
        ),
        None,
    )
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    best: tuple[float, NormSpec] | None = None
    with torch.no_grad():
        y = mod(x.to(dtype)).float()
        for center in (False, True):
            for has_weight, offset in ((True, 0.0), (True, 1.0), (False, 0.0)):
                if has_weight and not isinstance(weight, torch.Tensor):
                    continue
                for has_bias in (True, False) if isinstance(bias, torch.Tensor) else (False,):
                    for eps in [e for e in (eps_attr, 1e-5, 1e-6, 1e-8) if e is not None]:
                        spec = NormSpec(path, center, float(eps), has_weight, offset, has_bias)
                        pred = spec.frozen(mod, x, spec.scale(x)).float()
                        if has_bias:
                            pred = pred + bias.float()
                        err = float((pred - y).abs().max() / (y.abs().max() + 1e-6))
                        if best is None or err < best[0]:
                            best = (err, spec)
    if best is None or best[0] > tol:
        raise UnsupportedModelError(
            f"normalisation {path} ({type(mod).__name__}) fits neither an RMS nor a Layer norm "
            f"formula (best relative error {best[0] if best else float('nan'):.2e}); attribution "
            "cannot freeze its scale"
        )
    return best[1]


def _execution_order(
    hf: torch.nn.Module, paths: Sequence[str], ids: torch.Tensor
) -> tuple[dict[tuple[str, str], int], dict[str, list[torch.Tensor]]]:
    """Order in which the given modules start ("in") and finish ("out") on a probe forward,
    plus their first outputs/inputs (for the structural checks). nnsight must be asked for
    values in this order."""
    order: dict[tuple[str, str], int] = {}
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    counts: dict[str, int] = {}

    def first_tensor(obj: Any) -> torch.Tensor | None:
        if isinstance(obj, torch.Tensor):
            return obj
        if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], torch.Tensor):
            return obj[0]
        if hasattr(obj, "last_hidden_state"):
            return obj.last_hidden_state
        return None

    for path in paths:
        mod = hf.get_submodule(path)

        def pre(m, args, kwargs, path=path):
            counts[path] = counts.get(path, 0) + 1
            order.setdefault((path, "in"), len(order))
            x = args[0] if args else next(iter(kwargs.values()), None)
            seen.setdefault(path, [None, None])[0] = first_tensor(x)

        def post(m, args, kwargs, out, path=path):
            order.setdefault((path, "out"), len(order))
            seen.setdefault(path, [None, None])[1] = first_tensor(out)

        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(mod.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            logits = hf(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    twice = [p for p, c in counts.items() if c > 1]
    if twice:
        raise UnsupportedModelError(f"modules called more than once per forward: {twice[:3]}")
    missing = [p for p in paths if (p, "out") not in order]
    if missing:
        raise UnsupportedModelError(f"modules never called in a forward pass: {missing[:3]}")
    seen["__logits__"] = [None, logits]
    return order, seen


def _discover(model: LoadedModel) -> ModelLayout:
    hf = model.hf
    cfg = _text_config(hf)
    names = {id(m): n for n, m in hf.named_modules()}
    base_mod = hf.base_model
    base = names.get(id(base_mod))
    if not base:
        raise UnsupportedModelError(
            f"{type(hf).__name__} has no separate base model (decoder stack)"
        )
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    if not isinstance(n_layers, int):
        raise UnsupportedModelError("the model config does not state its number of layers")
    embed_mod = hf.get_input_embeddings()
    head_mod = hf.get_output_embeddings()
    if embed_mod is None or head_mod is None or id(embed_mod) not in names:
        raise UnsupportedModelError("the model exposes no input/output embeddings")
    embed, lm_head = names[id(embed_mod)], names.get(id(head_mod))
    if lm_head is None or not isinstance(getattr(head_mod, "weight", None), torch.Tensor):
        raise UnsupportedModelError("the output embedding is not a module with a weight matrix")
    vocab, d_model = head_mod.weight.shape
    list_path = _find_layers(hf, base, n_layers)

    layers: list[LayerLayout] = []
    norm_paths: list[str] = []
    for i in range(n_layers):
        lpath = f"{list_path}.{i}"
        layer = hf.get_submodule(lpath)
        att = _child(layer, ATTENTION_NAMES)
        mlp = _child(layer, MLP_NAMES)
        if att is None or mlp is None:
            raise UnsupportedModelError(
                f"layer {lpath} ({type(layer).__name__}) has no attention ({'/'.join(ATTENTION_NAMES)}) "
                f"or MLP ({'/'.join(MLP_NAMES)}) child"
            )
        down = _child(mlp[1], DOWN_NAMES)
        if down is None:
            raise UnsupportedModelError(
                f"MLP {lpath}.{mlp[0]} ({type(mlp[1]).__name__}) has no down projection named "
                f"{'/'.join(DOWN_NAMES)}"
            )
        apath = f"{lpath}.{att[0]}"
        qk = None
        for qn, kn in QK_SEPARATE_NAMES:
            if _child(att[1], [qn]) and _child(att[1], [kn]):
                qk = QKSpec((f"{apath}.{qn}", f"{apath}.{kn}"))
                break
        if qk is None:
            fused = _child(att[1], QKV_FUSED_NAMES)
            if fused is None:
                raise UnsupportedModelError(
                    f"attention {apath} ({type(att[1]).__name__}) has no recognisable query/key "
                    "projections; their outputs must be detached to freeze the pattern"
                )
            n_heads = cfg.num_attention_heads if hasattr(cfg, "num_attention_heads") else cfg.n_head
            head_dim = getattr(cfg, "head_dim", None) or d_model // n_heads
            n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
            qk = QKSpec((f"{apath}.{fused[0]}",), fused_width=(n_heads + n_kv) * head_dim)
        layers.append(
            LayerLayout(i, lpath, apath, f"{lpath}.{mlp[0]}", f"{lpath}.{mlp[0]}.{down[0]}", qk)
        )
        # Norms on the residual paths: direct children of the layer whose class is a norm.
        for cname, child in layer.named_children():
            if "norm" in type(child).__name__.lower():
                norm_paths.append(f"{lpath}.{cname}")
    base_children = dict(hf.get_submodule(base).named_children())
    final_norms = [
        f"{base}.{n}" for n, c in base_children.items() if "norm" in type(c).__name__.lower()
    ]
    if not final_norms:
        raise UnsupportedModelError(f"{type(base_mod).__name__} has no final normalisation child")
    norm_paths += final_norms
    pos_embeds = [
        f"{base}.{n}"
        for n in POSITION_EMBEDDING_NAMES
        if isinstance(base_children.get(n), torch.nn.Embedding)
    ]
    qk_paths = {p for lay in layers for p in lay.qk.paths if lay.qk.fused_width is None}
    bias_modules = [
        n
        for n, m in hf.get_submodule(base).named_modules()
        if _is_linear_with_bias(m) and f"{base}.{n}" not in qk_paths
    ]
    bias_modules = [f"{base}.{n}" for n in bias_modules]
    norms = {p: _probe_norm(p, hf.get_submodule(p), d_model) for p in norm_paths}

    # One probe forward: execution order of everything we touch, and structural checks.
    probe_ids = (
        torch.tensor(
            [[int(model.tokenizer.bos_token_id or 1)] + list(range(3, 9))], device=model.device
        )
        % vocab
    )
    paths = [embed, *pos_embeds, *norm_paths, *bias_modules, base]
    for lay in layers:
        paths += [lay.mlp, lay.down, *lay.qk.paths]
    paths = list(dict.fromkeys(paths))
    order, seen = _execution_order(hf, paths, probe_ids)
    d_mlp = None
    for lay in layers:
        mlp_out, down_out = seen[lay.mlp][1], seen[lay.down][1]
        if (
            mlp_out is None
            or down_out is None
            or mlp_out.shape != down_out.shape
            or not torch.equal(mlp_out, down_out)
        ):
            raise UnsupportedModelError(
                f"the output of {lay.mlp} is not the output of {lay.down}: the MLP does more after "
                "its down projection, so its hidden units do not reconstruct it"
            )
        width = seen[lay.down][0].shape[-1]
        if d_mlp is not None and width != d_mlp:
            raise UnsupportedModelError("MLP widths differ between layers")
        d_mlp = width
    softcap = getattr(cfg, "final_logit_softcapping", None)
    layout = ModelLayout(
        base=base,
        embed=embed,
        position_embeddings=pos_embeds,
        layers=layers,
        norms=norms,
        bias_modules=bias_modules,
        lm_head=lm_head,
        logit_softcap=float(softcap) if softcap else None,
        d_model=int(d_model),
        d_mlp=int(d_mlp),
        vocab_size=int(vocab),
        order=order,
    )
    hidden = seen[base][1]
    pred = logits_from_hidden(layout, hf, hidden[:, -1:].float())
    true = seen["__logits__"][1][:, -1:].float()
    tol = 1e-3 if model.dtype == torch.float32 else 3e-2
    if not torch.allclose(pred, true, rtol=tol, atol=tol * float(true.abs().max())):
        raise UnsupportedModelError(
            "the logits are not the output embedding applied to the final hidden state "
            "(plus the configured softcap); the demeaned-logit target cannot be linearised"
        )
    return layout


def logits_from_hidden(
    layout: ModelLayout, hf: torch.nn.Module, hidden: torch.Tensor
) -> torch.Tensor:
    """Full logits from final hidden states (with the model's final softcap, if any)."""
    w, b = layout.unembedding(hf)
    z = hidden @ w.float().T
    if b is not None:
        z = z + b.float()
    if layout.logit_softcap:
        z = layout.logit_softcap * torch.tanh(z / layout.logit_softcap)
    return z
