"""A search for self-imitation's bests that GL's rewards referee: steps along the soft
rasteriser's gradient at each image's best (``train.self_imitation_search_soft``).

The soft render is differentiable but not GL's, so its gradient is biased as a gradient of the
GL likelihood; here it only proposes. Each visit renders J steps of geometric sizes along it in
GL beside the step's samples, and the best keeps whichever GL finds more likely: a line search
whose direction is pathwise and whose choice is the black box's. In 80-odd dimensions one good
direction and a few sizes find more than J random directions of one size do (measured in
``benchmarks/RESULTS.md``, eleventh session).
"""

from __future__ import annotations

import torch
from torch import Tensor


class SoftLineSearch:
    """J steps from each image's best along the soft rasteriser's gradient of its log-likelihood
    there (``learners.pathwise.Oracle``), of RMS sizes ``std`` * 2^(j - J/2), j = 0..J-1: a
    line search whose direction is pathwise, and biased as the soft render is, while GL's
    rewards choose the step, so a best only ever moves to a mesh GL finds more likely. With a
    ``view`` (``learners.pathwise.ViewOracle``) the direction climbs the second view's soft
    term too, as GL's reward does; with a ``prior`` (parameters (b, D) -> nats (b,), as
    ``MeshModel.mirror_log_prior``) it climbs the log-likelihood less that, as the rewards
    do with ``train.mirror_reward``."""

    def __init__(self, oracle, j: int, std: float, view=None, prior=None):
        self.oracle, self.j, self.view, self.prior = oracle, j, view, prior
        self.sizes = std * 2.0 ** (torch.arange(j, dtype=torch.float32) - j // 2)

    def proposals(self, best: Tensor, images: Tensor, idx=None) -> Tensor:
        """(b, J, D) steps from ``best`` (b, D) up the soft log-likelihood of ``images`` (and
        of training images ``idx``' second views, with a ``view``)."""
        m = best.detach().clone().requires_grad_(True)
        ll = self.oracle.loglik(m[:, None], images).sum()
        if self.view is not None:
            ll = ll + self.view.loglik(m[:, None], idx).sum()
        if self.prior is not None:
            ll = ll - self.prior(m).sum()
        (g,) = torch.autograd.grad(ll, m)
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        d = g / g.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
        return best.detach()[:, None] + self.sizes.to(best)[None, :, None] * d[:, None]
