"""A prior that each shape is mirror symmetric about some plane through its centre.

One view shows the front of an object; the reward leaves the sides the camera does not see
free (``benchmarks/depth_cue.py``). Most made objects, and every kind the data makes, are
the same on both sides of some plane, as Wu et al.'s symmetric-object prior assumes ("Unsupervised
Learning of Probably Symmetric Deformable 3D Objects from Images in the Wild", CVPR 2020): with
such a plane, what is seen of one side says what the hidden side is. The plane is not given;
each shape is scored against the best of a fixed set of planes, so the prior names no kind
and no pose.

A shape is a function f on the sphere of directions, log ray length as real spherical
harmonics up to some degree (``MeshDecoder``'s ``shape: sh``). Its mirror in the plane through
the centre with unit normal n is f(d - 2 (d.n) n), a linear map of the coefficients that
mixes each degree within itself, so ``mirror_maps`` holds it exactly. The prior of
coefficients s is min over planes of |s - M_n s|^2 / (2 std^2): the harmonics are orthonormal
on the sphere, so this is the squared L2 distance between f and its mirror, in nats.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor, nn

from gen3d import geometry as geo


def plane_normals(subdivisions: int = 3) -> np.ndarray:
    """(P, 3) unit normals spread over the half sphere z >= 0 (a plane's normal and its
    negative are one plane): an icosphere's vertices, ~8 degrees apart at 3 subdivisions."""
    v = geo.icosphere(subdivisions)[0]
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    # of each antipodal pair keep one: z > 0, or on the equator y > 0, or x > 0
    key = np.where(np.abs(v[:, 2]) > 1e-9, v[:, 2], np.where(np.abs(v[:, 1]) > 1e-9, v[:, 1], v[:, 0]))
    return v[key > 0]


def mirror_maps(degree: int, normals: np.ndarray) -> np.ndarray:
    """(P, K, K) maps M with f(d - 2 (d.n) n) = Y(d) @ (M @ c) for f(d) = Y(d) @ c, Y the real
    harmonics up to ``degree`` (K = (degree+1)^2), one per unit normal n of ``normals`` (P, 3)."""
    y, pinv = geo.ray_harmonics(degree)
    if np.linalg.matrix_rank(y) < y.shape[1]:
        raise ValueError(f"mirror_maps: degree {degree} has more harmonics than the 162 rays hold")
    d = geo.ico_rays().astype(np.float64)
    n = np.asarray(normals, np.float64)
    out = np.empty((len(n), y.shape[1], y.shape[1]))
    for i, ni in enumerate(n):
        out[i] = pinv @ geo.real_sph_harm(d - 2 * (d @ ni)[:, None] * ni, degree)
    return out


@functools.lru_cache(maxsize=4)
def _planes(degree: int) -> tuple[np.ndarray, ...]:
    """The fine normals, the coarse and fine maps of ``degree``, and each coarse plane's fine
    neighbours (padded with its first to one width): built once per process (~2 s)."""
    coarse, fine = plane_normals(3), plane_normals(5)
    near = np.abs(coarse @ fine.T) > np.cos(np.radians(8.0))
    width = near.sum(1).max()
    nbrs = np.stack([np.resize(np.flatnonzero(row), width) for row in near])
    return fine, mirror_maps(degree, coarse), mirror_maps(degree, fine), nbrs


class MirrorPrior(nn.Module):
    """Coefficients s (N, K) -> -log prior (N,) up to a constant: |s - M s|^2 / (2 std^2) for
    the plane that s is most nearly symmetric about, found coarse to fine (the best of ~300
    normals ~9 degrees apart, then the best of the ~2.4-degree grid within 8 degrees of it: a
    sharp shape about a plane a few degrees off is far from symmetric); a gradient to s
    through that plane."""

    def __init__(self, degree: int, std: float):
        super().__init__()
        if not std > 0:
            raise ValueError(f"MirrorPrior: std must be > 0, got {std}")
        self.std = std
        fine, coarse_maps, fine_maps, nbrs = _planes(degree)
        self.register_buffer("normals", torch.tensor(fine, dtype=torch.float32), persistent=False)
        self.register_buffer("coarse", torch.tensor(coarse_maps, dtype=torch.float32), persistent=False)
        self.register_buffer("maps", torch.tensor(fine_maps, dtype=torch.float32), persistent=False)
        self.register_buffer("nbrs", torch.tensor(nbrs), persistent=False)

    @staticmethod
    def _misfit(maps: Tensor, s: Tensor) -> Tensor:
        """(N, P): |s - M s|^2 of each shape s (N, K) for each of its maps (N, P, K, K) or of
        maps shared by all (P, K, K)."""
        ms = torch.einsum("pij,nj->npi" if maps.dim() == 3 else "npij,nj->npi", maps, s)
        return ((s[:, None, :] - ms) ** 2).sum(-1)

    def plane(self, s: Tensor) -> Tensor:
        """(N,) index into ``normals`` of the plane each shape is most nearly symmetric about."""
        with torch.no_grad():
            cand = self.nbrs[self._misfit(self.coarse, s).argmin(1)]  # (N, W)
            best = self._misfit(self.maps[cand], s).argmin(1)
            return cand.gather(1, best[:, None])[:, 0]

    def about(self, s: Tensor, planes: Tensor) -> Tensor:
        """-log prior (N, J) of shapes s (N, J, K), each row's about its plane ``planes`` (N,)."""
        r = s - torch.einsum("nij,nkj->nki", self.maps[planes], s)
        return (r ** 2).sum(-1) / (2 * self.std ** 2)

    def forward(self, s: Tensor) -> Tensor:
        return self.about(s[:, None], self.plane(s))[:, 0]
