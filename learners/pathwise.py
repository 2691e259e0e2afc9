"""The differentiable oracle: log p(x | soft render(decode(m))) with a pathwise gradient.

The learner trains with it when the estimator is ``pathwise``; the diagnostics take its
gradient as the reference the score-function estimates are compared with. Same camera,
lights, pixel likelihood and resolution as the GL reward, so only the softness differs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from envs.renderer import Lights
from gen3d.mesh_model import MeshModel
from gen3d.softras import SoftRasteriser

SOFT_DEFAULTS = {"sigma": 0.5, "mode": "edges", "cutoff": 1e-3}


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


def make_oracle(cfg, model: MeshModel, device: torch.device | str, **soft: float) -> Oracle:
    """The oracle of a ``MeshRunConfig``: softness from ``soft``, else from the config's
    estimator options when it is ``pathwise``, else ``SOFT_DEFAULTS``. It computes on the
    device of the samples it is given (``device`` is accepted for the learner's hook)."""
    opts = dict(SOFT_DEFAULTS)
    if cfg.estimator.name == "pathwise":
        opts.update({k: v for k, v in cfg.estimator.kwargs.items() if k in opts})
    opts.update(soft)
    size = cfg.data.size
    sr = SoftRasteriser(size, size, Lights().arrays(), sigma=float(opts["sigma"]),
                        mode=str(opts["mode"]), cutoff=float(opts["cutoff"]))
    return Oracle(model, size, cfg.train.sigma, sr)
