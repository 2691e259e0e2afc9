"""A rotation chosen among fixed hypotheses: the composition is the matrix product, the
hypotheses cover SO(3) better than as many random rotations, and the sampled choice follows
the scores."""

import numpy as np
import pytest
import torch

from gen3d import geometry as geo
from gen3d.mesh_model import MeshDecoder, MeshModel, MeshModelConfig
from gen3d.pose_hypotheses import RotationHypotheses, spread_rotations
from gen3d.symmetry import angle_deg


def _nearest_deg(table: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Angle from each probe rotation to its nearest rotation of ``table``."""
    return angle_deg(np.swapaxes(table, -1, -2)[None] @ probe[:, None]).min(1)


def test_spread_rotations_are_rotations_and_cover_so3_better_than_random_ones():
    table = spread_rotations(24)
    np.testing.assert_allclose(table @ np.swapaxes(table, -1, -2), np.broadcast_to(np.eye(3), table.shape),
                               atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(table), 1.0, atol=1e-9)
    np.testing.assert_allclose(table[0], np.eye(3), atol=1e-12)
    probe = geo.random_rotation(np.random.default_rng(5), 3000)
    spread = _nearest_deg(table, probe).max()
    randoms = [_nearest_deg(geo.random_rotation(np.random.default_rng(s), 24), probe).max()
               for s in range(1, 6)]
    assert spread < min(randoms)
    # more hypotheses, a finer cover
    assert _nearest_deg(spread_rotations(96), probe).max() < spread
    np.testing.assert_array_equal(spread_rotations(24), table)  # deterministic
    with pytest.raises(ValueError, match="at least one"):
        spread_rotations(0)


def test_the_chosen_rotation_is_the_residual_after_the_best_scoring_hypothesis():
    hyp = RotationHypotheses(12).double()
    table = spread_rotations(12)
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 12, generator=g, dtype=torch.float64)
    residual = torch.randn(200, 3, generator=g, dtype=torch.float64)
    residual = residual / residual.norm(dim=1, keepdim=True) * torch.rand(200, 1, generator=g) * 3.0
    got = geo.axis_angle_to_matrix(hyp(scores, residual).numpy())
    want = geo.axis_angle_to_matrix(residual.numpy()) @ table[scores.argmax(1).numpy()]
    np.testing.assert_allclose(got, want, atol=1e-6)  # the table is kept in float32
    assert (hyp(scores, residual).norm(dim=1) <= np.pi + 1e-9).all()  # within the action's ball
    zero = hyp(scores, torch.zeros_like(residual)).numpy()
    np.testing.assert_allclose(geo.axis_angle_to_matrix(zero), table[scores.argmax(1).numpy()], atol=1e-6)


def test_the_decoder_turns_by_the_hypothesis_and_sampling_picks_every_one_at_first():
    cfg = MeshModelConfig(rotation=True, rotation_hypotheses=8, shape_degree=2, colour="uniform",
                          init_std=0.02)
    dec = MeshDecoder(cfg)
    m = torch.zeros(1, dec.dim)
    m[0, dec.slices["hypotheses"].start + 5] = 3.0
    a = dec(m).numpy()[0, geo.ACTION_SLICES["rotation"]]
    np.testing.assert_allclose(geo.axis_angle_to_matrix(a), spread_rotations(8)[5], atol=1e-5)
    torch.manual_seed(0)
    model = MeshModel(cfg, image_size=32)
    s = model.sample(torch.rand(4, 3, 32, 32), 64)
    picked = s.m[..., dec.slices["hypotheses"]].argmax(-1)
    counts = torch.bincount(picked.flatten(), minlength=8)
    assert (counts > 256 / 8 / 3).all()  # an untrained model samples every hypothesis
    assert model.std()[dec.slices["hypotheses"]].allclose(torch.tensor(1.0 + cfg.min_std))


def test_hypotheses_need_the_rotation():
    with pytest.raises(ValueError, match="rotation_hypotheses.*needs rotation"):
        MeshModelConfig(rotation_hypotheses=4)


def test_the_score_function_learns_which_hypothesis_a_reward_wants():
    """The choice is trained by the estimators unchanged: RLOO on a reward of the decoded
    rotation alone (minus its angle to a target near hypothesis 5) moves the mean scores until
    their argmax, the answer, is hypothesis 5, and samples mostly pick it."""
    from gen3d.estimators import Batch, build

    cfg = MeshModelConfig(rotation=True, rotation_hypotheses=8, shape_degree=0, colour="uniform",
                          init_std=0.02)
    dec = MeshDecoder(cfg)
    table = spread_rotations(8)
    target = geo.axis_angle_to_matrix(np.array([0.0, 0.1, 0.0])) @ table[5]
    mean = torch.zeros(dec.dim, requires_grad=True)
    std = torch.full((dec.dim,), 0.02)
    std[dec.slices["hypotheses"]] = 1.0
    est, opt = build("rloo"), torch.optim.Adam([mean], lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        m = (mean + std * torch.randn(4, 16, dec.dim, generator=g)).detach()
        rot = geo.axis_angle_to_matrix(dec(m.reshape(-1, dec.dim))[:, geo.ACTION_SLICES["rotation"]].numpy())
        reward = torch.from_numpy(-angle_deg(np.swapaxes(rot, -1, -2) @ target)).float().reshape(4, 16)
        logp = (-0.5 * ((m - mean) / std) ** 2).sum(-1)
        opt.zero_grad()
        est.surrogate(Batch(logp, reward, sample=m), torch.zeros(4, 16)).backward()
        opt.step()
    scores = mean.detach()[dec.slices["hypotheses"]]
    assert int(scores.argmax()) == 5
    picks = (scores + torch.randn(2000, 8, generator=g)).argmax(1)
    assert (picks == 5).float().mean() > 0.6
