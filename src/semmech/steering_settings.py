"""The ``steering`` config section, validated without the model stack.

Kept apart from :mod:`semmech.steering` so that the workflow can check the section when the
Snakefile is parsed (which happens once per job on a cluster) without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["SELECTIONS", "SOURCE_SPACES", "SteeringInputError", "SteeringSettings",
           "check_steering_configs"]

SELECTIONS = ("full", "positive", "negative")
SOURCE_SPACES = ("raw", "normalised")


class SteeringInputError(ValueError):
    """The steering stage's inputs or settings cannot be used (named in the message)."""


@dataclass(frozen=True)
class SteeringSettings:
    """The ``steering`` config section (schema defaults), validated.

    ``max_measured`` caps the members measured per cluster (own held-out and every other
    cluster; a seeded subset, the same for every ε and budget); ``None`` measures all.
    ``source_space``: ``raw`` (attribution units, default) or ``normalised`` (ã).
    """

    configs: tuple[tuple[float, float], ...] = ((1.0, 0.5),)
    budgets: tuple[int, ...] = (5, 10)
    epsilons: tuple[float, ...] = (-1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0)
    selection: str = "full"
    batch_size: int = 16
    n_generate: int = 4
    bootstrap: int = 1000
    max_measured: int | None = None
    source_space: str = "raw"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "SteeringSettings":
        cfg = dict(cfg or {})
        kw: dict[str, Any] = {}
        if "configs" in cfg:
            kw["configs"] = tuple((float(b), float(g)) for b, g in cfg["configs"])
        if "budgets" in cfg:
            kw["budgets"] = tuple(int(b) for b in cfg["budgets"])
        if "epsilons" in cfg:
            kw["epsilons"] = tuple(float(e) for e in cfg["epsilons"])
        for key in ("selection", "source_space"):
            if key in cfg:
                kw[key] = str(cfg[key])
        for key in ("batch_size", "n_generate", "bootstrap"):
            if key in cfg:
                kw[key] = int(cfg[key])
        if cfg.get("max_measured") is not None:
            kw["max_measured"] = int(cfg["max_measured"])
        out = cls(**kw)
        out.validate()
        return out

    def validate(self) -> None:
        if not self.configs:
            raise SteeringInputError("steering.configs is empty: name at least one (beta, gamma)")
        if not self.budgets or min(self.budgets) < 1:
            raise SteeringInputError(f"steering.budgets must be positive integers, got {list(self.budgets)}")
        eps = [float(e) for e in self.epsilons]
        if 0.0 not in eps:
            raise SteeringInputError(
                f"steering.epsilons {eps} lacks 0: ε = 0 is the unsteered reference every Δ is "
                "measured from")
        if len(set(eps)) != len(eps) or len(eps) < 2:
            raise SteeringInputError(f"steering.epsilons must be at least 2 distinct values, got {eps}")
        if not all(math.isfinite(e) for e in eps):
            raise SteeringInputError(f"steering.epsilons must be finite, got {eps}")
        if self.selection not in SELECTIONS:
            raise SteeringInputError(f"steering.selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.source_space not in SOURCE_SPACES:
            raise SteeringInputError(
                f"steering.source_space must be one of {SOURCE_SPACES}, got {self.source_space!r}")
        if self.batch_size < 1:
            raise SteeringInputError(f"steering.batch_size must be at least 1, got {self.batch_size}")
        if self.n_generate < 0:
            raise SteeringInputError(f"steering.n_generate must be >= 0, got {self.n_generate}")
        if self.max_measured is not None and self.max_measured < 1:
            raise SteeringInputError(f"steering.max_measured must be >= 1 or null, got {self.max_measured}")

    @property
    def nonzero_epsilons(self) -> tuple[float, ...]:
        return tuple(e for e in self.epsilons if e != 0.0)


def check_steering_configs(steering_cfg: Mapping[str, Any], clustering_cfg: Mapping[str, Any]) -> None:
    """At workflow start-up: every steered (β, γ) must be a point of the clustering sweep."""
    settings = SteeringSettings.from_config(steering_cfg)
    betas = [float(b) for b in clustering_cfg.get("betas", [0.5, 0.75, 1.0, 1.25])]
    gammas = [float(g) for g in clustering_cfg.get("gammas", [0.1, 0.3, 0.5, 0.7, 0.9])]
    for b, g in settings.configs:
        if not (any(math.isclose(b, x) for x in betas) and any(math.isclose(g, x) for x in gammas)):
            raise SteeringInputError(
                f"steering.configs: (beta={b:g}, gamma={g:g}) is not in the clustering sweep "
                f"(betas {betas} x gammas {gammas}); steer a configuration that is clustered")
