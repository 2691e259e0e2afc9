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

Given the vertices' colours and which of them the camera sees, ``read_turns`` can also ask
that the turned template's side boundaries fall where the seen colours change (each object's
sides are painted distinct colours): a sphere painted as a turned cube reads that turn.
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
def template_hits(kind: str, n: int = 3000, seed: int = 0, chunk: int = 64,
                  origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rotations tried for ``kind`` (M, 3, 3) and, for its template turned by each (one row
    for a round kind), as a ray mesh about the object's position holds it (or about ``origin``
    in the template's frame): the signatures (M, 162) and the side each ray meets (M, 162)."""
    mesh = prim.primitive(kind)
    verts = mesh.verts - np.asarray(origin, np.float64)
    rots = turns(n, seed)[:1] if kind in ROUND_KINDS else turns(n, seed)
    rays, sigs, sides = geo.ico_rays().astype(np.float64), [], []
    for lo in range(0, len(rots), chunk):
        # the template turned by R, along ray d, is the template along R^T d
        dirs = np.einsum("rj,mjk->mrk", rays, rots[lo:lo + chunk])
        lengths, face = geo.ray_hits(verts, mesh.faces, dirs)
        sigs.append(shape_signature(lengths))
        sides.append(mesh.side_ids[np.maximum(face, 0)])
    return rots, np.concatenate(sigs), np.concatenate(sides)


def kind_table(kind: str, n: int = 3000, seed: int = 0, chunk: int = 64,
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """The rotations tried for ``kind`` (M, 3, 3) and the signatures (M, 162) of its template
    turned by each (``template_hits``)."""
    rots, sigs, _ = template_hits(kind, n, seed, chunk, origin)
    return rots, sigs


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
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
               colours: np.ndarray | None = None, seen: np.ndarray | None = None,
               weights: np.ndarray | None = None) -> np.ndarray | None:
    """For ray meshes' lengths (N, 162) about their centres: the rotation (N, 3, 3) of
    ``kind``'s template, about ``origin`` in its frame and turned by one of ``n`` (+24)
    rotations, closest to each; None for a round kind, whose template has no turn to read.

    ``weights`` (N, 162), each row non-negative with a positive sum, weigh the rays' squared
    log-length residuals (the scale fit with the same weights): 0 leaves a ray out, e.g. the
    half of the shape the camera does not see.

    With ``colours`` (N, 162, 3) of the vertices and ``seen`` (N, 162) bool, the turn is also
    one that puts the side boundaries where the seen colours change: the most likely turn
    under Gaussian residuals of the log lengths and of the seen colours about their side's
    mean, each of unknown variance (``_profile_cost``)."""
    if kind in ROUND_KINDS:
        return None
    rots, table, sides = template_hits(kind, n, origin=tuple(float(x) for x in origin))
    sig = _signatures(lengths)
    if weights is not None:
        if colours is not None:
            raise ValueError("read_turns: pass weights or colours, not both")
        return rots[_weighted_d2(sig, table, _weights(weights, len(sig))).argmin(1)]
    d = (table**2).sum(1)[None] - 2 * sig @ table.T
    if colours is None:
        return rots[d.argmin(1)]
    colours, seen = _coloured(colours, seen, len(sig))
    spread = side_spread(colours, seen, sides, prim.primitive(kind).n_sides)
    return rots[_profile_cost(d + (sig**2).sum(1)[:, None], spread, seen.sum(1)).argmin(1)]


def side_spread(colours: np.ndarray, seen: np.ndarray, sides: np.ndarray, n_sides: int) -> np.ndarray:
    """(N, M): for each mesh's seen vertex colours (N, 162, 3) and each of M assignments of
    the vertices to sides (M, 162), the sum over the seen vertices of the squared distance of
    their colour from their side's mean colour."""
    w = seen.astype(np.float64)
    onehot = np.zeros((geo.N_RAYS, len(sides) * n_sides))
    onehot[np.arange(geo.N_RAYS)[:, None], np.arange(len(sides))[None] * n_sides + sides.T] = 1
    count = np.maximum(w @ onehot, 1e-12)
    between = sum(((w * colours[..., c]) @ onehot) ** 2 for c in range(3)) / count
    total = (w[..., None] * colours**2).sum((1, 2))
    return np.maximum(total[:, None] - between.reshape(len(w), len(sides), n_sides).sum(-1), 0.0)


def _profile_cost(shape_d2: np.ndarray, spread: np.ndarray, n_seen: np.ndarray,
                  floor: float = 1e-3) -> np.ndarray:
    """-log likelihood (N, M), up to a constant, of a turn whose squared signature distance is
    ``shape_d2`` and colour spread ``spread``: each residual's variance set to its own most
    likely value (floored at ``floor``^2, so an exact fit stays finite), which leaves no
    weight to tune between lengths and colours."""
    k = 3 * n_seen[:, None].astype(np.float64)
    shape = geo.N_RAYS / 2 * np.log(np.maximum(shape_d2, 0) / geo.N_RAYS + floor**2)
    return shape + k / 2 * np.log(spread / np.maximum(k, 1) + floor**2)


def _weighted_d2(sig: np.ndarray, table: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, M): sum_i w_i (sig_i - table_i - c)^2 at each pair's best offset c (the log scale)."""
    wa = w * sig
    resid_sum = wa.sum(1, keepdims=True) - w @ table.T
    return ((wa * sig).sum(1, keepdims=True) - 2 * wa @ table.T + w @ (table**2).T
            - resid_sum**2 / w.sum(1, keepdims=True))


def _weights(weights, n: int) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    if w.shape != (n, geo.N_RAYS):
        raise ValueError(f"weights: need ({n}, {geo.N_RAYS}) for {n} meshes, got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or (w.sum(1) <= 0).any():
        raise ValueError("weights: each must be finite and >= 0, and each mesh's must sum to "
                         "more than 0 (a mesh with no ray to read has no turn)")
    return w


def _coloured(colours, seen, n: int) -> tuple[np.ndarray, np.ndarray]:
    colours = np.asarray(colours, np.float64)
    seen = np.ones(colours.shape[:2], bool) if seen is None else np.asarray(seen, bool)
    if colours.shape != (n, geo.N_RAYS, 3) or seen.shape != (n, geo.N_RAYS):
        raise ValueError(f"colours, seen: need ({n}, {geo.N_RAYS}, 3) and ({n}, {geo.N_RAYS}) for "
                         f"{n} meshes, got {colours.shape} and {seen.shape}")
    if not np.isfinite(colours).all():
        raise ValueError("colours: contains NaN or inf; a turn is read off finite colours only")
    return colours, seen


def _signatures(lengths) -> np.ndarray:
    lengths = np.asarray(lengths, np.float64)
    if lengths.ndim != 2 or lengths.shape[1] != geo.N_RAYS:
        raise ValueError(f"lengths: must be ray meshes (N, {geo.N_RAYS}), got shape {lengths.shape}")
    if not np.isfinite(lengths).all():
        raise ValueError("lengths: contains NaN or inf; a pose is read off finite ray meshes only")
    return shape_signature(lengths)
