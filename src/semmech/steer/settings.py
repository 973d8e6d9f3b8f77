"""The ``steering`` config section, validated without the model stack.

Kept apart from the rest of :mod:`semmech.steer` so that the workflow can check the section when the
Snakefile is parsed (which happens once per job on a cluster) without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..cluster.grid import on_grid
from ..config import ConfigError, section_defaults

__all__ = [
    "AUTO",
    "SELECTIONS",
    "SOURCE_SPACES",
    "SteeringInputError",
    "SteeringSettings",
    "check_steering_configs",
]

SELECTIONS = ("full", "positive", "negative")
AUTO = "auto"
SOURCE_SPACES = ("raw", "normalised")


class SteeringInputError(ValueError):
    """The steering stage's inputs or settings cannot be used (named in the message)."""


@dataclass(frozen=True)
class SteeringSettings:
    """The ``steering`` config section, validated; defaults live in the schema only.

    ``max_measured`` caps the members measured per source: its cluster's held-out members,
    and as many pooled from the other clusters (a seeded subset, the same for every ε and
    budget); ``None`` measures all.
    ``source_space``: ``raw`` (attribution units, default) or ``normalised`` (ã).
    """

    configs: tuple[tuple[float, float], ...] | str  # explicit pairs, or "auto"
    k_clamp: int
    budgets: tuple[int, ...]
    epsilons: tuple[float, ...]
    selections: tuple[str, ...]
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
            configs=AUTO
            if full["configs"] == AUTO
            else tuple((float(b), float(g)) for b, g in full["configs"]),
            k_clamp=int(full["k_clamp"]),
            budgets=tuple(int(b) for b in full["budgets"]),
            epsilons=tuple(float(e) for e in full["epsilons"]),
            selections=tuple(str(x) for x in full["selections"]),
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
        if self.k_clamp < 2:
            raise SteeringInputError(
                f"steering.k_clamp must be at least 2 (K = 1 has nothing to steer), got {self.k_clamp}"
            )
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
        bad = [x for x in self.selections if x not in SELECTIONS]
        if bad or not self.selections or len(set(self.selections)) != len(self.selections):
            raise SteeringInputError(
                f"steering.selections must be distinct values of {SELECTIONS}, got "
                f"{list(self.selections)}"
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

    def steered_configs(
        self, betas: Sequence[float], gammas: Sequence[float], ks: Sequence[int]
    ) -> tuple[tuple[float, float], ...]:
        """The configurations steered on one prompt's sweep (its per-configuration columns):
        the explicit pairs, or with ``auto`` every configuration with 2 ≤ K ≤ k_clamp, in
        sweep order."""
        if self.configs != AUTO:
            return self.configs
        return tuple(
            (float(b), float(g))
            for b, g, k in zip(betas, gammas, ks)
            if 2 <= int(k) <= self.k_clamp
        )


def check_steering_configs(
    steering_cfg: Mapping[str, Any],
    clustering_cfg: Mapping[str, Any],
    baselines_cfg: Mapping[str, Any] | None = None,
) -> None:
    """At workflow start-up: every explicitly steered (β, γ) must be a point of the clustering
    sweep; with ``auto``, KM-Sem needs K-means labellings up to k_clamp."""
    settings = SteeringSettings.from_config(steering_cfg)
    clustering = section_defaults("clustering", clustering_cfg)
    betas, gammas = clustering["betas"], clustering["gammas"]
    if settings.configs == AUTO:
        k_max = section_defaults("baselines", baselines_cfg)["kmeans"]["k_max"]
        if settings.k_clamp > k_max:
            raise SteeringInputError(
                f"steering.k_clamp = {settings.k_clamp} exceeds baselines.kmeans.k_max = {k_max}: "
                "KM-Sem needs a K-means labelling at every steered K; raise k_max or lower k_clamp"
            )
        return
    for b, g in settings.configs:
        if not on_grid(betas, gammas, b, g):
            raise SteeringInputError(
                f"steering.configs: (beta={b:g}, gamma={g:g}) is not in the clustering sweep "
                f"(betas {betas} x gammas {gammas}); steer a configuration that is clustered"
            )
