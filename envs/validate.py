"""Checks of renderer inputs: each failure is a ValueError that names the argument, what it
should be and what it was, raised before anything reaches GL (never a segfault or a silent
black image)."""

from __future__ import annotations

import numpy as np

from gen3d import geometry as geo


def check_array(name: str, x, shape: tuple | None, nonneg: bool = False, unit: bool = False) -> np.ndarray:
    """``x`` as a C-contiguous float32 array; ``shape`` entries of None match any size."""
    try:
        a = np.asarray(x)
    except Exception as e:
        raise ValueError(f"{name}: must be a numeric array, could not convert ({e})") from None
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name}: must be a real float array, got dtype {a.dtype}")
    if shape is not None:
        ok = a.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, a.shape))
        if not ok:
            want = "(" + ", ".join("B" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: must have shape {want}, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name}: contains NaN or inf (first at index {tuple(int(i) for i in bad)}); "
                         "all values must be finite")
    if nonneg and a.size and a.min() < 0:
        raise ValueError(f"{name}: must be >= 0, got a minimum of {a.min():.4g}")
    if unit and a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError(f"{name}: must lie in [0, 1], got values in [{a.min():.4g}, {a.max():.4g}]")
    return a


def check_batch(name: str, a: np.ndarray) -> int:
    if a.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty (B=0); pass at least one item")
    return a.shape[0]


def check_pose(b: int, rotation=None, translation=None, scale=None) -> np.ndarray:
    """(B,3,4) float32 rows of ``[s R | t]``."""
    if rotation is None:
        r = np.broadcast_to(np.eye(3, dtype=np.float32), (b, 3, 3))
    else:
        ra = np.asarray(rotation)
        if ra.shape == (b, 3, 3):
            r = check_array("rotation", ra, (b, 3, 3))
            if np.abs(np.einsum("bij,bkj->bik", r, r) - np.eye(3)).max() > 1e-3:
                raise ValueError("rotation: (B,3,3) matrices must be orthonormal rotations")
        else:
            aa = check_array("rotation", ra, (b, 3))
            r = geo.axis_angle_to_matrix(aa).astype(np.float32)
    t = (np.zeros((b, 3), np.float32) if translation is None
         else check_array("translation", translation, (b, 3)))
    if scale is None:
        s = np.ones(b, np.float32)
    else:
        s = check_array("scale", scale, (b,))
        if s.min() <= 0:
            raise ValueError(f"scale: must be > 0, got a minimum of {s.min():.4g}")
    out = np.empty((b, 3, 4), np.float32)
    out[:, :, :3] = r * s[:, None, None]
    out[:, :, 3] = t
    return out


def check_colours(b: int, colours, per_item: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """Colours for B ray meshes: (B,V,3) per vertex, (B,F,3) per face or (B,3) per mesh.
    Returns (array, per_face)."""
    nv, nf = per_item
    if colours is None:
        return np.full((b, nv, 3), 0.7, np.float32), False
    c = check_array("colours", colours, None, unit=True)
    if c.shape == (b, 3):
        return np.ascontiguousarray(np.broadcast_to(c[:, None], (b, nv, 3))), False
    if c.shape == (b, nv, 3):
        return c, False
    if c.shape == (b, nf, 3):
        return c, True
    raise ValueError(f"colours: must have shape (B,{nv},3) per vertex, (B,{nf},3) per face or "
                     f"(B,3) per mesh with B={b}; got {c.shape}")
