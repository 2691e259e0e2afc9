"""Score-function gradient estimators for black-box rewards, chosen by name.

The learner draws K samples per input, renders them, and hands a ``Batch`` to the estimator::

    est = build("rloo")                      # or build(cfg.name, **cfg.kwargs)
    eps = est.noise((B, K, D), generator=g)  # antithetic overrides this
    z = mu + sigma * eps                     # pathwise sample
    logp = Normal(mu, sigma).log_prob(z.detach()).sum(-1)
    loss = est.loss(Batch(logp, reward, sample=z, features=h.detach()))
    (loss + kl).backward()                   # objective "iwae" (vimco): no KL, loss is the bound

Built in: reinforce, moving_average, neural, rloo, optimal_cv, antithetic, vimco, lax, and
pathwise (no score function: trains through the soft rasteriser, see learners.pathwise).
Estimators with parameters (neural, lax) train them through the same ``loss``: give
``est.parameters()`` to an optimiser too, and move the estimator to the model's device.
``est.eval()`` freezes running state (for repeated estimates at fixed parameters).

Adding your own, without editing gen3d: subclass ``Estimator`` and register it::

    from gen3d.estimators import Batch, Estimator, register

    @register("clipped_rloo")
    class ClippedRLOO(Estimator):
        min_samples = 2
        def __init__(self, clip: float = 10.0):
            super().__init__()
            self.clip = clip
        def loss(self, batch: Batch):
            r = batch.reward
            adv = r - (r.sum(1, keepdim=True) - r) / (r.shape[1] - 1)
            return -(adv.clamp(-self.clip, self.clip) * batch.logp).mean()

or, from a package of your own, advertise it as an entry point (no import needed)::

    # pyproject.toml of your package
    [project.entry-points."gen3d.estimators"]
    clipped_rloo = "mypkg.estimators:ClippedRLOO"

Measure its bias (clipping trades a little for variance) and variance on the toy problems
with exact gradients in ``gen3d.estimators.toys``.
Then the config's estimator name ``clipped_rloo`` (with ``clip`` as an option) builds it:
``build("clipped_rloo", clip=5.0)``; ``available()`` lists it.
"""

from gen3d.estimators import baselines, lax, pathwise, vimco  # noqa: F401  (register the built-ins)
from gen3d.estimators.base import (
    ENTRY_POINT_GROUP,
    Batch,
    Estimator,
    available,
    build,
    register,
)

__all__ = ["ENTRY_POINT_GROUP", "Batch", "Estimator", "available", "build", "register"]
