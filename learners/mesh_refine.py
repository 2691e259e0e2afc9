"""Per-image refinement of inferred meshes through the black-box renderer: semi-amortised
inference (Kim et al., "Semi-Amortized Variational Autoencoders", ICML 2018). The inference
network gives each image's mesh parameters m; refinement then climbs that image's own
likelihood log p(x | render(m)) with antithetic score-function (evolution-strategies) gradients
and Adam, in the model's unconstrained parameter space. It uses the image alone and the same
renderer as training: no truth, no gradient through the renderer.

Each step evaluates the current parameters with the samples, so every image keeps the best
parameters it has rendered: refinement never returns a mesh less likely than the inference
network's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from torch import Tensor

from gen3d.fields import AtLeast, NonNegInt, PosFloat

Evaluate = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(actions (N, A), target index (N,)) -> rewards (N,): log p(target | render(action))."""


@dataclass
class RefineConfig:
    steps: NonNegInt = 0
    """Refinement steps per held-out image (0: score the inference network's meshes as they
    are)."""
    samples: Annotated[int, AtLeast(2)] = 16
    """Samples per image and step, in antithetic pairs (even)."""
    std: PosFloat = 0.02
    """Std of the search distribution around each image's parameters (unconstrained space)."""
    lr: PosFloat = 0.01
    """Adam's step size on the parameters; falls linearly to a tenth over the steps."""

    def __post_init__(self):
        if self.steps < 0 or self.samples < 2 or self.samples % 2:
            raise ValueError("refine: need steps >= 0 and an even samples >= 2")
        if self.std <= 0 or self.lr <= 0:
            raise ValueError("refine: std and lr must be > 0")


def refine(m0: Tensor, decode: Callable[[Tensor], Tensor], evaluate: Evaluate,
           cfg: RefineConfig, target_idx: np.ndarray | None = None,
           generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
    """Refine parameters ``m0`` (N, D) of N images; ``decode`` maps parameters to renderer
    actions, ``evaluate`` renders them against image ``target_idx[i]`` (default i). Returns the
    best parameters found (N, D) and a log of the mean reward of the parameters per step."""
    n, d = m0.shape
    idx = np.arange(n) if target_idx is None else np.asarray(target_idx)
    half = cfg.samples // 2
    mu = m0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=cfg.lr)
    best, best_r = m0.detach().clone(), torch.full((n,), -float("inf"), dtype=m0.dtype)
    log = {"reward_mean": []}
    for step in range(cfg.steps + 1):
        eps = torch.randn(n, half, d, generator=generator, dtype=m0.dtype)
        with torch.no_grad():
            m = torch.cat([mu[:, None], mu[:, None] + cfg.std * eps, mu[:, None] - cfg.std * eps], 1)
            actions = decode(m.reshape(-1, d)).cpu().numpy()
        r = torch.as_tensor(evaluate(actions, np.repeat(idx, 1 + 2 * half)),
                            dtype=m0.dtype).reshape(n, 1 + 2 * half)
        if step == 0:
            first = r[:, 0].clone()
        better = r[:, 0] > best_r
        best[better], best_r[better] = mu.detach()[better], r[better, 0]
        log["reward_mean"].append(float(r[:, 0].mean()))
        if step == cfg.steps:  # the last evaluation only scores the last update
            break
        diff = r[:, 1:1 + half] - r[:, 1 + half:]
        # per-image scale: rewards of different images differ by orders of magnitude
        diff = diff / diff.abs().mean(1, keepdim=True).clamp_min(1e-8)
        mu.grad = -(diff[..., None] * eps).mean(1) / cfg.std
        for g in opt.param_groups:
            g["lr"] = cfg.lr * (1 - 0.9 * step / max(cfg.steps, 1))
        opt.step()
    log["best_reward_mean"] = float(best_r.mean())
    log["improved_frac"] = float((best_r > first).float().mean())
    return best, log
