"""Tiny random transformers for fast tests: Llama, Qwen2, Gemma, Gemma 2 and GPT-2 built from
configs, plus a word-level tokenizer with BOS/EOS and a chat template.

Weights are re-drawn with a larger scale than Hugging Face's default initialisation (and norm
weights and biases are randomised too), so attention patterns, normalisation scales and MLP
non-linearities all matter: a linearisation that forgot to freeze one of them fails the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

WORDS = (
    "who won the cup world first president was is what where when why how did a an of in on "
    "to for and or it he she they team game city planet element car drink island language "
    "coffee snake java mercury python bank river money fast jaguar speed tall building tower "
    "capital move year time red blue green one two three four five yes no user assistant : , "
    ". ? !"
).split()
SPECIALS = ["<unk>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant : {% endif %}"
)


def tiny_tokenizer() -> Any:
    """A whitespace word-level tokenizer: ids 0..2 are <unk>, <s> (BOS), </s> (EOS)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(dict.fromkeys(WORDS)))}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=64,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _randomise(model: torch.nn.Module, seed: int, scale: float) -> None:
    """Redraw every weight so the model is far from the near-linear regime of a fresh init."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            lname = name.lower()
            if "norm" in lname or "ln_" in lname:
                # Norm gains around 1 (Gemma stores gain - 1, which a small offset also covers).
                base = 0.0 if _stores_offset(model) and name.endswith("weight") else 1.0
                if name.endswith("bias"):
                    base = 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else 1
                if (
                    type(model).__name__.startswith("GPT2")
                    and p.dim() == 2
                    and "wte" not in name
                    and "wpe" not in name
                ):
                    fan_in = p.shape[0]  # Conv1D stores (in, out)
                std = (
                    scale / max(fan_in, 1) ** 0.5
                    if p.dim() > 1
                    and "embed" not in lname
                    and "wte" not in name
                    and "wpe" not in name
                    else 0.5
                )
                p.copy_(std * torch.randn(p.shape, generator=gen))


def _stores_offset(model: torch.nn.Module) -> bool:
    return "gemma" in type(model).__name__.lower()


def _build(config: Any, cls: Callable, seed: int, scale: float, name: str):
    from semmech.model.loading import wrap_model

    torch.manual_seed(seed)
    config._attn_implementation = (
        "eager" if getattr(config, "model_type", "") == "gemma2" else "sdpa"
    )
    hf = cls(config).to(torch.float32)
    _randomise(hf, seed, scale)
    tokenizer = tiny_tokenizer()
    return wrap_model(hf, tokenizer, name=name)


def _common(vocab: int) -> dict[str, Any]:
    return dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def tiny_llama(
    seed: int = 0,
    n_layers: int = 3,
    hidden: int = 32,
    intermediate: int = 64,
    tie: bool = False,
    scale: float = 1.5,
):
    """A 3-layer random Llama (grouped-query attention, gated SiLU MLP, RMSNorm, RoPE)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        **_common(len(tiny_tokenizer())),
    )
    return _build(cfg, LlamaForCausalLM, seed, scale, "tiny-llama")


def tiny_qwen2(
    seed: int = 0, n_layers: int = 2, hidden: int = 32, intermediate: int = 48, scale: float = 1.5
):
    """A random Qwen2 (biases on q/k/v, tied embeddings)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        **_common(len(tiny_tokenizer())),
    )
    return _build(cfg, Qwen2ForCausalLM, seed, scale, "tiny-qwen2")


def tiny_gemma(
    seed: int = 0, n_layers: int = 2, hidden: int = 32, intermediate: int = 64, scale: float = 1.5
):
    """A random Gemma (gain-minus-one RMSNorm, embedding scaled by sqrt(d), GeLU gated MLP)."""
    from transformers import GemmaConfig, GemmaForCausalLM

    cfg = GemmaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=64,
        **_common(len(tiny_tokenizer())),
    )
    return _build(cfg, GemmaForCausalLM, seed, scale, "tiny-gemma")


def tiny_gemma2(
    seed: int = 0, n_layers: int = 2, hidden: int = 32, intermediate: int = 64, scale: float = 1.5
):
    """A random Gemma 2 (post-norms around attention and MLP, attention and final-logit softcaps)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        sliding_window=4,
        final_logit_softcapping=3.0,
        attn_logit_softcapping=5.0,
        **_common(len(tiny_tokenizer())),
    )
    return _build(cfg, Gemma2ForCausalLM, seed, scale, "tiny-gemma2")


def tiny_gpt2(seed: int = 0, n_layers: int = 2, hidden: int = 32, scale: float = 1.5):
    """A random GPT-2 (fused Conv1D qkv, LayerNorm with bias, learned position embeddings)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_embd=hidden,
        n_layer=n_layers,
        n_head=4,
        n_positions=64,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        **_common(len(tiny_tokenizer())),
    )
    return _build(cfg, GPT2LMHeadModel, seed, scale, "tiny-gpt2")


TINY_MODELS: dict[str, Callable[..., Any]] = {
    "llama": tiny_llama,
    "qwen2": tiny_qwen2,
    "gemma": tiny_gemma,
    "gemma2": tiny_gemma2,
    "gpt2": tiny_gpt2,
}


# --- the paper's embedder, in miniature ---------------------------------------------------------

EMBEDDINGGEMMA_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
}


def tiny_embeddinggemma(path: Any, corpus: list[str], seed: int = 0, hidden: int = 32) -> Any:
    """A random EmbeddingGemma stand-in saved as a sentence-transformers directory.

    Same architecture and layout as google/embeddinggemma-300m: a ``Gemma3TextModel`` with
    bidirectional attention (sliding and full layers) at the root of the directory, then
    ``1_Pooling`` (mean), ``2_Dense``, ``3_Dense`` and ``4_Normalize`` modules, and the
    model card's task prompts. Its tokenizer is Gemma-like: pad/eos/bos/unk = 0/1/2/3,
    SentencePiece-style ``▁`` spaces with BPE merges trained on ``corpus``, BOS and EOS added
    around every text, and ``padding_side`` left (our encoder must not care).
    """
    from pathlib import Path

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_models
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import Gemma3TextConfig, Gemma3TextModel, PreTrainedTokenizerFast

    path = Path(path)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"]
    )
    tok.train_from_iterator(list(corpus) * 10, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=2048,
    )
    cfg = Gemma3TextConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        use_bidirectional_attention=True,
        query_pre_attn_scalar=16,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    cfg.architectures = ["Gemma3TextModel"]
    torch.manual_seed(seed)
    model = Gemma3TextModel(cfg).to(torch.float32)
    _randomise(model, seed, 1.5)
    hf_dir = path.with_name(path.name + ".hf")
    model.save_pretrained(hf_dir)
    fast.save_pretrained(hf_dir)
    st = SentenceTransformer(
        modules=[
            st_models.Transformer(str(hf_dir), max_seq_length=2048),
            st_models.Pooling(hidden, "mean"),
            st_models.Dense(
                hidden, 4 * hidden, bias=False, activation_function=torch.nn.Identity()
            ),
            st_models.Dense(
                4 * hidden, hidden, bias=False, activation_function=torch.nn.Identity()
            ),
            st_models.Normalize(),
        ],
        prompts=EMBEDDINGGEMMA_PROMPTS,
        device="cpu",
    )
    st.save(str(path))
    return path


# --- the paper's language model and transcoders, in miniature -----------------------------------

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<unk>"]
# Qwen3's template in miniature: one user turn, and with enable_thinking=False the empty
# thinking block that Qwen3 puts after the generation prompt.
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
    "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant "
    "{% if enable_thinking is defined and enable_thinking is false %}<think> </think> "
    "{% endif %}{% endif %}"
)


def tiny_qwen3_chat(path: Any, words: list[str], seed: int = 0, hidden: int = 32) -> Any:
    """A random 2-layer ``Qwen3ForCausalLM`` saved with a word-level tokenizer whose chat
    template honours ``enable_thinking``; like Qwen3: no BOS, pad ``<|endoftext|>``, EOS
    ``<|im_end|>``."""
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    vocab = {t: i for i, t in enumerate(dict.fromkeys(QWEN_SPECIALS + list(words)))}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
        model_max_length=128,
    )
    fast.chat_template = QWEN_CHAT_TEMPLATE
    cfg = Qwen3Config(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    cfg.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg).to(torch.float32)
    _randomise(model, seed, 1.5)
    path = Path(path)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def circuit_tracer_transcoders(
    path: Any, d_model: int, n_layers: int, n_features: int = 24, seed: int = 0
) -> Any:
    """A per-layer transcoder set in circuit-tracer's format (config.yaml + layer_<l>.safetensors:
    W_enc [F, d], b_enc, W_dec [F, d], b_dec, W_skip [d, d] in every layer, JumpReLU
    ``activation_function.threshold`` on layer 0 and plain ReLU on the others), written here
    from the format's description so that it does not depend on semmech's own writer."""
    from pathlib import Path

    import yaml
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 7)
    for layer in range(n_layers):
        tensors = {
            "W_enc": torch.randn(n_features, d_model, generator=gen) / d_model**0.5,
            "b_enc": 0.1 * torch.randn(n_features, generator=gen),
            "W_dec": torch.randn(n_features, d_model, generator=gen) / n_features**0.5,
            "b_dec": 0.1 * torch.randn(d_model, generator=gen),
            "W_skip": 0.1 * torch.randn(d_model, d_model, generator=gen) / d_model**0.5,
        }
        if layer == 0:
            tensors["activation_function.threshold"] = 0.05 * torch.rand(n_features, generator=gen)
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(path / f"layer_{layer}.safetensors"),
        )
    config = {
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "mlp.hook_out",
        "scan": "tiny-test-transcoders",
        "model_name": "tiny-qwen3",
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def hub_cache_repo(cache: Any, repo_id: str, source: Any, revision: str = "0" * 40) -> Any:
    """Put the files of directory ``source`` into a Hugging Face hub cache (``HF_HUB_CACHE``
    layout: models--org--name/snapshots/<revision>/ and refs/main), so that ``repo_id`` loads
    offline (``HF_HUB_OFFLINE=1``) exactly as a downloaded repo does."""
    import shutil
    from pathlib import Path

    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    shutil.copytree(source, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
