"""Gymnasium environments around the renderer: ``gen3d/MeshRender-v0``.

One-step episodes. ``reset`` draws a target image from a pluggable source (or takes
``options={"target": image}``) and returns it as the observation; ``step(action)`` renders the
mesh the action describes (``envs/spaces.py``), returns the render as the observation and the
log-likelihood of the target under a Gaussian pixel model centred on the render as the reward,
and ends the episode. ``MeshRenderVectorEnv`` renders N actions in one atlas draw; its targets
come in ``reset(options={"targets": (N,H,W,3)})`` or as indices into a target set, and by
default it scores each image against its target on the GL side (``envs/reward.py``), reading
the images back only when asked. The GL context is made on first use, in the process that
steps the environment.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs import spaces
from envs.renderer import Lights, MeshRenderer
from envs.validate import check_camera, check_lights, check_sigma, check_size
from gen3d import geometry as geo

RENDER_MODES = ["rgb_array"]
# meshes a vector env draws at once: larger vector envs render in chunks of this many (one
# atlas draw each); a bigger atlas saves little per mesh and holds framebuffers of GBs
MAX_DRAW_BATCH = 4096

TargetSource = Callable[[np.random.Generator], np.ndarray]


class ImageTargets:
    """Targets drawn uniformly from an array of images (N,H,W,3) uint8."""

    def __init__(self, images: np.ndarray):
        self.images = np.asarray(images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or len(self.images) == 0:
            raise ValueError(f"images: need (N,H,W,3) with N >= 1, got {self.images.shape}")

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        return self.images[rng.integers(len(self.images))]


class RandomMeshTargets:
    """Targets rendered from random blobs: smooth random ray lengths, pose and colour."""

    def __init__(self, renderer_fn: Callable[[], MeshRenderer]):
        self._renderer_fn = renderer_fn

    def action(self, rng: np.random.Generator) -> np.ndarray:
        y = geo.real_sph_harm(geo.ico_rays(), 2)
        coef = rng.normal(0, 0.08, y.shape[1])
        lengths = np.clip(0.7 + y @ coef, 0.2, 1.5)
        return spaces.pack(lengths[None], rng.uniform(-1, 1, (1, 3)), rng.uniform(-0.2, 0.2, (1, 3)),
                           rng.uniform(0.2, 1, (1, 3)))[0]

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        a = self.action(rng)
        return render_actions(self._renderer_fn(), a[None]).rgb[0]


_RENDERERS: dict[tuple, MeshRenderer] = {}


def shared_renderer(width: int, height: int, min_batch: int, camera=None, lights=None) -> MeshRenderer:
    """This process's renderer for these settings, made on first use and shared by every
    environment that asks (one GL context per process, whatever the batch sizes). It draws
    up to ``min_batch`` meshes at once, or as many as ``MAX_DRAW_BATCH`` and GL's limits allow
    (larger batches are drawn in chunks)."""
    key = (width, height, camera or geo.Camera(), lights or Lights())
    want = min(max(min_batch, 1), MAX_DRAW_BATCH)
    r = _RENDERERS.get(key)
    if r is None or r.max_batch < min(want, r.batch_limit):
        r = MeshRenderer(width, height, want, camera=key[2], lights=key[3], clip_batch=True)
        _RENDERERS[key] = r
    return r


def render_actions(renderer: MeshRenderer, actions: np.ndarray, **kwargs):
    return renderer.render_rays(**spaces.unpack(actions), **kwargs)


class _Base:
    """Shared construction: spaces, lazily made renderer."""

    def _setup(self, width: int, height: int, sigma: float, camera, lights, max_batch: int):
        """Checks every setting here, before any GL: a bad one is a ValueError naming it."""
        self.width, self.height = check_size("width", width), check_size("height", height)
        self.sigma = check_sigma(sigma)
        self.camera = None if camera is None else check_camera(camera)
        self.lights = None if lights is None else check_lights(lights)
        self.max_batch = check_size("num_envs", max_batch)
        self._render_mode = None
        self._renderer: MeshRenderer | None = None
        lo, hi = spaces.bounds()
        self.single_action_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self.single_observation_space = gym.spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)

    @property
    def render_mode(self) -> str | None:
        return self._render_mode

    @render_mode.setter
    def render_mode(self, mode: str | None) -> None:
        """Checked when set: an unsupported mode is refused with the supported ones."""
        if mode is not None and mode not in RENDER_MODES:
            raise ValueError(f"render_mode: {mode!r} is not supported; the supported modes are "
                             f"{RENDER_MODES} and None (headless: there is no window)")
        self._render_mode = mode

    @property
    def renderer(self) -> MeshRenderer:
        if self._renderer is None:
            self._renderer = shared_renderer(self.width, self.height, self.max_batch,
                                             self.camera, self.lights)
        return self._renderer

    def _check_target(self, t, n: int | None) -> np.ndarray:
        t = np.asarray(t)
        shape = (self.height, self.width, 3) if n is None else (n, self.height, self.width, 3)
        if t.shape != shape or t.dtype != np.uint8:
            raise ValueError(f"target: must be uint8 of shape {shape}, got {t.dtype} {t.shape}")
        return t


def make_env(**kwargs) -> MeshRenderEnv:
    """``gym.make``'s entry point. Given the class, gymnasium would swap ``render_mode="human"``
    for its HumanRendering wrapper (a window, pygame); given this, every mode reaches the
    environment, which refuses the ones it does not support by name."""
    return MeshRenderEnv(**kwargs)


class MeshRenderEnv(_Base, gym.Env):
    """One mesh, one render, one reward. Action and observation spaces: ``envs/spaces.py``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, width: int = 64, height: int = 64, sigma: float = 0.1,
                 target_source: TargetSource | None = None, camera: geo.Camera | None = None,
                 lights: Lights | None = None, render_mode: str | None = None):
        self._setup(width, height, sigma, camera, lights, max_batch=1)
        self.action_space = self.single_action_space
        self.observation_space = self.single_observation_space
        self.render_mode = render_mode
        self.target_source = target_source or RandomMeshTargets(lambda: self.renderer)
        self._target: np.ndarray | None = None
        self._last: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "target" in options:
            self._target = self._check_target(options["target"], None).copy()
        else:
            self._target = self._check_target(self.target_source(self.np_random), None)
        self._last = self._target
        return self._target.copy(), {}

    def step(self, action):
        if self._target is None:
            raise RuntimeError("step() before reset(): call reset() to draw a target first")
        img = self.renderer.render_rays(**spaces.unpack(action, "action", single=True)).rgb[0]
        reward = float(spaces.gaussian_loglik(self._target[None], img[None], self.sigma)[0])
        self._last = img
        return img, reward, True, False, {}

    def render(self):
        return None if self._last is None else self._last.copy()

    def close(self):
        self._renderer = None  # the shared renderer lives as long as the process


class MeshRenderVectorEnv(_Base, VectorEnv):
    """N meshes per step in one atlas draw. No autoreset: every step is a whole episode, and
    the next ``reset`` sets the targets for the next step: ``options={"targets": (N,H,W,3)}``,
    or ``{"target_set": images, "target_idx": (N,)}`` to score against ``images[target_idx]``
    (the set goes to the GL side once, while the same array is given). ``"images": False``
    makes the next ``step`` read back rewards only: its observation, and with ``target_idx``
    the reset's, is then None."""

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, num_envs: int = 16, width: int = 64, height: int = 64, sigma: float = 0.1,
                 target_source: TargetSource | None = None, camera: geo.Camera | None = None,
                 lights: Lights | None = None, render_mode: str | None = None, copy: bool = True,
                 reward: str = "gl"):
        """``copy=False`` (as in gymnasium's vector envs): ``step``'s observations are views of
        the renderer's read-back memory, overwritten by the next step of any environment
        sharing this process's renderer; it saves a fresh image array per step (page faults
        that cost more than the draw on a GPU). Render workers use it: they reply at once.
        ``reward="gl"`` reduces each image against its target on the GL side and reads back
        one number per mesh; ``"numpy"`` reads the images back and scores them with
        ``envs.spaces.gaussian_loglik`` (the same values, up to float32 rounding)."""
        if num_envs < 1:
            raise ValueError(f"num_envs: must be >= 1, got {num_envs}")
        if reward not in ("gl", "numpy"):
            raise ValueError(f"reward: must be 'gl' (reduced on the GL side) or 'numpy', got {reward!r}")
        self._setup(width, height, sigma, camera, lights, max_batch=num_envs)
        self.num_envs = num_envs
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.render_mode = render_mode
        self.copy = bool(copy)
        self.reward = reward
        self.target_source = target_source or RandomMeshTargets(lambda: self.renderer)
        self._targets: np.ndarray | None = None
        self._target_set: np.ndarray | None = None
        self._target_idx: np.ndarray | None = None
        self._images = True
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        options = options or {}
        self._images = bool(options.get("images", True))
        if "target_idx" in options:
            self._set_indexed(options.get("target_set"), options["target_idx"])
        else:
            if "targets" in options:
                t = self._check_target(options["targets"], self.num_envs).copy()
            else:
                t = np.stack([self.target_source(self._rng) for _ in range(self.num_envs)])
            t.setflags(write=False)
            self._target_set, self._target_idx = t, np.arange(self.num_envs)
            self._targets = t
        return self._targets, {}  # read-only for the caller: no second copy per request

    def _set_indexed(self, target_set, target_idx) -> None:
        if target_set is None:
            raise ValueError("target_idx: give the images it indexes as options['target_set']")
        if target_set is not self._target_set:
            ts = np.asarray(target_set)
            if ts.ndim != 4 or ts.shape[1:] != (self.height, self.width, 3) or ts.dtype != np.uint8:
                raise ValueError(f"target_set: must be uint8 of shape (N, {self.height}, {self.width}, 3), "
                                 f"got {ts.dtype} {ts.shape}")
            self._target_set = target_set
        idx = np.asarray(target_idx)
        n = len(self._target_set)
        if (idx.shape != (self.num_envs,) or not np.issubdtype(idx.dtype, np.integer)
                or idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"target_idx: need {self.num_envs} integer indices in [0, {n}), "
                             f"got {idx.dtype} {idx.shape}")
        self._target_idx = idx
        self._targets = None
        if self.reward == "numpy" or self._images:  # else nothing reads them: no gather
            self._targets = np.asarray(self._target_set)[idx]
            self._targets.setflags(write=False)

    def step(self, actions):
        if self._target_idx is None:
            raise RuntimeError("step() before reset(): call reset(options={'targets': ...}) first")
        a = np.asarray(actions, np.float32)
        if a.shape != (self.num_envs, spaces.ACTION_DIM):
            raise ValueError(f"actions: must have shape ({self.num_envs}, {spaces.ACTION_DIM}), "
                             f"got {a.shape}")
        t0 = time.perf_counter()
        if self.reward == "gl":
            imgs, rewards = self._gl_rewards(a)
            t1 = time.perf_counter()
        else:
            imgs = render_actions(self.renderer, a, reuse=not self.copy).rgb
            t1 = time.perf_counter()
            rewards = spaces.gaussian_loglik(self._targets, imgs, self.sigma)
        done = np.ones(self.num_envs, bool)
        info = {"render_s": t1 - t0, "reward_s": time.perf_counter() - t1}
        return imgs, rewards, done, np.zeros(self.num_envs, bool), info

    def _gl_rewards(self, a: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Render and score on the GL side (``reward_s`` is then part of ``render_s``)."""
        r = self.renderer
        if r.targets is not self._target_set:
            r.set_targets(self._target_set)
        rewards, out = r.rewards_rays(self._target_idx, self.sigma, images=self._images,
                                      **spaces.unpack(a))
        imgs = out.rgb
        if imgs is not None and self.copy:
            imgs = imgs.copy()
        return imgs, rewards

    def close_extras(self, **kwargs):
        self._renderer = None
