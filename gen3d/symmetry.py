"""Rotation error modulo a primitive's symmetry: what of an object's rotation an image shows.

The data colour each side of a primitive with a colour drawn at random per object
(``gen3d.data.mesh_images``), so a rotation that maps the shape onto itself, permuting its
sides, yields an image that is just as likely: the true rotation ``R`` is observable only up to
``R @ S`` for ``S`` in the shape's own rotation group. The groups, in the object's frame
(``gen3d.primitives``):

- cube, octahedron: the 24 rotations of the cube;
- sphere: the same 24, through its eight coloured octants only (its shape says nothing);
- pyramid: the 4 quarter turns about y (its base tells up from down);
- prism: the 3 third turns about y and the 3 half turns that swap its caps;
- cone: any turn about y; cylinder, bicone: any turn about y and the half turns that swap ends.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


def turns_about_y(n: int) -> np.ndarray:
    """The n rotations by 2*pi*k/n about y: (n,3,3)."""
    a = 2 * np.pi * np.arange(n) / n
    c, s, z, o = np.cos(a), np.sin(a), np.zeros(n), np.ones(n)
    return np.stack([c, z, s, z, o, z, -s, z, c], 1).reshape(n, 3, 3)


def cube_group() -> np.ndarray:
    """The 24 rotations that map the axis-aligned cube onto itself: signed permutation
    matrices of determinant +1, (24,3,3)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return np.stack(out)


def dihedral_about_y(n: int) -> np.ndarray:
    """The 2n rotations of a right n-gonal prism about y made by ``gen3d.primitives._revolve``: n turns
    about y and the half turns about the horizontal axes through its corners (angle 2*pi*k/n,
    the corner at (cos a, 0, -sin a))."""
    a = 2 * np.pi * np.arange(n) / n
    axes = np.stack([np.cos(a), np.zeros(n), -np.sin(a)], 1)
    flips = 2 * axes[:, :, None] * axes[:, None, :] - np.eye(3)  # half turn about each axis
    return np.concatenate([turns_about_y(n), flips])


@dataclass(frozen=True)
class Symmetry:
    """A rotation group: a finite set of matrices, or every turn about y (with or without the
    half turns that swap the ends)."""

    finite: np.ndarray | None = None
    axial: bool = False
    end_swap: bool = False


SYMMETRIES: dict[str, Symmetry] = {
    "cube": Symmetry(cube_group()),
    "octahedron": Symmetry(cube_group()),
    "sphere": Symmetry(cube_group()),
    "pyramid": Symmetry(turns_about_y(4)),
    "prism": Symmetry(dihedral_about_y(3)),
    "cone": Symmetry(axial=True),
    "cylinder": Symmetry(axial=True, end_swap=True),
    "bicone": Symmetry(axial=True, end_swap=True),
}


UNSCORED_KINDS = ("torus",)
"""Primitive kinds whose orientation is not scored (NaN): no symmetry group is given here."""


def _rotations(r, name: str) -> np.ndarray:
    r = np.asarray(r, np.float64)
    if r.shape == (3, 3):
        r = r[None]
    if r.ndim != 3 or r.shape[1:] != (3, 3):
        raise ValueError(f"rotation_error_deg: {name} must be rotation matrices (N,3,3), got "
                         f"shape {r.shape}")
    return r


def angle_deg(r: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees of rotations (...,3,3) from the identity: from both its cosine
    (the trace) and its sine (the skew part), so that it is exact near 0 and near 180, where
    an arccos of the cosine alone loses half the digits."""
    cos = (np.trace(r, axis1=-2, axis2=-1) - 1) / 2
    skew = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                     r[..., 1, 0] - r[..., 0, 1]], -1)
    return np.degrees(np.arctan2(np.linalg.norm(skew, axis=-1) / 2, cos))


def rotation_error_deg(r_true: np.ndarray, r_pred: np.ndarray, kind: str) -> np.ndarray:
    """Geodesic angle in degrees between each predicted rotation (N,3,3) and the nearest
    rotation ``r_true @ S`` that yields the same image, ``S`` in ``kind``'s symmetry group;
    NaN for a kind with no known group (a torus: its orientation is not scored)."""
    r_true, r_pred = _rotations(r_true, "r_true"), _rotations(r_pred, "r_pred")
    if len(r_true) != len(r_pred):
        raise ValueError(f"rotation_error_deg: {len(r_true)} true and {len(r_pred)} predicted "
                         "rotations; pass one of each per image")
    sym = SYMMETRIES.get(kind)
    if sym is None:
        if kind not in UNSCORED_KINDS:
            raise ValueError(f"rotation_error_deg: unknown kind {kind!r}; kinds with a symmetry "
                             f"group: {sorted(SYMMETRIES)} (unscored: {list(UNSCORED_KINDS)})")
        return np.full(len(r_true), np.nan)
    d = np.swapaxes(r_true, -1, -2) @ r_pred  # the error in the object's frame
    if sym.axial:
        # every r_true @ S maps y to the same axis, so the nearest one is the smallest turn
        # taking y to d's image of y: its angle is that between the two axes
        cos, sin = d[:, 1, 1], np.hypot(d[:, 0, 1], d[:, 2, 1])
        return np.degrees(np.arctan2(sin, np.abs(cos) if sym.end_swap else cos))
    g = sym.finite
    return angle_deg(np.swapaxes(g, -1, -2)[None] @ d[:, None]).min(1)


def axis_and_twist_deg(r_true: np.ndarray, r_pred: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The rotation error of a kind whose group turns about y alone (pyramid, cone), in two
    parts: the angle (N,) in degrees between the true and the predicted axis (the object's y),
    and the turn about the axis (N,) left once the smallest turn has brought the axes together,
    modulo the group's turns (in [0, 45] for the pyramid; NaN for the cone, any turn being
    one)."""
    r_true, r_pred = _rotations(r_true, "r_true"), _rotations(r_pred, "r_pred")
    sym = SYMMETRIES.get(kind)
    if sym is None or sym.end_swap or not (sym.axial or _turns_about_y_only(sym.finite)):
        raise ValueError(f"axis_and_twist_deg: {kind!r} has no single axis its group turns about; "
                         "kinds that have: pyramid, cone")
    d = np.swapaxes(r_true, -1, -2) @ r_pred  # the error in the object's frame
    axis = d[:, :, 1]  # where the error takes y
    tilt = np.degrees(np.arctan2(np.hypot(axis[:, 0], axis[:, 2]), axis[:, 1]))
    if sym.axial:
        return tilt, np.full(len(d), np.nan)
    back = _turn_onto_y(axis) @ d  # a turn about y alone
    twist = np.degrees(np.arctan2(back[:, 0, 2], back[:, 0, 0])) % (360 / len(sym.finite))
    return tilt, np.minimum(twist, 360 / len(sym.finite) - twist)


def _turns_about_y_only(g: np.ndarray) -> bool:
    return bool(np.allclose(g[:, :, 1], [0.0, 1.0, 0.0]))


def _turn_onto_y(v: np.ndarray) -> np.ndarray:
    """(N,3,3) the smallest rotation taking each unit vector v (N,3) to y (about v x y; about
    x for v = -y)."""
    from gen3d.geometry import axis_angle_to_matrix

    cross = np.cross(v, [0.0, 1.0, 0.0])
    sin = np.linalg.norm(cross, axis=1, keepdims=True)
    axis = np.where(sin > 1e-9, cross / np.maximum(sin, 1e-12), [1.0, 0.0, 0.0])
    return axis_angle_to_matrix(axis * np.arctan2(sin, v[:, 1:2]))


def frame_candidates(n: int = 500, seed: int = 0) -> np.ndarray:
    """Changes of frame to search: the identity, the cube's 24 and ``n`` random rotations."""
    from gen3d.geometry import random_rotation

    return np.concatenate([cube_group(), random_rotation(np.random.default_rng(seed), n)])


def aligned_rotation_error_deg(r_true: np.ndarray, r_pred: np.ndarray, kind: str,
                               candidates: np.ndarray | None = None) -> np.ndarray:
    """``rotation_error_deg`` after the one change of frame ``C`` (of ``candidates``) that
    makes the median smallest: a model that infers poses in an object frame of its own, turned
    by a fixed ``C`` from the data's, scores as it would in the data's."""
    c = frame_candidates() if candidates is None else candidates
    r_true, r_pred = np.asarray(r_true, np.float64), np.asarray(r_pred, np.float64)
    if kind not in SYMMETRIES or not len(r_true):
        return np.full(len(r_true), np.nan)
    moved = r_pred[None] @ np.swapaxes(c, -1, -2)[:, None]  # (C, N, 3, 3)
    err = rotation_error_deg(np.broadcast_to(r_true, moved.shape).reshape(-1, 3, 3),
                             moved.reshape(-1, 3, 3), kind).reshape(len(c), -1)
    return err[np.argmin(np.median(err, 1))]
