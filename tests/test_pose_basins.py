"""benchmarks/pose_basins.py and the decoder's inverse it starts from (``MeshDecoder.params``),
against meshes with known parameters and objects with known pose."""

import numpy as np
import pytest
import torch

from gen3d.mesh_model import MeshDecoder, MeshModel, MeshModelConfig


def test_the_decoders_inverse_gives_back_the_parameters_it_decoded():
    dec = MeshDecoder(MeshModelConfig(shape_degree=6, colour_degree=2))
    m = 0.05 * torch.randn(6, dec.dim, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(dec.params(dec(m)).numpy(), m.numpy(), atol=2e-5)
    seen = torch.rand(6, 162, generator=torch.Generator().manual_seed(1)) > 0.5  # colours fit where seen
    np.testing.assert_allclose(dec.params(dec(m), seen).numpy(), m.numpy(), atol=2e-5)


def test_the_decoders_inverse_refuses_parts_it_cannot_invert():
    for kw in ({"shape": "raw"}, {"colour": "palette"}, {"rotation": True}):
        with pytest.raises(ValueError, match="params: inverts harmonic shapes and colours"):
            MeshDecoder(MeshModelConfig(**kw)).params(torch.zeros(1, 652))


def test_the_truths_start_reads_its_own_turn_and_a_best_equal_to_it_ties(renderer):
    """Objects of known pose; the 'bests' are the truth's own start, so the bests as kept and
    the truth's start are the same meshes: equally likely image by image; they read the true
    turn."""
    from benchmarks.pose_basins import basin_rows, read_params, truth_actions
    from gen3d.data import mesh_images
    from learners.mesh_refine import RefineConfig
    from learners.mesh_train import render_fn

    cfg = mesh_images.MeshImageConfig(kinds=["pyramid"], n_train=8, n_test=1, size=64, cache_dir="")
    data = mesh_images.generate(cfg, render_fn(renderer))[0]
    model = MeshModel(MeshModelConfig(shape_degree=6), 64)
    best = read_params(model, data, truth_actions(data, np.zeros(3)))
    rows = basin_rows(model, renderer, data, best, "pyramid", 0.1, RefineConfig(steps=2, samples=2))
    by = {(r["start"], r["refined"]): r for r in rows}
    start, truth = by[("bests", 0)], by[("truth, colours read", 0)]
    assert start["loglik"] == pytest.approx(truth["loglik"], rel=1e-6) and start["beats_truth"] == 1.0
    assert truth["rot_err_kind_deg"] < 16 and truth["iou"] > 0.7, truth
    assert len(rows) == 6 and all(0 <= r["beats_truth"] <= 1 for r in rows)


def test_the_script_reads_a_finished_run_and_names_a_kind_it_cannot_read(tmp_path):
    import json

    from benchmarks.common import checkpoint
    from benchmarks.pose_basins import main
    from gen3d.data import mesh_images
    from learners.mesh_train import run
    from tests.test_mesh_train import tiny

    cfg = tiny(tmp_path, steps=6, self_imitation=0.25)
    cfg.model.colour, cfg.pool.backend = "sh", "local"
    run(cfg)
    path = str(tmp_path / "runs/tiny")
    with pytest.raises(SystemExit, match="'sphere' is not a trained kind with a turn"):
        main(["--run", path, "--kind", "sphere"])
    kept = torch.isfinite(checkpoint(path)["replay"]["r"]).numpy()
    train, _ = mesh_images.load(cfg.data)
    kind = next(k for j, k in enumerate(train.kinds) if k != "sphere" and (kept & (train.kind == j)).any())
    assert main(["--run", path, "--kind", kind, "--n", "2", "--steps", "2", "--turned", "30",
                 "--coarse", "1", "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    starts = ("bests", "bests, colours read", "truth, colours read", "truth turned 30°, colours read",
              "truth to degree 1, colours read")
    assert [(r["start"], r["refined"]) for r in rows] == [(s, k) for s in starts for k in (0, 2)]


def test_the_truth_turned_by_an_angle_is_that_angle_from_the_truth():
    from benchmarks.pose_basins import turned_by
    from gen3d import geometry as geo
    from gen3d.data.mesh_images import MeshImages

    rot = geo.random_rotation(np.random.default_rng(0), 5)
    data = MeshImages(images=np.zeros((5, 4, 4, 3), np.uint8), masks=np.zeros((5, 4, 4), bool),
                      kind=np.zeros(5, int), rotation=rot, translation=np.ones((5, 3)),
                      scale=np.ones(5), colours=np.zeros((5, 5, 3)), kinds=["pyramid"])
    for degrees in (15.0, 90.0):
        turned = turned_by(data, degrees).rotation
        rel = np.einsum("nji,njk->nik", rot, turned)  # R^T R' for each object
        angle = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
        np.testing.assert_allclose(angle, degrees, atol=1e-6)
    np.testing.assert_array_equal(turned_by(data, 30.0, seed=1).translation, data.translation)


def test_the_truth_cut_to_a_degree_keeps_its_low_harmonics_only():
    model = MeshModel(MeshModelConfig(shape_degree=4), 64)
    sl = model.decoder.slices["shape"]
    m = torch.randn(3, model.decoder.dim, generator=torch.Generator().manual_seed(0))
    cut = model.decoder.cut(m, 2)
    assert torch.equal(cut[:, :sl.start + 9], m[:, :sl.start + 9])
    assert torch.equal(cut[:, sl.stop:], m[:, sl.stop:])
    assert (cut[:, sl.start + 9:sl.stop] == 0).all() and model.decoder.degree == 4  # its own: unchanged
    with pytest.raises(ValueError, match=r"a degree in 0..4, got 5"):
        model.decoder.cut(m, 5)


def test_a_list_of_numbers_is_read_or_named_wrong():
    import argparse

    from benchmarks.common import number_list

    assert number_list(float)("15,30, 45") == (15.0, 30.0, 45.0) and number_list(int)("2,4") == (2, 4)
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated int numbers.*'2,x'"):
        number_list(int)("2,x")
