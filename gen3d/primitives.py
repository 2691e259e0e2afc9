"""The primitive kinds the data is made of, each a ``geometry.Mesh`` of unit extent with a side
id per face (the side a colour goes on): cube, sphere, cylinder, cone, pyramid, octahedron,
prism, bicone and torus."""

from __future__ import annotations

import numpy as np

from gen3d.geometry import Mesh, face_normals, icosphere


def _revolve(profile: list[tuple[float, float]], n: int, caps_side: list[int]) -> Mesh:
    """Surface of revolution about y of a polyline ``profile`` of (radius, y) points from bottom
    to top; segment k gets side id ``caps_side[k]``. Radius-0 end points close the surface."""
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    verts, index = [], []
    for r, y in profile:
        if r == 0:
            index.append([len(verts)] * n)
            verts.append((0.0, y, 0.0))
        else:
            index.append(list(range(len(verts), len(verts) + n)))
            verts += [(r * np.cos(a), y, -r * np.sin(a)) for a in ang]
    faces, sides = [], []
    for k in range(len(profile) - 1):
        lo, hi = index[k], index[k + 1]
        for i in range(n):
            j = (i + 1) % n
            for tri in ((lo[i], lo[j], hi[j]), (lo[i], hi[j], hi[i])):
                if len(set(tri)) == 3:
                    faces.append(tri)
                    sides.append(caps_side[k])
    return Mesh(np.array(verts), np.array(faces), np.array(sides), max(caps_side) + 1)


def cube(size: float = 1.0) -> Mesh:
    """Axis-aligned cube of edge ``size``; sides 0..5 are +x, -x, +y, -y, +z, -z."""
    h = size / 2
    verts, faces, sides = [], [], []
    for s, (axis, sign) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)]):
        u, v = [(a) for a in range(3) if a != axis]
        quad = []
        for cu, cv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            p = [0.0, 0.0, 0.0]
            p[axis], p[u], p[v] = sign * h, cu * h, cv * h
            quad.append(p)
        b = len(verts)
        verts += quad
        tris = [(b, b + 1, b + 2), (b, b + 2, b + 3)]
        # orient outward
        n = np.cross(np.subtract(quad[1], quad[0]), np.subtract(quad[2], quad[0]))
        if n[axis] * sign < 0:
            tris = [t[::-1] for t in tris]
        faces += tris
        sides += [s, s]
    return Mesh(np.array(verts), np.array(faces), np.array(sides), 6)


def sphere(radius: float = 0.5, subdivisions: int = 3) -> Mesh:
    """Icosphere; its 8 octants are its sides."""
    v, f = icosphere(subdivisions)
    c = v[f].mean(1)
    sides = (c[:, 0] > 0) * 4 + (c[:, 1] > 0) * 2 + (c[:, 2] > 0)
    return Mesh(v * radius, f, sides, 8)


def cylinder(radius: float = 0.5, height: float = 1.0, n: int = 32) -> Mesh:
    """Sides: 0 bottom cap, 1 wall, 2 top cap."""
    h = height / 2
    return _revolve([(0, -h), (radius, -h), (radius, h), (0, h)], n, [0, 1, 2])


def cone(radius: float = 0.5, height: float = 1.0, n: int = 32) -> Mesh:
    """Sides: 0 base, 1 mantle."""
    h = height / 2
    return _revolve([(0, -h), (radius, -h), (0, h)], n, [0, 1])


def pyramid(size: float = 1.0, height: float = 1.0) -> Mesh:
    """Square pyramid; sides: 0 base, 1..4 the triangles."""
    h, s = height / 2, size / 2
    base = [(-s, -h, -s), (s, -h, -s), (s, -h, s), (-s, -h, s)]
    apex = (0.0, h, 0.0)
    verts = base + [apex]
    faces = [(0, 1, 2), (0, 2, 3)] + [(i, (i + 1) % 4, 4)[::-1] for i in range(4)]
    m = Mesh(np.array(verts), np.array(faces), np.array([0, 0, 1, 2, 3, 4]), 5)
    return _orient_outward(m)


def octahedron(size: float = 1.0) -> Mesh:
    """Regular octahedron with its vertices on the axes at +-size/2; each face is a side."""
    h = size / 2
    verts = [(h, 0, 0), (-h, 0, 0), (0, h, 0), (0, -h, 0), (0, 0, h), (0, 0, -h)]
    faces = [(x, y, z) for x in (0, 1) for y in (2, 3) for z in (4, 5)]
    return _orient_outward(Mesh(np.array(verts), np.array(faces), np.arange(8), 8))


def prism(radius: float = 0.5, height: float = 1.0) -> Mesh:
    """Triangular prism about y; sides: 0 bottom, 1 the three walls, 2 top."""
    h = height / 2
    return _revolve([(0, -h), (radius, -h), (radius, h), (0, h)], 3, [0, 1, 2])


def bicone(radius: float = 0.5, height: float = 1.0, n: int = 32) -> Mesh:
    """Two cones base to base about y; sides: 0 lower mantle, 1 upper mantle."""
    h = height / 2
    return _revolve([(0, -h), (radius, 0), (0, h)], n, [0, 1])


def torus(major: float = 0.35, minor: float = 0.15, n_major: int = 32, n_minor: int = 16) -> Mesh:
    """Torus about y; its 4 quadrants (by angle about y) are its sides."""
    a = np.linspace(0, 2 * np.pi, n_major, endpoint=False)
    b = np.linspace(0, 2 * np.pi, n_minor, endpoint=False)
    A, B = np.meshgrid(a, b, indexing="ij")
    r = major + minor * np.cos(B)
    verts = np.stack([r * np.cos(A), minor * np.sin(B), -r * np.sin(A)], -1).reshape(-1, 3)
    faces, sides = [], []
    for i in range(n_major):
        for j in range(n_minor):
            p, q = i * n_minor + j, ((i + 1) % n_major) * n_minor + j
            p2, q2 = i * n_minor + (j + 1) % n_minor, ((i + 1) % n_major) * n_minor + (j + 1) % n_minor
            faces += [(p, q, q2), (p, q2, p2)]
            sides += [int(4 * i / n_major)] * 2
    def ring_point(c):  # the nearest point of the torus's core circle: "inside" for a face
        flat = c * [1, 0, 1]
        return flat * (major / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-9))

    return _orient_outward(Mesh(verts, np.array(faces), np.array(sides), 4), centre_of=ring_point)


def _orient_outward(m: Mesh, centre_of=None) -> Mesh:
    """Flip faces whose normal points towards the centre (or a per-face reference point)."""
    c = m.verts[m.faces].mean(1)
    ref = np.zeros_like(c) if centre_of is None else centre_of(c)
    n = face_normals(m.verts, m.faces)
    f = m.faces.copy()
    flip = ((c - ref) * n).sum(1) < 0
    f[flip] = f[flip][:, ::-1]
    return Mesh(m.verts, f, m.side_ids, m.n_sides)


PRIMITIVES = {"cube": cube, "sphere": sphere, "cylinder": cylinder, "cone": cone,
              "pyramid": pyramid, "torus": torus, "octahedron": octahedron, "prism": prism,
              "bicone": bicone}


def primitive(name: str, **kwargs) -> Mesh:
    """A primitive of unit extent (it fits in a cube of edge 1 centred at the origin)."""
    if name not in PRIMITIVES:
        raise ValueError(f"primitive: unknown name {name!r}; choose one of {sorted(PRIMITIVES)}")
    return PRIMITIVES[name](**kwargs)
