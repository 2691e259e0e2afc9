"""Checks of renderer inputs: each failure is a ValueError that names the argument, what it
should be and what it was, raised before anything reaches GL (never a segfault or a silent
black image)."""

from __future__ import annotations

import numpy as np

from gen3d import geometry as geo


LENGTH_HINT = (f"a posed mesh reaches at most MAX_LENGTH={geo.MAX_LENGTH:g} from its centre "
               "(the action bounds, envs/spaces.py); lower the lengths or the scale")
TRANSLATION_HINT = (f"a mesh centre lies within [-{geo.MAX_TRANSLATION:g}, {geo.MAX_TRANSLATION:g}] "
                    "on each axis (the action bounds, envs/spaces.py)")


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
            want = str(tuple("B" if s is None else s for s in shape)).replace("'", "")
            raise ValueError(f"{name}: must have shape {want}, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not a.size:
        return a
    lo, hi = a.min(), a.max()  # NaN and inf show in these: no mask over the array when all is well
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name}: contains NaN or inf (first at index {tuple(int(i) for i in bad)}); "
                         "all values must be finite")
    if nonneg and lo < 0:
        raise ValueError(f"{name}: must be >= 0, got a minimum of {lo:.4g}")
    if unit and (lo < 0 or hi > 1):
        raise ValueError(f"{name}: must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
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
            if np.linalg.det(r).min() < 0:
                raise ValueError("rotation: (B,3,3) matrices must be rotations, determinant +1; "
                                 "a reflection turns the mesh inside out (its back faces the camera)")
        else:
            aa = check_array("rotation", ra, (b, 3))
            r = geo.axis_angle_to_matrix(aa).astype(np.float32)
    if translation is None:
        t = np.zeros((b, 3), np.float32)
    else:
        t = check_array("translation", translation, (b, 3))
        check_at_most("translation", t, geo.MAX_TRANSLATION, TRANSLATION_HINT, absolute=True)
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


def check_size(name: str, v) -> int:
    """A count or a size in pixels: a positive integer (not a bool, not a float)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: must be a positive integer, got {v!r}")
    return int(v)


def check_sigma(sigma) -> float:
    """The pixel noise of the Gaussian reward: a finite number > 0 (NaN would make every
    reward NaN)."""
    ok = isinstance(sigma, (int, float, np.integer, np.floating)) and not isinstance(sigma, bool)
    if not ok or not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma: the pixel noise must be a finite number > 0, got {sigma!r}")
    return float(sigma)


def check_at_most(name: str, a: np.ndarray, hi: float, hint: str, absolute: bool = False) -> None:
    """Refuse values of ``a`` (finite, checked before) over ``hi`` (in absolute value when
    ``absolute``): far-off geometry draws a black image, never an error from GL."""
    v = np.abs(a) if absolute else a
    if v.size and v.max() > hi:
        at = tuple(int(i) for i in np.unravel_index(int(np.argmax(v)), v.shape))
        word = "|value|" if absolute else "value"
        raise ValueError(f"{name}: {word} {float(a[at]):.4g} at index {at} is over the bound {hi:g}; "
                         f"{hint}")


def _vec3(name: str, v) -> tuple[float, float, float]:
    a = check_array(name, v, (3,))
    return tuple(float(x) for x in a)  # type: ignore[return-value]


def check_camera(camera) -> geo.Camera:
    """A camera with finite settings that define a view: eye != target, ``up`` not along the
    line of sight, 0 < fov < 180 degrees, 0 < near < far. Returned with tuples of floats (a
    hashable key)."""
    if not isinstance(camera, geo.Camera):
        raise ValueError(f"camera: must be a gen3d.geometry.Camera, got {type(camera).__name__}")
    eye, target, up = (_vec3(f"camera.{k}", getattr(camera, k)) for k in ("eye", "target", "up"))
    fov, near, far = (_scalar(f"camera.{k}", getattr(camera, k))
                      for k in ("fov_y_deg", "near", "far"))
    sight = np.subtract(target, eye)
    if np.linalg.norm(sight) < 1e-6:
        raise ValueError(f"camera: eye and target are the same point {eye}; the camera looks nowhere")
    if np.linalg.norm(np.cross(sight, up)) < 1e-6 * np.linalg.norm(sight) * max(np.linalg.norm(up), 1e-30):
        raise ValueError(f"camera.up: {up} is zero or along the line of sight; give a direction "
                         "across it, such as (0, 1, 0)")
    if not 0 < fov < 180:
        raise ValueError(f"camera.fov_y_deg: must lie in (0, 180) degrees, got {fov}")
    if not 0 < near < far:
        raise ValueError(f"camera.near, camera.far: need 0 < near < far, got near={near}, far={far}")
    return geo.Camera(eye, target, up, fov, near, far)


def _scalar(name: str, v) -> float:
    return float(check_array(name, v, ()).reshape(-1)[0])  # (ascontiguousarray makes 0-d 1-d)


def check_lights(lights):
    """Up to three directional lights (non-zero finite directions, one colour each) and an
    ambient term; every intensity finite and >= 0. Returned as tuples of floats."""
    for k in ("directions", "colours", "ambient"):
        if not hasattr(lights, k):
            raise ValueError(f"lights: must be an envs.renderer.Lights, got {type(lights).__name__}")
    dirs = [_vec3(f"lights.directions[{i}]", d) for i, d in enumerate(lights.directions)]
    cols = [_vec3(f"lights.colours[{i}]", c) for i, c in enumerate(lights.colours)]
    if len(dirs) > 3 or len(cols) != len(dirs):
        raise ValueError(f"lights: give at most 3 directions and one colour for each, got "
                         f"{len(dirs)} directions and {len(cols)} colours")
    for i, d in enumerate(dirs):
        if np.linalg.norm(d) < 1e-6:
            raise ValueError(f"lights.directions[{i}]: a direction must be non-zero, got {d}")
    amb = _vec3("lights.ambient", lights.ambient)
    for name, c in [(f"lights.colours[{i}]", c) for i, c in enumerate(cols)] + [("lights.ambient", amb)]:
        if min(c) < 0:
            raise ValueError(f"{name}: light intensities must be >= 0, got {c}")
    return type(lights)(tuple(dirs), tuple(cols), amb)


def check_reach(radii: np.ndarray, scale) -> None:
    """Refuse posed meshes that reach further than MAX_LENGTH from their centre: ``radii``
    (B,) the unscaled reach of each mesh, ``scale`` as given to the renderer (or None)."""
    s = 1.0 if scale is None else np.asarray(scale, np.float32)
    reach = radii * s
    if reach.size and reach.max() > geo.MAX_LENGTH:
        b = int(np.argmax(reach))
        name = "lengths" if scale is None else "scale"
        said = "" if scale is None else f" at scale {float(np.ravel(s)[b]):.4g}"
        raise ValueError(f"{name}: mesh {b} reaches {float(reach[b]):.4g} from its centre{said}; "
                         + LENGTH_HINT)


def check_meshes(meshes) -> list[geo.Mesh]:
    """General meshes as ``geometry.Mesh``: finite vertices, at least one face, every face
    indexing a vertex."""
    out = []
    for i, m in enumerate(meshes):
        if not isinstance(m, geo.Mesh):
            if not (isinstance(m, (tuple, list)) and len(m) == 2):
                raise ValueError(f"meshes[{i}]: must be a geometry.Mesh or a (verts, faces) pair, "
                                 f"got {type(m).__name__}")
            verts = check_array(f"meshes[{i}] vertices", m[0], (None, 3))
            faces = np.asarray(m[1])
            if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
                raise ValueError(f"meshes[{i}] faces: must be an integer array (F, 3), got "
                                 f"{faces.dtype} {faces.shape}")
            m = geo.Mesh(verts, faces)
        check_array(f"meshes[{i}] vertices", m.verts, (None, 3))
        if len(m.faces) == 0 or m.faces.min() < 0 or m.faces.max() >= len(m.verts):
            raise ValueError(f"meshes[{i}] faces: need at least one face, each indexing one of "
                             f"the {len(m.verts)} vertices")
        out.append(m)
    if not out:
        raise ValueError("meshes: the batch is empty; pass at least one mesh")
    return out
