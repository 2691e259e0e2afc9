"""benchmarks/search_gap.py: a run's network on training and held-out images, and the bests
its self-imitation kept."""

import torch

from tests.test_mesh_train import tiny


def test_it_scores_the_network_and_only_the_bests_the_run_has_seen(tmp_path):
    from benchmarks.search_gap import gap_rows
    from learners.mesh_train import run

    cfg = tiny(tmp_path, self_imitation=0.25)
    cfg.pool.backend = "local"
    run(cfg)
    ck = tmp_path / "runs/tiny/checkpoint.pt"
    st = torch.load(ck, weights_only=False)
    seen = int(torch.isfinite(st["replay"]["r"]).sum())
    assert 0 < seen < cfg.data.n_train  # 4 steps of 4 images: not every image was drawn
    rows = gap_rows(str(tmp_path / "runs/tiny"), cfg.data.n_train)
    assert [r["meshes"] for r in rows] == ["network, training images", "network, held-out images",
                                            "self-imitation's bests, training images seen",
                                            "network with the bests' shape, the same images"]
    assert all(0 <= r["iou"] <= 1 for r in rows)
    # the bests are the base sphere's neighbours after 4 steps: a mesh, not an empty image
    assert rows[2]["iou"] > 0.2
