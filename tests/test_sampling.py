"""Sampling on a tiny random Llama: stop rules, de-duplication, weights, seeding."""

from __future__ import annotations

import io as _io

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_gemma2, tiny_gpt2, tiny_llama, tiny_qwen2

from semmech.views import sampling
from semmech.views.sampling import (
    PromptTooLongError,
    SamplingSettings,
    encode_prompt,
    generate_batch,
    next_batch_size,
    sample_continuations,
    stop_token_mask,
    truncate,
)


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(seed=0)


def _prompt_ids(model, text="who won the cup ?"):
    return model.tokenizer(text, add_special_tokens=True)["input_ids"]


def test_truncate_rules():
    mask = torch.zeros(10, dtype=torch.bool)
    mask[7] = True  # "." token
    assert truncate([3, 4, 7, 5], [0.1, 0.2, 0.3, 0.4], mask, {9}) == (
        [3, 4, 7],
        [0.1, 0.2, 0.3],
        "sentence",
    )
    assert truncate([3, 9, 7], [0.1, 0.2, 0.3], mask, {9}) == ([3], [0.1], "eos")
    assert truncate([3, 4], [0.1, 0.2], mask, {9}) == ([3, 4], [0.1, 0.2], "length")


def test_samples_are_distinct_stopped_and_weighted(tiny):
    settings = SamplingSettings.from_config(
        dict(n_continuations=12, max_new_tokens=6, batch_size=8, patience=3)
    )
    ids = _prompt_ids(tiny)
    df = sample_continuations(tiny, "p", ids, settings, seed=3)
    assert 1 <= len(df) <= 12
    assert df["text"].str.strip().is_unique
    assert list(df["sample_idx"]) == list(range(len(df)))
    assert (np.diff(df["mean_logprob"].to_numpy()) <= 0).all()
    mask = stop_token_mask(tiny.tokenizer, settings.stop_chars)
    eos = tiny.eos_token_ids
    for row in df.itertuples():
        toks = list(row.token_ids)
        assert len(toks) == row.n_tokens >= 1
        assert not set(toks) & eos
        stops = [i for i, t in enumerate(toks) if mask[t]]
        if row.stop_reason == "sentence":
            assert stops == [len(toks) - 1]
        else:
            assert stops == []
        if row.stop_reason == "length":
            assert len(toks) == settings.max_new_tokens
        assert row.weight == pytest.approx(np.exp(np.mean(row.token_logprobs)), rel=1e-12)


def test_weights_match_an_independent_forward_pass(tiny):
    settings = SamplingSettings.from_config(
        dict(n_continuations=6, max_new_tokens=5, batch_size=6, temperature=1.7, top_p=0.8)
    )
    ids = _prompt_ids(tiny)
    df = sample_continuations(tiny, "p", ids, settings, seed=5)
    for row in df.itertuples():
        full = torch.tensor([ids + list(row.token_ids)])
        with torch.no_grad():
            logp = tiny.hf(full).logits[0].double().log_softmax(-1)
        M = len(ids)
        pos = torch.arange(M - 1, M - 1 + row.n_tokens)  # the positions that predict each token
        lp = logp[pos, torch.tensor(list(row.token_ids))].numpy()
        np.testing.assert_allclose(row.token_logprobs, lp, atol=1e-5)
        assert row.weight == pytest.approx(np.exp(lp.mean()), rel=1e-4)


@pytest.mark.parametrize("family", [tiny_qwen2, tiny_gemma2, tiny_gpt2])
def test_weights_match_a_forward_pass_in_every_family(family):
    """The shared prompt cache, dropped rows and the model's own output logits (Gemma 2
    soft-caps them after the lm head) give every family's true T = 1 log-probabilities."""
    model = family(seed=0)
    settings = SamplingSettings.from_config(
        dict(n_continuations=8, max_new_tokens=6, batch_size=6, patience=2)
    )
    ids = _prompt_ids(model)
    df = sample_continuations(model, "p", ids, settings, seed=1)
    assert len(df) >= 2
    for row in df.itertuples():
        full = torch.tensor([ids + list(row.token_ids)])
        with torch.no_grad():
            logp = model.hf(full).logits[0].double().log_softmax(-1)
        pos = torch.arange(len(ids) - 1, len(ids) - 1 + row.n_tokens)
        lp = logp[pos, torch.tensor(list(row.token_ids))].numpy()
        np.testing.assert_allclose(row.token_logprobs, lp, atol=1e-5)


def test_finished_rows_leave_the_batch(tiny):
    """A row that emitted its stop token gets no further tokens (pad, log-prob 0), and the
    rows still going are exactly those without a stop so far."""
    settings = SamplingSettings.from_config(dict(max_new_tokens=8, batch_size=16))
    mask = stop_token_mask(tiny.tokenizer, settings.stop_chars)
    prompt = encode_prompt(tiny, _prompt_ids(tiny))
    gen = torch.Generator().manual_seed(0)
    ids, lp = generate_batch(tiny, prompt, 16, settings, mask, gen)
    assert ids.shape[0] == 16 and ids.shape == lp.shape and ids.shape[1] <= 8
    pad, eos = tiny.tokenizer.pad_token_id, tiny.eos_token_ids
    stopped = 0
    for row, row_lp in zip(ids.tolist(), lp.tolist()):
        ends = [i for i, t in enumerate(row) if t in eos or mask[t]]
        if ends:
            stopped += 1
            after = row[ends[0] + 1 :]
            assert after == [pad] * len(after)
            assert row_lp[ends[0] + 1 :] == [0.0] * len(after)
            assert all(v < 0 for v in row_lp[: ends[0] + 1])
        else:
            assert all(v < 0 for v in row_lp)
    assert stopped > 0  # the test exercises dropping


def test_batch_size_follows_the_dedup_rate():
    assert next_batch_size(64, 0, 0, 32) == 32  # no rate yet: a full batch
    assert next_batch_size(5, 0, 32, 32) == 32  # a fruitless batch: full again
    assert next_batch_size(2, 30, 32, 32) == 7  # the last two at ~94 %: 2 · 2 / 0.94 + 2
    assert next_batch_size(30, 10, 32, 32) == 32  # capped
    assert next_batch_size(1, 32, 32, 32) == 4


def test_last_batch_is_sized_for_what_is_missing(tiny, monkeypatch):
    """With a high dedup rate the batch after a productive one asks for a few rows, not a
    full batch (seeded: the schedule is part of what the seed reproduces)."""
    sizes = []
    real = sampling.generate_batch

    def spy(model, prompt, n_rows, settings, stop_mask, generator):
        sizes.append(n_rows)
        return real(model, prompt, n_rows, settings, stop_mask, generator)

    monkeypatch.setattr(sampling, "generate_batch", spy)
    settings = SamplingSettings.from_config(
        dict(n_continuations=20, max_new_tokens=6, batch_size=16, patience=3)
    )
    df = sample_continuations(tiny, "p", _prompt_ids(tiny), settings, seed=2)
    assert len(df) == 20
    assert sizes[0] == 16 and len(sizes) >= 2 and sizes[-1] < 16, sizes


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = _io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow", compression="zstd")
    return buf.getvalue()


def test_same_seed_same_bytes_different_seed_different_samples(tiny):
    settings = SamplingSettings.from_config(dict(n_continuations=8, max_new_tokens=6, batch_size=8))
    ids = _prompt_ids(tiny)
    a = sample_continuations(tiny, "p", ids, settings, seed=11)
    b = sample_continuations(tiny, "p", ids, settings, seed=11)
    c = sample_continuations(tiny, "p", ids, settings, seed=12)
    assert _parquet_bytes(a) == _parquet_bytes(b)
    assert set(a["text"]) != set(c["text"])


def test_dedup_keeps_most_probable_sequence_and_stops_when_exhausted(tiny, monkeypatch):
    """Scripted batches: two token sequences decode to the same text; only two texts exist."""
    tok = tiny.tokenizer
    a = tok.convert_tokens_to_ids("cup")
    b = tok.convert_tokens_to_ids("won")
    dot = tok.convert_tokens_to_ids(".")
    calls = {"n": 0}

    def scripted(model, prompt, n_rows, settings, stop_mask, generator):
        calls["n"] += 1
        ids = torch.tensor([[a, dot], [a, dot], [b, dot]])
        lp = torch.tensor([[-2.0, -1.0], [-0.5, -0.5], [-1.0, -1.0]], dtype=torch.float64)
        return ids, lp

    monkeypatch.setattr(sampling, "generate_batch", scripted)
    settings = SamplingSettings.from_config(
        dict(n_continuations=10, max_new_tokens=2, batch_size=3, patience=2)
    )
    df = sample_continuations(tiny, "p", [1, 2], settings, seed=0)
    assert len(df) == 2
    assert calls["n"] == 3  # one productive batch, then `patience` fruitless ones
    row = df[df["text"].str.strip() == tok.decode([a, dot]).strip()].iloc[0]
    assert list(row.token_logprobs) == [-0.5, -0.5]


def test_prompt_longer_than_context_is_rejected(tiny):
    too_long = [1] * (tiny.max_context - 2)
    with pytest.raises(PromptTooLongError, match="exceeds the model's context"):
        sample_continuations(
            tiny, "p", too_long, SamplingSettings.from_config(dict(max_new_tokens=5)), seed=0
        )
