"""A kind and a rotation read off an inferred ray mesh, by the shape alone.

The main job's model infers shape in the camera's frame (``model.rotation`` off), so its own
rotation output is the identity. Whether the 3D shape it infers is turned the way the object
is, is still a question with an answer: sample each training kind's template, turned by each
of a few thousand rotations, on the model's 162 rays from the object's position, and take the
kind and turn whose log ray lengths (scale removed) are closest to the inferred mesh's about
its own centre. A model that puts its centre elsewhere in the object than the data does (the
middle of a cone's axis, the middle of a pyramid's height) reads worse than its shape
deserves. The rotation error of that turn (modulo the kind's symmetry, ``gen3d.symmetry``) is
then the error of the inferred shape's orientation, to within the table's spacing (about 8
degrees at 3,000 rotations).

It reads a pose; it does not infer one. It knows the training kinds' templates, which the
model never sees. ``read_turns`` asks less of the shape: given the object's true kind, which
turn of that kind's template is the inferred shape closest to? A shape rounded enough to read
as a sphere among the kinds can still be turned as its object is; one that says nothing of its
turn reads as a random turn would. A model puts a mesh's centre where it likes (the reward
sees only the surface), and for a kind without a centre of symmetry that need not be the
template's: the committed networks centre cones and pyramids near their centroid, about a
sixth of their height below the template's mid-height origin. So the template is read about
the model's own origin for the kind (``learners.mesh_eval.model_origin``), a fixed change of
frame per kind.
"""

from __future__ import annotations

import functools

import numpy as np

from gen3d import geometry as geo
from gen3d import primitives as prim
from gen3d.symmetry import cube_group

ROUND_KINDS = ("sphere",)
"""Kinds whose template looks the same turned any way: one row in the table."""


def turns(n: int = 4000, seed: int = 0) -> np.ndarray:
    """The rotations (M, 3, 3) a table tries: the cube's 24 (the identity first) and ``n``
    random ones."""
    return np.concatenate([cube_group(), geo.random_rotation(np.random.default_rng(seed), n)])


def shape_signature(lengths: np.ndarray) -> np.ndarray:
    """Log ray lengths (..., 162) less their mean: the shape, whatever its size."""
    log = np.log(np.maximum(np.asarray(lengths, np.float64), 1e-6))
    return log - log.mean(-1, keepdims=True)


@functools.lru_cache(maxsize=32)
def kind_table(kind: str, n: int = 3000, seed: int = 0, chunk: int = 64,
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """The rotations tried for ``kind`` (M, 3, 3) and the signatures (M, 162) of its template
    turned by each (one row for a round kind), as a ray mesh about the object's position holds
    it, or about ``origin`` in the template's frame."""
    mesh = prim.primitive(kind)
    verts = mesh.verts - np.asarray(origin, np.float64)
    rots = turns(n, seed)[:1] if kind in ROUND_KINDS else turns(n, seed)
    rays, sigs = geo.ico_rays().astype(np.float64), []
    for lo in range(0, len(rots), chunk):
        # the template turned by R, along ray d, is the template along R^T d
        dirs = np.einsum("rj,mjk->mrk", rays, rots[lo:lo + chunk])
        sigs.append(shape_signature(geo.ray_hits(verts, mesh.faces, dirs)[0]))
    return rots, np.concatenate(sigs)


def read_poses(lengths: np.ndarray, kinds: list[str], n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """For ray meshes' lengths (N, 162) about their centres: the index into ``kinds`` (N,) and
    the rotation (N, 3, 3) of the closest turned template, of ``n`` (+24) rotations tried."""
    sig = _signatures(lengths)
    best_d = np.full(len(sig), np.inf)
    kind = np.zeros(len(sig), int)
    rot = np.broadcast_to(np.eye(3), (len(sig), 3, 3)).copy()
    rows = np.arange(len(sig))
    for j, k in enumerate(kinds):
        rs, table = kind_table(k, n)
        d = (sig**2).sum(1)[:, None] + (table**2).sum(1)[None] - 2 * sig @ table.T  # (N, M)
        i = d.argmin(1)
        better = d[rows, i] < best_d
        best_d[better], kind[better], rot[better] = d[rows, i][better], j, rs[i[better]]
    return kind, rot


def read_turns(lengths: np.ndarray, kind: str, n: int = 3000,
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray | None:
    """For ray meshes' lengths (N, 162) about their centres: the rotation (N, 3, 3) of
    ``kind``'s template, about ``origin`` in its frame and turned by one of ``n`` (+24)
    rotations, closest to each; None for a round kind, whose template has no turn to read."""
    if kind in ROUND_KINDS:
        return None
    rots, table = kind_table(kind, n, origin=tuple(float(x) for x in origin))
    sig = _signatures(lengths)
    return rots[((table**2).sum(1)[None] - 2 * sig @ table.T).argmin(1)]


def _signatures(lengths) -> np.ndarray:
    lengths = np.asarray(lengths, np.float64)
    if lengths.ndim != 2 or lengths.shape[1] != geo.N_RAYS:
        raise ValueError(f"lengths: must be ray meshes (N, {geo.N_RAYS}), got shape {lengths.shape}")
    if not np.isfinite(lengths).all():
        raise ValueError("lengths: contains NaN or inf; a pose is read off finite ray meshes only")
    return shape_signature(lengths)
