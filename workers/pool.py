"""``RenderPool``: splits a step's renders into requests across ``RenderWorker`` actors,
overlaps them with the learner's work, and survives workers that die.

``submit`` returns at once with a ticket; ``collect`` waits for its rewards. A request whose
worker died (or stopped answering) is sent again to a restarted worker: every render the
learner asked for comes back exactly once, and ``stats`` counts what was requested, resent and
completed so that this can be checked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from workers.worker import EnvSpec, RenderWorker


@dataclass
class PoolConfig:
    workers: int = 2
    """Render worker actors (one GL context each)."""
    chunk: int = 64
    """Renders per request: a step's B*K renders go out as ceil(B*K / chunk) requests."""
    worker_cpus: float = 1.0
    """CPUs Ray reserves for each worker."""
    worker_gpus: float = 0.0
    """GPU fraction per worker; > 0 renders on the GPU Ray assigns (its EGL device)."""
    request_timeout_s: float = 300.0
    """A request unanswered this long counts as a dead worker: restarted and resent."""
    max_restarts: int = 20
    """Worker restarts allowed over the run before the pool gives up with an error."""
    backend: str = "ray"
    """"ray": worker actors; "local": one in-process worker, no Ray (debugging, single
    machines without Ray; rendering then does not overlap learning)."""

    def __post_init__(self):
        if self.backend not in ("ray", "local"):
            raise ValueError(f"backend: must be 'ray' or 'local', got {self.backend!r}")


@dataclass
class _Request:
    rid: int
    lo: int
    hi: int
    ref: object = None
    slot: int = -1
    actor: object = None


@dataclass
class Ticket:
    n: int
    requests: list
    return_images: bool
    actions: np.ndarray
    target_idx: np.ndarray | None
    targets: np.ndarray | None


@dataclass
class Result:
    rewards: np.ndarray
    images: np.ndarray | None
    render_s: float
    wait_s: float


class WorkerError(RuntimeError):
    """Workers kept dying past ``max_restarts``."""


class RenderPool:
    def __init__(self, spec: EnvSpec, cfg: PoolConfig | None = None, targets: np.ndarray | None = None):
        import ray

        self.ray = ray
        self.spec, self.cfg = spec, cfg or PoolConfig()
        if self.cfg.workers < 1 or self.cfg.chunk < 1:
            raise ValueError("pool: workers and chunk must be >= 1")
        self._targets_ref = None if targets is None else ray.put(np.asarray(targets))
        self._remote = ray.remote(RenderWorker)
        self.actors = [self._start(i) for i in range(self.cfg.workers)]
        self._inflight = [0] * self.cfg.workers
        ray.get([a.ping.remote() for a in self.actors])  # fail now if GL is unusable
        self._next_rid = 0
        self.stats = {"requested": 0, "sent": 0, "resent": 0, "completed": 0, "restarts": 0}

    def _start(self, slot: int):
        opts = {"num_cpus": self.cfg.worker_cpus, "max_concurrency": 1}
        if self.cfg.worker_gpus > 0:
            opts["num_gpus"] = self.cfg.worker_gpus
        # the worker picks the EGL device of the GPU Ray gives it
        return self._remote.options(**opts).remote(self.spec, self._targets_ref)

    def set_targets(self, targets: np.ndarray) -> None:
        """Give every worker the target images once; requests then send indices."""
        self._targets_ref = self.ray.put(np.asarray(targets))
        self.ray.get([a.set_targets.remote(self._targets_ref) for a in self.actors])

    # ------------------------------------------------------------------ requests

    def submit(self, actions: np.ndarray, target_idx=None, targets=None,
               return_images: bool = False) -> Ticket:
        a = np.ascontiguousarray(actions, np.float32)
        if a.ndim != 2 or len(a) == 0:
            raise ValueError(f"actions: need a non-empty (N, A) array, got shape {a.shape}")
        if (target_idx is None) == (targets is None):
            raise ValueError("give exactly one of target_idx (after set_targets) or targets")
        t = Ticket(len(a), [], return_images, a,
                   None if target_idx is None else np.asarray(target_idx),
                   None if targets is None else np.asarray(targets))
        n_req = -(-len(a) // self.cfg.chunk)
        bounds = np.linspace(0, len(a), n_req + 1).round().astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            req = _Request(self._next_rid, int(lo), int(hi))
            self._next_rid += 1
            self._send(t, req)
            t.requests.append(req)
        self.stats["requested"] += len(a)
        return t

    def _send(self, t: Ticket, req: _Request) -> None:
        slot = int(np.argmin(self._inflight))
        kw = {"return_images": t.return_images}
        if t.target_idx is not None:
            kw["target_idx"] = t.target_idx[req.lo:req.hi]
        else:
            kw["targets"] = t.targets[req.lo:req.hi]
        req.ref = self.actors[slot].evaluate.remote(req.rid, t.actions[req.lo:req.hi], **kw)
        req.slot, req.actor = slot, self.actors[slot]
        self._inflight[slot] += 1
        self.stats["sent"] += req.hi - req.lo

    def collect(self, t: Ticket) -> Result:
        ray = self.ray
        rewards = np.empty(t.n, np.float64)
        images = None
        render_s, t0 = 0.0, time.perf_counter()
        for req in t.requests:
            while True:
                try:
                    reply = ray.get(req.ref, timeout=self.cfg.request_timeout_s)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError,
                        ray.exceptions.ActorUnavailableError) as e:
                    self._inflight[req.slot] = max(0, self._inflight[req.slot] - 1)
                    if self.actors[req.slot] is req.actor:  # not yet replaced for another request
                        self._restart(req.slot, e)
                    self._send(t, req)
                    self.stats["resent"] += req.hi - req.lo
                    continue
                break
            self._inflight[req.slot] = max(0, self._inflight[req.slot] - 1)
            if "error" in reply:
                raise ValueError(f"render worker (pid {reply['pid']}) rejected the request: "
                                 f"{reply['error']}")
            assert reply["request_id"] == req.rid and reply["renders"] == req.hi - req.lo
            rewards[req.lo:req.hi] = reply["rewards"]
            if t.return_images:
                if images is None:
                    images = np.empty((t.n,) + reply["images"].shape[1:], reply["images"].dtype)
                images[req.lo:req.hi] = reply["images"]
            render_s += reply.get("render_s", 0.0)
            self.stats["completed"] += req.hi - req.lo
        return Result(rewards, images, render_s, time.perf_counter() - t0)

    def evaluate(self, actions, target_idx=None, targets=None, return_images=False) -> Result:
        return self.collect(self.submit(actions, target_idx, targets, return_images))

    def _restart(self, slot: int, why: Exception) -> None:
        self.stats["restarts"] += 1
        if self.stats["restarts"] > self.cfg.max_restarts:
            raise WorkerError(f"render workers died {self.stats['restarts']} times (last: {why}); "
                              "check the worker logs, GL set-up and memory") from why
        try:
            self.ray.kill(self.actors[slot], no_restart=True)
        except Exception:
            pass
        self.actors[slot] = self._start(slot)

    def ping(self) -> list[dict]:
        return self.ray.get([a.ping.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []


class LocalPool:
    """The pool's interface over one in-process ``RenderWorker``: no Ray, no overlap."""

    def __init__(self, spec: EnvSpec, cfg: PoolConfig | None = None, targets: np.ndarray | None = None):
        self.cfg = cfg or PoolConfig(backend="local")
        self.worker = RenderWorker(spec, targets)
        self.stats = {"requested": 0, "sent": 0, "resent": 0, "completed": 0, "restarts": 0}
        self._rid = 0

    def set_targets(self, targets: np.ndarray) -> None:
        self.worker.set_targets(targets)

    def submit(self, actions, target_idx=None, targets=None, return_images: bool = False) -> dict:
        t0 = time.perf_counter()
        self._rid += 1
        reply = self.worker.evaluate(self._rid, actions, targets, target_idx, return_images)
        if "error" in reply:
            raise ValueError(f"render worker rejected the request: {reply['error']}")
        n = reply["renders"]
        for k in ("requested", "sent", "completed"):
            self.stats[k] += n
        reply["t"] = time.perf_counter() - t0
        return reply

    def collect(self, reply: dict) -> Result:
        return Result(reply["rewards"], reply.get("images"), reply["render_s"], reply["t"])

    def evaluate(self, actions, target_idx=None, targets=None, return_images=False) -> Result:
        return self.collect(self.submit(actions, target_idx, targets, return_images))

    def close(self) -> None:
        pass


def make_pool(spec: EnvSpec, cfg: PoolConfig, targets: np.ndarray | None = None):
    """A Ray pool, or a local one when ``cfg.backend == "local"``."""
    return (LocalPool if cfg.backend == "local" else RenderPool)(spec, cfg, targets)
