"""A pathwise term beside the score function: the soft rasteriser's log-likelihood of each
image's mean mesh, differentiated through the soft render (``train.soft_mean``).

The score-function estimator learns from the GL renders of K noisy samples per image; this term
adds, for the one mesh at the mean of p(m | z) (z as sampled, so the term is pathwise in z too),
the exact gradient of log p(x | soft render(m)) with the GL renderer's camera, lights and pixel
likelihood (``learners.pathwise.Oracle``). One soft render per image, not K: it costs about as
much as a micro-batch's backward at 64x64 on one CPU thread. Biased, as the soft render is not
the GL one (they agree as the softness goes to 0).

Each image's term is divided by the same per-image scale as normalised RLOO's advantages (the
std of its K rewards plus 1, over the batch's mean of those), so that at weight 1 the term
pulls each image about as hard as the score-function term does.
"""

from __future__ import annotations

from torch import Tensor

from gen3d.mesh_model import Samples
from learners.pathwise import Oracle


class SoftMean:
    """The pathwise term's loss for a micro-batch, at weight ``weight``."""

    def __init__(self, oracle: Oracle, weight: float):
        self.oracle, self.weight = oracle, weight

    def loss(self, s: Samples, images: Tensor, reward: Tensor) -> Tensor:
        """Minus the weighted mean over images of the soft log-likelihood of each image's first
        sample's mean ``s.mean[:, 0]`` (B, D) against ``images`` (B,3,H,W), scaled per image by
        its GL ``reward`` (B, K) spread; the value is 0 (the loss keeps reading as -ELBO)."""
        ll = self.oracle.loglik(s.mean[:, :1], images)[:, 0]
        spread = reward.detach().std(1) + 1.0 if reward.shape[1] > 1 else reward.new_ones(len(ll))
        per_image = spread.mean() / spread
        return -self.weight * (per_image * (ll - ll.detach())).mean()
