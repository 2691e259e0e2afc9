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


def test_the_swapped_answers_take_only_the_named_part_from_the_bests():
    """The network's answer with the bests' shape: the shape's coefficients are the bests',
    every other parameter the network's; above degree 3, the 16 coarse harmonics stay too."""
    from benchmarks.search_gap import LOW_DEGREE, swapped
    from gen3d.mesh_model import MeshModel, MeshModelConfig

    model = MeshModel(MeshModelConfig(hidden=8, channels=4, shape_degree=6), 32)
    net, best = torch.randn(5, model.decoder.dim), torch.randn(5, model.decoder.dim)
    sl = model.decoder.slices["shape"]
    coarse = slice(sl.start, sl.start + (LOW_DEGREE + 1) ** 2)
    (name_all, all_of), (name_high, high) = swapped(model, net, best)
    assert name_all == "shape" and "above degree 3" in name_high
    for m, from_best in ((all_of, sl), (high, slice(coarse.stop, sl.stop))):
        keep = torch.ones(model.decoder.dim, dtype=torch.bool)
        keep[from_best] = False
        assert torch.equal(m[:, from_best], best[:, from_best]) and torch.equal(m[:, keep], net[:, keep])
    assert torch.equal(high[:, coarse], net[:, coarse])
