"""Self-imitation's bests refined in the background: per-image antithetic evolution-strategies
steps with Adam, the search ``learners.mesh_refine`` runs on held-out images at the end, spread
here over a run's visits to each training image.

Each training image keeps a search mean ``mu`` beside its best. A visit renders ``mu`` and J
antithetic steps around it (``proposals``); every render is offered to the bests, and the
antithetic differences give an estimate of the gradient of the image's log-likelihood at
``mu``, one Adam step of which moves ``mu`` (``update``). When the network samples a mesh more
likely than ``mu``'s last render, the search restarts from it (``restart``): the network's own
progress is never lost to a search that has wandered.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from learners.mesh_refine import antithetic_grad


class AntitheticSearch:
    """Search means (n, dim) and their per-image Adam state; J (even) steps of std ``std``
    around each mean a visit, Adam step size ``lr``."""

    betas = (0.9, 0.999)

    def __init__(self, n: int, dim: int, dev, j: int, std: float, lr: float):
        if j < 2 or j % 2:
            raise ValueError(f"an antithetic search needs an even number of steps >= 2, got {j}")
        self.j, self.std, self.lr = j, std, lr
        self.mu = torch.zeros(n, dim, device=dev)
        self.r_mu = torch.full((n,), -float("inf"), device=dev)
        self.m1 = torch.zeros(n, dim, device=dev)
        self.m2 = torch.zeros(n, dim, device=dev)
        self.t = torch.zeros(n, device=dev)

    @property
    def renders(self) -> int:
        """Renders a visit asks for: the mean and its J steps."""
        return 1 + self.j

    def proposals(self, idx: np.ndarray, generator: torch.Generator | None = None) -> Tensor:
        """(b, 1 + J, D): each image's mean, then J/2 steps and their mirror images."""
        i = torch.as_tensor(idx, device=self.mu.device)
        mu = self.mu[i][:, None]
        eps = torch.randn(len(idx), self.j // 2, self.mu.shape[1], generator=generator,
                          device=self.mu.device)
        return torch.cat([mu, mu + self.std * eps, mu - self.std * eps], 1)

    def update(self, idx: np.ndarray, props: Tensor, reward: Tensor) -> None:
        """One Adam step of each image's mean from the rewards (b, 1 + J) of ``props``."""
        i = torch.as_tensor(idx, device=reward.device)
        h = self.j // 2
        eps = (props[:, 1:1 + h] - props[:, :1]) / self.std
        g = antithetic_grad(reward[:, 1:1 + h], reward[:, 1 + h:], eps, self.std)
        for row, k in enumerate(i.tolist()):  # one at a time: an image may be drawn twice
            self.r_mu[k] = reward[row, 0]
            self._adam(k, g[row])

    def _adam(self, k: int, g: Tensor) -> None:
        b1, b2 = self.betas
        self.t[k] += 1
        self.m1[k] = b1 * self.m1[k] + (1 - b1) * g
        self.m2[k] = b2 * self.m2[k] + (1 - b2) * g * g
        m_hat = self.m1[k] / (1 - b1 ** self.t[k])
        v_hat = self.m2[k] / (1 - b2 ** self.t[k])
        self.mu[k] = self.mu[k] + self.lr * m_hat / (v_hat.sqrt() + 1e-8)  # ascent

    def restart(self, idx: np.ndarray, m: Tensor, reward: Tensor) -> None:
        """Restart the search of each image of ``idx`` (b,) whose most likely network sample
        (``m`` (b, K, D), ``reward`` (b, K)) beats its mean's last render, from that sample."""
        i = torch.as_tensor(idx, device=reward.device)
        top, arg = reward.max(1)
        for row in (top > self.r_mu[i]).nonzero().flatten().tolist():
            k = int(i[row])
            if top[row] > self.r_mu[k]:
                self.mu[k], self.r_mu[k] = m[row, arg[row]], top[row]
                self.m1[k], self.m2[k], self.t[k] = 0.0, 0.0, 0.0

    def state_dict(self) -> dict:
        return {"mu": self.mu, "r_mu": self.r_mu, "m1": self.m1, "m2": self.m2, "t": self.t}

    def load_state_dict(self, st: dict) -> None:
        for k, v in self.state_dict().items():
            v.copy_(st[k])


class SoftLineSearch:
    """J steps from each image's best along the soft rasteriser's gradient of its log-likelihood
    there (``learners.pathwise.Oracle``), of RMS sizes ``std`` * 2^(j - J/2), j = 0..J-1: a
    line search whose direction is pathwise, and biased as the soft render is, while GL's
    rewards choose the step, so a best only ever moves to a mesh GL finds more likely."""

    def __init__(self, oracle, j: int, std: float):
        self.oracle, self.j = oracle, j
        self.sizes = std * 2.0 ** (torch.arange(j, dtype=torch.float32) - j // 2)

    @property
    def renders(self) -> int:
        return self.j

    def proposals(self, best: Tensor, images: Tensor) -> Tensor:
        """(b, J, D) steps from ``best`` (b, D) up the soft log-likelihood of ``images``."""
        m = best.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.oracle.loglik(m[:, None], images).sum(), m)
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        d = g / g.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
        return best.detach()[:, None] + self.sizes.to(best)[None, :, None] * d[:, None]
