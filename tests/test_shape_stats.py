"""benchmarks/shape_stats.py against known 3D: generated objects held as their own answers,
squashed by a known factor along the camera's axis, and an ellipsoid of known radii."""

import numpy as np


def _truth_actions(data):
    """The true objects' own ray meshes about their template origins, as answers."""
    from envs import spaces
    from learners import mesh_eval

    lengths, centre = mesh_eval.true_rays(data)
    return spaces.pack(lengths.astype(np.float32), translation=centre)


def test_the_truth_read_as_an_answer_scores_as_the_truth_and_a_squash_shows_in_depth(renderer):
    from benchmarks.shape_stats import rows, stats
    from gen3d.data import mesh_images
    from learners import mesh_eval
    from learners.mesh_train import render_fn

    cfg = mesh_images.MeshImageConfig(kinds=["cube", "pyramid"], n_train=1, n_test=12, size=32,
                                      cache_dir="")
    data = mesh_images.generate(cfg, render_fn(renderer))[1]
    actions = _truth_actions(data)
    for row in rows(actions, data):
        for key in ("depth", "asym", "deg1", "deg2", "deg3"):
            assert abs(row[key] - row[f"{key}_truth"]) < 1e-3, (row["kind"], key)
        assert 0.7 < row["depth"] < 1.4 and row["asym"] < 0.05
    half = stats(mesh_eval.camera_lengths(actions, (1.0, 1.0, 0.5)))
    assert abs(half["depth"] / stats(mesh_eval.camera_lengths(actions))["depth"] - 0.5) < 0.05


def test_an_ellipsoid_has_its_radii_ratio_for_depth_and_is_symmetric():
    from benchmarks.shape_stats import stats
    from gen3d import geometry as geo

    d = geo.ico_rays().astype(np.float64)
    ellipsoid = 1 / np.sqrt(d[:, 0] ** 2 / 0.5**2 + d[:, 1] ** 2 / 0.4**2 + d[:, 2] ** 2 / 0.3**2)
    s = stats(ellipsoid[None])
    assert abs(s["depth"] - 0.6) < 0.02 and s["asym"] < 1e-3
    assert s["deg2"] > 0.1 and s["deg1"] < 1e-3 and s["deg3"] < 1e-3  # a stretch, no apex
