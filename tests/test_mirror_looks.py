"""benchmarks/mirror_looks.py: a run's network through the camera's mirrors."""

import numpy as np
import pytest

from tests.test_mesh_train import tiny


def test_its_rows_are_the_networks_plain_answer_and_the_answer_the_run_scores_with_mirrors(tmp_path):
    from benchmarks.common import load_run
    from envs import spaces
    from benchmarks.mirror_looks import look_rows
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel
    from learners import mesh_eval
    from learners.mesh_train import local_renderer, render_fn, run

    cfg = tiny(tmp_path, mirror_images=True)
    cfg.pool.backend = "local"
    report = run(cfg)
    path = str(tmp_path / "runs/tiny")
    rows = look_rows(path, cfg.data.n_test, pose=True)
    assert [r["look"] for r in rows] == ["identity", "mirror_x", "mirror_y", "half_turn",
                                         "mean of the 4", "most likely look"]
    # the plain look's turns, read per kind, are the ones the run's report scored
    kinds = {k: v["rot_err_kind_deg"] for k, v in report["scores"]["per_kind"].items()
             if v.get("rot_err_kind_deg") is not None and not np.isnan(v["rot_err_kind_deg"])}
    assert kinds and all(rows[0][f"{k}_deg"] == pytest.approx(v, rel=1e-6) for k, v in kinds.items())
    # each image's most likely look is at least as likely as any one look, image by image
    assert rows[-1]["loglik"] >= max(r["loglik"] for r in rows[:4]) - 1e-6
    _, plain = load_run(path)
    cfg.model.infer_mirrors = True
    mirrored = MeshModel(cfg.model, cfg.data.size)
    mirrored.load_state_dict(plain.state_dict())
    r = local_renderer(cfg)
    try:
        _, test = mesh_images.load(cfg.data, render_fn(r))
        for row, model in ((rows[0], plain), (rows[-2], mirrored)):
            a = mesh_eval.infer_actions(model, test.images)
            iou = mesh_eval.iou(r.render_rays(**spaces.unpack(a), mask=True).mask, test.masks)
            np.testing.assert_allclose(row["iou"], iou.mean(), rtol=1e-6)
    finally:
        r.release()
