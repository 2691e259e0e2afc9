"""The pathwise (reparameterisation) estimator: no score function at all, the reconstruction
term is differentiated through the soft rasteriser (``gen3d.softras``) instead of rendered by
the GL black box. A reference for the score-function estimators, and a trainer of its own."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from gen3d.estimators.base import Batch, Estimator, register


@register("pathwise")
class Pathwise(Estimator):
    """Minimises ``-soft_reward.mean()``: the soft rasteriser's log-likelihood of the
    reparameterised samples, back-propagated through the rendering. The learner renders
    nothing in the GL pool for it (``requires`` holds no "reward").

    sigma: edge softness in pixels; mode: "edges" (soft outline) or "faces" (SoftRas);
    cutoff: smallest coverage kept (sets the work per edge). See ``gen3d.softras``.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"soft_reward"})

    def __init__(self, sigma: float = 0.5, mode: str = "edges", cutoff: float = 1e-3) -> None:
        super().__init__()
        if sigma <= 0 or mode not in ("edges", "faces") or not 0 < cutoff < 0.5:
            raise ValueError(f"pathwise: need sigma > 0, mode 'edges' or 'faces' and 0 < cutoff "
                             f"< 0.5, got sigma={sigma}, mode={mode!r}, cutoff={cutoff}")
        self.sigma, self.mode, self.cutoff = sigma, mode, cutoff

    def soft_options(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "mode": self.mode, "cutoff": self.cutoff}

    def loss(self, batch: Batch) -> Tensor:
        self._check(batch)
        r = batch.soft_reward
        if r is None or not r.requires_grad:
            raise ValueError("estimator 'pathwise' needs Batch.soft_reward (B, K) with pathwise "
                             "grad: the soft rasteriser's log-likelihood of Batch.sample "
                             "(learners.mesh_step.surrogate fills it in)")
        self._record(reward_mean=r.detach().mean(), reward_std=r.detach().std(1).mean()
                     if r.shape[1] > 1 else 0.0)
        return -r.mean()
