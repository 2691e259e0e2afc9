"""The mesh-parameter action: one flat float32 vector per mesh, with documented bounds.

| slice        | size | meaning                                          | bounds       |
|--------------|------|--------------------------------------------------|--------------|
| lengths      | 162  | distance of vertex i from the centre along ray i | [0, 2]       |
| rotation     | 3    | axis-angle (radians), object to world            | [-pi, pi]    |
| translation  | 3    | world position of the mesh centre                | [-1, 1]      |
| colours      | 486  | per-vertex RGB, vertex-major (162 x 3)           | [0, 1]       |

The default camera sits 4 units from the origin; a mesh of lengths ~0.5-1 fills about a third
of a 64x64 image.
"""

from __future__ import annotations

import math

import numpy as np

from gen3d.geometry import ACTION_DIM, MAX_LENGTH, MAX_TRANSLATION, N_RAYS
from gen3d.geometry import ACTION_SLICES as SLICES

__all__ = [
    "ACTION_DIM",
    "MAX_LENGTH",
    "MAX_TRANSLATION",
    "SLICES",
    "bounds",
    "gaussian_loglik",
    "loglik_from_sums",
    "pack",
    "unpack",
]


def bounds() -> tuple[np.ndarray, np.ndarray]:
    lo = np.zeros(ACTION_DIM, np.float32)
    hi = np.ones(ACTION_DIM, np.float32)
    hi[SLICES["lengths"]] = MAX_LENGTH
    lo[SLICES["rotation"]], hi[SLICES["rotation"]] = -np.pi, np.pi
    lo[SLICES["translation"]], hi[SLICES["translation"]] = -MAX_TRANSLATION, MAX_TRANSLATION
    return lo, hi


def pack(lengths, rotation=None, translation=None, colours=None) -> np.ndarray:
    """Actions (B, ACTION_DIM) from their parts; colours (B,162,3), (B,3) or None (grey)."""
    lengths = np.asarray(lengths, np.float32)
    b = lengths.shape[0]
    out = np.zeros((b, ACTION_DIM), np.float32)
    out[:, SLICES["lengths"]] = lengths
    if rotation is not None:
        out[:, SLICES["rotation"]] = rotation
    if translation is not None:
        out[:, SLICES["translation"]] = translation
    c = np.full((b, N_RAYS, 3), 0.7, np.float32) if colours is None else np.asarray(colours, np.float32)
    if c.shape == (b, 3):
        c = np.broadcast_to(c[:, None], (b, N_RAYS, 3))
    out[:, SLICES["colours"]] = c.reshape(b, -1)
    return out


def unpack(actions) -> dict[str, np.ndarray]:
    """The parts of actions (B, ACTION_DIM) as renderer arguments; raises ValueError on a bad
    shape."""
    a = np.asarray(actions)
    if a.ndim != 2 or a.shape[1] != ACTION_DIM:
        raise ValueError(f"actions: must have shape (B, {ACTION_DIM}) (see envs/spaces.py), got {a.shape}")
    return {
        "lengths": a[:, SLICES["lengths"]],
        "rotation": a[:, SLICES["rotation"]],
        "translation": a[:, SLICES["translation"]],
        "colours": a[:, SLICES["colours"]].reshape(len(a), N_RAYS, 3),
    }


def gaussian_loglik(target: np.ndarray, render: np.ndarray, sigma: float) -> np.ndarray:
    """log N(target | render, sigma^2) summed over pixels and channels, images in [0,1] (uint8
    are divided by 255): (B,) in nats. Two uint8 batches are compared exactly, in integers
    (also twice as fast as in floats); the GL-side reduction (``envs/reward.py``) gives the
    same numbers."""
    t, r = np.asarray(target), np.asarray(render)
    if t.dtype == np.uint8 and r.dtype == np.uint8:
        d = np.subtract(t, r, dtype=np.int16).reshape(len(t), -1)
        return loglik_from_sums(np.einsum("ij,ij->i", d, d, dtype=np.int64), d.shape[1], sigma)
    d = (_unit(t) - _unit(r)).reshape(len(t), -1)
    n = d.shape[1]
    return (-0.5 * np.einsum("ij,ij->i", d, d) / sigma**2
            - n * (np.log(sigma) + 0.5 * np.log(2 * np.pi))).astype(np.float64)


def loglik_from_sums(sums: np.ndarray, n_values: int, sigma: float) -> np.ndarray:
    """Nats of N(target | render, sigma^2) over ``n_values`` channel values, from the summed
    squared difference of 8-bit values (units of 1/255)."""
    const = n_values * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
    return -0.5 * np.asarray(sums).astype(np.float64) / (255.0**2 * sigma**2) - const


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) * np.float32(1 / 255)
    return x.astype(np.float32, copy=False)
