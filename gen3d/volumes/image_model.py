"""The sequential volume model trained on images: ``VolumeModel`` with the learned projection,
an image reader that knows each view's camera, and the 3D scores of the inferred canvas.

Experiments (issue 5):
- single view: x is one image (B, 1, H, W) from a known random camera (B, 3, 4); no context.
- multi-view: x is V target images (B, V, 1, H, W) from random cameras (B, V, 3, 4); the
  context c is the images from the fixed context cameras (B, Vc, H, W) (``ViewContext``).
The prior never sees a camera; only q (through the reader) and the projection do, so the
canvas has to hold a shape that looks right from every camera, not a picture for one view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from gen3d.fields import PosInt
from gen3d.volumes.contexts import ViewContext
from gen3d.volumes.model import ModelOutput, VolumeModel, VolumeModelConfig
from gen3d.volumes.projection import LearnedProjection, ProjectionConfig

Tensor = torch.Tensor


class ImageReader(nn.Module):
    """q's read of the observed images: one conv encoder shared by all views, each view's
    features joined with its camera's 12 numbers, then the mean over views (any V works).
    With ``uses_error`` it also reads the error image x - x_hat at every step."""

    def __init__(self, image_size: int, out_dim: int = 256, channels: int = 32,
                 uses_error: bool = False):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"ImageReader: image_size must be a multiple of 4, got {image_size}")
        self.uses_error, self.out_dim = uses_error, out_dim
        c_in = 2 if uses_error else 1
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, channels, 4, 2, 1), nn.ELU(),
            nn.Conv2d(channels, channels, 4, 2, 1), nn.ELU())
        self.view = nn.Sequential(
            nn.Linear(channels * (image_size // 4) ** 2 + 12, out_dim), nn.ELU(),
            nn.Linear(out_dim, out_dim), nn.ELU())
        self._camera: Tensor | None = None
        self._cached: Tensor | None = None

    def prepare(self, camera: Tensor | None) -> None:
        """Set the cameras (B, 3, 4) or (B, V, 3, 4) of the images the next forward reads."""
        self._camera, self._cached = camera, None

    def _encode(self, imgs: Tensor) -> Tensor:
        b, v = imgs.shape[:2]
        cam = self._camera
        if cam is None:
            raise ValueError("ImageReader: call prepare(camera) before reading images")
        cam = cam.reshape(b, v, 12).to(imgs)
        f = self.conv(imgs.flatten(0, 1)).reshape(b, v, -1)
        return self.view(torch.cat([f, cam], -1)).mean(1)

    def forward(self, x: Tensor, x_hat: Tensor | None, s_prev: Tensor) -> Tensor:
        xs = x if x.dim() == 5 else x[:, None]  # (B, V, 1, H, W)
        if self.uses_error:
            err = xs - (x_hat if x_hat.dim() == 5 else x_hat[:, None])
            return self._encode(torch.cat([xs, err], 2))
        if self._cached is None:  # the same images at every step: encode them once
            self._cached = self._encode(xs)
        return self._cached


@dataclass
class ImageModelConfig:
    """The image model: the sequential volume model plus the learned projection."""

    volume: VolumeModelConfig = field(default_factory=VolumeModelConfig)
    """The sequential model (canvas_size = the volumes' size, canvas_channels = F)."""
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    """The learned projection to images."""
    reader_dim: PosInt = 256
    """Width of the image reader's output r_t."""
    read_error: bool = False
    """Whether q reads the error images x - x_hat (one projection per step: T times dearer)."""


class ImageVolumeModel(nn.Module):
    """``VolumeModel`` over images: ``forward(x, c, camera)`` as in the volume model, plus 3D
    occupancy of the canvas in the object frame for the metrics."""

    def __init__(self, cfg: ImageModelConfig, n_views: int | None = None):
        super().__init__()
        vc, pc = cfg.volume, cfg.projection
        self.cfg = cfg
        projection = LearnedProjection(pc, vc.canvas_channels, vc.hidden)
        self.reader = ImageReader(pc.image_size, cfg.reader_dim, uses_error=cfg.read_error)
        shape = (1, pc.image_size, pc.image_size)
        data_shape = shape if n_views is None else (n_views,) + shape
        context = None
        if vc.context == "views":  # context views are images of the projection's size
            context = ViewContext(vc.n_views, pc.image_size, vc.hidden, vc.context_dim)
        self.model = VolumeModel(vc, projection=projection, likelihood=projection.likelihood,
                                 reader=self.reader, context=context, data_shape=data_shape)
        self._state: Tensor | None = None
        projection.register_forward_hook(self._keep_state)

    @property
    def projection(self) -> LearnedProjection:
        return self.model.projection

    def _keep_state(self, module: nn.Module, args: tuple, out: Tensor) -> None:
        # the last projection of a pass is Proj(h_T, s_T, camera); detached so that the
        # step's graph is not kept alive until the next pass
        self._state = args[1].detach()

    def forward(self, x: Tensor, c: Tensor | None = None, camera: Tensor | None = None
                ) -> ModelOutput:
        self.reader.prepare(camera)
        try:
            return self.model(x, c, camera)
        finally:
            self.reader.prepare(None)

    def loss(self, x: Tensor, c: Tensor | None = None, camera: Tensor | None = None) -> Tensor:
        return -self.forward(x, c, camera).elbo.mean()

    def _first_camera(self, camera: Tensor | None) -> Tensor | None:
        return camera[:, 0] if camera is not None and camera.dim() == 4 else camera

    @torch.no_grad()
    def infer_occupancy(self, x: Tensor, c: Tensor | None = None,
                        camera: Tensor | None = None) -> tuple[Tensor, ModelOutput]:
        """One pass of inference from the images; occupancy (B, 1, N, N, N) in the object
        frame (with camera="learned" the first view's known camera undoes the learned one)."""
        out = self.forward(x, c, camera)
        occ = self.projection.occupancy(out.canvas, self._state, self._first_camera(camera))
        return occ, out

    @torch.no_grad()
    def prior_occupancy(self, n: int, c: Tensor | None, camera: Tensor | None) -> Tensor:
        """Occupancy of a sample from the (context-conditional) prior, in the object frame."""
        gen = self.model.generate(n, c, camera)
        return self.projection.occupancy(gen.canvas, self._state, self._first_camera(camera))

    @torch.no_grad()
    def iwae(self, x: Tensor, c: Tensor | None, camera: Tensor | None, k: int) -> Tensor:
        """Importance-weighted bound (B,) with k samples, nats per example."""
        log_w = torch.stack([self.forward(x, c, camera).log_w for _ in range(k)])
        return torch.logsumexp(log_w, 0) - math.log(k)


def iou3d(occupancy: Tensor, volumes: Tensor, threshold: float = 0.5) -> Tensor:
    """Intersection over union (B,) of ``occupancy > threshold`` and binary ``volumes``; both
    (B, 1, N, N, N) on the same grid (an empty pair counts as 1)."""
    if occupancy.shape != volumes.shape:
        raise ValueError(f"iou3d: occupancy {tuple(occupancy.shape)} and volumes "
                         f"{tuple(volumes.shape)} must have the same shape (canvas_size = the "
                         "volumes' size)")
    a, b = occupancy > threshold, volumes > 0.5
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
