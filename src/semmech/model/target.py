"""The demeaned-logit target that attribution linearises and steering measures.

ℓ̃_y = ℓ_y − mean_v ℓ_v, read from final hidden states; one class so that both stages read
exactly the same number.
"""

from __future__ import annotations

import torch

from .layout import ModelLayout


class DemeanedLogit:
    """Demeaned-logit directions, cached per model: ℓ̃_y = ⟨W_y − mean W, h⟩ + (b_y − mean b)."""

    def __init__(self, layout: ModelLayout, hf: torch.nn.Module):
        w, b = layout.unembedding(hf)
        self.w = w.detach()
        self.b = None if b is None else b.detach().float()
        self.w_mean = self.w.float().mean(0)
        self.softcap = layout.logit_softcap

    def target(self, hs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ℓ̃ [B,T] differentiable in hs, constant lm-head-bias part [B,T])."""
        hs = hs.float()
        if self.softcap is None:
            direction = self.w[y].float() - self.w_mean
            const = (
                torch.zeros(y.shape, device=hs.device)
                if self.b is None
                else self.b[y] - self.b.mean()
            )
            return (hs * direction).sum(-1) + const, const
        # A final softcap c·tanh(z/c) is linearised like the norms: its ratio to z is frozen.
        z = hs @ self.w.float().T
        if self.b is not None:
            z = z + self.b
        zd = z.detach()
        capped = self.softcap * torch.tanh(zd / self.softcap)
        ratio = torch.where(
            zd == 0, torch.ones_like(zd), capped / torch.where(zd == 0, torch.ones_like(zd), zd)
        )
        logits = ratio * z
        tgt = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) - logits.mean(-1)
        if self.b is None:
            const = torch.zeros(y.shape, device=hs.device)
        else:
            rb = ratio * self.b
            const = rb.gather(-1, y.unsqueeze(-1)).squeeze(-1) - rb.mean(-1)
        return tgt, const


def demeaned_logits(target: DemeanedLogit, hidden: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ℓ̃_y from final hidden states [..., d] for tokens y [...] (no gradient bookkeeping)."""
    return target.target(hidden, y)[0]
