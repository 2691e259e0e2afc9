"""A stand-in for the renderer that costs time but no CPU: it sleeps per request.

It measures the pool and Ray alone (``benchmarks/fleet.py``) and plays stragglers in tests.
Use it as ``EnvSpec(env_id=STANDIN_ID, kwargs={...})``: the module prefix makes gymnasium
import (and so register) it inside each worker.

The reward of an action is known without rendering, so that a test can check every reward
landed in its place: ``reward_i = sum(action_i) + mean(target_i)``.
"""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

ENV_NAME = "gen3d/StandIn-v0"
STANDIN_ID = f"workers.standin:{ENV_NAME}"
ACTION_DIM = 8
IMAGE = (4, 4, 3)


def expected_rewards(actions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return (np.asarray(actions, np.float64).sum(1)
            + np.asarray(targets, np.float64).reshape(len(targets), -1).mean(1))


class StandInVectorEnv(VectorEnv):
    """``num_envs`` actions per step; each step sleeps ``delay_s`` plus up to ``jitter_s``
    (uniform). If the file ``slow_flag`` exists, the first step anywhere to delete it sleeps
    ``slow_s`` instead: exactly one straggler across all workers of a machine."""

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, num_envs: int = 1, delay_s: float = 0.02, jitter_s: float = 0.0,
                 slow_s: float = 0.0, slow_flag: str | None = None, **_ignored):
        self.num_envs = num_envs
        self.delay_s, self.jitter_s, self.slow_s, self.slow_flag = delay_s, jitter_s, slow_s, slow_flag
        self.single_action_space = gym.spaces.Box(-1e3, 1e3, (ACTION_DIM,), np.float32)
        self.single_observation_space = gym.spaces.Box(0, 255, IMAGE, np.uint8)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._targets = np.zeros((num_envs,) + IMAGE, np.uint8)
        self._rng = np.random.default_rng(os.getpid())

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if options and "targets" in options:
            self._targets = np.asarray(options["targets"], np.uint8).reshape((self.num_envs,) + IMAGE)
        return self._targets, {}

    def step(self, actions):
        a = np.asarray(actions, np.float32)
        if a.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(f"actions: must have shape ({self.num_envs}, {ACTION_DIM}), got {a.shape}")
        time.sleep(self._pause())
        rewards = expected_rewards(a, self._targets)
        done = np.ones(self.num_envs, bool)
        return self._targets.copy(), rewards, done, np.zeros(self.num_envs, bool), {}

    def _pause(self) -> float:
        if self.slow_flag:
            try:
                os.remove(self.slow_flag)  # only one process can delete it
                return self.slow_s
            except FileNotFoundError:
                pass
        return self.delay_s + self.jitter_s * float(self._rng.random())


class StandInEnv(gym.Env):
    """The single-environment form (gymnasium wants one); workers use the vector one."""

    def __init__(self, **kwargs):
        self._vec = StandInVectorEnv(1, **kwargs)
        self.action_space = self._vec.single_action_space
        self.observation_space = self._vec.single_observation_space

    def reset(self, *, seed=None, options=None):
        obs, info = self._vec.reset(options={"targets": options["target"][None]}
                                    if options and "target" in options else None)
        return obs[0], info

    def step(self, action):
        obs, r, d, t, info = self._vec.step(np.asarray(action)[None])
        return obs[0], float(r[0]), True, False, info


if ENV_NAME not in gym.registry:
    gym.register(ENV_NAME, entry_point=StandInEnv, vector_entry_point=StandInVectorEnv)
