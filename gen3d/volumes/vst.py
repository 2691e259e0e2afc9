"""Volumetric spatial transformer (VST): differentiable trilinear read and write of voxel patches.

Coordinates. A volume (B, C, N, N, N) has axes (z, y, x) = torch's (D, H, W) and spans the cube
[-1, 1]^3 in normalised coordinates ordered (x, y, z), as in ``F.affine_grid`` with
``align_corners=False``: voxel i of n has its centre at (2i + 1) / n - 1. Outside is zero.

Parameterisation (9 numbers per step). A patch of P^3 voxels spans [-1, 1]^3 in its own
coordinates u; it lands in the canvas at

    c = t + S R u,   S = diag(s),  s > 0 (3 scales),  t (3 shifts),  R = exp([w]_x) (axis-angle w)

so the patch covers the box t +/- s when R = I; s = 1, t = 0 covers the whole canvas. That is
an affine map whose linear part S R is any matrix whose left singular vectors are the axes (a
rotated patch stretched along the canvas axes). ``transform_from_raw`` turns 9 unconstrained
numbers into (s, t, R): t = raw[0:3], s = s_min + softplus(raw[3:6] + b), w = raw[6:9].

Why it is fast. With R = I trilinear sampling is separable: the weight of patch voxel (i, j, k)
at canvas voxel (d, h, w) is a product of three 1D tent weights, so the write is three batched
matrix products with (N, P) matrices, costing B P N^3 multiply-adds instead of gathering 8
neighbours for each of the B N^3 canvas voxels (``write_dense``, the naive reference). The
rotation is applied first at patch resolution (a P^3 ``grid_sample``, cheap). The read (an
axis-aligned glimpse, as in DRAW) is the same products in reverse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def centres(n: int, like: Tensor) -> Tensor:
    """Normalised coordinates (n,) of the centres of n voxels along one axis."""
    return (2 * torch.arange(n, device=like.device, dtype=like.dtype) + 1) / n - 1


def rotation_matrix(w: Tensor) -> Tensor:
    """Rodrigues: axis-angle vectors (B, 3) -> rotation matrices (B, 3, 3); smooth at w = 0."""
    theta2 = (w * w).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-20)
    a = torch.sinc(theta / torch.pi)  # sin(theta) / theta
    b = 0.5 * torch.sinc(theta / (2 * torch.pi)) ** 2  # (1 - cos theta) / theta^2
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def transform_from_raw(raw: Tensor, rotate: bool = True, s_min: float = 0.05,
                       scale_bias: float = 0.0) -> tuple[Tensor, Tensor, Tensor | None]:
    """9 unconstrained numbers (B, 9) -> (scale (B,3), shift (B,3), rotation (B,3,3) or None)."""
    if raw.dim() != 2 or raw.shape[-1] != 9:
        raise ValueError(f"transform_from_raw: need (B, 9), 9 numbers per row, got shape "
                         f"{tuple(raw.shape)}; for one row pass raw[None]")
    shift = raw[:, 0:3]
    scale = s_min + F.softplus(raw[:, 3:6] + scale_bias)
    rot = rotation_matrix(raw[:, 6:9]) if rotate else None
    return scale, shift, rot


def _tent(pos: Tensor, n_in: int) -> Tensor:
    """Trilinear (tent) weights (..., n_in) of n_in voxels at continuous indices pos (...)."""
    idx = torch.arange(n_in, device=pos.device, dtype=pos.dtype)
    return torch.clamp(1 - (pos[..., None] - idx).abs(), min=0)


def _check(name: str, vol: Tensor, scale: Tensor, shift: Tensor, rotation: Tensor | None = None) -> None:
    if vol.dim() != 5 or not (vol.shape[2] == vol.shape[3] == vol.shape[4]):
        raise ValueError(f"{name}: need a cubic (B, C, n, n, n) tensor, got shape {tuple(vol.shape)}")
    b = vol.shape[0]
    for what, t in (("scale", scale), ("shift", shift)):
        if t.shape != (b, 3):
            raise ValueError(f"{name}: {what} must be ({b}, 3), got shape {tuple(t.shape)}")
    if rotation is not None and rotation.shape != (b, 3, 3):
        raise ValueError(f"{name}: rotation must be ({b}, 3, 3), one per item, got shape "
                         f"{tuple(rotation.shape)}")


def rotate_patch(patch: Tensor, rotation: Tensor) -> Tensor:
    """Resample a (B, C, P, P, P) patch so that its content is turned by ``rotation`` (B, 3, 3)
    about the patch centre: out(u) = patch(R^T u)."""
    b = patch.shape[0]
    theta = torch.cat([rotation.transpose(1, 2), patch.new_zeros(b, 3, 1)], -1)
    grid = F.affine_grid(theta, list(patch.shape), align_corners=False)
    return F.grid_sample(patch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def write(patch: Tensor, scale: Tensor, shift: Tensor, size: int,
          rotation: Tensor | None = None) -> Tensor:
    """Warp a (B, C, P, P, P) patch into an empty (B, C, size, size, size) canvas by
    c = t + S R u with trilinear sampling; separable, so three batched matrix products."""
    _check("vst.write", patch, scale, shift, rotation)
    b, c, p = patch.shape[:3]
    n = size
    if rotation is not None:
        patch = rotate_patch(patch, rotation)
    # continuous patch index of each canvas voxel centre, per axis (x, y, z): (B, 3, n)
    u = (centres(n, scale)[None, None, :] - shift[..., None]) / scale[..., None]
    wts = _tent(((u + 1) * p - 1) / 2, p)  # (B, 3, n, p)
    wx, wy, wz = wts[:, 0], wts[:, 1], wts[:, 2]
    s1 = patch.reshape(b, c * p * p, p) @ wx.transpose(1, 2)  # (B, C*P*P, n): x done
    s2 = wy[:, None, None] @ s1.view(b, c, p, p, n)  # (B, C, P, n, n): y done
    out = wz[:, None] @ s2.reshape(b, c, p, n * n)  # (B, C, n, n*n): z done
    return out.view(b, c, n, n, n)


def read(volume: Tensor, scale: Tensor, shift: Tensor, size: int,
         antialias: bool = False) -> Tensor:
    """Sample a (B, C, size, size, size) axis-aligned glimpse of a (B, C, N, N, N) volume at
    c = t + S u (the transpose of ``write`` without rotation); three batched matrix products.

    ``antialias`` widens the tent to the glimpse's voxel spacing where it is coarser than the
    volume's (weights still sum to one), so a minifying read does not skip thin structures."""
    _check("vst.read", volume, scale, shift)
    b, c, n = volume.shape[:3]
    p = size
    pos = scale[..., None] * centres(p, scale)[None, None, :] + shift[..., None]  # (B, 3, p)
    pos = ((pos + 1) * n - 1) / 2
    if antialias:
        width = torch.clamp(scale * (n / p), min=1.0)[..., None, None]  # (B, 3, 1, 1)
        idx = torch.arange(n, device=pos.device, dtype=pos.dtype)
        wts = torch.clamp(1 - (pos[..., None] - idx).abs() / width, min=0) / width
    else:
        wts = _tent(pos, n)  # (B, 3, p, n)
    wx, wy, wz = wts[:, 0], wts[:, 1], wts[:, 2]
    s1 = wz[:, None] @ volume.reshape(b, c, n, n * n)  # (B, C, p, n*n): z done
    s2 = wy[:, None, None] @ s1.view(b, c, p, n, n)  # (B, C, p, p, n): y done
    out = s2.reshape(b, c * p * p, n) @ wx.transpose(1, 2)  # (B, C*p*p, p): x done
    return out.view(b, c, p, p, p)


def write_dense(patch: Tensor, scale: Tensor, shift: Tensor, size: int,
                rotation: Tensor | None = None) -> Tensor:
    """Naive reference write: sample the patch at every canvas voxel with ``grid_sample``
    (B * size^3 gathers). Exact for any R; ``write`` matches it when R is None or permutes axes."""
    _check("vst.write_dense", patch, scale, shift, rotation)
    b, c = patch.shape[:2]
    inv = torch.diag_embed(1 / scale)
    if rotation is not None:
        inv = rotation.transpose(1, 2) @ inv
    theta = torch.cat([inv, -(inv @ shift[..., None])], -1)
    grid = F.affine_grid(theta, [b, c, size, size, size], align_corners=False)
    return F.grid_sample(patch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def read_dense(volume: Tensor, scale: Tensor, shift: Tensor, size: int) -> Tensor:
    """Reference read with ``affine_grid`` + ``grid_sample``; ``read`` matches it exactly."""
    _check("vst.read_dense", volume, scale, shift)
    b, c = volume.shape[:2]
    theta = torch.cat([torch.diag_embed(scale), shift[..., None]], -1)
    grid = F.affine_grid(theta, [b, c, size, size, size], align_corners=False)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
