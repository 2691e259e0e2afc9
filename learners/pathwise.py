"""The differentiable oracle: log p(x | soft render(decode(m))) with a pathwise gradient.

It makes ``Batch.soft_reward`` for estimators that require it (``pathwise``, hybrids), and the
diagnostics take its gradient as the reference the score-function estimates are compared with.
Same camera, lights, pixel likelihood and resolution as the GL reward, so only the softness
differs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from envs.renderer import Lights
from gen3d import estimators
from gen3d import geometry as geo
from gen3d.estimators import Estimator
from gen3d.mesh_model import MeshModel
from gen3d.softras import SoftRasteriser

class Oracle:
    """``loglik(m_rsample (B,K,D), images (B,3,H,W) in [0,1]) -> (B,K)`` in nats, summed over
    pixels and channels as ``envs.spaces.gaussian_loglik``; ``renders`` counts soft renders."""

    def __init__(self, model: MeshModel, size: int, noise: float, softras: SoftRasteriser):
        if noise <= 0:
            raise ValueError(f"train.sigma: the pixel noise must be > 0, got {noise}")
        self.model, self.size, self.sigma, self.softras = model, size, float(noise), softras
        self.renders = 0

    def render(self, m: Tensor) -> Tensor:
        """Soft images (..., 3, H, W) of mesh parameters m (..., D), differentiable in m."""
        out = self.softras.render_actions(self.model.decoder(m))
        self.renders += out.rgb[..., 0, 0, 0].numel()
        return out.rgb.movedim(-1, -3)

    def loglik(self, m_rsample: Tensor, images: Tensor) -> Tensor:
        if m_rsample.dim() != 3 or images.dim() != 4 or len(m_rsample) != len(images):
            raise ValueError(f"oracle.loglik: need m (B,K,D) and images (B,3,H,W) with the same B, "
                             f"got {tuple(m_rsample.shape)} and {tuple(images.shape)}")
        if tuple(images.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"oracle.loglik: images must be (B,3,{self.size},{self.size}) as "
                             f"data.size says, got {tuple(images.shape)}")
        d = images[:, None].to(m_rsample) - self.render(m_rsample)
        n = d[0, 0].numel()
        const = n * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))
        return -0.5 * d.pow(2).flatten(2).sum(-1) / self.sigma**2 - const


def make_oracle(cfg, model: MeshModel, device: torch.device | str | None = None,
                est: Estimator | None = None, **soft: Any) -> Oracle:
    """The oracle of a ``MeshRunConfig``: softness from ``soft``, else from the estimator's
    ``soft_options()`` (``est``, or the one the config names), else the soft rasteriser's own
    defaults. It computes on the device of the samples it is given (``device`` is unused)."""
    size = cfg.data.size
    sr = SoftRasteriser(size, size, Lights().arrays(), **_softness(cfg, est, soft))
    return Oracle(model, size, cfg.train.sigma, sr)


class ViewOracle:
    """The second view's soft term (``data.second_view``): ``loglik(m (B,K,D), idx (B,))``, the
    log-likelihood of each training image's view silhouette (``masks`` (N,H,W)) under the soft
    silhouette of the mesh turned about its centre, times ``weight``: the soft counterpart of
    the second pool's white-on-black GL reward (``learners.mesh_step.RewardSource``)."""

    def __init__(self, model: MeshModel, softras: SoftRasteriser, noise: float, masks,
                 weight: float):
        self.model, self.softras, self.sigma, self.weight = model, softras, float(noise), weight
        self.masks = torch.as_tensor(masks, dtype=torch.bool)

    def loglik(self, m_rsample: Tensor, idx) -> Tensor:
        alpha = self.softras.render_actions(self.model.decoder(m_rsample)).alpha  # (B,K,H,W)
        target = self.masks[torch.as_tensor(idx)].to(alpha)[:, None]
        d2 = 3 * (target - alpha).pow(2).flatten(2).sum(-1)  # white: three equal channels
        n = 3 * target[0, 0].numel()
        const = n * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))
        return self.weight * (-0.5 * d2 / self.sigma**2 - const)


def make_view_oracle(cfg, model: MeshModel, masks, est: Estimator | None = None) -> ViewOracle:
    """The second view's soft term of a ``MeshRunConfig`` with ``data.second_view``, with the
    softness ``make_oracle`` takes."""
    size = cfg.data.size
    turned = SoftRasteriser(size, size, Lights().arrays(), turn=geo.vertical_turn(cfg.data.second_view),
                            **_softness(cfg, est, {}))
    return ViewOracle(model, turned, cfg.train.sigma, masks, cfg.train.second_view_weight)


def _softness(cfg, est: Estimator | None, soft: dict) -> dict:
    """The soft rasteriser's options: ``soft``, else the estimator's ``soft_options()`` (``est``,
    or the one the config names), else its own defaults."""
    if est is None:
        est = estimators.build(cfg.estimator.name, **cfg.estimator.kwargs)
    return est.soft_options() | soft
