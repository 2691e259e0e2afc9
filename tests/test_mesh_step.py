"""The mesh step's surrogate and reward sources: the loss every caller forms, and estimators
that plug into the run with no edit of the loop."""

import numpy as np
import pytest
import torch

from gen3d.estimators import build, register
from tests.test_estimators import documented_hybrid
from tests.test_mesh_train import tiny


def small_model_and_oracle(estimator: str, **kwargs):
    from gen3d.mesh_model import MeshModel
    from learners.config import from_dict
    from learners.mesh_train import MeshRunConfig
    from learners.pathwise import make_oracle

    cfg = from_dict(MeshRunConfig, {"data": {"size": 32}, "train": {"sigma": 0.2},
                                    "model": {"hidden": 8, "channels": 4, "colour": "uniform"},
                                    "estimator": {"name": estimator, "kwargs": kwargs}})
    torch.manual_seed(0)
    model = MeshModel(cfg.model, 32)
    return cfg, model, make_oracle(cfg, model)


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


def test_the_pathwise_surrogate_is_minus_the_soft_elbo_of_the_same_samples():
    from learners.mesh_step import surrogate

    cfg, model, oracle = small_model_and_oracle("pathwise", sigma=0.3)
    assert oracle.softras.sigma == 0.3  # the estimator's own option made the oracle
    x = torch.rand(2, 3, 32, 32)
    s = model.sample(x, 3, generator=torch.Generator().manual_seed(1))
    loss, r = surrogate(build("pathwise", sigma=0.3), s, x, oracle=oracle, kl_weight=0.5)
    loss.backward(retain_graph=True)
    got = grads(model)
    model.zero_grad()
    soft = oracle.loglik(s.m_rsample, x)
    (-soft.mean() + 0.5 * s.kl.mean()).backward()
    for a, b in zip(got, grads(model)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(r, soft.detach())
    want = -soft.mean() + 0.5 * s.kl.mean()
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-6)


def test_the_surrogate_names_the_missing_reward():
    from learners.mesh_step import surrogate

    cfg, model, oracle = small_model_and_oracle("rloo")
    x = torch.rand(2, 3, 32, 32)
    s = model.sample(x, 3)
    with pytest.raises(ValueError, match="requires black-box rewards"):
        surrogate(build("rloo"), s, x, oracle=oracle)
    with pytest.raises(ValueError, match="requires soft rewards.*make_oracle"):
        surrogate(build("pathwise"), s, x)


def test_a_hybrid_estimator_plugs_into_the_run_with_no_loop_edit(tmp_path):
    """The documented hybrid, subclassed only to watch what the loop hands it."""
    from learners.mesh_train import run

    calls = []

    @register("test_soft_cv_probe")
    class Probe(documented_hybrid()):
        def loss(self, batch):
            calls.append((batch.reward.clone(), batch.soft_reward.detach().clone(),
                          batch.soft_reward.requires_grad))
            return super().loss(batch)

    cfg = tiny(tmp_path, steps=2, microbatches=2)
    cfg.estimator.name, cfg.estimator.kwargs = "test_soft_cv_probe", {"weight": 0.5, "sigma": 0.4}
    cfg.pool.backend = "local"
    report = run(cfg)
    assert len(calls) == 2 * 2  # every micro-batch of every step
    for gl, soft, grad in calls:
        assert grad and gl.shape == soft.shape == (2, 4)
        assert not torch.equal(gl, soft)  # GL rewards and soft ones, both
        # the soft rasteriser (sigma 0.4 px) and GL see the same meshes: their rewards agree
        assert np.corrcoef(gl.flatten(), soft.flatten())[0, 1] > 0.5
    pool = report["speed"]["pool"]
    assert pool["requested"] == pool["completed"] == 2 * 4 * 4  # steps * B * K GL renders
    assert 0 <= report["scores"]["iou"] <= 1
    # every counter of the pool goes to TensorBoard at each log step (here: step 2)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(tmp_path / "runs/tiny/tb")).Reload()
    for key, value in pool.items():
        assert [s.value for s in ev.Scalars(f"pool/{key}")] == [value], key


def test_a_pathwise_run_renders_nothing_in_gl(tmp_path):
    from learners.mesh_train import run

    cfg = tiny(tmp_path, steps=2)
    cfg.estimator.name = "pathwise"
    report = run(cfg)
    assert report["speed"]["pool"] is None and len(report["elbo_history"]) == 2
    assert all(np.isfinite(report["elbo_history"])) and 0 <= report["scores"]["iou"] <= 1


def test_too_few_samples_for_the_estimator_stop_the_run_before_it_writes_anything(tmp_path):
    from learners.mesh_train import run

    cfg = tiny(tmp_path, samples=1)
    with pytest.raises(ValueError, match="'rloo' needs at least 2 samples.*train.samples"):
        run(cfg)
    assert not (tmp_path / "runs").exists()
