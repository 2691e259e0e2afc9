"""Toy problems with exact gradients, to check that an estimator (yours too) is unbiased.

Every row of a batch has its own copy of the parameters, so one backward gives B independent
estimates (row b's estimate is -B times its gradient), and a few steps give thousands::

    g = gaussian_estimates(build("rloo"))          # (N, 4): d/d(mu, log sigma)
    assert (z_scores(g, gaussian_exact()).abs() < 4).all()

Rewards sit far from zero (``OFFSET``), as log-likelihoods do, so baselines have work to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Normal

from gen3d.estimators.base import Batch, Estimator

MU0 = torch.tensor([0.5, -1.0])
LS0 = torch.tensor([-0.3, 0.2])  # log sigma
A = torch.tensor([1.5, -2.0])
Q = torch.tensor([-0.7, 0.4])  # quadratic coefficients
OFFSET = 10.0

CAT_LOGITS = torch.tensor([0.3, -0.5, 1.0, 0.0])
CAT_REWARD = torch.tensor([2.0, -1.0, 0.5, 3.0]) + OFFSET

Draw = Callable[[], tuple[tuple[Tensor, ...], Batch]]


def gaussian_reward(z: Tensor, q: Tensor = Q, offset: Tensor | float = OFFSET) -> Tensor:
    """offset + a.z + sum_d q_d z_d^2 for z (B, K, 2); a per-row offset (B,) is allowed."""
    off = offset[:, None] if isinstance(offset, Tensor) else offset
    return off + (z * A).sum(-1) + (z.pow(2) * q).sum(-1)


def gaussian_exact(q: Tensor = Q) -> Tensor:
    """d/d(mu, log sigma) of E[a.z + q.z^2] = a.mu + q.(mu^2 + sigma^2), z ~ N(mu, sigma^2)."""
    return torch.cat([A + 2 * q * MU0, 2 * q * LS0.exp().pow(2)])


def gaussian_mean_reward(q: Tensor = Q) -> float:
    return OFFSET + float((A * MU0).sum() + (q * (MU0.pow(2) + LS0.exp().pow(2))).sum())


def gaussian_draw(est: Estimator, B: int, K: int, gen: torch.Generator) -> tuple:
    """Per-row parameters (mu, log sigma), noise, pathwise samples z and log q(z.detach())."""
    mu = MU0.expand(B, 2).clone().requires_grad_(True)
    ls = LS0.expand(B, 2).clone().requires_grad_(True)
    eps = est.noise((B, K, 2), generator=gen)
    z = mu[:, None] + ls.exp()[:, None] * eps
    return (mu, ls), eps, z, Normal(mu[:, None], ls.exp()[:, None]).log_prob(z.detach()).sum(-1)


def collect(est: Estimator, draw: Draw, warmup: int, steps: int, lr: float = 1e-2) -> Tensor:
    """(steps * B, P) per-row estimates after ``warmup`` steps; the estimator's own
    parameters (baseline net, control variate) train with Adam throughout."""
    opt, out = None, []
    for step in range(warmup + steps):
        params, batch = draw()
        loss = est.loss(batch)
        if opt is None and list(est.parameters()):  # after the first call: lazy layers are sized
            opt = torch.optim.Adam(est.parameters(), lr=lr)
        if opt is not None:
            opt.zero_grad()
        loss.backward()
        if opt is not None:
            opt.step()
        if step >= warmup:
            out.append(-len(params[0]) * torch.cat([p.grad for p in params], 1))
    return torch.cat(out) if out else torch.empty(0)


def gaussian_estimates(est: Estimator, q: Tensor = Q, B: int = 256, K: int = 4,
                       warmup: int = 20, steps: int = 10, offset: Tensor | float = OFFSET,
                       feats: Tensor | None = None, seed: int = 0,
                       soft_q: Tensor | None = None) -> Tensor:
    """Estimates of d/d(mu, log sigma) of E[gaussian_reward] (compare with gaussian_exact).
    An estimator that requires a soft reward gets ``gaussian_reward`` with coefficients
    ``soft_q`` (default ``q``: exact) as ``Batch.soft_reward``, differentiable in the sample:
    a stand-in for the soft rasteriser, as close to the true reward as ``soft_q`` to ``q``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, 3, generator=gen) if feats is None else feats
    soft_q = q if soft_q is None else soft_q

    def draw() -> tuple:
        params, eps, z, logp = gaussian_draw(est, B, K, gen)
        reward = gaussian_reward(z.detach(), q, offset)
        soft = gaussian_reward(z, soft_q, offset) if "soft_reward" in est.requires else None
        return params, Batch(logp, reward, sample=z, features=feats, noise=eps, soft_reward=soft)

    return collect(est, draw, warmup, steps)


def categorical_draw(logits: Tensor, eps: Tensor) -> Tensor:
    """Category by inverse CDF of u = Phi(eps): antithetic eps pairs give u, 1 - u pairs."""
    u = 0.5 * (1 + torch.erf(eps[..., 0] / math.sqrt(2)))
    cdf = torch.softmax(logits.detach(), -1).cumsum(-1)
    return torch.searchsorted(cdf, u.contiguous()).clamp(max=logits.shape[-1] - 1)


def categorical_exact(logits: Tensor = CAT_LOGITS, reward: Tensor = CAT_REWARD) -> Tensor:
    """d/dlogits of sum_c p_c f_c, by enumeration: p * (f - E_p f)."""
    p = torch.softmax(logits, -1)
    return p * (reward - (p * reward).sum())


def categorical_estimates(est: Estimator, logits: Tensor = CAT_LOGITS,
                          reward: Tensor = CAT_REWARD, B: int = 256, K: int = 4,
                          warmup: int = 20, steps: int = 10, log_prior: Tensor | None = None,
                          seed: int = 0) -> Tensor:
    """Estimates of d/dlogits; ``reward`` and ``log_prior`` are tables over the categories
    (no pathwise sample: estimators that need one refuse)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, 3, generator=gen)

    def draw() -> tuple:
        theta = logits.expand(B, -1).clone().requires_grad_(True)
        eps = est.noise((B, K, 1), generator=gen)
        cat = categorical_draw(theta, eps)
        logp = torch.log_softmax(theta, -1).gather(1, cat)
        lp = None if log_prior is None else log_prior[cat]
        return (theta,), Batch(logp, reward[cat], features=feats, log_prior=lp, noise=eps)

    return collect(est, draw, warmup, steps)


def z_scores(estimates: Tensor, exact: Tensor) -> Tensor:
    """(mean - exact) / standard error, per coordinate."""
    se = estimates.std(0) / math.sqrt(len(estimates))
    if not bool((se > 0).all()):
        raise ValueError("degenerate estimates: no randomness reached the gradient")
    return (estimates.mean(0) - exact) / se
