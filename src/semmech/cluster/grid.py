"""The (β, γ) grid lookup: one tolerance, one function, for every stage and the Snakefile.

Sweep configurations are stored as float arrays (``clusters/{p}.npz``, tables) and named in
the config as YAML numbers, so a configuration is found by closeness, not equality. numpy
only: the Snakefile imports this module at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "GRID_RTOL",
    "GRID_ATOL",
    "ConfigNotInSweepError",
    "close_to",
    "config_mask",
    "config_index",
    "on_grid",
]

# Grid values are short decimals (0.1, 0.75, ...): anything closer than this is the same point.
GRID_RTOL = 1e-9
GRID_ATOL = 1e-12


class ConfigNotInSweepError(ValueError):
    """A (β, γ) that the clustering sweep does not contain."""


def close_to(values: Sequence[float], value: float) -> np.ndarray:
    """Which of ``values`` (β's or γ's) are the grid value ``value``."""
    return np.isclose(
        np.asarray(values, dtype=np.float64), float(value), rtol=GRID_RTOL, atol=GRID_ATOL
    )


def config_mask(
    betas: Sequence[float], gammas: Sequence[float], beta: float, gamma: float
) -> np.ndarray:
    """Which rows of a sweep (per-configuration columns ``betas``, ``gammas`` of equal length,
    e.g. a labels table) belong to configuration (β, γ)."""
    return close_to(betas, beta) & close_to(gammas, gamma)


def config_index(betas: Sequence[float], gammas: Sequence[float], beta: float, gamma: float) -> int:
    """Row i of a sweep whose configuration is (betas[i], gammas[i]) = (β, γ); the arrays are
    the per-configuration columns of a sweep (same length)."""
    hit = np.nonzero(config_mask(betas, gammas, beta, gamma))[0]
    if hit.size == 0:
        have = ", ".join(
            f"({x:g}, {y:g})"
            for x, y in zip(
                np.asarray(betas, dtype=np.float64), np.asarray(gammas, dtype=np.float64)
            )
        )
        raise ConfigNotInSweepError(
            f"configuration (beta={beta:g}, gamma={gamma:g}) is not in the clustering sweep; "
            f"the sweep has {have}"
        )
    return int(hit[0])


def on_grid(betas: Sequence[float], gammas: Sequence[float], beta: float, gamma: float) -> bool:
    """Whether (β, γ) is a point of the grid betas × gammas (the config's two lists)."""
    return bool(close_to(betas, beta).any() and close_to(gammas, gamma).any())
