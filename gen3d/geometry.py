"""Geometry in numpy: the 162-vertex icosphere and its rays, ray meshes, rotations, the
perspective camera and lights, triangle meshes with a side id per face, spherical harmonics on
the rays, and the ray-mesh action's layout (the primitive kinds are ``gen3d.primitives``).

Conventions (shared by the GL renderer, the soft rasteriser and the datasets):
- right-handed world; the camera looks down its own -z axis (OpenGL);
- image row 0 is the top; pixel (row, col) has its centre at NDC
  x = (col + 0.5) / W * 2 - 1, y = 1 - (row + 0.5) / H * 2;
- depth is the eye-space distance along the viewing axis (positive in front of the camera);
- a pose is ``x_world = R @ (scale * x_object) + t``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

# ---------------------------------------------------------------------------- icosphere


def _icosahedron() -> tuple[np.ndarray, np.ndarray]:
    p = (1.0 + 5.0**0.5) / 2.0
    v = np.array(
        [[-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0],
         [0, -1, p], [0, 1, p], [0, -1, -p], [0, 1, -p],
         [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1]], dtype=np.float64)
    f = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
         [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
         [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
         [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=np.int64)
    return v / np.linalg.norm(v, axis=1, keepdims=True), f


def _subdivide(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    verts = list(v)
    cache: dict[tuple[int, int], int] = {}

    def mid(a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = verts[a] + verts[b]
            verts.append(m / np.linalg.norm(m))
            cache[key] = len(verts) - 1
        return cache[key]

    faces = []
    for a, b, c in f:
        ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
        faces += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
    return np.array(verts), np.array(faces, dtype=np.int64)


@functools.lru_cache(maxsize=4)
def icosphere(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: (verts float32 (V,3), faces int32 (F,3)), faces counter-clockwise seen
    from outside. ``subdivisions=2`` gives the model's 162 vertices and 320 faces."""
    v, f = _icosahedron()
    for _ in range(subdivisions):
        v, f = _subdivide(v, f)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    flip = (n * v[f].mean(1)).sum(1) < 0
    f[flip] = f[flip][:, ::-1]
    v, f = v.astype(np.float32), f.astype(np.int32)
    v.setflags(write=False)
    f.setflags(write=False)
    return v, f


N_RAYS = 162
N_FACES = 320


def ico_rays() -> np.ndarray:
    """The 162 fixed unit rays from the centre along which the model's vertices move."""
    return icosphere(2)[0]


def ico_faces() -> np.ndarray:
    return icosphere(2)[1]


@functools.lru_cache(maxsize=8)
def ray_harmonics(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """The real harmonics up to ``degree`` at the 162 rays, Y (162, K), and its least-squares
    inverse (K, 162), which takes a function's values on the rays to its coefficients (exact
    for a function of that degree where the rays hold it: degree 6 and below). Read-only."""
    y = real_sph_harm(ico_rays(), degree)
    pinv = np.linalg.pinv(y)
    y.flags.writeable = pinv.flags.writeable = False
    return y, pinv


def ray_mesh(lengths: np.ndarray) -> np.ndarray:
    """Vertices (..., 162, 3) of the mesh whose vertex i lies at ``lengths[..., i] * ray_i``."""
    lengths = np.asarray(lengths, dtype=np.float32)
    if lengths.shape[-1] != N_RAYS:
        raise ValueError(f"lengths: last axis must be {N_RAYS} ray lengths, got shape {lengths.shape}")
    return lengths[..., None] * ico_rays()


# ---------------------------------------------------------------------------- rotations


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle vectors (..., 3) (angle = norm, in radians) -> matrices (..., 3, 3)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    k = aa / np.where(theta > 1e-12, theta, 1.0)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + s * K + (1 - c) * (K @ K)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) as (w, x, y, z), normalised here -> matrices (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    m = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
         2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
         2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return np.stack(m, -1).reshape(q.shape[:-1] + (3, 3))


def axis_angle_to_quat(aa: np.ndarray) -> np.ndarray:
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    k = aa / np.where(theta > 1e-12, theta, 1.0)
    return np.concatenate([np.cos(theta / 2), np.sin(theta / 2) * k], -1)


def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0, -q, q)  # the shorter of the two equivalent rotations
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    theta = 2 * np.arctan2(s, q[..., :1])
    return q[..., 1:] * np.where(s > 1e-12, theta / np.where(s > 1e-12, s, 1.0), 2.0)


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (w, x, y, z) with w >= 0."""
    m = np.asarray(m, dtype=np.float64)
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    def e(i, j):
        return m[..., i, j]

    xx, yy, zz = e(0, 0), e(1, 1), e(2, 2)

    # 4 * q * q_k for k = w, x, y, z: each row is the quaternion scaled by one of its parts
    cand = np.stack([
        np.stack([1 + tr, e(2, 1) - e(1, 2), e(0, 2) - e(2, 0), e(1, 0) - e(0, 1)], -1),
        np.stack([e(2, 1) - e(1, 2), 1 + xx - yy - zz, e(0, 1) + e(1, 0), e(0, 2) + e(2, 0)], -1),
        np.stack([e(0, 2) - e(2, 0), e(0, 1) + e(1, 0), 1 - xx + yy - zz, e(1, 2) + e(2, 1)], -1),
        np.stack([e(1, 0) - e(0, 1), e(0, 2) + e(2, 0), e(1, 2) + e(2, 1), 1 - xx - yy + zz], -1),
    ], -2)
    # pick the numerically largest candidate (Shepperd's method)
    diag = np.stack([tr, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = np.argmax(diag, -1)
    q = np.take_along_axis(cand, best[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    return quat_to_axis_angle(matrix_to_quat(m))


def random_rotation(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Uniformly random rotation matrices (Haar measure) from normalised Gaussian quaternions."""
    q = rng.standard_normal((1 if n is None else n, 4))
    m = quat_to_matrix(q)
    return m[0] if n is None else m


# ---------------------------------------------------------------------------- camera


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """World-to-eye 4x4 matrix of a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    f = target - eye
    if np.linalg.norm(f) < 1e-9:
        raise ValueError("look_at: eye and target coincide; put the camera away from its target")
    f = f / np.linalg.norm(f)
    s = np.cross(f, up)
    if np.linalg.norm(s) < 1e-9:
        raise ValueError("look_at: up is parallel to the viewing direction; choose another up")
    s = s / np.linalg.norm(s)
    u = np.cross(s, f)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = s, u, -f
    m[:3, 3] = -m[:3, :3] @ eye
    return m


def perspective(fov_y_deg: float, aspect: float, near: float, far: float) -> np.ndarray:
    """OpenGL projection matrix (eye space -> clip space)."""
    if not (0 < fov_y_deg < 180) or not (0 < near < far):
        raise ValueError("perspective: need 0 < fov_y_deg < 180 and 0 < near < far")
    t = 1.0 / np.tan(np.radians(fov_y_deg) / 2)
    m = np.zeros((4, 4))
    m[0, 0], m[1, 1] = t / aspect, t
    m[2, 2], m[2, 3] = (far + near) / (near - far), 2 * far * near / (near - far)
    m[3, 2] = -1.0
    return m


@dataclass(frozen=True)
class Camera:
    """A perspective camera. The default looks at the origin from +z, 4 units away."""

    eye: tuple[float, float, float] = (0.0, 0.0, 4.0)
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)
    fov_y_deg: float = 35.0
    near: float = 0.5
    far: float = 20.0

    def view(self) -> np.ndarray:
        return look_at(self.eye, self.target, self.up)

    def projection(self, aspect: float = 1.0) -> np.ndarray:
        return perspective(self.fov_y_deg, aspect, self.near, self.far)

    def view_projection(self, aspect: float = 1.0) -> np.ndarray:
        return self.projection(aspect) @ self.view()

    def project(self, points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) -> (pixel coordinates (..., 2) as (col, row), continuous, and
        eye-space depth (...))."""
        p = np.asarray(points, dtype=np.float64)
        eye_p = p @ self.view()[:3, :3].T + self.view()[:3, 3]
        clip = np.concatenate([p, np.ones(p.shape[:-1] + (1,))], -1) @ self.view_projection(width / height).T
        ndc = clip[..., :2] / clip[..., 3:4]
        col = (ndc[..., 0] + 1) / 2 * width
        row = (1 - ndc[..., 1]) / 2 * height
        return np.stack([col, row], -1), -eye_p[..., 2]


@dataclass(frozen=True)
class Lights:
    """Directional lights (unit vectors pointing towards each light, world frame) with RGB
    intensities, plus an ambient term. At most three."""

    directions: tuple = ((0.4, 0.6, 0.7), (-0.7, 0.2, 0.4), (0.1, -0.6, 0.5))
    colours: tuple = ((0.55, 0.55, 0.55), (0.3, 0.3, 0.3), (0.2, 0.2, 0.2))
    ambient: tuple = (0.25, 0.25, 0.25)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = np.zeros((3, 3), np.float32)
        c = np.zeros((3, 3), np.float32)
        n = len(self.directions)
        if n > 3 or len(self.colours) != n:
            raise ValueError("lights: give at most 3 directions and one colour for each")
        if n:
            dd = np.asarray(self.directions, np.float32)
            d[:n] = dd / np.linalg.norm(dd, axis=1, keepdims=True)
            c[:n] = np.asarray(self.colours, np.float32)
        return d, c, np.asarray(self.ambient, np.float32)


# ---------------------------------------------------------------------------- meshes


@dataclass
class Mesh:
    """A triangle mesh: vertices (V,3) float32, faces (F,3) int32 counter-clockwise from
    outside, and a side id per face (F,) that picks the face's colour."""

    verts: np.ndarray
    faces: np.ndarray
    side_ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    n_sides: int = 1

    def __post_init__(self):
        self.verts = np.ascontiguousarray(self.verts, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32)
        if self.side_ids is None:
            self.side_ids = np.zeros(len(self.faces), np.int32)
        self.side_ids = np.asarray(self.side_ids, dtype=np.int32)

    def transformed(self, rotation=None, translation=None, scale: float = 1.0) -> Mesh:
        return Mesh(transform_points(self.verts, rotation, translation, scale), self.faces,
                    self.side_ids, self.n_sides)

    def face_colours(self, side_colours: np.ndarray) -> np.ndarray:
        """Per-face colours (F,3) from one colour per side (n_sides,3)."""
        return np.asarray(side_colours, np.float32)[self.side_ids]


def transform_points(points, rotation=None, translation=None, scale: float = 1.0) -> np.ndarray:
    """``R @ (scale * p) + t``; rotation is a 3x3 matrix or an axis-angle 3-vector."""
    p = np.asarray(points, dtype=np.float64) * scale
    if rotation is not None:
        r = np.asarray(rotation, dtype=np.float64)
        r = axis_angle_to_matrix(r) if r.shape == (3,) else r
        p = p @ r.T
    if translation is not None:
        p = p + np.asarray(translation, dtype=np.float64)
    return p.astype(np.float32)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v = np.asarray(verts, dtype=np.float64)
    a = v[..., faces[:, 0], :]
    n = np.cross(v[..., faces[:, 1], :] - a, v[..., faces[:, 2], :] - a)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def face_areas(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v = np.asarray(verts, dtype=np.float64)
    a = v[..., faces[:, 0], :]
    n = np.cross(v[..., faces[:, 1], :] - a, v[..., faces[:, 2], :] - a)
    return 0.5 * np.linalg.norm(n, axis=-1)


def sample_surface(verts: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly on the surface (area-weighted faces, uniform barycentrics)."""
    a = face_areas(verts, faces)
    idx = rng.choice(len(faces), size=n, p=a / a.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    tri = np.asarray(verts, np.float64)[faces[idx]]
    p = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    return p.astype(np.float32)


def ray_hits(verts: np.ndarray, faces: np.ndarray, dirs: np.ndarray,
             origin=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Distance from ``origin`` along each unit direction (..., R, 3) to the farthest hit of
    the mesh (Moller-Trumbore), and the index of the face hit there; 0 and -1 where a ray
    misses. Leading dimensions of ``dirs`` are batches of rays at the same mesh."""
    rays = np.asarray(dirs, np.float64)[..., None, :]  # (..., R, 1, 3)
    tri = np.asarray(verts, np.float64)[faces] - np.asarray(origin, np.float64)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(rays, e2)  # (..., R, F, 3)
    det = (p * e1).sum(-1)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = -tri[:, 0]
    u = (s * p).sum(-1) * inv
    q = np.cross(s, e1)
    v = (rays * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    hit = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 0)
    t = np.where(hit, t, 0.0)
    face = t.argmax(-1)
    dist = np.take_along_axis(t, face[..., None], -1)[..., 0]
    return dist.astype(np.float32), np.where(dist > 0, face, -1)


def ray_lengths_of_mesh(verts: np.ndarray, faces: np.ndarray, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Distance from ``origin`` along each of the 162 rays to the farthest hit of the mesh,
    0 where a ray misses. For a star-shaped mesh about ``origin`` this gives the ray mesh
    that best matches it."""
    return ray_hits(verts, faces, ico_rays(), origin)[0]


def on_rays(m: Mesh) -> Mesh:
    """``m`` (star-shaped about the origin) sampled on the 162 fixed rays: the ray mesh through
    its surface, each face taking the side of the surface its centre's ray meets. The mesh
    model can represent it exactly; its corners are cut where no ray meets them."""
    lengths = ray_lengths_of_mesh(m.verts, m.faces)
    if (lengths <= 0).any():
        raise ValueError("on_rays: a ray misses the mesh; it must enclose the origin")
    v, f = ray_mesh(lengths), ico_faces()
    centres = v[f].mean(1)
    _, hit = ray_hits(m.verts, m.faces, centres / np.linalg.norm(centres, axis=1, keepdims=True))
    return Mesh(v, f, m.side_ids[np.maximum(hit, 0)], m.n_sides)


# ---------------------------------------------------------------------------- spherical harmonics


def mirror_sph_harm(dirs: np.ndarray, degree: int) -> np.ndarray:
    """A basis (N, K) of the functions up to ``degree`` at unit directions (N,3) that are even
    in x and even in z (mirror images in the planes x = 0 and z = 0 are the same), from the
    real spherical harmonics averaged over those mirrors and orthonormalised, each column
    scaled to the norm of an orthonormal harmonic's. Every primitive kind here has this symmetry
    in its own frame (the apex of a cone or pyramid up the y axis); a turned one does not."""
    d = np.asarray(dirs, np.float64)
    flips = [np.array(f, np.float64) for f in ((1, 1, 1), (-1, 1, 1), (1, 1, -1), (-1, 1, -1))]
    sym = sum(real_sph_harm(d * f, degree) for f in flips) / len(flips)
    u, sv, _ = np.linalg.svd(sym, full_matrices=False)
    keep = sv > 1e-6 * sv[0]
    scale = np.linalg.norm(real_sph_harm(d, degree), axis=0).mean()
    return u[:, keep] * scale


def real_sph_harm(dirs: np.ndarray, degree: int) -> np.ndarray:
    """Real, orthonormal spherical harmonics up to ``degree`` at unit directions (N,3):
    (N, (degree+1)^2). Built by the associated-Legendre recurrence, so any degree works."""
    d = np.asarray(dirs, np.float64)
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    theta = np.arccos(np.clip(z, -1, 1))
    phi = np.arctan2(y, x)
    ct, st = np.cos(theta), np.sin(theta)
    L = degree
    P = np.zeros((L + 1, L + 1, len(d)))
    P[0, 0] = 1.0
    for m in range(1, L + 1):
        P[m, m] = -(2 * m - 1) * st * P[m - 1, m - 1]
    for m in range(L):
        P[m + 1, m] = (2 * m + 1) * ct * P[m, m]
    for m in range(L + 1):
        for l in range(m + 2, L + 1):
            P[l, m] = ((2 * l - 1) * ct * P[l - 1, m] - (l + m - 1) * P[l - 2, m]) / (l - m)
    from math import factorial, pi, sqrt
    out = []
    for l in range(L + 1):
        for m in range(-l, l + 1):
            am = abs(m)
            k = sqrt((2 * l + 1) / (4 * pi) * factorial(l - am) / factorial(l + am))
            if m == 0:
                out.append(k * P[l, 0])
            elif m > 0:
                out.append(sqrt(2) * k * np.cos(m * phi) * P[l, m])
            else:
                out.append(sqrt(2) * k * np.sin(am * phi) * P[l, am])
    return np.stack(out, 1).astype(np.float32)


def random_ray_meshes(rng: np.random.Generator, n: int, bumpy: float = 0.5) -> list[np.ndarray]:
    """n random ray meshes for tests and benchmarks: (lengths (n,162), axis-angle rotations
    (n,3), translations (n,3), per-vertex colours (n,162,3)), float32. The first meshes are
    smooth (log-lengths from degree-3 harmonics); the last ``bumpy`` fraction have independent
    ray lengths, so their faces hide one another."""
    y = real_sph_harm(ico_rays(), 3)
    coef = rng.normal(0, 0.25, (n, y.shape[1]))
    coef[:, 0] = 0
    lengths = (0.7 * np.exp(coef @ y.T)).clip(0.05, 2)
    first_bumpy = int(n * (1 - bumpy))
    lengths[first_bumpy:] = rng.uniform(0.3, 1.0, (n - first_bumpy, N_RAYS))
    rot = rng.normal(0, 1, (n, 3))
    trans = rng.uniform(-0.4, 0.4, (n, 3))
    cols = rng.uniform(0, 1, (n, N_RAYS, 3))
    return [a.astype(np.float32) for a in (lengths, rot, trans, cols)]


# ---------------------------------------------------------------------------- ray-mesh parameters
# The renderer's action layout for one mesh (a flat float32 vector); envs/spaces.py builds the
# gymnasium Box from it and the mesh model writes it, so it lives here, with no GL or torch.

MAX_LENGTH = 2.0
MAX_TRANSLATION = 1.0
ACTION_SLICES = {
    "lengths": slice(0, N_RAYS),
    "rotation": slice(N_RAYS, N_RAYS + 3),
    "translation": slice(N_RAYS + 3, N_RAYS + 6),
    "colours": slice(N_RAYS + 6, N_RAYS + 6 + 3 * N_RAYS),
}
ACTION_DIM = N_RAYS + 6 + 3 * N_RAYS


def vertical_turn(degrees: float) -> np.ndarray:
    """The rotation (3, 3) by ``degrees`` about the camera's vertical (y) axis."""
    return axis_angle_to_matrix(np.array([0.0, np.radians(degrees), 0.0]))


def turn_actions(actions: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Actions (B, ACTION_DIM) with each mesh turned by ``turn`` (3, 3) about its own centre:
    its rotation becomes ``turn`` after its own, all else the same."""
    out = np.array(actions, np.float32)
    rot = axis_angle_to_matrix(out[:, ACTION_SLICES["rotation"]])
    out[:, ACTION_SLICES["rotation"]] = matrix_to_axis_angle(np.asarray(turn) @ rot)
    return out
