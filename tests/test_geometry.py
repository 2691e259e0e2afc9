import numpy as np
import pytest

from gen3d import geometry as geo
from gen3d import primitives as prim


def test_icosphere_has_162_unit_rays_and_320_outward_faces():
    v, f = geo.icosphere(2)
    assert v.shape == (162, 3) and f.shape == (320, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    assert len(v) - 480 + len(f) == 2  # Euler: V - E + F = 2 with E = 3F/2
    n = geo.face_normals(v, f)
    assert ((n * v[f].mean(1)).sum(1) > 0).all()


def _edges_closed(verts, faces):
    """Every edge (vertices welded by position) is shared by exactly two faces."""
    _, weld = np.unique(np.round(verts, 5), axis=0, return_inverse=True)
    faces = weld.ravel()[faces]
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return (counts == 2).all()


@pytest.mark.parametrize("name", sorted(prim.PRIMITIVES))
def test_primitives_are_closed_outward_and_unit_sized(name):
    m = prim.primitive(name)
    tri = m.verts[m.faces].astype(np.float64)
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert vol > 0, "faces must be counter-clockwise seen from outside"
    assert _edges_closed(m.verts, m.faces)
    assert np.abs(m.verts).max() <= 0.5 + 1e-6
    assert m.side_ids.shape == (len(m.faces),) and m.side_ids.max() == m.n_sides - 1


def test_cube_volume_and_sphere_volume_match_analytic():
    def volume(m):
        tri = m.verts[m.faces].astype(np.float64)
        return np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert volume(prim.cube(1.0)) == pytest.approx(1.0, rel=1e-6)
    assert volume(prim.sphere(0.5, 4)) == pytest.approx(4 / 3 * np.pi * 0.125, rel=0.01)


def test_rotation_conversions_round_trip():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(50, 3))
    aa *= (rng.uniform(0.1, 3.0, 50) / np.linalg.norm(aa, axis=1))[:, None]  # angles < pi
    R = geo.axis_angle_to_matrix(aa)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1, atol=1e-12)
    np.testing.assert_allclose(geo.matrix_to_axis_angle(R), aa, atol=1e-9)
    np.testing.assert_allclose(geo.quat_to_matrix(geo.axis_angle_to_quat(aa)), R, atol=1e-12)
    np.testing.assert_allclose(geo.quat_to_matrix(geo.matrix_to_quat(R)), R, atol=1e-12)
    # a quarter turn about z takes x to y
    np.testing.assert_allclose(geo.axis_angle_to_matrix([0, 0, np.pi / 2]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_camera_projects_the_target_to_the_image_centre_and_depth_is_distance():
    cam = geo.Camera(eye=(1.0, 2.0, 3.0), target=(0.0, 0.5, 0.0))
    px, depth = cam.project(np.array([[0.0, 0.5, 0.0]]), 64, 48)
    np.testing.assert_allclose(px[0], [32, 24], atol=1e-9)
    assert depth[0] == pytest.approx(np.linalg.norm(np.subtract(cam.eye, cam.target)))
    # a point at the top edge of the field of view lands on row 0
    d = 4.0
    top = np.array([[0.0, d * np.tan(np.radians(35.0 / 2)), 0.0]])
    np.testing.assert_allclose(geo.Camera().project(top, 64, 64)[0][0], [32, 0], atol=1e-9)


def test_ray_lengths_recover_a_star_shaped_mesh():
    lengths = np.random.default_rng(1).uniform(0.5, 1.0, 162)
    v = geo.ray_mesh(lengths)
    np.testing.assert_allclose(geo.ray_lengths_of_mesh(v, geo.ico_faces()), lengths, rtol=1e-5)
    # a cube of edge 1: the ray along +x hits the face at 0.5
    c = prim.cube()
    got = geo.ray_lengths_of_mesh(c.verts, c.faces)
    rays = geo.ico_rays()
    np.testing.assert_allclose(got, 0.5 / np.abs(rays).max(1), rtol=1e-5)


def test_on_rays_is_exact_for_a_ray_mesh_and_keeps_the_sides_of_a_cube():
    lengths = np.random.default_rng(2).uniform(0.5, 1.0, 162)
    m = geo.on_rays(geo.Mesh(geo.ray_mesh(lengths), geo.ico_faces()))
    np.testing.assert_allclose(np.linalg.norm(m.verts, axis=1), lengths, rtol=1e-5)
    np.testing.assert_array_equal(m.faces, geo.ico_faces())
    # each face of the sampled cube takes the side its centre's ray meets: the dominant axis
    c = geo.on_rays(prim.cube())
    centres = c.verts[c.faces].mean(1)
    axis = np.abs(centres).argmax(1)
    sign = centres[np.arange(len(centres)), axis] < 0
    np.testing.assert_array_equal(c.side_ids, 2 * axis + sign)
    assert c.n_sides == 6
    with pytest.raises(ValueError, match="enclose the origin"):
        geo.on_rays(prim.cube().transformed(translation=(2.0, 0.0, 0.0)))


def test_spherical_harmonics_are_orthonormal():
    d = np.random.default_rng(0).normal(size=(400_000, 3))  # Monte Carlo over the sphere
    Y = geo.real_sph_harm(d / np.linalg.norm(d, axis=1, keepdims=True), 4).astype(np.float64)
    gram = Y.T @ Y * 4 * np.pi / len(d)
    np.testing.assert_allclose(gram, np.eye(25), atol=0.015)  # ~5 standard errors
