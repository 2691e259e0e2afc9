"""Depth images and silhouettes of voxel volumes from known cameras (the 2D data of issue 5).

How images are made (a torch projection, no GL): a camera is an orthographic rotation plus
translation ``[R | t]`` from world to camera, ``x_cam = R @ x_world + t``. Coordinates:

- world = the volume's normalised grid coordinates: a (D, H, W) volume fills [-1, 1]^3 with
  x along W, y along H, z along D and voxel centres at ``(i + 0.5) / n * 2 - 1``
  (``grid_sample(align_corners=False)``);
- camera frame = OpenCV: x right (image column), y down (image row), z forward (depth). The
  camera sees the box ``[-extent, extent]^3`` of its frame. The identity camera therefore looks
  along +z (increasing D) and its image is ``volume.amax(D)`` with rows = H and columns = W.

A pixel's ray is sampled at ``depth_samples`` points through that box with nearest-neighbour
lookup into the binary volume, so silhouettes are exact for the voxels: a pixel is on when a
sample lands in an occupied voxel, and its depth is the normalised position of the first such
sample, ``(z_cam / extent + 1) / 2`` in [0, 1], with background at depth 1 (the far plane).
``project_points`` is the same mapping for points, used by the tests and the 3D metrics.

Cameras sit on a sphere around the object looking at its centre: ``camera(az, el)`` is
``R = Rx(el) @ Ry(az)``. Context cameras are a fixed list; target cameras are random per item
(azimuth uniform, elevation uniform in ``sin`` up to ``max_elevation``: uniform on that band of
the sphere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def camera(azimuth_deg: torch.Tensor | float, elevation_deg: torch.Tensor | float) -> torch.Tensor:
    """World-to-camera ``[R | 0]`` (..., 3, 4) of a camera at the given azimuth and elevation
    (degrees) looking at the origin; (0, 0) is the identity."""
    az = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float32))
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float32))
    az, el = torch.broadcast_tensors(az, el)
    one, zero = torch.ones_like(az), torch.zeros_like(az)
    ry = torch.stack([az.cos(), zero, az.sin(), zero, one, zero, -az.sin(), zero, az.cos()], -1)
    rx = torch.stack([one, zero, zero, zero, el.cos(), -el.sin(), zero, el.sin(), el.cos()], -1)
    r = rx.reshape(az.shape + (3, 3)) @ ry.reshape(az.shape + (3, 3))
    return torch.cat([r, torch.zeros(az.shape + (3, 1))], -1)


def random_cameras(shape: tuple[int, ...], generator: torch.Generator | None = None,
                   max_elevation: float = 60.0) -> torch.Tensor:
    """Random cameras (*shape, 3, 4): azimuth uniform in [0, 360), directions uniform on the
    band of the sphere with |elevation| <= ``max_elevation`` degrees."""
    if not 0 <= max_elevation < 90:
        raise ValueError(f"max_elevation must be in [0, 90) degrees, got {max_elevation}")
    az = torch.rand(shape, generator=generator) * 360.0
    s = math.sin(math.radians(max_elevation))
    el = torch.rad2deg(torch.asin((torch.rand(shape, generator=generator) * 2 - 1) * s))
    return camera(az, el)


def check_cameras(cameras: torch.Tensor, name: str = "cameras") -> None:
    if cameras.shape[-2:] != (3, 4):
        raise ValueError(f"{name}: expected world-to-camera [R|t] of shape (..., 3, 4), got "
                         f"{tuple(cameras.shape)}; build them with gen3d.data.views.camera")
    if not torch.isfinite(cameras).all():
        raise ValueError(f"{name}: contains NaN or inf")


def camera_to_theta(cameras: torch.Tensor, extent: float = 1.0) -> torch.Tensor:
    """The ``affine_grid`` matrix (..., 3, 4) that maps camera-grid coordinates g in [-1, 1]^3
    (x_cam = extent * g) to world coordinates: ``x_world = R^T (extent * g - t)``."""
    check_cameras(cameras)
    rt = cameras[..., :3].transpose(-1, -2)
    return torch.cat([rt * extent, -(rt @ cameras[..., 3:])], -1)


def invert_theta(theta: torch.Tensor) -> torch.Tensor:
    """Inverse of an affine map given as (..., 3, 4)."""
    a_inv = torch.linalg.inv(theta[..., :3])
    return torch.cat([a_inv, -(a_inv @ theta[..., 3:])], -1)


def project_points(points: torch.Tensor, cameras: torch.Tensor, image_size: int,
                   extent: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (..., 3) seen by cameras (..., 3, 4) -> continuous pixel coordinates
    (..., 2) as (row, col) (pixel centres at integers) and normalised depth (...) in [0, 1]."""
    check_cameras(cameras)
    xc = (cameras[..., :3] @ points.unsqueeze(-1) + cameras[..., 3:]).squeeze(-1) / extent
    pix = (xc[..., :2] + 1) / 2 * image_size - 0.5
    return pix.flip(-1), (xc[..., 2] + 1) / 2


def unproject(pix: torch.Tensor, depth: torch.Tensor, cameras: torch.Tensor, image_size: int,
              extent: float = 1.0) -> torch.Tensor:
    """Inverse of ``project_points``: pixel (row, col) (..., 2) and normalised depth (...) seen
    by cameras (..., 3, 4) -> world points (..., 3)."""
    check_cameras(cameras)
    xy = (pix.flip(-1) + 0.5) / image_size * 2 - 1
    xc = torch.cat([xy, (depth * 2 - 1).unsqueeze(-1)], -1) * extent
    r, t = cameras[..., :3], cameras[..., 3:]
    return (r.transpose(-1, -2) @ (xc.unsqueeze(-1) - t)).squeeze(-1)


def _as_volumes(volumes: torch.Tensor) -> torch.Tensor:
    if volumes.dim() == 4:
        volumes = volumes.unsqueeze(1)
    if volumes.dim() != 5 or volumes.shape[1] != 1:
        raise ValueError(f"volumes: expected (B, D, H, W) or (B, 1, D, H, W), got "
                         f"{tuple(volumes.shape)}")
    return volumes.float()


def render_views(volumes: torch.Tensor, cameras: torch.Tensor, image_size: int = 32,
                 depth_samples: int = 64, extent: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Silhouettes and depth images of binary volumes (B, [1,] D, H, W) from cameras
    (B, V, 3, 4): two (B, V, 1, image_size, image_size) float tensors (silhouette in {0, 1},
    depth in [0, 1] with 1 where the ray misses)."""
    vol = _as_volumes(volumes)
    check_cameras(cameras)
    b, v = cameras.shape[:2]
    if cameras.dim() != 4 or b != vol.shape[0]:
        raise ValueError(f"cameras: expected (B={vol.shape[0]}, V, 3, 4), got "
                         f"{tuple(cameras.shape)}")
    theta = camera_to_theta(cameras, extent).reshape(b * v, 3, 4).to(vol)
    src = vol.repeat_interleave(v, 0)
    grid = F.affine_grid(theta, [b * v, 1, depth_samples, image_size, image_size],
                         align_corners=False)
    occ = F.grid_sample(src, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    occ = occ[:, 0] > 0.5                                          # (BV, S, h, w)
    sil = occ.any(1)
    first = torch.argmax(occ.to(torch.uint8), 1).float()           # first hit along depth
    depth = torch.where(sil, (first + 0.5) / depth_samples, torch.ones_like(first))
    shape = (b, v, 1, image_size, image_size)
    return sil.float().reshape(shape), depth.reshape(shape)


@dataclass
class ViewBatch:
    """One batch of the multi-view task. ``volumes`` is the 3D truth, for metrics only: a model
    trained from images never reads it."""

    volumes: torch.Tensor          # (B, 1, D, H, W) binary
    context: torch.Tensor          # (B, Vc, 1, h, w) images from the fixed context cameras
    context_cameras: torch.Tensor  # (B, Vc, 3, 4)
    target: torch.Tensor           # (B, Vt, 1, h, w) images from random target cameras
    target_cameras: torch.Tensor   # (B, Vt, 3, 4)

    def to(self, device: torch.device | str) -> "ViewBatch":
        return ViewBatch(*(getattr(self, k).to(device) for k in self.__dataclass_fields__))


class MultiViewData:
    """Images of a fixed set of volumes: fixed context views and fresh random target views per
    batch, rendered on the fly on ``device`` (one nearest-neighbour ``grid_sample`` per view).

    ``image`` picks what a pixel holds: "depth" or "silhouette".
    """

    def __init__(self, volumes: torch.Tensor, context_views: list[tuple[float, float]],
                 n_targets: int, image: str = "depth", image_size: int = 32,
                 depth_samples: int = 64, extent: float = 1.0, max_elevation: float = 60.0,
                 device: torch.device | str = "cpu"):
        if image not in ("depth", "silhouette"):
            raise ValueError(f"image must be 'depth' or 'silhouette', got {image!r}")
        if n_targets < 1:
            raise ValueError(f"n_targets must be at least 1, got {n_targets}")
        vol = _as_volumes(volumes)
        if not ((vol == 0) | (vol == 1)).all():
            raise ValueError("volumes: must be binary (0/1 occupancy); threshold them first")
        self.volumes = vol = vol.to(device)
        self.device = torch.device(device)
        self.image, self.n_targets = image, n_targets
        self.image_size, self.depth_samples, self.extent = image_size, depth_samples, extent
        self.max_elevation = max_elevation
        if context_views:
            az, el = zip(*context_views)
            self.context_cameras = camera(torch.tensor(az), torch.tensor(el)).to(device)
        else:
            self.context_cameras = torch.zeros(0, 3, 4, device=device)
        # context images never change: render them once
        self._context = self._render(vol, self.context_cameras.expand(len(vol), -1, -1, -1))

    def __len__(self) -> int:
        return len(self.volumes)

    def _render(self, vol: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
        if cams.shape[1] == 0:
            return vol.new_zeros(len(vol), 0, 1, self.image_size, self.image_size)
        sil, depth = render_views(vol, cams, self.image_size, self.depth_samples, self.extent)
        return depth if self.image == "depth" else sil

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> ViewBatch:
        """Items ``index`` with ``n_targets`` fresh random target cameras each (drawn on the CPU
        from ``generator``, so the draw is the same on every device)."""
        index = index.to(self.device)
        vol = self.volumes[index]
        tc = random_cameras((len(index), self.n_targets), generator, self.max_elevation)
        tc = tc.to(self.device)
        cc = self.context_cameras.expand(len(index), -1, -1, -1)
        return ViewBatch(vol, self._context[index], cc, self._render(vol, tc), tc)
