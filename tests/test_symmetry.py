"""Rotation error modulo a shape's symmetry, against analytic truth."""

import numpy as np
import pytest

from gen3d import geometry as geo
from gen3d import primitives as prim
from gen3d import symmetry as sym


def rot(axis, deg):
    return geo.axis_angle_to_matrix(np.radians(deg) * np.asarray(axis, float) / np.linalg.norm(axis))


def same_point_set(a, b, tol=1e-5):
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    return d.min(1).max() < tol and d.min(0).max() < tol


@pytest.mark.parametrize("kind", ["cube", "octahedron", "pyramid", "prism"])
def test_every_element_of_a_finite_group_maps_the_shape_onto_itself(kind):
    g = sym.SYMMETRIES[kind].finite
    m = prim.primitive(kind)
    np.testing.assert_allclose(g @ np.swapaxes(g, 1, 2), np.broadcast_to(np.eye(3), g.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(g), 1, atol=1e-12)
    assert len({tuple(np.round(x, 6).ravel()) for x in g}) == len(g)  # no duplicates
    for s in g:
        assert same_point_set(m.verts @ s.T, m.verts)
    # and a rotation outside the group does not
    assert not same_point_set(m.verts @ rot([1, 2, 3], 20).T, m.verts)


def test_group_sizes():
    assert len(sym.cube_group()) == 24 and len(sym.SYMMETRIES["pyramid"].finite) == 4
    assert len(sym.SYMMETRIES["prism"].finite) == 6


@pytest.mark.parametrize("kind", sorted(sym.SYMMETRIES))
def test_the_true_rotation_composed_with_a_symmetry_scores_zero_and_a_known_tilt_scores_its_angle(kind):
    rng = np.random.default_rng(0)
    r_true = geo.random_rotation(rng, 40)
    s = sym.SYMMETRIES[kind]
    if s.finite is not None:
        g = s.finite[rng.integers(len(s.finite), size=40)]
    else:  # any turn about y, and for end-swapping shapes a half turn about x
        g = geo.axis_angle_to_matrix(np.c_[np.zeros(40), rng.uniform(-np.pi, np.pi, 40), np.zeros(40)])
        if s.end_swap:
            g = g @ rot([1, 0, 0], 180)
    np.testing.assert_allclose(sym.rotation_error_deg(r_true, r_true @ g, kind), 0, atol=1e-4)
    # a tilt of 17 degrees about a horizontal axis after the symmetry: 17 degrees for every group
    # (well under half the smallest distance between two group elements)
    tilt = rot([1, 0, 1], 17)
    np.testing.assert_allclose(sym.rotation_error_deg(r_true, r_true @ g @ tilt, kind), 17, atol=1e-4)


def test_the_error_is_the_geodesic_angle_where_the_group_is_trivial_up_to_it():
    r = geo.random_rotation(np.random.default_rng(1), 10)
    # a pyramid turned 45 degrees about its axis is as far from both neighbouring quarter turns
    np.testing.assert_allclose(sym.rotation_error_deg(r, r @ rot([0, 1, 0], 45), "pyramid"), 45, atol=1e-6)
    # a cone upside down is 180 degrees off; a cylinder upside down is right
    flip = rot([1, 0, 0], 180)
    np.testing.assert_allclose(sym.rotation_error_deg(r, r @ flip, "cone"), 180, atol=1e-4)
    np.testing.assert_allclose(sym.rotation_error_deg(r, r @ flip, "cylinder"), 0, atol=1e-4)
    # a cylinder tilted 120 degrees is 60 from its swapped ends
    np.testing.assert_allclose(sym.rotation_error_deg(r, r @ rot([0, 0, 1], 120), "cylinder"), 60, atol=1e-4)
    assert np.isnan(sym.rotation_error_deg(r, r, "torus")).all()


def test_no_rotation_is_further_from_the_cube_group_than_its_known_covering_radius():
    # the farthest rotation from the 24 is 2 * arccos((2 + sqrt 2) / 4) = 62.80 degrees away
    e = sym.rotation_error_deg(np.broadcast_to(np.eye(3), (20000, 3, 3)),
                               geo.random_rotation(np.random.default_rng(2), 20000), "cube")
    assert e.max() <= np.degrees(2 * np.arccos((2 + np.sqrt(2)) / 4)) + 1e-6 and e.max() > 55


def test_a_pose_in_a_fixed_frame_of_its_own_scores_zero_once_aligned():
    rng = np.random.default_rng(3)
    r_true = geo.random_rotation(rng, 30)
    c = geo.random_rotation(rng)  # the model's object frame, turned from the data's
    cands = np.concatenate([sym.frame_candidates(50), c[None]])
    pred = r_true @ c
    assert np.median(sym.rotation_error_deg(r_true, pred, "pyramid")) > 5
    np.testing.assert_allclose(sym.aligned_rotation_error_deg(r_true, pred, "pyramid", cands), 0, atol=1e-4)
    # a constant prediction stays far off: one frame cannot follow random poses
    const = np.broadcast_to(np.eye(3), r_true.shape)
    assert np.median(sym.aligned_rotation_error_deg(r_true, const, "pyramid")) > 40


@pytest.mark.parametrize("kind", ["cube", "pyramid", "prism", "cone", "cylinder"])
def test_the_error_is_exact_at_zero_and_near_a_half_turn(kind):
    """Where an arccos of the trace alone loses half the digits (1e-6 degrees at zero)."""
    r = geo.random_rotation(np.random.default_rng(3), 500)
    assert sym.rotation_error_deg(r, r, kind).max() < 1e-9
    tiny = rot([0.3, 0.2, 0.9], 1e-4)  # a ten-thousandth of a degree, about an axis off y
    got = sym.rotation_error_deg(r, r @ tiny, kind)
    assert np.allclose(got, 1e-4 * (1 if kind not in ("cone", "cylinder") else
                                    np.hypot(0.3, 0.9) / np.linalg.norm([0.3, 0.2, 0.9])), rtol=1e-3)
    np.testing.assert_allclose(sym.angle_deg(rot([1, 2, 3], 179.9999)), 179.9999, atol=1e-9)


def test_the_error_takes_one_pair_of_matrices_and_refuses_what_it_cannot_score():
    a, b = rot([0, 1, 0], 30), rot([1, 0, 0], 30)
    np.testing.assert_allclose(sym.rotation_error_deg(a, a @ rot([1, 0, 0], 25), "cone"), [25.0])
    with pytest.raises(ValueError, match="3 true and 2 predicted"):
        sym.rotation_error_deg(np.stack([a] * 3), np.stack([b] * 2), "cube")
    with pytest.raises(ValueError, match="unknown kind 'Cube'"):
        sym.rotation_error_deg(a, b, "Cube")
    with pytest.raises(ValueError, match=r"\(N,3,3\)"):
        sym.rotation_error_deg(np.eye(2), b, "cube")
    assert np.isnan(sym.rotation_error_deg(a, b, "torus")).all()


@pytest.mark.parametrize("tilt,twist,folded", [(30.0, 20.0, 20.0), (10.0, 70.0, 20.0), (0.0, 135.0, 45.0),
                                               (120.0, 5.0, 5.0)])
def test_a_pyramids_error_splits_into_its_known_tilt_and_its_twist_modulo_a_quarter_turn(tilt, twist, folded):
    from gen3d.geometry import axis_angle_to_matrix, random_rotation
    from gen3d.symmetry import axis_and_twist_deg, rotation_error_deg

    rng = np.random.default_rng(0)
    truth = random_rotation(rng, 6)
    heading = rng.uniform(0, 2 * np.pi, 6)  # the tilt about a horizontal axis of any heading
    tilt_axes = np.stack([np.cos(heading), np.zeros(6), np.sin(heading)], 1) * np.radians(tilt)
    error = axis_angle_to_matrix(tilt_axes) @ axis_angle_to_matrix(np.array([0.0, np.radians(twist), 0.0]))
    got_tilt, got_twist = axis_and_twist_deg(truth, truth @ error, "pyramid")
    np.testing.assert_allclose(got_tilt, tilt, atol=1e-6)
    np.testing.assert_allclose(got_twist, folded, atol=1e-6)
    if tilt == 0:  # a twist alone is the whole error
        np.testing.assert_allclose(rotation_error_deg(truth, truth @ error, "pyramid"), folded, atol=1e-6)


def test_a_cones_error_is_its_tilt_alone_and_kinds_without_one_axis_are_refused():
    from gen3d.geometry import random_rotation
    from gen3d.symmetry import axis_and_twist_deg, rotation_error_deg

    rng = np.random.default_rng(1)
    truth, pred = random_rotation(rng, 8), random_rotation(rng, 8)
    tilt, twist = axis_and_twist_deg(truth, pred, "cone")
    np.testing.assert_allclose(tilt, rotation_error_deg(truth, pred, "cone"), atol=1e-9)
    assert np.isnan(twist).all()
    for kind in ("cube", "cylinder", "prism"):
        with pytest.raises(ValueError, match="no single axis its group turns about"):
            axis_and_twist_deg(truth, pred, kind)
