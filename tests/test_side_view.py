"""benchmarks/side_view.py against known truth: the truth on the rays, and the same objects
nearer the camera and smaller, which look alike from the front and turned."""

import numpy as np
import pytest

from gen3d import geometry as geo


@pytest.fixture(scope="module")
def rays_and_renderer(tmp_path_factory):
    from envs.renderer import MeshRenderer
    from gen3d.data import mesh_images
    from learners.mesh_train import render_fn

    r = MeshRenderer(64, 64, 64)
    cfg = mesh_images.MeshImageConfig(n_train=2, n_test=30, mesh="rays",
                                      cache_dir=str(tmp_path_factory.mktemp("cache")))
    _, test = mesh_images.load(cfg, render_fn(r))
    yield test, r
    r.release()


def test_the_truth_scores_one_from_both_sides_with_no_offset_and_no_depth_error(rays_and_renderer):
    from benchmarks.side_view import side_rows
    from tests.test_mesh_scores import exact_actions

    test, r = rays_and_renderer
    rows = {row["kind"]: row for row in side_rows(r, exact_actions(test), test)}
    assert rows["all"]["n"] == 30 and sum(v["n"] for k, v in rows.items() if k != "all") == 30
    for row in rows.values():
        assert row["iou"] > 0.99 and row["iou_turned"] > 0.98
        assert abs(row["turned_offset_px"]) < 0.3 and row["depth_err"] == 0.0


def test_a_nearer_smaller_object_looks_alike_from_both_sides_and_shows_its_depth_error(rays_and_renderer):
    from benchmarks.side_view import side_rows
    from tests.test_mesh_scores import exact_actions

    test, r = rays_and_renderer
    a = exact_actions(test)
    dist = geo.Camera().eye[2] - test.translation[:, 2]  # the centres' distances from the camera
    a[:, geo.ACTION_SLICES["lengths"]] *= ((dist - 0.3) / dist)[:, None]  # the same apparent size
    a[:, geo.ACTION_SLICES["translation"]][:, 2] += 0.3
    row = side_rows(r, a, test)[-1]
    assert row["depth_err"] == pytest.approx(0.3, abs=1e-6)
    # perspective differs a little over the object's own depth: close, not equal
    assert row["iou"] > 0.93 and row["iou_turned"] > 0.93 and abs(row["turned_offset_px"]) < 0.5
    far = exact_actions(test)
    far[:, geo.ACTION_SLICES["lengths"]] *= 0.7  # smaller but not nearer: seen smaller from both sides
    shrunk = side_rows(r, far, test)[-1]
    assert shrunk["iou"] < 0.6 and shrunk["iou_turned"] < 0.6 and shrunk["depth_err"] == 0.0
    assert np.isfinite(shrunk["turned_offset_px"])
