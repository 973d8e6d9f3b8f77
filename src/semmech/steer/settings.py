"""The ``steering`` config section, validated without the model stack.

Kept apart from the rest of :mod:`semmech.steer` so that the workflow can check the section when the
Snakefile is parsed (which happens once per job on a cluster) without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..cluster.grid import on_grid
from ..config import ConfigError, section_defaults

__all__ = [
    "SELECTIONS",
    "SOURCE_SPACES",
    "SteeringInputError",
    "SteeringSettings",
    "check_steering_configs",
]

SELECTIONS = ("full", "positive", "negative")
SOURCE_SPACES = ("raw", "normalised")


class SteeringInputError(ValueError):
    """The steering stage's inputs or settings cannot be used (named in the message)."""


@dataclass(frozen=True)
class SteeringSettings:
    """The ``steering`` config section, validated; defaults live in the schema only.

    ``max_measured`` caps the members measured per cluster (own held-out and every other
    cluster; a seeded subset, the same for every ε and budget); ``None`` measures all.
    ``source_space``: ``raw`` (attribution units, default) or ``normalised`` (ã).
    """

    configs: tuple[tuple[float, float], ...]
    budgets: tuple[int, ...]
    epsilons: tuple[float, ...]
    selection: str
    batch_size: int
    n_generate: int
    bootstrap: int
    max_measured: int | None
    source_space: str

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> SteeringSettings:
        try:
            full = section_defaults("steering", cfg)
        except ConfigError as exc:
            raise SteeringInputError(str(exc)) from exc
        out = cls(
            configs=tuple((float(b), float(g)) for b, g in full["configs"]),
            budgets=tuple(int(b) for b in full["budgets"]),
            epsilons=tuple(float(e) for e in full["epsilons"]),
            selection=str(full["selection"]),
            batch_size=int(full["batch_size"]),
            n_generate=int(full["n_generate"]),
            bootstrap=int(full["bootstrap"]),
            max_measured=None if full["max_measured"] is None else int(full["max_measured"]),
            source_space=str(full["source_space"]),
        )
        out.validate()
        return out

    def validate(self) -> None:
        if not self.configs:
            raise SteeringInputError("steering.configs is empty: name at least one (beta, gamma)")
        if not self.budgets or min(self.budgets) < 1:
            raise SteeringInputError(
                f"steering.budgets must be positive integers, got {list(self.budgets)}"
            )
        eps = [float(e) for e in self.epsilons]
        if 0.0 not in eps:
            raise SteeringInputError(
                f"steering.epsilons {eps} lacks 0: ε = 0 is the unsteered reference every Δ is "
                "measured from"
            )
        if len(set(eps)) != len(eps) or len(eps) < 2:
            raise SteeringInputError(
                f"steering.epsilons must be at least 2 distinct values, got {eps}"
            )
        if not all(math.isfinite(e) for e in eps):
            raise SteeringInputError(f"steering.epsilons must be finite, got {eps}")
        if self.selection not in SELECTIONS:
            raise SteeringInputError(
                f"steering.selection must be one of {SELECTIONS}, got {self.selection!r}"
            )
        if self.source_space not in SOURCE_SPACES:
            raise SteeringInputError(
                f"steering.source_space must be one of {SOURCE_SPACES}, got {self.source_space!r}"
            )
        if self.batch_size < 1:
            raise SteeringInputError(
                f"steering.batch_size must be at least 1, got {self.batch_size}"
            )
        if self.n_generate < 0:
            raise SteeringInputError(f"steering.n_generate must be >= 0, got {self.n_generate}")
        if self.max_measured is not None and self.max_measured < 1:
            raise SteeringInputError(
                f"steering.max_measured must be >= 1 or null, got {self.max_measured}"
            )

    @property
    def nonzero_epsilons(self) -> tuple[float, ...]:
        return tuple(e for e in self.epsilons if e != 0.0)


def check_steering_configs(
    steering_cfg: Mapping[str, Any], clustering_cfg: Mapping[str, Any]
) -> None:
    """At workflow start-up: every steered (β, γ) must be a point of the clustering sweep."""
    settings = SteeringSettings.from_config(steering_cfg)
    clustering = section_defaults("clustering", clustering_cfg)
    betas, gammas = clustering["betas"], clustering["gammas"]
    for b, g in settings.configs:
        if not on_grid(betas, gammas, b, g):
            raise SteeringInputError(
                f"steering.configs: (beta={b:g}, gamma={g:g}) is not in the clustering sweep "
                f"(betas {betas} x gammas {gammas}); steer a configuration that is clustered"
            )
