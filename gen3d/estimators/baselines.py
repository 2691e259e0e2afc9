"""Score-function estimators that differ in their baseline: none, moving average, neural,
leave-one-out, the optimal control-variate coefficient, and antithetic pairs.

Each baseline for sample k is independent of sample k (built from past steps, other inputs'
features, or the other samples), which keeps every one of them unbiased at its defaults. One
option is biased: rloo's ``normalize`` (with or without ``keep_scale``) divides each input's
advantages by the std of that input's own K rewards; ``LeaveOneOut`` says by how much.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gen3d.estimators.base import (
    EMA,
    Batch,
    Estimator,
    check_width,
    leave_one_out_mean,
    mlp,
    model_leaves,
    register,
)


@register("reinforce")
class Reinforce(Estimator):
    """Plain score function, reward * grad log q: unbiased, high variance; the reference."""

    def loss(self, batch: Batch) -> Tensor:
        self._check(batch)
        return self._score_loss(batch, batch.reward.new_zeros(()))


@register("moving_average")
class MovingAverage(Estimator):
    """Baseline = bias-corrected exponential moving average of past steps' mean reward."""

    def __init__(self, decay: float = 0.9) -> None:
        super().__init__()
        self.ema = EMA(decay)

    def loss(self, batch: Batch) -> Tensor:
        self._check(batch)
        baseline = self.ema.mean.to(batch.reward)  # from past steps only: unbiased
        out = self._score_loss(batch, baseline)
        if self.training:
            self.ema.update(batch.reward)
        return out


@register("rloo")
class LeaveOneOut(Estimator):
    """Baseline for sample k = mean reward of the other K-1 samples of the same input (RLOO):
    unbiased.

    ``normalize=True`` also divides each input's advantages by the std of its K rewards (plus
    ``eps``): every image then pulls with the same weight whatever the scale of its
    log-likelihood (a big object's reward varies far more than a small one's). BIASED: the
    std comes from the same samples it weighs, and it rescales each input's gradient, so
    this is an ascent direction, not an estimate of the ELBO's gradient. ``keep_scale=True``
    then multiplies every input's by the batch's mean of those stds, so the gradient keeps
    roughly its size against the KL's exact one (normalising alone divides it by the reward's
    spread: thousands of nats on images, and the KL pulled q(z | x) onto the prior).
    Measured on a Gaussian policy with an exactly known gradient (``gen3d.estimators.toys``,
    eps 1; reproduced by
    ``tests/test_estimators.py::test_normalised_rloo_is_biased_by_the_documented_amount``),
    the mean estimate's projection on the true gradient is, as a fraction of it:

    ==========================  ======  ======  ======  ======
    K                           2       4       8       16
    ==========================  ======  ======  ======  ======
    plain (unbiased)            1.00    1.00    1.00    1.00
    normalize                   0.16    0.19    0.20    0.21
    normalize + keep_scale      0.60    0.79    0.89    0.94
    ==========================  ======  ======  ======  ======

    and its direction turns by a cosine of 0.970 (K=2) to 0.998 (K=16): the log-std
    coordinates lag most (0.22 of their size at K=2, 0.78 at K=16 with keep_scale), since a
    wide spread of rewards is what normalising divides away."""

    min_samples = 2

    def __init__(self, normalize: bool = False, eps: float = 1.0, keep_scale: bool = False) -> None:
        super().__init__()
        if not eps >= 0:
            raise ValueError(f"rloo: eps (added to the rewards' std) must be >= 0, got {eps}")
        self.normalize = normalize
        self.eps = eps
        self.keep_scale = keep_scale

    def loss(self, batch: Batch) -> Tensor:
        self._check(batch)
        b = leave_one_out_mean(batch.reward)
        if not self.normalize:
            return self._score_loss(batch, b)
        r = batch.reward
        scale = r.std(1, keepdim=True) + self.eps
        if self.keep_scale:
            scale = scale / scale.mean()
        scaled = Batch(batch.logp, r / scale, batch.sample, batch.features, batch.log_prior, batch.noise)
        loss = self._score_loss(scaled, b / scale)
        return loss + (r / scale).mean() - r.mean()  # keep the value -mean(reward)


@register("neural")
class NeuralBaseline(Estimator):
    """Input-conditioned baseline b(x) = m + s * net(features), net trained by regression on
    the normalised rewards (m, s: running mean and std of rewards), so the MLP only learns
    the per-input residual whatever the reward's scale (log-likelihoods of whole images)."""

    def __init__(self, in_features: int | None = None, hidden: int = 64, decay: float = 0.99,
                 weight: float = 1.0) -> None:
        super().__init__()
        self.net = mlp(in_features, hidden)
        self.scale = EMA(decay)
        self.weight = weight

    def baseline(self, features: Tensor) -> Tensor:
        """(B,) baseline for each input, from the current net and running statistics."""
        return self.scale.mean + self.scale.std * self.net(features).squeeze(-1)

    def loss(self, batch: Batch) -> Tensor:
        self._check(batch)
        if batch.features is None:
            raise ValueError("estimator 'neural' needs Batch.features (B, F): pass the detached "
                             "encoder features of each input")
        r = batch.reward
        x = batch.features.to(r)
        check_width(self.net, x, "neural")
        with torch.no_grad():
            b = self.baseline(x)[:, None]  # fixed during this step: independent of the samples
        out = self._score_loss(batch, b)
        if self.training:
            self.scale.update(r)
        # regress on the normalised reward with the updated statistics (target scale ~ 1)
        target = ((r - self.scale.mean) / self.scale.std).detach()
        pred = self.net(x)  # (B, 1); x is detached, so nothing flows into the model
        fit = (pred - target).pow(2).mean()
        self._last["baseline_fit"] = fit.detach()
        return out + self.weight * fit


@register("optimal_cv")
class OptimalControlVariate(Estimator):
    """The score s = grad log q has mean zero, so c * s is a control variate for r * s; the
    coefficient minimising the trace of the covariance is c* = E[r |s|^2] / E[|s|^2].

    One coefficient per input (global over parameter coordinates), estimated leave-one-out
    from the other K-1 samples so that it stays independent of the sample it multiplies.
    Global over coordinates because it keeps one scalar weight per sample (so the learner's
    single backward still computes the estimate) and because per-coordinate ratios from K-1
    samples are too noisy to pay off; per input because rewards differ far more between images
    than between samples of one image. Costs one per-sample gradient norm: about B*K extra
    (vectorised) backward passes per step; ``chunk`` of them at once (memory: chunk times
    the activations of the backward).
    """

    min_samples = 2

    def __init__(self, chunk: int = 32) -> None:
        super().__init__()
        if chunk < 1:
            raise ValueError(f"optimal_cv: chunk (samples per backward pass) must be >= 1, got {chunk}")
        self.chunk = chunk

    def loss(self, batch: Batch) -> Tensor:
        self._check(batch)
        leaves = model_leaves(batch.logp, exclude=list(self.parameters()))
        if not leaves:
            raise ValueError("estimator 'optimal_cv': Batch.logp has no gradient path to any "
                             "parameter (was it computed under torch.no_grad?)")
        r = batch.reward
        w = score_sq_norms(batch.logp, leaves, self.chunk).to(r)  # (B, K) |grad log q_k|^2
        num = (r * w).sum(1, keepdim=True) - r * w
        den = w.sum(1, keepdim=True) - w
        ok = den > 1e-12 * w.sum(1, keepdim=True).clamp_min(1e-30)
        c = torch.where(ok, num / den.clamp_min(1e-30), leave_one_out_mean(r))
        out = self._score_loss(batch, c)
        self._last["score_sq_norm"] = w.mean()
        return out


def score_sq_norms(logp: Tensor, leaves: list[Tensor], chunk: int = 64) -> Tensor:
    """|grad_theta logp_i|^2 for every entry of ``logp`` (per-sample gradients, vectorised)."""
    flat = logp.reshape(-1)
    n = flat.numel()
    out = flat.new_zeros(n).detach()
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(n, start + chunk), device=flat.device)
        eye = flat.new_zeros(len(idx), n).detach()
        eye[torch.arange(len(idx)), idx] = 1.0
        try:
            grads = torch.autograd.grad(flat, leaves, grad_outputs=eye, retain_graph=True,
                                        is_grads_batched=True, allow_unused=True)
        except RuntimeError:  # an op without a batching rule: one backward per sample
            rows = [torch.autograd.grad(flat[i], leaves, retain_graph=True, allow_unused=True)
                    for i in idx.tolist()]
            grads = tuple(None if rows[0][j] is None else torch.stack([g[j] for g in rows])
                          for j in range(len(leaves)))
        for g in grads:
            if g is not None:
                out[idx] += g.detach().reshape(len(idx), -1).pow(2).sum(1)
    return out.reshape(logp.shape)


@register("antithetic")
class Antithetic(Estimator):
    """Antithetic noise pairs (eps, -eps) at positions (2i, 2i+1) along K, plus a baseline.

    The baseline for a pair must not see that pair (its two samples are dependent), so it is
    the mean reward of the other pairs ("leave_pair_out", K >= 4) or a moving average.
    """

    min_samples = 2

    def __init__(self, baseline: str = "leave_pair_out", decay: float = 0.9) -> None:
        super().__init__()
        if baseline not in ("leave_pair_out", "moving_average"):
            raise ValueError(f"antithetic baseline must be 'leave_pair_out' or 'moving_average', "
                             f"got {baseline!r}")
        self.baseline = baseline
        self.ema = EMA(decay)

    def noise(self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
        B, K, *rest = tuple(shape)
        if K % 2:
            raise ValueError(f"antithetic sampling pairs samples along K, so K must be even, "
                             f"got K={K}")
        half = torch.randn((B, K // 2, *rest), generator=generator, device=device)
        return torch.stack([half, -half], dim=2).reshape(B, K, *rest)

    def loss(self, batch: Batch) -> Tensor:
        self._check(batch)
        K = batch.reward.shape[1]
        if K % 2:
            raise ValueError(f"estimator 'antithetic' needs an even K (pairs), got K={K}")
        if batch.noise is not None and not torch.equal(batch.noise[:, 1::2], -batch.noise[:, 0::2]):
            raise ValueError("estimator 'antithetic': Batch.noise is not in (eps, -eps) pairs; "
                             "draw the noise with estimator.noise(...)")
        r = batch.reward
        if self.baseline == "leave_pair_out":
            if K < 4:
                raise ValueError("antithetic baseline 'leave_pair_out' needs K >= 4 (two pairs); "
                                 "raise K or use baseline: moving_average")
            pair = r[:, 0::2] + r[:, 1::2]
            b = ((pair.sum(1, keepdim=True) - pair) / (K - 2)).repeat_interleave(2, dim=1)
        else:
            b = self.ema.mean.to(r)
        out = self._score_loss(batch, b)
        if self.training:
            self.ema.update(r)
        return out
