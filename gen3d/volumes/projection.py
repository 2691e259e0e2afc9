"""The learned projection from an F-channel canvas to images, and the image likelihoods.

``LearnedProjection(canvas, state, camera)`` (the paper's Proj for image data):

1. camera: a rotation and translation of the canvas into the camera frame, applied with the
   VST (``vst.write_dense``, exact for any rotation). With ``camera="known"`` it is the data's
   world-to-camera ``[R | t]`` (``gen3d.data.views``); ``"learned"`` reads it from the final
   state s_T (the paper's choice); ``"both"`` composes the known camera after a learned object
   pose read from s_T (identity at initialisation);
2. 3D convolutions over the camera-frame volume;
3. depth folded into channels: (C, D, H, W) -> (C * D, H, W);
4. 2D convolutions to a 1 x H x W image of likelihood parameters.

Camera frame: x right (column), y down (row), z forward (depth index 0 is nearest), the box
``[-extent, extent]^3`` sampled at ``image_size`` points per axis, as in ``gen3d.data.views``.

Beyond the paper, ``render_prior=True`` adds a fixed differentiable render of canvas channel 0
read as occupancy logits (alpha compositing along each ray: hit probability for silhouettes,
expected first-hit depth for depth images; or the max along the ray for silhouettes) to the
learned output, whose last layer starts at zero. It anchors channel 0 to mean occupancy, so
the canvas can be thresholded and scored in 3D; the learned layers still correct what the
plain render gets wrong.

Several views: a camera of shape (B, V, 3, 4) applies the same weights once per view and
returns (B, V, 1, H, W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gen3d.fields import AtLeast, FiniteFloat, PosFloat, PosInt
from gen3d.volumes import vst

Tensor = torch.Tensor


@dataclass
class ProjectionConfig:
    """The learned projection operator (canvas -> image)."""

    image_size: Annotated[int, AtLeast(4)] = 32
    """Pixels per image side; also the depth samples of the camera-frame volume."""
    extent: PosFloat = 1.0
    """Half-width of the box the camera sees, in canvas units (the canvas spans [-1, 1])."""
    camera: Literal["known", "learned", "both"] = "known"
    """Where the camera transform comes from: the data's cameras, s_T alone (paper), or both."""
    layers: Literal["learned", "max"] = "learned"
    """"learned": 3D convs, depth into channels, 2D convs; "max": max over depth of channel 0
    (no weights; a reference for tests)."""
    conv3d: list[PosInt] = field(default_factory=lambda: [8])
    """Output channels of each 3x3x3 convolution before depth is folded into channels."""
    conv2d: list[PosInt] = field(default_factory=lambda: [32, 32])
    """Output channels of each 3x3 convolution before the final 1-channel one."""
    render_prior: bool = True
    """Add a fixed render of canvas channel 0 to the learned output (beyond the paper)."""
    render: Literal["alpha", "max"] = "alpha"
    """How that render reads silhouettes: alpha compositing (P(hit) = 1 - prod(1 - p)), or the
    max of p along the ray, which only a confident voxel can light, so occupancy stays sharp.
    Depth images always use alpha compositing (expected first-hit depth)."""
    occupancy_bias: FiniteFloat = 0.0
    """Initial learned bias added to channel 0 before it is read as occupancy logits; with the
    model's canvas_bias it should make an empty canvas render as empty space, not fog."""
    likelihood: Literal["bernoulli", "gaussian"] = "gaussian"
    """Image likelihood: Bernoulli for silhouettes (params are logits), Gaussian for depth."""
    sigma: PosFloat = 0.1
    """Initial standard deviation of the Gaussian likelihood (learned, one per model)."""
    min_sigma: PosFloat = 0.01
    """Floor on the Gaussian standard deviation, so the density cannot blow up."""

    def __post_init__(self) -> None:
        if self.image_size < 4:
            raise ValueError(f"image_size must be at least 4, got {self.image_size}")
        if self.extent <= 0:
            raise ValueError(f"extent must be positive, got {self.extent}")
        if not 0 < self.min_sigma <= self.sigma:
            raise ValueError(f"need 0 < min_sigma <= sigma, got {self.min_sigma}, {self.sigma}")


def _mlp_zero(inp: int, out: int) -> nn.Linear:
    lin = nn.Linear(inp, out)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class LearnedProjection(nn.Module):
    """F-channel canvas (B, F, N, N, N), final state s_T (B, S) and cameras (B, 3, 4) or
    (B, V, 3, 4) -> image parameters (B, 1, H, W) or (B, V, 1, H, W)."""

    def __init__(self, cfg: ProjectionConfig, canvas_channels: int, state_dim: int):
        super().__init__()
        self.cfg, self.channels = cfg, canvas_channels
        n = cfg.image_size
        # pose read from s_T: axis-angle (3) and translation (3), zero = identity at the start
        self.pose = _mlp_zero(state_dim, 6) if cfg.camera != "known" else None
        self.occ_bias = nn.Parameter(torch.tensor(float(cfg.occupancy_bias)))
        layers3: list[nn.Module] = []
        c = canvas_channels
        for k in cfg.conv3d:
            layers3 += [nn.Conv3d(c, k, 3, padding=1), nn.ReLU()]
            c = k
        self.conv3d = nn.Sequential(*layers3)
        layers2: list[nn.Module] = []
        c2 = c * n + (1 if cfg.render_prior else 0)
        for k in cfg.conv2d:
            layers2 += [nn.Conv2d(c2, k, 3, padding=1), nn.ReLU()]
            c2 = k
        last = nn.Conv2d(c2, 1, 3, padding=1)
        if cfg.render_prior:  # start as the plain render; the layers learn a correction
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.conv2d = nn.Sequential(*layers2, last)
        self.likelihood = (GaussianLikelihood(cfg.sigma, cfg.min_sigma)
                           if cfg.likelihood == "gaussian" else BernoulliImageLikelihood())

    # ------------------------------------------------------------------ camera transforms
    def learned_pose(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Rotation (B, 3, 3) and translation (B, 3) read from s_T (identity when unused)."""
        b = state.shape[0]
        if self.pose is None:
            return (torch.eye(3, device=state.device, dtype=state.dtype).expand(b, 3, 3),
                    state.new_zeros(b, 3))
        raw = self.pose(state)
        return vst.rotation_matrix(raw[:, :3]), raw[:, 3:]

    def world_to_camera(self, state: Tensor, camera: Tensor | None) -> tuple[Tensor, Tensor]:
        """The total rotation (B, 3, 3) and translation (B, 3) from canvas to camera frame."""
        r_l, t_l = self.learned_pose(state)
        if self.cfg.camera == "learned":
            return r_l, t_l
        if camera is None:
            raise ValueError("LearnedProjection: camera='known'/'both' needs the data's cameras; "
                             "pass camera=(B, 3, 4) world-to-camera matrices")
        r_k, t_k = camera[:, :, :3].to(state), camera[:, :, 3].to(state)
        return r_k @ r_l, (r_k @ t_l[..., None])[..., 0] + t_k

    def object_frame(self, canvas: Tensor, state: Tensor, camera: Tensor | None = None) -> Tensor:
        """The canvas resampled into the object (world) frame of the data: the learned pose
        for "known"/"both"; for "learned", the inverse of the known ``camera`` (B, 3, 4) after
        the learned camera. Same size as the canvas."""
        r, t = self.learned_pose(state)
        if self.cfg.camera == "learned":
            if camera is None:
                raise ValueError("object_frame: camera='learned' needs the known camera of the "
                                 "view to undo; pass camera=(B, 3, 4)")
            r_k, t_k = camera[:, :, :3].to(state), camera[:, :, 3].to(state)
            r, t = r_k.transpose(1, 2) @ r, (r_k.transpose(1, 2) @ (t - t_k)[..., None])[..., 0]
        ones = canvas.new_ones(canvas.shape[0], 3)
        return vst.write_dense(canvas, ones, t, canvas.shape[-1], rotation=r)

    def to_camera(self, canvas: Tensor, state: Tensor, camera: Tensor | None) -> Tensor:
        """Canvas (B, F, N, N, N) -> camera-frame volume (B, F, n, n, n), n = image_size."""
        r, t = self.world_to_camera(state, camera)
        e = self.cfg.extent
        # vst.write_dense maps c -> R^T S^-1 (c - shift); S = 1/extent gives x_cam = extent * c
        scale = canvas.new_full((canvas.shape[0], 3), 1.0 / e)
        return vst.write_dense(canvas, scale, t / e, self.cfg.image_size, rotation=r)

    # ------------------------------------------------------------------ the operator
    def render(self, occ: Tensor) -> Tensor:
        """Camera-frame occupancy probabilities (B, n, n, n) along depth (dim 1) -> silhouette
        logits (alpha compositing or max) or expected first-hit depth (background 1),
        (B, 1, n, n)."""
        occ = occ.clamp(1e-6, 1 - 1e-6)
        if self.cfg.likelihood == "bernoulli" and self.cfg.render == "max":
            return torch.logit(occ.amax(1, keepdim=True))
        log_t = torch.cumsum(torch.log1p(-occ), 1)            # log transmittance after voxel d
        if self.cfg.likelihood == "bernoulli":
            log_miss = log_t[:, -1].clamp(max=-1e-6)
            return (torch.log(-torch.expm1(log_miss)) - log_miss)[:, None]
        n = occ.shape[1]
        hit = occ * torch.exp(F.pad(log_t[:, :-1], (0, 0, 0, 0, 1, 0)))  # P(first hit at d)
        z = (torch.arange(n, device=hit.device, dtype=hit.dtype) + 0.5) / n
        depth = (hit * z[:, None, None]).sum(1) + torch.exp(log_t[:, -1])
        return depth[:, None]

    def forward(self, canvas: Tensor, state: Tensor, camera: Tensor | None = None) -> Tensor:
        if canvas.dim() != 5 or canvas.shape[1] != self.channels:
            raise ValueError(f"LearnedProjection: canvas must be (B, {self.channels}, N, N, N), "
                             f"got {tuple(canvas.shape)}")
        views = camera is not None and camera.dim() == 4
        if camera is not None:
            if camera.shape[-2:] != (3, 4) or camera.dim() not in (3, 4) \
                    or camera.shape[0] != canvas.shape[0]:
                raise ValueError(f"LearnedProjection: camera must be (B, 3, 4) or (B, V, 3, 4) "
                                 f"with B={canvas.shape[0]}, got {tuple(camera.shape)}")
        if views:  # one pass per view with shared weights: fold views into the batch
            b, v = camera.shape[:2]
            out = self.forward(canvas.repeat_interleave(v, 0), state.repeat_interleave(v, 0),
                               camera.reshape(b * v, 3, 4))
            return out.reshape(b, v, *out.shape[1:])
        if self.cfg.layers == "max":
            return self.to_camera(canvas[:, :1], state, camera).amax(2)
        cam = self.to_camera(canvas, state, camera)
        feats = self.conv3d(cam)
        b, c, d, h, w = feats.shape
        folded = feats.reshape(b, c * d, h, w)
        if not self.cfg.render_prior:
            return self.conv2d(folded)
        # occupancy is warped as probability, so space outside the canvas is empty, not p=0.5
        p = torch.sigmoid(canvas[:, :1] + self.occ_bias)
        base = self.render(self.to_camera(p, state, camera)[:, 0])
        return base + self.conv2d(torch.cat([folded, base], 1))

    def occupancy(self, canvas: Tensor, state: Tensor, camera: Tensor | None = None) -> Tensor:
        """Occupancy probability (B, 1, N, N, N) of the canvas in the object frame, the volume
        the 3D metrics threshold."""
        p = torch.sigmoid(canvas[:, :1] + (self.occ_bias if self.cfg.render_prior else 0.0))
        return self.object_frame(p, state, camera)


class GaussianLikelihood(nn.Module):
    """Independent Gaussian pixels with one learned standard deviation; params are the means.
    Densities are continuous, so bounds in nats can be negative."""

    def __init__(self, sigma: float = 0.1, min_sigma: float = 0.01):
        super().__init__()
        self.min_sigma = min_sigma
        self.raw = nn.Parameter(torch.tensor(math.log(math.expm1(sigma - min_sigma))))

    @property
    def sigma(self) -> Tensor:
        return self.min_sigma + F.softplus(self.raw)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        if params.shape != x.shape:
            raise ValueError(f"GaussianLikelihood: params {tuple(params.shape)} and data "
                             f"{tuple(x.shape)} differ in shape")
        s = self.sigma
        lp = -0.5 * ((x - params) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
        return lp.flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        return params

    def sample(self, params: Tensor) -> Tensor:
        return params + self.sigma * torch.randn_like(params)


class BernoulliImageLikelihood(nn.Module):
    """Independent Bernoulli pixels (silhouettes); params are logits."""

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        if params.shape != x.shape:
            raise ValueError(f"BernoulliImageLikelihood: params {tuple(params.shape)} and data "
                             f"{tuple(x.shape)} differ in shape")
        if not ((x == 0) | (x == 1)).all():
            raise ValueError("BernoulliImageLikelihood: images must be binary silhouettes; use "
                             "the Gaussian likelihood for depth images")
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params))
