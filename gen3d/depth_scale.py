"""A mesh stretched or squashed along the camera's axis, as an affine map of its parameters.

One view's reward constrains an object's depth only through the perspective of its outline
and the shading of its sides (``benchmarks/depth_cue.py``): answers a third deeper cost a
cube a dozen nats. A search that steps in the harmonics one at a time does not find that
direction; this map makes it one jump (``train.self_imitation_search_depth``).

The shape is a radial function r(d) about the mesh's centre, log r = Y(d) @ s in the shape's
harmonics. Scaled by S = diag(1, 1, f), the surface point r(d) d moves to r(d) S d, so along
the direction e the scaled shape reaches r(dir(S^-1 e)) / |S^-1 e|, and its log is
Y(dir(S^-1 e)) @ s - log |S^-1 e|: linear in s plus a constant, fit on the 162 rays by least
squares (exact for f = 1; the warped function has harmonics above the shape's degree, which
the fit drops).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gen3d import geometry as geo


def depth_scale(decoder, factor: float) -> tuple[Tensor, Tensor]:
    """(A (D, D), b (D,)) of a ``gen3d.mesh_decoder.MeshDecoder``'s parameters m: the mesh
    decoded from ``A @ m + b`` is the mesh of m scaled by ``factor`` along the camera's z
    about its centre; the position and colours are kept. Needs ``shape: sh`` (a map of the
    harmonics) and no rotation (the shape in the camera's frame)."""
    cfg = decoder.cfg
    if cfg.shape != "sh" or cfg.shape_symmetry != "none" or cfg.rotation:
        raise ValueError(f"depth scale: maps the camera-frame shape's harmonics, so it needs "
                         f"model.shape: sh, shape_symmetry: none and rotation: false; got shape "
                         f"{cfg.shape!r}, shape_symmetry {cfg.shape_symmetry!r}, rotation "
                         f"{cfg.rotation}")
    if not factor > 0:
        raise ValueError(f"depth scale: the factor must be > 0, got {factor}")
    rays = geo.ico_rays().astype(np.float64)
    back = rays / np.array([1.0, 1.0, factor])  # S^-1 e
    norm = np.linalg.norm(back, axis=1)
    pinv = geo.ray_harmonics(cfg.shape_degree)[1]
    a, b = np.eye(decoder.dim), np.zeros(decoder.dim)
    sl = decoder.slices["shape"]
    a[sl, sl] = pinv @ geo.real_sph_harm(back / norm[:, None], cfg.shape_degree)
    b[sl] = pinv @ -np.log(norm)
    return torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
