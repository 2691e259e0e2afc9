"""VIMCO (Mnih & Rezende, 2016): the score-function gradient of the K-sample bound
L = log (1/K) sum_k w_k, w_k = p(x|z_k) p(z_k) / q(z_k), with per-sample learning signals
L - L_{-k}, where L_{-k} replaces w_k by the geometric mean of the other K-1 weights."""

from __future__ import annotations

import torch
from torch import Tensor

from gen3d.estimators.base import Batch, Estimator, log_mean_exp, register


@register("vimco")
class VIMCO(Estimator):
    """Multi-sample bound: the loss is minus the whole bound (the learner adds no KL)."""

    objective = "iwae"
    min_samples = 2

    def loss(self, batch: Batch) -> Tensor:
        self._check(batch)
        if batch.log_prior is None:
            raise ValueError("estimator 'vimco' needs Batch.log_prior (B, K) = log p(sample) "
                             "to form the importance weights")
        logp = batch.logp
        K = logp.shape[1]
        # log-weights: reward = log p(x|z) (no grad), log p(z) (grad if the prior is learned),
        # -log q(z) (grad to the inference parameters with the sample held fixed)
        logw = batch.reward + batch.log_prior.to(logp) - logp
        bound = log_mean_exp(logw, dim=1)  # (B,)
        lw = logw.detach()
        loo_geo = (lw.sum(1, keepdim=True) - lw) / (K - 1)  # log geometric mean of the others
        eye = torch.eye(K, dtype=torch.bool, device=lw.device)
        swapped = torch.where(eye, loo_geo[:, :, None], lw[:, None, :])  # row k: w_k replaced
        signal = bound.detach()[:, None] - log_mean_exp(swapped, dim=2)  # (B, K)
        score = (signal * (logp - logp.detach())).sum(1)  # adds zero to the value
        with torch.no_grad():
            ess = torch.exp(2 * torch.logsumexp(lw, 1) - torch.logsumexp(2 * lw, 1))
        self._record(bound=bound, reward_mean=batch.reward.mean(), signal_std=signal.std(),
                     ess=ess)
        return -(bound + score).mean()
