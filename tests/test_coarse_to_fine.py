"""Coarse to fine (``train.coarse_to_fine``): the shape's harmonics let in a degree at a time.
Checked against the decoder at full degree with the left-out harmonics set to 0 by hand, a
sphere's lengths in closed form, and the schedule's steps counted by hand."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gen3d.mesh_model import MeshDecoder, MeshModel, MeshModelConfig


def shape_slice(dec):
    return dec.slices["shape"]


def test_a_shape_cut_to_a_degree_decodes_as_its_low_harmonics_alone():
    cfg = MeshModelConfig(shape_degree=4, colour_degree=2)
    full, cut = MeshDecoder(cfg), MeshDecoder(cfg)
    m = 0.2 * torch.randn(5, full.dim, generator=torch.Generator().manual_seed(0))
    sl = shape_slice(full)
    for degree in (0, 1, 3):
        cut.set_shape_degree(degree)
        by_hand = m.clone()
        by_hand[:, sl.start + (degree + 1) ** 2:sl.stop] = 0
        torch.testing.assert_close(cut(m), full(by_hand))
        assert not torch.allclose(cut(m), full(m))  # the high harmonics did change the mesh
    cut.set_shape_degree(0)  # degree 0: a sphere, every ray c0 * Y00 in log length
    lengths = cut(m)[:, :162]
    expected = cfg.base_radius * torch.exp(m[:, sl.start] / (2 * np.sqrt(np.pi)))
    torch.testing.assert_close(lengths, expected[:, None].expand(-1, 162), rtol=1e-5, atol=1e-6)
    cut.set_shape_degree(4)
    torch.testing.assert_close(cut(m), full(m))


def test_a_degree_the_decoder_cannot_cut_to_is_refused():
    dec = MeshDecoder(MeshModelConfig(shape_degree=4))
    with pytest.raises(ValueError, match=r"a degree in 0..4, got 5"):
        dec.set_shape_degree(5)
    with pytest.raises(ValueError, match="needs shape: sh"):
        MeshDecoder(MeshModelConfig(shape="raw")).set_shape_degree(1)


def test_samples_leave_the_harmonics_out_exactly_and_send_them_no_gradient():
    model = MeshModel(MeshModelConfig(hidden=16, channels=4, z_dim=4, shape_degree=3,
                                      colour="uniform"), 32)
    with torch.no_grad():  # a write head that is not zero, so every row has a gradient path
        model.write.weight.normal_(0, 0.1)
    model.decoder.set_shape_degree(1)
    sl = shape_slice(model.decoder)
    out = np.arange(sl.start + 4, sl.stop)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    s = model.sample(images, 4, generator=torch.Generator().manual_seed(2))
    assert (s.m[..., out] == 0).all() and (s.m[..., sl.start:sl.start + 4] != 0).all()
    weights = torch.randn(s.logp.shape, generator=torch.Generator().manual_seed(3))
    (weights * s.logp).sum().backward()
    g = model.write.weight.grad
    assert (g[out] == 0).all() and (g[sl.start:sl.start + 4].abs().sum(1) > 0).all()


def test_the_degree_rises_one_at_a_time_in_equal_parts_of_its_fraction():
    from learners.mesh_config import TrainConfig
    from learners.mesh_optim import shape_degree

    tc = TrainConfig(steps=1200, coarse_to_fine=0.5, coarse_degree=1)
    # degrees 1..6, six parts of the first 600 steps: 100 steps each
    got = [shape_degree(tc, 6, s, 0.0) for s in (0, 99, 100, 250, 499, 500, 599, 600, 1200)]
    assert got == [1, 1, 2, 3, 5, 6, 6, 6, 6]
    assert shape_degree(TrainConfig(steps=1200), 6, 0, 0.0) == 6  # off: all of them


def test_letting_a_degree_in_keeps_each_bests_mesh_as_it_was():
    from learners.mesh_train import set_degree

    model = MeshModel(MeshModelConfig(hidden=16, channels=4, z_dim=4, shape_degree=3), 32)
    replay = SimpleNamespace(m=torch.randn(6, model.decoder.dim, generator=torch.Generator().manual_seed(4)))
    job = SimpleNamespace(model=model, replay=replay)
    set_degree(job, 1)
    before = model.decoder(replay.m)
    sl = shape_slice(model.decoder)
    assert (replay.m[:, sl.start + 4:sl.start + 9] != 0).all()  # the search moved them, unread
    set_degree(job, 2)
    torch.testing.assert_close(model.decoder(replay.m), before)
    assert model.decoder.degree == 2 and (replay.m[:, sl.start + 4:sl.start + 9] == 0).all()


def test_a_config_that_cannot_go_coarse_to_fine_says_why():
    from learners.config import from_dict
    from learners.mesh_config import MeshRunConfig

    base = {"train": {"coarse_to_fine": 0.5, "coarse_degree": 2}, "model": {"shape_degree": 2}}
    with pytest.raises(ValueError, match=r"train.coarse_degree \(2\) below model.shape_degree \(2\)"):
        from_dict(MeshRunConfig, base)
    with pytest.raises(ValueError, match="shape_symmetry not mirror"):
        from_dict(MeshRunConfig, {"train": {"coarse_to_fine": 0.5},
                                  "model": {"shape_symmetry": "mirror", "rotation": True}})


def test_a_coarse_to_fine_run_logs_its_degree_and_ends_at_full_degree(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from learners.mesh_train import run
    from tests.test_mesh_train import tiny

    cfg = tiny(tmp_path, steps=8, log_every=1, coarse_to_fine=0.75, coarse_degree=0)
    cfg.pool.backend = "local"
    report = run(cfg)
    assert report["scores"]["steps"] == 8
    events = EventAccumulator(str(tmp_path / "runs/tiny/tb")).Reload().Scalars("train/shape_degree")
    # degrees 0, 1, 2 in thirds of the first 6 steps, step s at s / 8 of the run, then 2
    assert [int(e.value) for e in events] == [0, 1, 1, 2, 2, 2, 2, 2]
