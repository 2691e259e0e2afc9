"""LAX (Grathwohl et al., 2018): a learned control variate c_phi(z) for reparameterisable
samples z = z(theta, eps). The estimate (f(z) - c_phi(z)) grad log q(z) + grad_theta c_phi(z)
is unbiased for any phi, and phi is trained to minimise its variance.

RELAX, the paper's version for discrete samples, also needs the distribution's logits to draw
the conditional relaxed sample; the mesh model's samples are continuous, so LAX is the one."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call

from gen3d.estimators.base import (
    EMA,
    Batch,
    Estimator,
    check_width,
    mlp,
    model_leaves,
    register,
)


@register("lax")
class LAX(Estimator):
    """c_phi(z, x) = m + s * net([z, features]) (m, s: running reward mean and std).

    phi's gradient is d/dphi |g|^2 with g the estimate over the model's parameters (found in
    the autograd graph of logp and sample), as in the paper: it needs a double backward
    through the model. The model's gradient never depends on phi's update, nor vice versa.
    """

    def __init__(self, in_features: int | None = None, hidden: int = 64, decay: float = 0.99,
                 use_features: bool = True, var_weight: float = 1.0) -> None:
        super().__init__()
        self.net = mlp(in_features, hidden)
        self.scale = EMA(decay)
        self.use_features = use_features
        self.var_weight = var_weight

    def _inputs(self, z: Tensor, batch: Batch) -> Tensor:
        if self.use_features and batch.features is not None:
            f = batch.features.to(z)[:, None, :].expand(-1, z.shape[1], -1)
            z = torch.cat([z, f], dim=-1)
        check_width(self.net, z, "lax")
        return z

    def _c(self, x: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        out = self.net(x) if params is None else functional_call(self.net, params, (x,))
        return self.scale.mean + self.scale.std * out.squeeze(-1)

    def loss(self, batch: Batch) -> Tensor:
        self._check(batch)
        z = batch.sample
        if z is None or not z.requires_grad:
            raise ValueError("estimator 'lax' needs Batch.sample (B, K, D) drawn with rsample "
                             "(pathwise grad to the model); for non-reparameterisable samples "
                             "use rloo or vimco")
        r, logp = batch.reward, batch.logp
        x, x_det = self._inputs(z, batch), self._inputs(z.detach(), batch)
        c_det = self._c(x_det)  # phi attached (and materialises a lazy first layer)
        phi = [p for p in self.parameters() if p.requires_grad]
        aux = logp.new_zeros(())
        grad_sq = logp.new_zeros(())
        if self.training and self.var_weight > 0 and phi:
            theta = model_leaves(logp, z, exclude=phi)
            if not theta:
                raise ValueError("estimator 'lax': logp and sample have no gradient path to "
                                 "any parameter (computed under torch.no_grad?)")
            surrogate = ((r - c_det) * logp).mean() + self._c(x).mean()
            g = torch.autograd.grad(surrogate, theta, create_graph=True, allow_unused=True)
            sq = sum((gi.pow(2).sum() for gi in g if gi is not None), logp.new_zeros(()))
            dphi = torch.autograd.grad(sq, phi, allow_unused=True, retain_graph=True)
            # a term whose gradient is exactly d|g|^2/dphi on phi and nothing on theta; value 0
            for p, d in zip(phi, dphi, strict=True):
                if d is not None:
                    term = (p * d.detach()).sum()
                    aux = aux + term - term.detach()
            grad_sq = sq.detach()
        # the model's estimate, with phi held fixed
        frozen = {k: v.detach() for k, v in self.net.named_parameters()}
        c_path = self._c(x, frozen)
        adv = (r - c_det).detach()
        score = (adv * (logp - logp.detach())).mean() + (c_path - c_path.detach()).mean()
        self._record(reward_mean=r.mean(), baseline_mean=c_det, advantage_std=adv.std(),
                     grad_sq_norm=grad_sq)
        if self.training:
            self.scale.update(r)
        return -(score + r.mean()) + self.var_weight * aux
