"""``RenderWorker``: one Ray actor, one GL context, hosting a vectorised gymnasium environment.

A request is a batch of actions with its targets (images, or indices into target images the
worker was given once); the reply is the rewards, and the rendered images only when asked, so
that across machines rewards, not images, cross the network. A bad request is answered with
an error reply; it never kills the worker.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EnvSpec:
    """Which gymnasium environment a worker makes, and its keyword arguments. Any registered
    environment with the same action/observation spaces and ``reset(options={"targets"})``
    can stand in for the renderer."""

    env_id: str = "gen3d/MeshRender-v0"
    kwargs: dict = field(default_factory=dict)


def _assigned_gpu() -> str | None:
    """Ray's id of the GPU it gave this actor (an index or a UUID, as a string); None off
    Ray or without a GPU."""
    try:
        import ray

        ids = ray.get_gpu_ids() if ray.is_initialized() else []
    except Exception:  # not inside Ray
        return None
    return str(ids[0]) if ids else None


def _gpu_egl_device(gpu: str, allow_software: bool) -> int | None:
    """The EGL device of Ray's GPU ``gpu``; None (the driver's choice) only when software
    rendering is allowed and no EGL device is that GPU."""
    from envs.gl import egl_devices
    from workers import devices

    try:
        return devices.egl_index(gpu, devices.driver_gpus(), egl_devices(),
                                 os.environ.get("CUDA_VISIBLE_DEVICES"))
    except devices.GpuMappingError:
        if allow_software:
            return None
        raise


class RenderWorker:
    """Plain class; ``workers.pool`` wraps it with ``ray.remote``. Tests may use it directly."""

    def __init__(self, spec: EnvSpec, targets: Any = None, egl_device: int | None = None,
                 env_vars: dict[str, str] | None = None, allow_software_gl: bool = True):
        # render settings first: Mesa reads them when the GL context is made
        os.environ.update({k: str(v) for k, v in (env_vars or {}).items()})
        self.gpu = _assigned_gpu()
        if egl_device is None and self.gpu is not None:
            egl_device = _gpu_egl_device(self.gpu, allow_software_gl)
        if egl_device is not None:
            os.environ["GEN3D_EGL_DEVICE"] = str(egl_device)
        self.egl_device = egl_device
        self.spec = spec
        self.targets = None if targets is None else np.asarray(targets)
        self._envs: dict[int, Any] = {}
        self.renders = 0
        self.pid = os.getpid()
        self._warm_up()
        gl = self._gl()
        if self.gpu is not None and not allow_software_gl and gl is not None:
            from workers.devices import is_software

            if is_software(gl.get("renderer")):
                raise RuntimeError(
                    f"render worker given GPU {self.gpu} draws with {gl.get('renderer')!r} "
                    f"(software) on EGL device {egl_device}; install the NVIDIA driver's EGL "
                    "library there, or set pool.allow_software_gl: true")

    def close(self) -> None:
        """Close its environments (and with them their GL contexts)."""
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    def _warm_up(self) -> None:
        """Make the environment and draw once, in this process: a GL set-up that cannot
        render fails at start, not mid-run."""
        env = self._env(1)
        space = env.single_action_space
        lo, hi = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        mid = np.where(np.isfinite(lo) & np.isfinite(hi), (lo + hi) / 2, 0.0)
        env.step(mid[None].astype(space.dtype))

    def _env(self, n: int):
        env = self._envs.get(n)
        if env is None:
            import gymnasium as gym

            import envs  # noqa: F401  (registers gen3d/MeshRender-v0)

            kwargs = dict(self.spec.kwargs)
            if self.spec.env_id == EnvSpec.env_id:  # replies are made at once: no image copies
                kwargs.setdefault("copy", False)
            try:
                env = gym.make_vec(self.spec.env_id, num_envs=n,
                                   vectorization_mode="vector_entry_point", **kwargs)
            except (gym.error.Error, ValueError):  # an env without a vectorised entry point
                env = gym.make_vec(self.spec.env_id, num_envs=n, vectorization_mode="sync",
                                   **self.spec.kwargs)
            # makes the renderer (GL context) here; blank targets: nothing to draw for them
            env.reset(seed=0, options={"targets": np.zeros(env.observation_space.shape, np.uint8)})
            self._envs[n] = env
        return env

    def set_targets(self, targets) -> int:
        self.targets = np.asarray(targets)
        return len(self.targets)

    def evaluate(self, request_id: int, actions, targets=None, target_idx=None,
                 return_images: bool = False) -> dict:
        """Rewards of ``actions`` (N, A) against ``targets`` (N,H,W,3) uint8, or against this
        worker's target images at ``target_idx`` (N,). gen3d's environment scores on the GL
        side (its ``reward`` option, "gl" by default) and reads images back only when asked."""
        t0 = time.perf_counter()
        try:
            a = np.asarray(actions, np.float32)
            if a.ndim != 2 or len(a) == 0:
                raise ValueError(f"actions: need a non-empty (N, A) array, got shape {a.shape}")
            env = self._env(len(a))
            env.reset(options=self._reset_options(len(a), targets, target_idx, return_images))
            obs, rewards, *_, info = env.step(a)
            self.renders += len(a)
            reply = {"request_id": request_id, "rewards": np.asarray(rewards, np.float64),
                     "renders": len(a), "pid": self.pid, "worker_s": time.perf_counter() - t0,
                     "render_s": float(np.sum(info.get("render_s", 0.0)))}
            if return_images:
                reply["images"] = np.array(obs)  # obs may be the renderer's reused memory
            return reply
        except Exception as e:  # a bad request must not kill the worker
            return {"request_id": request_id, "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(limit=3), "pid": self.pid}

    def _reset_options(self, n: int, targets, target_idx, return_images: bool) -> dict:
        ours = self.spec.env_id == EnvSpec.env_id
        if targets is not None:
            opts = {"targets": np.asarray(targets)}
        else:
            if target_idx is None or self.targets is None:
                raise ValueError("targets: send target images, or target_idx after set_targets()")
            idx = np.asarray(target_idx)
            if (idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer)
                    or idx.min() < 0 or idx.max() >= len(self.targets)):
                raise ValueError(f"target_idx: need {n} integer indices in [0, {len(self.targets)})")
            # gen3d's env keeps the whole set on the GL side: only indices per request
            opts = ({"target_set": self.targets, "target_idx": idx} if ours
                    else {"targets": self.targets[idx]})
        if ours:
            opts["images"] = bool(return_images)
        return opts

    def _gl(self) -> dict | None:
        from envs.mesh_env import _RENDERERS

        return next(iter(_RENDERERS.values())).gl if _RENDERERS else None

    def ping(self) -> dict:
        """Who and where this worker is: node, GPU, EGL device and the GL renderer drawing."""
        node_ip = node_id = None
        try:
            import ray

            if ray.is_initialized():
                node_ip = ray.util.get_node_ip_address()
                node_id = ray.get_runtime_context().get_node_id()
        except Exception:  # not inside Ray
            pass
        return {"pid": self.pid, "renders": self.renders, "gl": self._gl(), "node_ip": node_ip,
                "node_id": node_id, "gpu": self.gpu, "egl_device": self.egl_device,
                "lp_num_threads": os.environ.get("LP_NUM_THREADS"),
                "code": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
