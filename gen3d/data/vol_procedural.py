"""Procedural volume datasets: Necker cubes (40^3 wire frames) and Primitives (30^3 solids).

Volumes are uint8 (n, N, N, N) with axes (z, y, x); voxel (d, h, w) has its centre at (w, h, d)
in index units. Both are deterministic functions of (n, seed, size).
"""

from __future__ import annotations

import numpy as np

from gen3d.geometry import axis_angle_to_matrix, random_rotation

PRIMITIVES = ("sphere", "cube", "cylinder", "cone", "pyramid", "torus")


def _grid(n: int) -> np.ndarray:
    """Voxel centres (n^3, 3) as (x, y, z) in index units, flattened in (z, y, x) order."""
    z, y, x = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    return np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float64)


def necker_cubes(n: int, seed: int, size: int = 40, side: float = 10.0) -> np.ndarray:
    """Wire frames of a ``side``-voxel cube at a uniformly random orientation, centred in a
    ``size``^3 volume; edges are one voxel thick."""
    if size < side * 3**0.5 + 2:
        raise ValueError(f"necker cubes: a {side}-voxel cube needs size >= {side * 3**0.5 + 2:.0f}")
    rng = np.random.default_rng(seed)
    corners = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8)
             if np.abs(corners[a] - corners[b]).sum() == 2]
    s = np.linspace(0, 1, int(side * 4) + 1)[:, None]
    pts = np.concatenate([corners[a] + s * (corners[b] - corners[a]) for a, b in edges]) * side / 2
    out = np.zeros((n, size, size, size), np.uint8)
    centre = (size - 1) / 2
    for i, rot in enumerate(random_rotation(rng, n)):
        p = np.rint(pts @ rot.T + centre).astype(np.int64)
        out[i, p[:, 2], p[:, 1], p[:, 0]] = 1
    return out


def _inside(kind: str, q: np.ndarray, a: float) -> np.ndarray:
    """Inside test at points q (..., 3) (x, y, z) of a primitive that fills the box [-a, a]^3
    when axis-aligned (the sphere and torus reach its faces, the others about 0.7 a)."""
    x, y, z = q[..., 0], q[..., 1], q[..., 2]
    hh = 0.75 * a  # half height of cylinder, cone and pyramid
    if kind == "sphere":
        return (q * q).sum(-1) <= a * a
    if kind == "cube":
        return np.abs(q).max(-1) <= 0.65 * a
    if kind == "cylinder":
        return (x * x + z * z <= (0.65 * a) ** 2) & (np.abs(y) <= hh)
    if kind == "cone":
        r = 0.85 * a * (hh - y) / (2 * hh)
        return (x * x + z * z <= r * r) & (np.abs(y) <= hh)
    if kind == "pyramid":
        b = 0.8 * a * (hh - y) / (2 * hh)
        return (np.abs(x) <= b) & (np.abs(z) <= b) & (np.abs(y) <= hh)
    if kind == "torus":
        ring = np.sqrt(x * x + z * z) - 0.65 * a
        return ring * ring + y * y <= (0.35 * a) ** 2
    raise ValueError(f"unknown primitive {kind!r}; choose from {PRIMITIVES}")


def primitives(n: int, seed: int, size: int = 30, extent: float = 10.0,
               classes: tuple[str, ...] = PRIMITIVES) -> tuple[np.ndarray, np.ndarray]:
    """Solid primitives that fill an ``extent``-voxel box, rotated by Euler angles uniform in
    [-pi, pi] and translated by 0 to size - extent voxels (0-20 at 30^3) along each axis (a
    rotated corner that passes the volume's border is cut off).
    Returns (volumes uint8 (n, size^3), labels int64 (n,)) with labels indexing ``classes``."""
    if extent > size:
        raise ValueError(f"primitives: extent {extent} does not fit in size {size}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(classes), n)
    angles = rng.uniform(-np.pi, np.pi, (n, 3))
    shifts = rng.uniform(0, size - extent, (n, 3))
    grid = _grid(size)
    out = np.zeros((n, size, size, size), np.uint8)
    a = extent / 2
    for i in range(n):
        rot = (axis_angle_to_matrix(np.array([0, 0, angles[i, 2]]))
               @ axis_angle_to_matrix(np.array([0, angles[i, 1], 0]))
               @ axis_angle_to_matrix(np.array([angles[i, 0], 0, 0])))
        q = (grid - (shifts[i] + a - 0.5)) @ rot  # rows of R^T (p - c): world -> shape frame
        out[i] = _inside(classes[labels[i]], q, a).reshape(size, size, size)
    return out, labels.astype(np.int64)
