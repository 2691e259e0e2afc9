import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import spaces
from envs.mesh_env import ImageTargets, MeshRenderVectorEnv, render_actions


def test_env_is_registered_and_passes_the_gymnasium_checker():
    env = gym.make(envs.ENV_ID)
    with warnings.catch_warnings():  # the checker advises normalised Box bounds; ours are physical
        warnings.simplefilter("ignore", UserWarning)
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_reward_is_highest_at_the_parameters_that_made_the_target(renderer):
    rng = np.random.default_rng(0)
    env = gym.make(envs.ENV_ID, sigma=0.1).unwrapped
    true = env.target_source.action(rng)
    target = render_actions(renderer, true[None]).rgb[0]
    _, info = env.reset(seed=0, options={"target": target})
    best = env.step(true)[1]
    for scale in (0.02, 0.05, 0.2):
        for _ in range(3):
            a = np.clip(true + rng.normal(0, scale, true.shape), *spaces.bounds()).astype(np.float32)
            env.reset(options={"target": target})
            assert env.step(a)[1] < best
    env.close()


def test_reward_is_the_gaussian_log_likelihood():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    r = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    sigma = 0.2
    x, mu = t / 255.0, r / 255.0
    want = (-0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma * np.sqrt(2 * np.pi))).reshape(2, -1).sum(1)
    np.testing.assert_allclose(spaces.gaussian_loglik(t, r, sigma), want, rtol=1e-6)


def test_vector_env_renders_n_actions_and_scores_each_against_its_target(renderer):
    rng = np.random.default_rng(2)
    n = 6
    venv = MeshRenderVectorEnv(num_envs=n, sigma=0.1)
    src = venv.target_source
    actions = np.stack([src.action(rng) for _ in range(n)])
    targets = render_actions(renderer, actions).rgb
    venv.reset(options={"targets": targets})
    obs, rew, term, trunc, info = venv.step(actions)
    np.testing.assert_array_equal(obs, targets)
    assert term.all() and not trunc.any()
    venv.reset(options={"targets": targets[::-1].copy()})
    _, rew2, *_ = venv.step(actions)
    assert (rew >= rew2).all() and (rew > rew2).any()
    with pytest.raises(ValueError, match="actions"):
        venv.step(actions[:2])
    with pytest.raises(ValueError, match="target"):
        venv.reset(options={"targets": targets[:2]})
    venv.close()


def test_vector_env_without_copies_scores_the_same_and_reuses_its_observation_memory(renderer):
    rng = np.random.default_rng(5)
    n = 4
    venv = MeshRenderVectorEnv(num_envs=n, sigma=0.1, copy=False)
    src = venv.target_source
    a1, a2 = (np.stack([src.action(rng) for _ in range(n)]) for _ in range(2))
    t1, t2 = render_actions(renderer, a1).rgb, render_actions(renderer, a2).rgb
    venv.reset(options={"targets": t1})
    obs1, rew1, *_ = venv.step(a1)
    np.testing.assert_array_equal(obs1, t1)
    first = obs1.copy()
    venv.reset(options={"targets": t1})
    obs2, rew2, *_ = venv.step(a2)
    np.testing.assert_array_equal(obs2, t2)
    assert np.shares_memory(obs1, obs2) and not np.array_equal(obs1, first)  # as documented
    assert (rew1 > rew2).all()  # a1 made the targets
    venv.close()


def test_image_targets_and_bad_sigma():
    imgs = np.zeros((3, 64, 64, 3), np.uint8)
    env = gym.make(envs.ENV_ID, target_source=ImageTargets(imgs)).unwrapped
    obs, _ = env.reset(seed=1)
    assert obs.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="sigma"):
        gym.make(envs.ENV_ID, sigma=0.0)
    with pytest.raises(ValueError, match="images"):
        ImageTargets(np.zeros((0, 64, 64, 3), np.uint8))
