"""Contextual embeddings: the pooled window is exactly the continuation's tokens."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from semmech import io
from semmech.config import section_defaults
from semmech.stages.embedding import run_embed
from semmech.views.embedding import (
    ContextualEncoder,
    EmbeddingModelNotFoundError,
    continuation_window,
    resolve_embedding_source,
)

PREFIX = "Which city is the capital of France?"
CONTS = [
    " Paris is the capital.",
    "Lyon, maybe?",
    " It is Paris!",
    "Paris",
    "I'm not sure — Marseille?",
]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_embedding_source("default"), local_files_only=True)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A byte-level BPE tokenizer with BOS and EOS added around the text (spaces belong to
    the following token, and special tokens sit at both ends): another layout to get right."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([PREFIX, *CONTS] * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def _alone(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("cont", CONTS)
def test_window_is_the_continuation_wordpiece(minilm_tokenizer, cont):
    tok = minilm_tokenizer
    w = continuation_window(tok, PREFIX, cont)
    ids = list(w.input_ids)
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[w.start : w.end] == _alone(tok, cont)
    assert ids[1 : w.start] == _alone(tok, PREFIX)  # everything before is the prefix
    assert w.end == len(ids) - 1  # only [SEP] after it


@pytest.mark.parametrize("cont", CONTS)
def test_window_is_the_continuation_bytelevel(bpe_tokenizer, cont):
    tok = bpe_tokenizer
    w = continuation_window(tok, PREFIX, cont)
    ids = list(w.input_ids)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    # the tokens of the joined text; only a token made of the joining space alone may
    # precede the window (byte-level BPE glues the space to the next word or keeps it apart)
    joined = cont if cont[:1].isspace() else " " + cont
    alone = _alone(tok, joined)
    got = ids[w.start : w.end]
    assert alone[len(alone) - len(got) :] == got
    assert tok.decode(alone[: len(alone) - len(got)]).strip() == ""
    assert tok.decode(got).strip() == cont.strip()
    assert tok.decode(ids[1 : w.start]).strip() == PREFIX  # the rest before it is the prefix


def test_window_without_prefix_and_with_trailing_space(minilm_tokenizer):
    tok = minilm_tokenizer
    w = continuation_window(tok, "", "Paris.")
    assert (w.start, w.end) == (1, len(w.input_ids) - 1)
    w2 = continuation_window(tok, PREFIX + " ", "Paris.")
    assert list(w2.input_ids[w2.start : w2.end]) == _alone(tok, "Paris.")


def test_truncation_drops_the_prefix_from_the_left(minilm_tokenizer):
    tok = minilm_tokenizer
    long_prefix = " ".join(["word"] * 300) + " last question?"
    w = continuation_window(tok, long_prefix, " Paris is the capital.", max_length=32)
    ids = list(w.input_ids)
    assert len(ids) == 32
    assert ids[w.start : w.end] == _alone(tok, " Paris is the capital.")
    assert ids[w.start - 3 : w.start] == _alone(tok, "last question?")  # nearest prefix kept
    with pytest.raises(ValueError, match="alone exceeds"):
        continuation_window(tok, "Q?", " ".join(["long"] * 40), max_length=16)


def test_empty_continuation_is_an_error(minilm_tokenizer):
    with pytest.raises(ValueError, match="has no tokens"):
        continuation_window(minilm_tokenizer, PREFIX, "   ")


class _PositionModel(torch.nn.Module):
    """Hidden state at position t is the t-th unit vector, so a pooled vector shows exactly
    which positions were averaged."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.width = width
        self.config = SimpleNamespace(hidden_size=width, max_position_embeddings=width)

    def forward(self, input_ids, attention_mask):
        B, T = input_ids.shape
        h = torch.eye(self.width)[:T].expand(B, T, self.width).clone()
        return SimpleNamespace(last_hidden_state=h * attention_mask[:, :, None])


@pytest.mark.parametrize("side", ["right", "left"])
def test_pooled_positions_are_the_window(minilm_tokenizer, side):
    tok = minilm_tokenizer
    tok.padding_side = side  # the encoder pads itself; the tokenizer's setting must not matter
    try:
        enc = ContextualEncoder(_PositionModel(), tok, max_length=64)
        E = enc.encode(PREFIX, CONTS, batch_size=3)  # mixed lengths in a batch
    finally:
        tok.padding_side = "right"
    for e, cont in zip(E, CONTS):
        w = continuation_window(tok, PREFIX, cont)
        expect = np.zeros(64)
        expect[w.start : w.end] = 1.0
        np.testing.assert_allclose(e, expect / np.linalg.norm(expect), atol=1e-6)


@pytest.fixture(scope="module")
def tiny_bert(minilm_tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    return BertModel(cfg).eval()


def test_tiny_bert_pooling_matches_manual(minilm_tokenizer, tiny_bert):
    enc = ContextualEncoder(tiny_bert, minilm_tokenizer)
    E = enc.encode(PREFIX, CONTS, batch_size=2)
    assert E.dtype == np.float32 and E.shape == (len(CONTS), 16)
    for e, cont in zip(E, CONTS):
        w = continuation_window(minilm_tokenizer, PREFIX, cont)
        with torch.no_grad():
            h = tiny_bert(input_ids=torch.tensor([w.input_ids])).last_hidden_state[0]
        m = h[w.start : w.end].mean(0)
        np.testing.assert_allclose(e, (m / m.norm()).numpy(), atol=1e-5)
    # batching and batch size do not change the result beyond float noise
    np.testing.assert_allclose(E, enc.encode(PREFIX, CONTS, batch_size=1), atol=1e-5)


@pytest.fixture(scope="module")
def minilm():
    return ContextualEncoder.from_name("default")


def test_real_minilm_window_and_semantics(minilm):
    tok = minilm.tokenizer
    assert minilm.max_length == 256
    E = minilm.encode(PREFIX, CONTS, batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    # pooling exactly over the continuation tokens of one unpadded sequence
    w = continuation_window(tok, PREFIX, CONTS[0])
    with torch.no_grad():
        h = minilm.model(input_ids=torch.tensor([w.input_ids])).last_hidden_state[0]
    m = h[w.start : w.end].mean(0)
    np.testing.assert_allclose(E[0], (m / m.norm()).numpy(), atol=1e-5)
    # meaning: the two "Paris" answers are closer to each other than to "Lyon"
    assert E[0] @ E[2] > E[0] @ E[1]
    # in context: the same continuation after another prefix embeds differently
    other = minilm.encode("Name a French river.", [CONTS[0]])[0]
    assert 0.3 < float(other @ E[0]) < 0.9999


def test_unknown_model_fails_offline_with_advice(tmp_path):
    with pytest.raises(
        EmbeddingModelNotFoundError, match="'no-such-org/no-such-encoder'.*local copy"
    ):
        resolve_embedding_source("no-such-org/no-such-encoder")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmbeddingModelNotFoundError, match="no config.json"):
        resolve_embedding_source(str(empty))


def test_sentence_transformers_module_subfolder(tmp_path):
    root = tmp_path / "st_model"
    (root / "0_Transformer").mkdir(parents=True)
    (root / "0_Transformer" / "config.json").write_text("{}")
    (root / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "0_Transformer",
                    "type": "sentence_transformers.models.Transformer",
                }
            ]
        )
    )
    assert resolve_embedding_source(str(root)) == str(root / "0_Transformer")


def test_stage_writes_embeddings(tmp_path):
    samples = pd.DataFrame({"prompt_id": "p1", "sample_idx": np.arange(3), "text": CONTS[:3]})
    io.write_parquet(samples, tmp_path / "p1.parquet")
    io.write_json({"prompt_id": "p1", "text": PREFIX}, tmp_path / "p1.prompt.json")
    out = tmp_path / "emb" / "p1.npz"
    run_embed(
        prompt_id="p1",
        samples=tmp_path / "p1.parquet",
        prompt=tmp_path / "p1.prompt.json",
        embedding_cfg=section_defaults("embedding", {"model": "default", "batch_size": 2}),
        out_npz=out,
    )
    z = io.read_npz(out, required=["embeddings", "sample_idx"])
    assert z["embeddings"].shape == (3, 384) and z["embeddings"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z["embeddings"], axis=1), 1.0, atol=1e-5)
    assert z["sample_idx"].tolist() == [0, 1, 2]
    first = out.read_bytes()
    run_embed(
        prompt_id="p1",
        samples=tmp_path / "p1.parquet",
        prompt=tmp_path / "p1.prompt.json",
        embedding_cfg=section_defaults("embedding", {"model": "default", "batch_size": 2}),
        out_npz=out,
    )
    assert out.read_bytes() == first  # deterministic on CPU


# --- the paper's embedder: an EmbeddingGemma-architecture encoder --------------------------------

TASK = "task: search result | query: "
CHAT_PREFIX = (
    "<|im_start|>user\nWhich city is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    from tiny_models import tiny_embeddinggemma

    corpus = [PREFIX, *CONTS, TASK, CHAT_PREFIX, "Name a French river."]
    return tiny_embeddinggemma(tmp_path_factory.mktemp("egemma") / "embeddinggemma", corpus)


@pytest.fixture(scope="module")
def gemma(gemma_dir):
    return ContextualEncoder.from_name(str(gemma_dir))


def _sep(prefix: str, cont: str) -> str:
    return "" if prefix[-1:].isspace() or cont[:1].isspace() else " "


def test_embeddinggemma_directory_loads_as_the_bidirectional_gemma3_encoder(gemma_dir, gemma):
    modules = json.loads((gemma_dir / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Dense", "3_Dense", "4_Normalize"]
    assert resolve_embedding_source(str(gemma_dir)) == str(gemma_dir)
    assert type(gemma.model).__name__ == "Gemma3TextModel"
    assert gemma.model.config.use_bidirectional_attention is True
    assert gemma.tokenizer.padding_side == "left" and gemma.max_length == 512
    # bidirectional: a later token changes an earlier position's state (a causal model cannot)
    w = continuation_window(gemma.tokenizer, PREFIX, CONTS[0])
    ids = torch.tensor([w.input_ids])
    changed = ids.clone()
    changed[0, w.end - 1] = gemma.tokenizer.convert_tokens_to_ids("<unk>")
    with torch.no_grad():
        h0 = gemma.model(input_ids=ids).last_hidden_state[0, w.start]
        h1 = gemma.model(input_ids=changed).last_hidden_state[0, w.start]
    assert not torch.allclose(h0, h1)


@pytest.mark.parametrize("task_prefix", ["", TASK])
@pytest.mark.parametrize("prefix", [PREFIX, CHAT_PREFIX])
def test_embeddinggemma_window_is_exactly_the_continuation(gemma, prefix, task_prefix):
    """BOS before, EOS after, the task prefix and the context outside: only the continuation."""
    tok = gemma.tokenizer
    bos, eos = tok.bos_token_id, tok.eos_token_id
    for cont in CONTS:
        w = continuation_window(tok, prefix, cont, gemma.max_length, task_prefix)
        head = tok(task_prefix + prefix, add_special_tokens=False)["input_ids"]
        body = tok(_sep(task_prefix + prefix, cont) + cont, add_special_tokens=False)["input_ids"]
        # the joining space we insert is not the continuation's: a lone "▁" token stays out
        gap = body[:1] if tok.convert_ids_to_tokens(body[:1]) == ["▁"] else []
        assert w.input_ids[0] == bos and w.input_ids[-1] == eos
        assert list(w.input_ids[1 : 1 + len(head)]) == head
        assert list(w.input_ids[1 + len(head) : w.start]) == gap
        assert list(w.input_ids[w.start : w.end]) == body[len(gap) :]
        assert w.end == len(w.input_ids) - 1


@pytest.mark.parametrize("task_prefix", ["", TASK])
def test_embeddinggemma_pooling_ignores_padding_and_matches_manual(gemma_dir, task_prefix):
    enc = ContextualEncoder.from_name(str(gemma_dir), task_prefix=task_prefix)
    E = enc.encode(CHAT_PREFIX, CONTS, batch_size=3)  # mixed lengths: padded rows
    assert E.shape == (len(CONTS), 32) and E.dtype == np.float32
    np.testing.assert_allclose(E, enc.encode(CHAT_PREFIX, CONTS, batch_size=1), atol=1e-5)
    for e, cont in zip(E, CONTS):
        w = continuation_window(enc.tokenizer, CHAT_PREFIX, cont, task_prefix=task_prefix)
        with torch.no_grad():  # one unpadded sequence, no mask
            h = enc.model(input_ids=torch.tensor([w.input_ids])).last_hidden_state[0]
        m = h[w.start : w.end].mean(0)
        np.testing.assert_allclose(e, (m / m.norm()).numpy(), atol=1e-5)


def test_task_prefix_changes_the_context_not_the_window(gemma_dir, gemma):
    tasked = ContextualEncoder.from_name(str(gemma_dir), task_prefix=TASK)
    plain = gemma.encode(PREFIX, CONTS[:2])
    with_task = tasked.encode(PREFIX, CONTS[:2])
    assert not np.allclose(plain, with_task, atol=1e-4)  # bidirectional context sees it
    np.testing.assert_allclose(np.linalg.norm(with_task, axis=1), 1.0, atol=1e-5)


def test_stage_encodes_the_configured_context_and_task_prefix(tmp_path, gemma_dir):
    samples = pd.DataFrame({"prompt_id": "p1", "sample_idx": np.arange(3), "text": CONTS[:3]})
    io.write_parquet(samples, tmp_path / "p1.parquet")
    record = {"prompt_id": "p1", "text": PREFIX, "model_input": CHAT_PREFIX}
    io.write_json(record, tmp_path / "p1.prompt.json")
    for context, task_prefix in [("text", ""), ("model_input", ""), ("model_input", TASK)]:
        cfg = section_defaults(
            "embedding",
            {"model": str(gemma_dir), "context": context, "task_prefix": task_prefix},
        )
        out = tmp_path / f"{context}{len(task_prefix)}.npz"
        run_embed(
            prompt_id="p1",
            samples=tmp_path / "p1.parquet",
            prompt=tmp_path / "p1.prompt.json",
            embedding_cfg=cfg,
            out_npz=out,
        )
        enc = ContextualEncoder.from_name(str(gemma_dir), task_prefix=task_prefix)
        expect = enc.encode(record[context], CONTS[:3])
        np.testing.assert_allclose(io.read_npz(out)["embeddings"], expect, atol=1e-6)
    assert section_defaults("embedding")["context"] == "text"
    assert section_defaults("embedding")["task_prefix"] == ""
    io.write_json({"prompt_id": "p1", "text": PREFIX}, tmp_path / "old.prompt.json")
    with pytest.raises(io.CorruptInputError, match="no 'model_input' field"):
        run_embed(
            prompt_id="p1",
            samples=tmp_path / "p1.parquet",
            prompt=tmp_path / "old.prompt.json",
            embedding_cfg=section_defaults(
                "embedding", {"model": str(gemma_dir), "context": "model_input"}
            ),
            out_npz=tmp_path / "x.npz",
        )
