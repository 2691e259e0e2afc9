"""Real spherical harmonics at directions given as tensors: ``geometry.real_sph_harm``'s basis,
differentiable, for directions that move with the mesh (its surface normals).

A real harmonic of degree l is a homogeneous polynomial of degree l restricted to the sphere,
so the basis up to degree L is the monomials x^a y^b z^c (a + b + c <= L) times one fixed
matrix, solved once by least squares against ``geometry.real_sph_harm``: the same numbers as
that function, not another convention, so maps built on it (``gen3d.camera_mirrors``) hold.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor, nn

from gen3d import geometry as geo


def _powers(degree: int) -> np.ndarray:
    """(M, 3) exponents (a, b, c) of every monomial of total degree at most ``degree``."""
    return np.array([p for p in itertools.product(range(degree + 1), repeat=3) if sum(p) <= degree])


class Harmonics(nn.Module):
    """Unit directions (..., 3) -> the real spherical harmonics up to ``degree`` there,
    (..., (degree+1)^2), as ``geometry.real_sph_harm`` gives them."""

    def __init__(self, degree: int):
        super().__init__()
        powers = _powers(degree)
        pts = geo.icosphere(4)[0]  # 2,562 directions: far more than (degree+1)^2 for any use here
        pts = pts / np.linalg.norm(pts, axis=1, keepdims=True)
        mono = np.prod(pts[:, None, :] ** powers[None], -1)
        coef = np.linalg.lstsq(mono, geo.real_sph_harm(pts, degree).astype(np.float64), rcond=None)[0]
        self.degree = degree
        self.register_buffer("powers", torch.tensor(powers), persistent=False)
        self.register_buffer("coef", torch.tensor(coef, dtype=torch.float32), persistent=False)

    def forward(self, dirs: Tensor) -> Tensor:
        # powers by repeated products, not ``**``: x ** 0's gradient is nan at x = 0
        lead = dirs.shape[:-1]
        d = dirs.reshape(-1, 3).T  # (3, n)
        pw = [torch.ones_like(d)]
        for _ in range(self.degree):
            pw.append(pw[-1] * d)
        pw = torch.stack(pw, 1)  # (3, L+1, n)
        mono = pw[0, self.powers[:, 0]] * pw[1, self.powers[:, 1]] * pw[2, self.powers[:, 2]]
        return (mono.T @ self.coef.to(dirs.dtype)).reshape(*lead, -1)
