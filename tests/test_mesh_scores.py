"""The main job's scores and pictures against known truth: exact reconstructions, rotations
composed with a shape's symmetry, a known tilt, turned meshes, data at known areas."""

import numpy as np
import pytest

from envs import spaces
from gen3d import geometry as geo
from gen3d.data import mesh_images
from learners import mesh_eval, mesh_pictures


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Held-out images of every seen kind and, for the same scenes, their truth on the model's
    rays (so that an exact reconstruction exists)."""
    from envs.renderer import MeshRenderer
    from learners.mesh_train import render_fn

    d = str(tmp_path_factory.mktemp("cache"))
    r = MeshRenderer(64, 64, 64)
    try:
        _, test = mesh_images.load(mesh_images.MeshImageConfig(n_train=2, n_test=40, cache_dir=d),
                                   render_fn(r))
        _, rays = mesh_images.load(mesh_images.MeshImageConfig(n_train=2, n_test=40, cache_dir=d,
                                                               mesh="rays"), render_fn(r))
    finally:
        r.release()
    return test, rays


def exact_actions(data, rotation=None):
    """Each object's truth on the rays as the model's action (rotation as given, the shape
    in the camera frame either way: only the rotation slot changes)."""
    lengths = np.stack([np.linalg.norm(data.mesh(i).verts - data.translation[i], axis=1)
                        for i in range(len(data))])
    a = spaces.pack(lengths, None, data.translation, np.full((len(data), 3), 0.5, np.float32))
    if rotation is not None:
        a[:, geo.ACTION_SLICES["rotation"]] = geo.matrix_to_axis_angle(rotation)
    return a


def test_an_exact_reconstruction_scores_iou_one_and_a_small_chamfer_per_kind(renderer, data):
    _, rays = data
    s, render = mesh_eval.score(renderer, exact_actions(rays), rays, geo.Camera(), 2000)
    # the Chamfer of a perfect mesh is the sampling noise of 2000 points (~0.03)
    assert s["iou"] > 0.99 and s["chamfer"] < 0.04 and render.mask.shape == rays.masks.shape
    assert set(s["per_kind"]) == set(rays.kinds) and sum(v["n"] for v in s["per_kind"].values()) == 40
    for v in s["per_kind"].values():
        assert v["iou"] > 0.99 and v["chamfer"] < 0.045 and 5 < v["psnr"] < 60
    # a mesh half the size: IoU near the area ratio (1/4), and a larger Chamfer
    half = exact_actions(rays)
    half[:, geo.ACTION_SLICES["lengths"]] *= 0.5
    s2, _ = mesh_eval.score(renderer, half, rays, geo.Camera(), 2000)
    assert 0.15 < s2["iou"] < 0.35 and s2["chamfer"] > 5 * s["chamfer"]


def test_a_shape_flattened_in_depth_keeps_its_iou_and_loses_its_turned_iou(renderer, data):
    _, rays = data
    exact = exact_actions(rays)
    s, _ = mesh_eval.score(renderer, exact, rays, geo.Camera(), 200)
    assert s["iou_turned"] > 0.98
    flat = exact.copy()
    for i, a in enumerate(exact):  # each mesh squashed to 0.3 of its depth about its centre
        v = geo.ray_mesh(a[geo.ACTION_SLICES["lengths"]]) * np.array([1.0, 1.0, 0.3])
        flat[i, geo.ACTION_SLICES["lengths"]] = geo.ray_lengths_of_mesh(v, geo.ico_faces())
    s2, _ = mesh_eval.score(renderer, flat, rays, geo.Camera(), 200)
    # from the front it changes by perspective and by the rays' sampling of a flatter shape
    # (measured 0.80); from the side it is a third as deep (measured 0.27)
    assert s2["iou"] > 0.75 and s2["iou_turned"] < 0.35


def test_rotation_error_is_zero_modulo_symmetry_and_a_known_tilt_scores_its_angle(renderer, data):
    _, test = data
    from gen3d import symmetry

    rng = np.random.default_rng(0)
    same = []
    for i in range(len(test)):
        sym = symmetry.SYMMETRIES[test.kinds[test.kind[i]]]
        s = sym.finite[rng.integers(len(sym.finite))] if sym.finite is not None else \
            geo.axis_angle_to_matrix([0.0, rng.uniform(-3, 3), 0.0])
        same.append(test.rotation[i] @ s)
    same = np.stack(same)
    s, _ = mesh_eval.score(renderer, exact_actions(test, same), test, geo.Camera(), 50)
    assert s["rot_err_deg"] == pytest.approx(0, abs=1e-3)
    tilt = geo.axis_angle_to_matrix([np.radians(25.0), 0.0, 0.0])
    s, _ = mesh_eval.score(renderer, exact_actions(test, same @ tilt), test, geo.Camera(), 50)
    assert s["rot_err_deg"] == pytest.approx(25, abs=1e-3)
    assert all(v["rot_err_deg"] == pytest.approx(25, abs=1e-3) for v in s["per_kind"].values())
    # the best fixed frame (the identity among the candidates) can only do better
    assert s["rot_err_aligned_deg"] <= 25 + 1e-6


def test_area_matched_mean_reweights_to_the_targets_areas():
    areas = np.array([10, 10, 10, 100, 100, 100, 100, 100, 100, 100.0])
    values = np.where(areas < 50, 1.0, 0.0)
    # the target has only small images: the small ones' mean
    assert mesh_eval.area_matched_mean(values, areas, np.full(20, 12.0), k=3) == 1.0
    # half small, half large: the two groups count equally, whatever their own counts
    assert mesh_eval.area_matched_mean(values, areas, np.r_[np.full(5, 11.0), np.full(5, 99.0)],
                                       k=3) == pytest.approx(0.5)


def test_unseen_kinds_must_be_outside_the_training_kinds():
    cfg = mesh_images.MeshImageConfig(second_view=90.0)
    u = mesh_images.unseen_config(cfg, mesh_images.UNSEEN_KINDS, 10)
    assert u.kinds == list(mesh_images.UNSEEN_KINDS) and u.n_test == 10 and u.seed != cfg.seed
    assert u.second_view == 0  # scored on one view: no second views rendered for it
    with pytest.raises(ValueError, match=r"\['cube'\] are also training kinds"):
        mesh_images.unseen_config(cfg, ["cube", "prism"], 10)
    with pytest.raises(ValueError, match="unknown"):
        mesh_images.unseen_config(cfg, ["teapot"], 10)


def test_a_turned_action_renders_the_mesh_seen_from_the_side(renderer):
    # a rod along x, seen from +z: wide; turned 90 degrees about y it points at the camera
    rays = geo.ico_rays()
    lengths = 1.0 / np.sqrt((rays[:, 0] / 0.9) ** 2 + (rays[:, 1] / 0.3) ** 2 + (rays[:, 2] / 0.3) ** 2)
    a = spaces.pack(lengths[None], None, np.zeros((1, 3)))

    def width(actions):
        return renderer.render_rays(**spaces.unpack(actions), mask=True).mask[0].any(0).sum()

    assert width(a) > 2.3 * width(mesh_pictures.turned(a))
    # four quarter turns are no turn; 90 then -90 neither
    back = mesh_pictures.turned(mesh_pictures.turned(mesh_pictures.turned(mesh_pictures.turned(a))))
    np.testing.assert_allclose(geo.axis_angle_to_matrix(back[0, geo.ACTION_SLICES["rotation"]]), np.eye(3),
                               atol=1e-5)
    np.testing.assert_allclose(mesh_pictures.turned(mesh_pictures.turned(a), -90), a, atol=1e-5)


def test_the_truth_turned_by_zero_is_the_input_and_the_grid_has_four_rows(renderer, data):
    test, _ = data
    again = mesh_eval.truth_turned(renderer, test, 6, 0.0).rgb
    assert np.abs(again.astype(int) - test.images[:6]).mean() < 1.0
    turned = mesh_eval.truth_turned(renderer, test, 6, 90.0).rgb
    assert np.abs(turned.astype(int) - test.images[:6]).mean() > 3.0
    a = exact_actions(data[1])[:6]
    g = mesh_pictures.grid(renderer, a, test, 6)
    assert g.shape == (4 * 66 + 2, 6 * 66 + 2, 3)  # 4 rows of 6 tiles, 2-pixel gutters

    def tile(row, col):
        return g[2 + 66 * row: 66 * (row + 1), 2 + 66 * col: 66 * (col + 1)]

    np.testing.assert_array_equal(tile(0, 5), test.images[5])
    np.testing.assert_array_equal(tile(1, 5), renderer.render_rays(**spaces.unpack(a[5:6])).rgb[0])
    np.testing.assert_array_equal(tile(2, 5), renderer.render_rays(**spaces.unpack(
        mesh_pictures.turned(a[5:6]))).rgb[0])
    np.testing.assert_array_equal(tile(3, 5), turned[5])


def test_inferred_meshes_reach_tensorboards_mesh_view_with_their_colours(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    from learners.runlog import RunLog

    lengths, rot, trans, cols = geo.random_ray_meshes(np.random.default_rng(0), 2)
    a = spaces.pack(lengths, rot, trans, cols)
    log = RunLog(tmp_path, "m", 1, progress=False)
    mesh_pictures.log_meshes(log, "eval/meshes", a, 3)
    log.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "m" / "tb"), size_guidance={"tensors": 0})
    acc.Reload()

    def tensor(tag):
        from tensorboard.util import tensor_util

        return tensor_util.make_ndarray(acc.Tensors(tag)[0].tensor_proto)

    v, f, c = tensor("eval/meshes_VERTEX"), tensor("eval/meshes_FACE"), tensor("eval/meshes_COLOR")
    assert v.shape == (2, 162, 3) and f.shape == (2, 320, 3) and c.shape == (2, 162, 3)
    np.testing.assert_array_equal(c, np.round(255 * cols).astype(np.uint8))
    want = geo.transform_points(geo.ray_mesh(lengths[1]), rot[1], trans[1])
    np.testing.assert_allclose(v[1], want, atol=1e-5)


def test_unseen_scores_of_an_untrained_network_are_those_of_its_initial_sphere(renderer, tmp_path):
    import torch

    from gen3d.mesh_model import MeshModel, MeshModelConfig
    from learners.mesh_train import render_fn

    cfg = mesh_images.unseen_config(mesh_images.MeshImageConfig(cache_dir=str(tmp_path)),
                                    mesh_images.UNSEEN_KINDS, 30)
    train, test = mesh_images.load(cfg, render_fn(renderer))
    torch.manual_seed(0)
    model = MeshModel(MeshModelConfig(hidden=16, channels=8), 64)  # writes the base sphere: r 0.6
    seen = (np.full(10, 0.7), np.linspace(500, 1500, 10))
    u = mesh_eval.score_unseen(renderer, model, train, test, seen, n_points=200)
    ball = renderer.render_rays(np.full((1, 162), 0.6, np.float32), mask=True).mask
    want = mesh_eval.iou(np.broadcast_to(ball, test.masks.shape), test.masks)
    assert u["iou"] == pytest.approx(want.mean(), abs=1e-6)
    assert set(u["per_kind"]) == set(mesh_images.UNSEEN_KINDS)
    for j, k in enumerate(test.kinds):  # each kind's own floor: the best sphere fitted on it
        assert u["per_kind"][k]["iou"] == pytest.approx(want[test.kind == j].mean(), abs=1e-6)
        assert u["per_kind"][k]["iou_sphere_floor"] > 0.3
    assert u["iou_seen_area_matched"] == pytest.approx(0.7)
    assert u["iou_gap_at_equal_area"] == pytest.approx(0.7 - u["iou"])
