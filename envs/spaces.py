"""The mesh-parameter action: one flat float32 vector per mesh, with documented bounds.

| slice        | size | meaning                                          | bounds       |
|--------------|------|--------------------------------------------------|--------------|
| lengths      | 162  | distance of vertex i from the centre along ray i | [0, 2]       |
| rotation     | 3    | axis-angle (radians), object to world            | [-pi, pi]    |
| translation  | 3    | world position of the mesh centre                | [-1, 1]      |
| colours      | 486  | per-vertex RGB, vertex-major (162 x 3)           | [0, 1]       |

The default camera sits 4 units from the origin; a mesh of lengths ~0.5-1 fills about a third
of a 64x64 image.

Actions outside these bounds (or NaN, inf) are refused, never clipped: ``check_actions`` raises
a ValueError naming the field, the mesh and the element. A value out of bounds is a bug upstream
(the mesh model's decoder keeps its actions inside), and clipping it would hide that bug behind
a plausible image.
"""

from __future__ import annotations

import math

import numpy as np

from envs.validate import check_sigma
from gen3d.geometry import ACTION_DIM, MAX_LENGTH, MAX_TRANSLATION, N_RAYS
from gen3d.geometry import ACTION_SLICES as SLICES

__all__ = [
    "ACTION_DIM",
    "MAX_LENGTH",
    "MAX_TRANSLATION",
    "SLICES",
    "bounds",
    "check_actions",
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


_LO, _HI = bounds()


def pack(lengths, rotation=None, translation=None, colours=None) -> np.ndarray:
    """Actions (B, ACTION_DIM) from their parts: lengths (B,162), rotation (B,3) axis-angle,
    translation (B,3), colours (B,162,3), (B,3) or None (grey). Values are not checked here
    (``check_actions`` does); shapes are."""
    lengths = np.asarray(lengths, np.float32)
    if lengths.ndim != 2 or lengths.shape[1] != N_RAYS:
        raise ValueError(f"pack: lengths must be (B, {N_RAYS}), got shape {lengths.shape}; for "
                         "one mesh pass lengths[None]")
    b = lengths.shape[0]
    out = np.zeros((b, ACTION_DIM), np.float32)
    out[:, SLICES["lengths"]] = lengths
    for name, part in (("rotation", rotation), ("translation", translation)):
        if part is not None:
            out[:, SLICES[name]] = _part(name, part, (b, 3))
    c = np.full((b, N_RAYS, 3), 0.7, np.float32) if colours is None else np.asarray(colours, np.float32)
    if c.shape == (b, 3):
        c = np.broadcast_to(c[:, None], (b, N_RAYS, 3))
    out[:, SLICES["colours"]] = _part("colours", c, (b, N_RAYS, 3)).reshape(b, -1)
    return out


def _part(name: str, x, shape: tuple) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.shape != shape:
        raise ValueError(f"pack: {name} must have shape {shape} (one per mesh of lengths), got "
                         f"{x.shape}")
    return x


def check_actions(actions, name: str = "actions", single: bool = False) -> np.ndarray:
    """Actions (B, ACTION_DIM) as float32, each value finite and within ``bounds()``; with
    ``single``, one action (ACTION_DIM,), returned as (1, ACTION_DIM)."""
    want = f"({ACTION_DIM},)" if single else f"(B, {ACTION_DIM})"
    try:
        a = np.asarray(actions, np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: must be a float array {want}, could not convert ({e})") from None
    if single and a.shape == (ACTION_DIM,):
        a = a[None]
    elif single or a.ndim != 2 or a.shape[1] != ACTION_DIM:
        raise ValueError(f"{name}: must have shape {want} (see envs/spaces.py), got {a.shape}")
    if (a >= _LO).all() and (a <= _HI).all():  # NaN fails both: one pass in the common case
        return a
    for field, sl in SLICES.items():  # name the first bad value
        part = a[:, sl]
        bad = ~((part >= _LO[sl]) & (part <= _HI[sl]))  # NaN fails both comparisons
        if bad.any():
            b, j = (int(i) for i in np.argwhere(bad)[0])
            where = f"{field}[{j}]" + (f" (vertex {j // 3}, channel {j % 3})" if field == "colours" else "")
            v = part[b, j]
            never = "" if np.isfinite(v) else " (NaN and inf are never valid)"
            raise ValueError(f"{name}: {where} of mesh {b} is {v:.6g}, outside its bounds "
                             f"[{_LO[sl][j]:.6g}, {_HI[sl][j]:.6g}] (envs/spaces.py){never}; actions "
                             "are refused, not clipped")
    return a


def unpack(actions, name: str = "actions", single: bool = False) -> dict[str, np.ndarray]:
    """The parts of actions (B, ACTION_DIM) as renderer arguments; raises ValueError (naming
    the field) on a bad shape or a value outside ``bounds()``. ``name``, ``single``: as in
    ``check_actions``."""
    a = check_actions(actions, name, single)
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
    same numbers. Both are batches (B,H,W,C) of one shape, uint8 or floats in [0,1]."""
    sigma = check_sigma(sigma)
    t, r = _image_batch(target, "target"), _image_batch(render, "render")
    if t.shape != r.shape:
        raise ValueError(f"gaussian_loglik: target and render must have the same shape, got "
                         f"{t.shape} and {r.shape}; pair each render with its own target")
    if not len(t):
        return np.zeros(0)
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


def _image_batch(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"gaussian_loglik: {name} must be a batch of images (B,H,W,C), got "
                         f"shape {x.shape}; for one image pass image[None]")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"gaussian_loglik: {name} must be uint8 (0..255) or floats in [0,1], "
                         f"got {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and x.size and not (x.min() >= 0 and x.max() <= 1):
        raise ValueError(f"gaussian_loglik: {name} holds floats outside [0,1] (range "
                         f"{x.min():.3g}..{x.max():.3g}); pass uint8, or divide 0..255 floats by 255")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) * np.float32(1 / 255)
    return x.astype(np.float32, copy=False)
