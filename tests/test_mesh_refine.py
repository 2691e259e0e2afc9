"""Per-image refinement on black boxes whose optimum is known."""

import numpy as np
import pytest
import torch

from learners.mesh_refine import RefineConfig, refine


def quadratic(targets: np.ndarray):
    """Reward -|a - target|^2 of image i's target; the count of renders is kept."""
    calls = {"renders": 0}

    def evaluate(actions, idx):
        calls["renders"] += len(actions)
        return -((actions - targets[idx]) ** 2).sum(1)
    return evaluate, calls


def test_refinement_climbs_each_images_own_reward_to_its_optimum():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(6, 5)).astype(np.float32)
    m0 = torch.from_numpy(targets + rng.normal(scale=0.5, size=targets.shape).astype(np.float32))
    evaluate, calls = quadratic(targets)
    cfg = RefineConfig(steps=150, samples=8, std=0.05, lr=0.05)
    best, log = refine(m0, lambda m: m, evaluate, cfg, generator=torch.Generator().manual_seed(0))
    start = np.abs(m0.numpy() - targets).max()
    assert np.abs(best.numpy() - targets).max() < 0.1 * start
    assert calls["renders"] == 6 * (cfg.steps + 1) * (cfg.samples + 1)
    assert log["improved_frac"] == 1.0 and log["reward_mean"][-1] > log["reward_mean"][0]


def test_refinement_never_returns_worse_parameters_than_it_was_given():
    # a reward that only the start reaches: every step away from it is worse
    targets = np.zeros((3, 4), np.float32)
    m0 = torch.zeros(3, 4)
    evaluate, _ = quadratic(targets)
    best, log = refine(m0, lambda m: m, evaluate, RefineConfig(steps=5, samples=4, std=0.5, lr=1.0),
                       generator=torch.Generator().manual_seed(1))
    assert torch.equal(best, m0) and log["improved_frac"] == 0.0


def test_bad_refinement_settings_are_named():
    with pytest.raises(ValueError, match="even samples"):
        RefineConfig(steps=3, samples=3)
    with pytest.raises(ValueError, match="std and lr"):
        RefineConfig(steps=3, std=0.0)
