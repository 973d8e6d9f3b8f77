"""Synthetic two-view data for tests, benchmarks and realistic-scale checks (no model)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["make_signature_like_data", "make_two_view_data"]


def make_signature_like_data(
    n: int = 500,
    *,
    n_modes: int = 4,
    d_e: int = 384,
    d_a: int = 5000,
    rank: int = 32,
    sep: float = 1.0,
    noise: float = 1.0,
    node_sigma: float = 1.5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Views shaped like the real ones, for benchmarks and scale checks.

    Semantic vectors are unit vectors around ``n_modes`` random directions in d_e dimensions.
    Signatures are a rank-``rank`` linear image of a per-continuation latent (attribution is
    linear in the gradient, which varies smoothly with the continuation) with mode means
    ``sep`` apart, isotropic latent ``noise`` and log-normal node scales (a few nodes
    dominate a signature). Weights look like exp(mean log-probability).
    """
    rng = np.random.default_rng(seed)
    mode = rng.integers(0, n_modes, n)
    Ce = rng.standard_normal((n_modes, d_e))
    Ce /= np.linalg.norm(Ce, axis=1, keepdims=True)
    base = rng.standard_normal(d_e)
    base /= np.linalg.norm(base)
    E = 2.0 * base + sep * Ce[mode] + 0.3 * math.sqrt(50.0 / d_e) * rng.standard_normal((n, d_e))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    Z = sep * rng.standard_normal((n_modes, rank))[mode] + noise * rng.standard_normal((n, rank))
    B = rng.standard_normal((rank, d_a)) / math.sqrt(rank)
    A = (Z @ B + 0.1 * rng.standard_normal((n, d_a))) * np.exp(
        node_sigma * rng.standard_normal(d_a)
    )
    P = np.exp(-np.abs(rng.normal(1.2, 0.6, n)))
    return {"E": E, "A": A, "P": P, "mode": mode}


def make_two_view_data(
    n_per_mode: int = 50,
    *,
    d_e: int = 16,
    d_a: int = 32,
    sem_sep: float = 1.0,
    mech_sep: float = 1.0,
    noise_e: float = 0.05,
    noise_a: float = 0.1,
    mech_support: int | None = None,
    heavy_tail: float = 0.0,
    weights: str = "uniform",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Four joint modes: the semantic view splits them into 2 groups (s ∈ {0, 1}) and the
    mechanistic view into 2 crossing groups (t ∈ {0, 1}); mode = 2s + t.

    E rows are unit vectors around two orthogonal directions mixed by ``sem_sep``; A rows
    are raw signatures ±``mech_sep`` · v on ``mech_support`` coordinates plus noise, with an
    arbitrary offset and scale (the normalisation has to undo them). ``heavy_tail`` > 0
    scales coordinates by log-normal factors, as attribution magnitudes are. ``weights``:
    "uniform" or "lognormal" (exp of a mean log-probability-like value).
    """
    rng = np.random.default_rng(seed)
    n = 4 * n_per_mode
    mode = np.repeat(np.arange(4), n_per_mode)
    s, t = mode // 2, mode % 2
    u0 = np.zeros(d_e)
    u0[0] = 1.0
    u1 = np.zeros(d_e)
    u1[1] = 1.0
    base = np.zeros(d_e)
    base[2] = 1.0
    dirs = np.where(s[:, None] == 0, u0, u1)
    E = base + sem_sep * dirs + noise_e * rng.standard_normal((n, d_e))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    support = d_a if mech_support is None else mech_support
    v = np.zeros(d_a)
    v[:support] = rng.choice([-1.0, 1.0], size=support) / math.sqrt(support)
    A = np.where(t[:, None] == 0, 1.0, -1.0) * mech_sep * v + noise_a * rng.standard_normal(
        (n, d_a)
    ) / math.sqrt(d_a) * math.sqrt(support)
    if heavy_tail > 0:
        A *= np.exp(heavy_tail * rng.standard_normal(d_a))[None, :]
    A = 0.01 * A + 0.003 * rng.standard_normal(d_a)[None, :]  # arbitrary units and offset
    if weights == "uniform":
        P = np.ones(n)
    elif weights == "lognormal":
        P = np.exp(-np.abs(rng.normal(1.0, 0.5, n)))
    else:
        raise ValueError(f"weights must be 'uniform' or 'lognormal', got {weights!r}")
    return {"E": E, "A": A, "P": P, "mode": mode, "sem": s, "mech": t}
