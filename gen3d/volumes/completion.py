"""3D completion: fill in missing voxels with a Markov chain that alternates inference and
generation (z ~ q(z | x), x_missing ~ p(x | z)) while the observed voxels stay clamped."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

Tensor = torch.Tensor


def left_half_mask(x: Tensor) -> Tensor:
    """Observed-voxel mask (bool, like x) that hides the left half (x index < N/2)."""
    n = x.shape[-1]
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[..., : n // 2] = False
    return mask


@dataclass
class Completion:
    volume: Tensor
    """the last state of the chain: observed voxels as given, missing ones sampled"""
    probs: Tensor
    """mean occupancy of the missing voxels over the second half of the chain (observed: x)"""


@torch.no_grad()
def complete(model: nn.Module, x: Tensor, observed: Tensor, c: Tensor | None = None,
             steps: int = 50, seed: int | None = None) -> Completion:
    """Run ``steps`` rounds of inference and generation on x (B, 1, N, N, N), starting the
    missing voxels empty; observed voxels (``observed`` True) are never changed."""
    if observed.shape != x.shape or observed.dtype != torch.bool:
        raise ValueError(f"complete: observed must be a bool mask of shape {tuple(x.shape)}")
    if steps < 1:
        raise ValueError(f"complete: steps must be >= 1, got {steps}")
    gen = None
    if seed is not None:
        gen = torch.Generator(device=x.device).manual_seed(seed)
    cur = torch.where(observed, x, torch.zeros_like(x))
    acc = torch.zeros_like(x)
    counted = 0
    for i in range(steps):
        out = model(cur, c)
        p = model.likelihood.mean(out.params)
        draw = (torch.rand(p.shape, generator=gen, device=p.device, dtype=p.dtype) < p).to(x.dtype)
        cur = torch.where(observed, x, draw)
        if i >= steps // 2:
            acc += p
            counted += 1
    probs = torch.where(observed, x, acc / counted)
    return Completion(volume=cur, probs=probs)


def iou(pred: Tensor, truth: Tensor, region: Tensor | None = None) -> Tensor:
    """Intersection over union (B,) of binary volumes, within ``region`` if given; 1 where both
    are empty."""
    p, t = pred.bool(), truth.bool()
    if region is not None:
        p, t = p & region, t & region
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
