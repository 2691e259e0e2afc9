"""benchmarks/depth_cue.py against known 3D: a sphere squashed into an ellipsoid of known
radii, and objects of known depth whose images the probe scores."""

import numpy as np
import pytest


def test_a_ball_scaled_along_z_is_the_ellipsoid_of_those_radii_on_the_rays():
    from benchmarks.depth_cue import scaled
    from envs import spaces
    from gen3d import geometry as geo

    r, f = 0.6, 0.5
    ball = spaces.pack(np.full((1, geo.N_RAYS), r, np.float32), translation=np.array([[0.1, 0, 0]]))
    got = spaces.unpack(scaled(ball, (1.0, 1.0, f)))
    d = geo.ico_rays()
    ellipsoid = 1 / np.sqrt((d[:, 0] ** 2 + d[:, 1] ** 2) / r**2 + d[:, 2] ** 2 / (f * r) ** 2)
    np.testing.assert_allclose(got["lengths"][0], ellipsoid, rtol=0.03)  # facets, not the surface
    np.testing.assert_allclose(got["translation"], [[0.1, 0, 0]])
    same = spaces.unpack(scaled(ball))["lengths"]
    np.testing.assert_allclose(same, r, rtol=1e-5)


def test_the_true_depth_of_cubes_is_more_likely_than_half_or_double_it(renderer):
    from benchmarks.depth_cue import depth_rows
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel, MeshModelConfig
    from learners.mesh_train import render_fn

    cfg = mesh_images.MeshImageConfig(kinds=["cube"], n_train=1, n_test=8, size=64, cache_dir="")
    data = mesh_images.generate(cfg, render_fn(renderer))[1]
    model = MeshModel(MeshModelConfig(shape_degree=6, read_colours=True, train_colours="read"), 64)
    rows = depth_rows(model, renderer, data, (0.5, 2.0), 0.1)
    truth = next(r for r in rows if r["mesh"] == "truth")
    assert truth["n"] == 8 and truth["d_0.5"] < 0 and truth["d_2"] < 0 and truth["depth_1_best"] >= 0.75
    assert 0.5 < truth["sil_iou_squashed"] < 0.99  # in perspective the outline moves with the depth
    assert [r["mesh"] for r in rows] == ["truth", "rounded", "network"] and "d_shrunk5" not in rows[2]


def test_painting_as_training_does_needs_colours_read_from_the_image():
    import torch

    from gen3d.mesh_model import MeshModel, MeshModelConfig

    model = MeshModel(MeshModelConfig(read_colours=False), 32)
    with pytest.raises(ValueError, match="needs model.read_colours: true"):
        model.paint(torch.zeros(1, 654), torch.zeros(1, 3, 32, 32))


def test_a_turned_answer_is_held_on_the_cameras_rays_as_the_shape_turned():
    """An answer with a rotation (``model.rotation``) is scaled in the camera's frame: a smooth
    shape elongated along x, turned about z, reads on the camera's rays as the shape turned."""
    from benchmarks.depth_cue import scaled
    from envs import spaces
    from gen3d import geometry as geo

    def shape(d):
        return 0.5 + 0.3 * d[:, 0] ** 2

    rays = geo.ico_rays().astype(np.float64)
    turn = np.array([[0.0, 0.0, np.pi / 5]], np.float32)
    actions = spaces.pack(shape(rays)[None].astype(np.float32), turn, np.array([[0.2, 0, 0]]))
    got = spaces.unpack(scaled(actions))
    want = shape(rays @ geo.axis_angle_to_matrix(turn[0].astype(np.float64)))  # R^T d, row-wise
    np.testing.assert_allclose(got["lengths"][0], want, rtol=0.04)  # facets, not the surface
    back = shape(rays @ geo.axis_angle_to_matrix(-turn[0].astype(np.float64)))  # turned the other way
    assert np.abs(got["lengths"][0] - want).max() < 0.3 * np.abs(got["lengths"][0] - back).max()
    assert np.abs(got["rotation"]).max() == 0 and np.allclose(got["translation"], [[0.2, 0, 0]])
    # squashed along the camera's z after the turn: x and y lengths kept, z halved
    flat = spaces.unpack(scaled(actions, (1, 1, 0.5)))["lengths"][0]
    side = np.abs(rays[:, 2]) < 0.1
    np.testing.assert_allclose(flat[side], got["lengths"][0][side], rtol=0.06)
    assert (flat[np.abs(rays[:, 2]) > 0.95] < 0.6 * got["lengths"][0][np.abs(rays[:, 2]) > 0.95]).all()
