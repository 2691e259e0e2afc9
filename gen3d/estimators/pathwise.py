"""The pathwise (reparameterisation) baseline: no score function at all, the reconstruction
term is differentiated through the soft rasteriser (``gen3d.softras``) instead of rendered by
the GL black box. A reference for the score-function estimators, and a trainer of its own."""

from __future__ import annotations

from torch import Tensor

from gen3d.estimators.base import Batch, Estimator, register


@register("pathwise")
class Pathwise(Estimator):
    """Marks the learner's differentiable path: with ``pathwise = True`` the learner builds
    ``learners.pathwise.make_oracle`` (a soft rasteriser with these softness settings) and
    minimises ``-oracle.loglik(m_rsample, x).mean() + kl.mean()`` with the GL pool unused.

    sigma: edge softness in pixels; mode: "edges" (soft outline) or "faces" (SoftRas);
    cutoff: smallest coverage kept (sets the work per edge). See ``gen3d.softras``.
    """

    pathwise = True
    objective = "elbo"

    def __init__(self, sigma: float = 0.5, mode: str = "edges", cutoff: float = 1e-3) -> None:
        super().__init__()
        if sigma <= 0 or mode not in ("edges", "faces") or not 0 < cutoff < 0.5:
            raise ValueError(f"pathwise: need sigma > 0, mode 'edges' or 'faces' and 0 < cutoff "
                             f"< 0.5, got sigma={sigma}, mode={mode!r}, cutoff={cutoff}")
        self.sigma, self.mode, self.cutoff = sigma, mode, cutoff

    def loss(self, batch: Batch) -> Tensor:
        # a Batch holds black-box rewards without gradient: nothing pathwise is left in it
        raise ValueError("estimator 'pathwise' differentiates the rendering itself, so it cannot "
                         "turn a Batch of black-box rewards into a gradient; train it through "
                         "learners.mesh_train (which calls learners.pathwise.make_oracle) or call "
                         "oracle.loglik(samples.m_rsample, images) and back-propagate")
