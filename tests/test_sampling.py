"""Sampling on a tiny random Llama: stop rules, de-duplication, weights, seeding."""

from __future__ import annotations

import io as _io

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_llama

from semmech.views import sampling
from semmech.views.sampling import (
    PromptTooLongError,
    SamplingSettings,
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

    def scripted(model, prompt_ids, settings, stop_mask):
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
