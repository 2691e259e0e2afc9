"""Bounds on log p(x | c) in nats per example: the variational bound (ELBO) and the
importance-weighted bound of Burda et al. with k samples, which is tighter on average."""

from __future__ import annotations

import math

import torch
from torch import nn

Tensor = torch.Tensor


def _repeat(v: Tensor | None, k: int) -> Tensor | None:
    """Tile a batch k times along dim 0 (sample-major: row j*B + i is example i)."""
    if v is None:
        return None
    return v.repeat(k, *([1] * (v.dim() - 1)))


@torch.no_grad()
def elbo(model: nn.Module, x: Tensor, c: Tensor | None = None, camera: Tensor | None = None,
         n_samples: int = 1) -> Tensor:
    """ELBO (B,) averaged over ``n_samples`` draws of z ~ q (analytic KL per step)."""
    total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for _ in range(n_samples):
        total += model(x, c, camera).elbo
    return total / n_samples


@torch.no_grad()
def iwae_bound(model: nn.Module, x: Tensor, c: Tensor | None = None,
               camera: Tensor | None = None, k: int = 50, max_batch: int = 512) -> Tensor:
    """log (1/k) sum_j p(x, z_j | c) / q(z_j | x, c), z_j ~ q: (B,) in nats, >= ELBO on average
    and tending to log p(x | c) as k grows. Runs k * B examples in chunks of ``max_batch``."""
    if k < 1:
        raise ValueError(f"iwae_bound: k must be >= 1, got {k}")
    b = x.shape[0]
    per = max(1, max_batch // b)
    log_ws = []
    done = 0
    while done < k:
        m = min(per, k - done)
        out = model(_repeat(x, m), _repeat(c, m), _repeat(camera, m))
        log_ws.append(out.log_w.view(m, b))
        done += m
    lw = torch.cat(log_ws, 0)
    return torch.logsumexp(lw, 0) - math.log(k)
