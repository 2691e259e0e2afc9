"""benchmarks/learner_step.py: the learner's step with rendering taken out."""

import numpy as np
import torch

from tests.test_mesh_train import tiny


def test_the_stand_in_pool_answers_minus_the_squared_norm_of_each_action():
    from benchmarks.learner_step import StandInPool

    pool = StandInPool()
    flat = np.array([[1.0, 2.0], [0.0, -3.0]], np.float32)
    res = pool.collect(pool.submit(flat, np.zeros(2, int)))
    np.testing.assert_array_equal(res.rewards, [-5.0, -9.0])
    assert res.wait_s == 0.0


def test_a_timed_step_is_a_real_optimiser_step_of_the_configs_model(tmp_path):
    from benchmarks.learner_step import learner, time_steps

    cfg = tiny(tmp_path)
    torch.manual_seed(0)
    one, model = learner(cfg, torch.device("cpu"), batch=4, microbatches=2)
    assert not model.write.weight.abs().sum()  # the write head starts at zero
    assert time_steps(one, torch.device("cpu"), steps=2, warmup=1) > 0
    assert model.write.weight.abs().sum() > 0 and torch.isfinite(model.write.weight).all()
