"""A rotation chosen among fixed hypotheses, then turned a little: a pose search that can jump.

A continuous rotation searched by a Gaussian of a few degrees only climbs to the nearest local
optimum, and for a shape whose silhouette is nearly symmetric the nearest is usually wrong. Here
the mesh parameters hold one score per hypothesis, Gaussian like the rest of m; the rotation is
``R_residual @ R_h`` with ``h`` the highest-scoring hypothesis of the sample. Sampling the scores
samples the hypothesis (a multinomial probit), so the score-function estimator that trains the
rest of m trains the choice too, with no change to the estimators; the mean scores pick the
answer. Multi-hypothesis pose heads scored by the reconstruction are how unsupervised mesh
learners get out of those optima (e.g. Goel et al., ECCV 2020; Monnier et al., ECCV 2022).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from gen3d import geometry as geo


def spread_rotations(n: int, seed: int = 0, pool: int = 4096) -> np.ndarray:
    """n rotations (n,3,3) spread over SO(3): the identity, then greedily the rotation of a
    seeded uniform pool farthest (geodesic angle) from those already chosen."""
    if n < 1:
        raise ValueError(f"need at least one rotation, got {n}")
    q = geo.matrix_to_quat(geo.random_rotation(np.random.default_rng(seed), pool))
    q[0] = (1.0, 0.0, 0.0, 0.0)
    chosen = [0]
    nearest = np.abs(q @ q[0])  # |cos(angle / 2)| to the nearest chosen: larger is nearer
    for _ in range(n - 1):
        i = int(np.argmin(nearest))
        chosen.append(i)
        nearest = np.maximum(nearest, np.abs(q @ q[i]))
    return geo.quat_to_matrix(q[chosen])


def axis_angle_to_quat(aa: Tensor) -> Tensor:
    """(..., 3) axis-angle -> (..., 4) unit quaternions (w, x, y, z), smooth at zero."""
    half = 0.5 * aa.norm(dim=-1, keepdim=True)
    sinc = torch.where(half > 1e-6, torch.sin(half) / half.clamp(min=1e-6), 1 - half**2 / 6)
    return torch.cat([torch.cos(half), 0.5 * sinc * aa], -1)


def quat_to_axis_angle(q: Tensor) -> Tensor:
    """(..., 4) unit quaternions -> (..., 3) axis-angle of the shorter turn (angle <= pi)."""
    q = torch.where(q[..., :1] < 0, -q, q)
    s = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, q[..., :1])
    return q[..., 1:] * torch.where(s > 1e-6, angle / s.clamp(min=1e-6), torch.full_like(s, 2.0))


def quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of (..., 4) quaternions: the rotation of ``a`` after that of ``b``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


class RotationHypotheses(nn.Module):
    """``n`` fixed rotations (``spread_rotations``); forward(scores (N,n), residual (N,3)
    axis-angle) -> the axis-angle (N,3) of ``R(residual) @ R_h``, h = argmax of each row's
    scores."""

    def __init__(self, n: int, seed: int = 0):
        super().__init__()
        q = geo.matrix_to_quat(spread_rotations(n, seed))
        self.register_buffer("quats", torch.from_numpy(q).float())

    def forward(self, scores: Tensor, residual: Tensor) -> Tensor:
        chosen = self.quats.to(residual.dtype)[scores.argmax(-1)]
        return quat_to_axis_angle(quat_mul(axis_angle_to_quat(residual), chosen))
