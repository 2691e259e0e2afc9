"""Gradient estimators for black-box (and soft) rewards, chosen by name.

The contract
------------
An estimator turns a ``Batch`` of K samples per input, with their rewards, into a surrogate
loss whose gradient is minus its estimate of the ELBO's gradient. The training loop asks it
nothing else than these, so a new estimator needs no edit of the loop:

``requires``
    which rewards the loop fills in: ``"reward"`` (black-box: every sample rendered by the GL
    render pool, no gradient) and/or ``"soft_reward"`` (the soft rasteriser's log-likelihood
    of ``Batch.sample``, differentiable). Without ``"reward"`` nothing is rendered in GL and
    ``Batch.reward`` holds the soft reward, detached.
``check_samples(k)``
    raises before the run when K (``train.samples``) is too small (``min_samples``).
``noise(shape, generator, device)``
    the standard-normal noise of the K samples (antithetic pairs override it).
``soft_options()``
    the soft rasteriser's settings (sigma, mode, cutoff) when ``"soft_reward"`` is required.
``surrogate(batch, kl, kl_weight)``
    the step's whole loss: ``loss(batch)`` plus the pathwise KL for objective ``"elbo"``
    (objective ``"iwae"``, VIMCO: the loss is the whole multi-sample bound).
``loss(batch)``
    what a subclass writes. Its value should read as minus the mean reward, its gradient as
    minus the estimate; gradients of the estimator's own auxiliary losses (baseline networks,
    control variates) go to its own parameters, which the loop trains with a second optimiser.
``stats()``
    the last call's diagnostics, logged as ``estimator/<name>``.

By hand, the loop reads::

    est = build("rloo")                      # or build(cfg.name, **cfg.kwargs)
    est.check_samples(K)
    eps = est.noise((B, K, D), generator=g)
    z = mu + sigma * eps                     # pathwise sample
    logp = Normal(mu, sigma).log_prob(z.detach()).sum(-1)
    batch = Batch(logp, reward, sample=z, features=h.detach())
    est.surrogate(batch, kl).backward()

``learners.mesh_step.surrogate`` does this for the mesh model (the run, ``learners.diagnose``
and the benchmarks all call it). Estimators with state in buffers are checkpointed by
``state_dict``; ``est.eval()`` freezes that state (repeated estimates at fixed parameters).

Built in: reinforce, moving_average, neural, rloo, optimal_cv, antithetic, vimco, lax (score
function, black-box rewards) and pathwise (soft rewards only, no score function).

Adding your own: a hybrid
-------------------------
Subclass ``Estimator`` and register it. This one mixes the score function of the GL reward f
with the soft rasteriser's pathwise gradient: the soft reward c (a differentiable function of
the reparameterised sample) is a control variate, and its exact expectation's gradient is
added back pathwise, so (f - c) grad log q + grad c is unbiased for any c; the more c follows
f, the less variance is left. A leave-one-out baseline on f - c removes the rest of the
offset (tested against exact gradients in ``tests/test_estimators.py``)::

    from gen3d.estimators import Batch, Estimator, leave_one_out_mean, register

    @register("soft_cv")
    class SoftControlVariate(Estimator):
        requires = frozenset({"reward", "soft_reward"})
        min_samples = 2  # the leave-one-out baseline needs another sample

        def __init__(self, weight: float = 1.0, sigma: float = 0.5):
            super().__init__()
            self.weight, self.sigma = weight, sigma

        def soft_options(self) -> dict:
            return {"sigma": self.sigma}

        def loss(self, batch: Batch):
            self._check(batch)
            c = self.weight * batch.soft_reward        # with pathwise grad
            resid = batch.reward - c.detach()          # f - c, no grad
            adv = resid - leave_one_out_mean(resid)
            score = (adv * (batch.logp - batch.logp.detach())).mean()
            path = (c - c.detach()).mean()             # grad c, value 0
            return -(score + path + batch.reward.mean())

Then ``--set estimator.name=soft_cv --set estimator.kwargs.weight=0.5`` trains with it: the
loop renders every sample in the GL pool AND soft-rasterises it, because ``requires`` says
so. Or, from a package of your own, advertise it as an entry point (no import needed)::

    # pyproject.toml of your package
    [project.entry-points."gen3d.estimators"]
    soft_cv = "mypkg.estimators:SoftControlVariate"

Measure its bias and variance on the toy problems with exact gradients in
``gen3d.estimators.toys``; ``build("soft_cv", weight=0.5)`` builds it and ``available()``
lists it.
"""

from gen3d.estimators import baselines, lax, pathwise, vimco  # noqa: F401  (register the built-ins)
from gen3d.estimators.base import (
    ENTRY_POINT_GROUP,
    Batch,
    Estimator,
    available,
    build,
    leave_one_out_mean,
    register,
)

__all__ = ["ENTRY_POINT_GROUP", "Batch", "Estimator", "available", "build",
           "leave_one_out_mean", "register"]
