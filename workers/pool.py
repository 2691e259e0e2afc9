"""``RenderPool``: splits a step's renders into requests across ``RenderWorker`` actors,
overlaps them with the learner's work, and carries on as workers and nodes come and go.

``submit`` returns at once with a ticket; ``collect`` waits for its rewards. Every render the
learner asked for comes back exactly once: a request whose worker died (or hung past
``request_timeout_s``) is sent again; a request late by ``straggler_factor`` times the recent
median request time is also sent to an idle worker, the first reply wins and the other is
counted in ``stats["duplicates_dropped"]`` and dropped. A lost worker is replaced; a
replacement the cluster cannot place within ``start_timeout_s`` leaves the pool running on
the workers it has (it joins later if Ray places it). The pool fails only when no worker is
left. The contract the learner relies on is ``workers.contract.Pool``.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers import placement
from workers.contract import BASE_STATS, Result, Ticket, WorkerError, check_open, check_request
from workers.local import LocalPool
from workers.worker import EnvSpec, RenderWorker

log = logging.getLogger("gen3d.pool")


def _to_console() -> None:
    """Fleet events (nodes at start, losses, restarts, resends) go to stderr as they happen,
    unless the program has set up logging itself."""
    if not logging.getLogger().handlers and not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
        log.setLevel(logging.INFO)

__all__ = ["PoolConfig", "RenderPool", "LocalPool", "Result", "Ticket", "WorkerError", "make_pool"]


@dataclass
class PoolConfig:
    workers: int | str = 2
    """Render worker actors (one GL context each), or "auto": as many as the cluster can host
    at ``worker_cpus`` / ``worker_gpus`` each."""
    chunk: int = 64
    """Renders per request: a step's B*K renders go out as ceil(B*K / chunk) requests."""
    worker_queue: int = 2
    """Requests sent ahead to each worker; the rest wait in the pool and go to whichever
    worker frees first (a slow worker then gets less work, not the same share)."""
    worker_cpus: float = 1.0
    """CPUs Ray reserves for each worker."""
    worker_gpus: float = 0.0
    """GPU fraction per worker; > 0 renders on the GPU Ray assigns (the EGL device that is
    that GPU)."""
    worker_resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each worker asks for (e.g. {"render_node": 1} to keep workers on
    the nodes started with that resource)."""
    worker_env: dict[str, str] = field(default_factory=lambda: {"LP_NUM_THREADS": "0"})
    """Environment variables set in each worker before its GL context is made (Mesa's
    llvmpipe threads: 0 = draw on the worker's own thread, as the CPU reserved is 1 or less)."""
    placement: str = "spread"
    """"spread": workers spread over the cluster's nodes (Ray's SPREAD); "pack": nodes filled
    one after another, the driver's first."""
    request_timeout_s: float = 300.0
    """A request unanswered this long counts as a dead (hung) worker: replaced, and resent."""
    start_timeout_s: float = 60.0
    """How long a worker may take to be placed and start: at start, longer is an error that
    says what the cluster has; for a replacement, the pool carries on without it."""
    straggler_factor: float = 3.0
    """Resend a request to an idle worker once it is late by this many median request times
    (0: never)."""
    straggler_min_s: float = 0.05
    """...and by at least this many seconds."""
    max_restarts: int = 20
    """Worker replacements over the run; past it a lost worker is not replaced."""
    allow_software_gl: bool = False
    """Let a worker given a GPU render on Mesa's software device when no EGL device is that GPU."""
    backend: str = "ray"
    """"ray": worker actors; "local": one in-process worker, no Ray (debugging, single
    machines without Ray; rendering then does not overlap learning)."""

    def __post_init__(self):
        _check_pool_config(self)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_pool_config(c: PoolConfig) -> None:
    if c.workers != "auto" and (not _is_int(c.workers) or c.workers < 1):
        raise ValueError(f"workers: must be an integer >= 1 or 'auto', got {c.workers!r}")
    for key, lo in (("chunk", 1), ("worker_queue", 1), ("max_restarts", 0)):
        if not _is_int(getattr(c, key)) or getattr(c, key) < lo:
            raise ValueError(f"{key}: must be an integer >= {lo}, got {getattr(c, key)!r}")
    for key in ("worker_cpus", "worker_gpus", "straggler_factor", "straggler_min_s"):
        if not _is_number(getattr(c, key)) or not getattr(c, key) >= 0:
            raise ValueError(f"{key}: must be a finite number >= 0, got {getattr(c, key)!r}")
    for key in ("request_timeout_s", "start_timeout_s"):
        if not _is_number(getattr(c, key)) or not getattr(c, key) > 0:
            raise ValueError(f"{key}: must be a finite number of seconds > 0, got {getattr(c, key)!r}")
    for key in ("worker_resources", "worker_env"):
        if not isinstance(getattr(c, key), dict):
            raise ValueError(f"{key}: must be a mapping, got {getattr(c, key)!r}")
    bad = {k: v for k, v in c.worker_resources.items() if not _is_number(v) or not v >= 0}
    if bad:
        raise ValueError(f"worker_resources: amounts must be >= 0, got {bad}")
    if c.placement not in placement.STRATEGIES:
        raise ValueError(f"placement: must be one of {list(placement.STRATEGIES)}, got {c.placement!r}")
    if c.backend not in ("ray", "local"):
        raise ValueError(f"backend: must be 'ray' or 'local', got {c.backend!r}")


@dataclass
class _Slot:
    """One worker place: its current actor, and where and how it runs."""

    name: str
    actor: Any = None
    ready: Any = None  # the start-up ping while starting
    state: str = "starting"  # starting | up | lost
    since: float = 0.0
    overdue: bool = False
    info: dict = field(default_factory=dict)
    inflight: dict = field(default_factory=dict)  # ref -> _Attempt
    renders: int = 0
    busy_s: float = 0.0


@dataclass
class _Request:
    lo: int
    hi: int
    ticket: Ticket
    done: bool = False
    live: int = 0  # attempts in flight

    @property
    def n(self) -> int:
        return self.hi - self.lo


@dataclass
class _Attempt:
    req: _Request
    slot: _Slot
    sent_at: float


@dataclass
class _Batch:
    """A ticket's inputs and, as replies come, its outputs."""

    actions: np.ndarray
    target_idx: np.ndarray | None
    targets: np.ndarray | None
    rewards: np.ndarray
    images: np.ndarray | None = None
    render_s: float = 0.0
    error: str | None = None


class RenderPool:
    def __init__(self, spec: EnvSpec, cfg: PoolConfig | None = None, targets: np.ndarray | None = None):
        import ray

        self.ray = ray
        self.spec, self.cfg = spec, cfg or PoolConfig()
        _to_console()
        self.stats: dict[str, float] = dict.fromkeys(BASE_STATS, 0) | {
            "straggler_resends": 0, "duplicates_dropped": 0, "workers_alive": 0,
            "workers_lost": 0, "workers": 0}
        self._need = placement.worker_resources(self.cfg.worker_cpus, self.cfg.worker_gpus,
                                                self.cfg.worker_resources)
        self._targets_ref = None if targets is None else ray.put(np.asarray(targets))
        self._remote = ray.remote(RenderWorker)
        self._attempts: dict[Any, _Attempt] = {}
        self._backlog: deque[_Request] = deque()
        self._durations: deque[float] = deque(maxlen=256)
        self._median: float | None = None  # of _durations; None: to be computed again
        nodes = placement.alive_nodes()
        try:
            n = placement.fleet_size(self.cfg.workers, self._need, nodes)
        except placement.CapacityError as e:
            raise WorkerError(str(e)) from None
        self.slots = [_Slot(f"w{i}") for i in range(n)]
        homes = placement.pack_order(n, self._need, nodes, ray.get_runtime_context().get_node_id())
        for s, home in zip(self.slots, homes if self.cfg.placement == "pack" else [None] * n):
            self._launch(s, home)
        self._await_start()
        self._log_fleet()
        self.refresh_stats()

    # ------------------------------------------------------------------ workers

    @property
    def actors(self) -> list:
        """The actors of the workers that are up."""
        return [s.actor for s in self.slots if s.state == "up"]

    def _launch(self, slot: _Slot, node_id: str | None = None) -> None:
        """Start ``slot``'s worker (on ``node_id`` if given, else where the strategy says)."""
        opts: dict[str, Any] = {"num_cpus": self.cfg.worker_cpus, "max_concurrency": 1,
                                "scheduling_strategy": placement.strategy(self.cfg.placement, node_id)}
        if self.cfg.worker_gpus > 0:
            opts["num_gpus"] = self.cfg.worker_gpus
        if self.cfg.worker_resources:
            opts["resources"] = dict(self.cfg.worker_resources)
        slot.actor = self._remote.options(**opts).remote(
            self.spec, self._targets_ref, env_vars=self.cfg.worker_env,
            allow_software_gl=self.cfg.allow_software_gl)
        slot.ready = slot.actor.ping.remote()
        slot.state, slot.since, slot.overdue, slot.info = "starting", time.monotonic(), False, {}

    def _await_start(self) -> None:
        """Wait for every worker to start, for at most ``start_timeout_s``."""
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while any(s.state == "starting" for s in self.slots):
            left = deadline - time.monotonic()
            pending = [s.ready for s in self.slots if s.state == "starting"]
            if left <= 0:
                msg = (f"pool: not every worker started within start_timeout_s="
                       f"{self.cfg.start_timeout_s:g} s (other jobs may hold the resources, or "
                       "start-up is slow: raise pool.start_timeout_s); " + placement.shortfall(
                           len(self.slots), self._need, placement.alive_nodes(), self._count("up")))
                self.close()
                raise WorkerError(msg)
            ready, _ = self.ray.wait(pending, num_returns=1, timeout=min(left, 1.0))
            for s in [s for s in self.slots if s.ready in ready]:
                try:
                    self._on_started(s)
                except self.ray.exceptions.RayError as e:
                    if getattr(e, "actor_init_failed", True) is False:  # its node went, say
                        log.warning("pool: worker %s lost before it started (%s); starting it "
                                    "again", s.name, _last_line(e))
                        self._launch(s)
                        continue
                    self.close()
                    raise WorkerError(f"render worker {s.name} could not start: "
                                      f"{_last_line(e)}") from None

    def _on_started(self, slot: _Slot) -> None:
        slot.info = self.ray.get(slot.ready)
        slot.ready, slot.state = None, "up"
        self.stats["workers"] = len(self.slots)

    def _log_fleet(self) -> None:
        """One console line per node: its workers, their devices and GL renderer."""
        by_node: dict[str, list[_Slot]] = {}
        for s in self.slots:
            node = f"{s.info.get('node_ip') or '?'} ({(s.info.get('node_id') or '?')[:8]})"
            by_node.setdefault(node, []).append(s)
        for node, slots in by_node.items():
            gl = {(s.info.get("gl") or {}).get("renderer") or "no GL (stand-in)" for s in slots}
            dev = {f"GPU {s.info['gpu']} -> EGL {s.info['egl_device']}" if s.info.get("gpu")
                   is not None else "EGL default" for s in slots}
            log.info("pool: node %s: %d workers (%s), %s, GL renderer %s", node, len(slots),
                     " ".join(s.name for s in slots), ", ".join(sorted(dev)), ", ".join(sorted(gl)))

    def _lose(self, slot: _Slot, why: BaseException | str) -> None:
        """``slot``'s worker is gone: resend its requests and start a replacement."""
        if slot.state == "lost":
            return
        orphans = list(slot.inflight.values())
        for ref in list(slot.inflight):
            self._attempts.pop(ref, None)
        slot.inflight.clear()
        slot.state = "lost"
        self.stats["workers_lost"] += 1
        try:
            self.ray.kill(slot.actor, no_restart=True)
        except Exception:  # already gone
            pass
        log.warning("pool: worker %s on node %s lost (%s); resending %d requests", slot.name,
                    slot.info.get("node_ip", "?"), _last_line(why), len(orphans))
        for att in orphans:
            att.req.live -= 1
            if not att.req.done and att.req.live == 0:
                self.stats["resent"] += att.req.n
                self._backlog.append(att.req)
        if self.stats["restarts"] < self.cfg.max_restarts:
            self.stats["restarts"] += 1
            self._launch(slot)
            log.warning("pool: restarting worker %s (restart %d of at most %d)", slot.name,
                        self.stats["restarts"], self.cfg.max_restarts)
        else:
            log.warning("pool: max_restarts=%d reached: %s is not replaced; %d workers left",
                        self.cfg.max_restarts, slot.name, self._count("up"))

    def _count(self, state: str) -> int:
        return sum(s.state == state for s in self.slots)

    def _check_starting(self) -> None:
        """Replacements not placed in time: carry on without them, and say so once."""
        for s in self.slots:
            if s.state == "starting" and not s.overdue and \
                    time.monotonic() - s.since > self.cfg.start_timeout_s:
                s.overdue = True
                log.warning("pool: replacement %s not started within %g s; carrying on with %d "
                            "workers (it joins when the cluster has room)", s.name,
                            self.cfg.start_timeout_s, self._count("up"))
        if self._count("up") == 0 and all(s.state != "starting" or s.overdue for s in self.slots):
            raise WorkerError("pool: no render worker is left; " + placement.shortfall(
                len(self.slots), self._need, placement.alive_nodes(), 0))

    # ------------------------------------------------------------------ requests

    def set_targets(self, targets: np.ndarray) -> None:
        """Give every worker the target images once; requests then send indices. Workers
        started later get them at start."""
        check_open(self.closed, "set_targets")
        self._targets_ref = self.ray.put(np.asarray(targets))
        refs = [s.actor.set_targets.remote(self._targets_ref) for s in self.slots if s.state == "up"]
        self.ray.wait(refs, num_returns=len(refs), timeout=self.cfg.request_timeout_s)

    def submit(self, actions: np.ndarray, target_idx=None, targets=None,
               return_images: bool = False) -> Ticket:
        check_open(self.closed, "submit")
        a = check_request(actions, target_idx, targets)
        batch = _Batch(a, None if target_idx is None else np.asarray(target_idx),
                       None if targets is None else np.asarray(targets), np.empty(len(a), np.float64))
        t = Ticket(len(a), return_images, submitted_at=time.monotonic(), payload=batch)
        n_req = -(-len(a) // self.cfg.chunk)
        bounds = np.linspace(0, len(a), n_req + 1).round().astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            req = _Request(int(lo), int(hi), t)
            t.requests.append(req)
            self._backlog.append(req)
        self.stats["requested"] += len(a)
        self._dispatch()
        return t

    def _dispatch(self) -> None:
        """Send waiting requests to the least busy workers that are up, at most
        ``worker_queue`` in flight each."""
        if not self._backlog:
            return
        late, now, cap = self._late_s(), time.monotonic(), self.cfg.worker_queue
        free = [s for s in self.slots if s.state == "up" and len(s.inflight) < cap]
        # a worker sitting on a late request may be hung: others first
        prompt = [s for s in free if all(now - a.sent_at <= late for a in s.inflight.values())]
        groups = [prompt, [s for s in free if s not in prompt]]
        while self._backlog and (groups[0] or groups[1]):
            req = self._backlog.popleft()
            if req.done:
                continue
            group = groups[0] or groups[1]
            # ties go to the worker that has rendered least: every worker takes turns
            slot = min(group, key=lambda s: (len(s.inflight), s.renders))
            self._send(req, slot)
            if len(slot.inflight) >= cap:
                group.remove(slot)

    def _send(self, req: _Request, slot: _Slot) -> None:
        t, b = req.ticket, req.ticket.payload
        kw: dict[str, Any] = {"return_images": t.return_images}
        if b.target_idx is not None:
            kw["target_idx"] = b.target_idx[req.lo:req.hi]
        else:
            kw["targets"] = b.targets[req.lo:req.hi]
        ref = slot.actor.evaluate.remote(id(req), b.actions[req.lo:req.hi], **kw)
        att = _Attempt(req, slot, time.monotonic())
        self._attempts[ref] = att
        slot.inflight[ref] = att
        req.live += 1
        self.stats["sent"] += req.n

    def collect(self, t: Ticket) -> Result:
        check_open(self.closed, "collect")
        t0 = time.perf_counter()
        while not all(r.done for r in t.requests):
            self._pump(0.5)
            self._check_late(t)
        b: _Batch = t.payload
        self.refresh_stats()
        if b.error:
            raise ValueError(b.error)
        return Result(b.rewards, b.images, b.render_s, time.perf_counter() - t0)

    def evaluate(self, actions, target_idx=None, targets=None, return_images=False) -> Result:
        return self.collect(self.submit(actions, target_idx, targets, return_images))

    def _pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for any reply or start-up, and handle all that are in."""
        starting = {s.ready: s for s in self.slots if s.state == "starting"}
        refs = list(self._attempts) + list(starting)
        if refs:
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=min(timeout, self._poll_s()))
            if ready:
                ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                if ref in starting:
                    self._on_replacement(starting[ref])
                elif ref in self._attempts:
                    self._on_reply(ref)
        self._check_starting()
        self._dispatch()
        if self._backlog and self._count("up") == 0 and not refs:
            raise WorkerError("pool: no render worker is left; " + placement.shortfall(
                len(self.slots), self._need, placement.alive_nodes(), 0))

    def _poll_s(self) -> float:
        """Wake often enough to catch a straggler soon after it is late."""
        med = self._median_s() if self._durations else 0.5
        return float(np.clip(med / 2, 0.005, 0.5))

    def _on_replacement(self, slot: _Slot) -> None:
        try:
            self._on_started(slot)
        except self.ray.exceptions.RayError as e:
            slot.state = "up"  # so that _lose counts and replaces it
            self._lose(slot, e)
            return
        if self._targets_ref is not None:
            slot.actor.set_targets.remote(self._targets_ref)  # ordered before its requests
        log.warning("pool: worker %s up on node %s (%d workers up)", slot.name,
                    slot.info.get("node_ip", "?"), self._count("up"))

    def _on_reply(self, ref) -> None:
        att = self._attempts.pop(ref)
        att.slot.inflight.pop(ref, None)
        att.req.live -= 1
        try:
            reply = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the worker died, or its node
            att.req.live += 1  # _lose accounts for it with the slot's other requests
            att.slot.inflight[ref] = att
            self._lose(att.slot, e)
            return
        req, b = att.req, att.req.ticket.payload
        if req.done:
            self.stats["duplicates_dropped"] += req.n
            return
        req.done = True
        self._durations.append(time.monotonic() - att.sent_at)
        self._median = None
        if "error" in reply:
            b.error = f"render worker (pid {reply['pid']}) rejected the request: {reply['error']}"
            self.stats["rejected"] += req.n
            return
        if reply["renders"] != req.n:
            raise WorkerError(f"worker {att.slot.name} answered {reply['renders']} renders "
                              f"for a request of {req.n}")
        b.rewards[req.lo:req.hi] = reply["rewards"]
        if req.ticket.return_images:
            if b.images is None:
                b.images = np.empty((req.ticket.n,) + reply["images"].shape[1:], reply["images"].dtype)
            b.images[req.lo:req.hi] = reply["images"]
        b.render_s += reply.get("render_s", 0.0)
        att.slot.renders += req.n
        att.slot.busy_s += reply.get("worker_s", 0.0)
        self.stats["completed"] += req.n

    def _check_late(self, t: Ticket) -> None:
        """Hung workers (past ``request_timeout_s``) are lost; stragglers (late by
        ``straggler_factor`` medians) go again to an idle worker."""
        now = time.monotonic()
        for att in [a for a in self._attempts.values() if now - a.sent_at > self.cfg.request_timeout_s]:
            if att.slot.state == "up":
                self._lose(att.slot, f"no reply in request_timeout_s={self.cfg.request_timeout_s:g} s")
        late = self._late_s()
        if late == float("inf"):
            return
        idle = [s for s in self.slots if s.state == "up" and not s.inflight]
        for att in list(self._attempts.values()):
            if not idle:
                break
            req = att.req
            if req.ticket is t and not req.done and req.live == 1 and now - att.sent_at > late:
                slot = idle.pop()
                self.stats["straggler_resends"] += req.n
                log.info("pool: request of %d renders late on %s (%.2f s > %.2f s): sent "
                         "again to %s", req.n, att.slot.name, now - att.sent_at, late, slot.name)
                self._send(req, slot)

    def _late_s(self) -> float:
        """How old a request may be before it counts as a straggler (inf: never)."""
        if self.cfg.straggler_factor <= 0 or not self._durations:
            return float("inf")
        return max(self.cfg.straggler_factor * self._median_s(), self.cfg.straggler_min_s)

    def _median_s(self) -> float:
        """The median of the recent request times, sorted once per new reply (the pump asks
        several times per reply: at 32 workers sorting each time cost a tenth of the driver)."""
        if self._median is None:
            self._median = statistics.median(self._durations)
        return self._median

    def poll(self, timeout: float = 0.0) -> dict[str, float]:
        """Handle what has come in (late replies, lost workers, replacements that started)
        without collecting a ticket; returns the refreshed ``stats``."""
        self._pump(timeout)
        return self.refresh_stats()

    def refresh_stats(self) -> dict[str, float]:
        """``stats`` with the fleet's current state (workers up, renders/s of each)."""
        self.stats["workers_alive"] = self._count("up")
        for s in self.slots:
            self.stats[f"renders_per_s/{s.name}"] = s.renders / s.busy_s if s.busy_s else 0.0
        return self.stats

    def ping(self) -> list[dict]:
        """Each up worker's node, device and GL renderer (``RenderWorker.ping``)."""
        return self.ray.get([s.actor.ping.remote() for s in self.slots if s.state == "up"],
                            timeout=self.cfg.request_timeout_s)

    closed = False  # class-level: a pool whose start failed part-way is not closed

    def close(self) -> None:
        self.closed = True
        for s in getattr(self, "slots", []):
            try:
                self.ray.kill(s.actor, no_restart=True)
            except Exception:  # already gone
                pass
        self.slots = []


def _last_line(e: BaseException | str) -> str:
    """The informative end of an error (Ray wraps the worker's traceback)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else type(e).__name__


def make_pool(spec: EnvSpec, cfg: PoolConfig, targets: np.ndarray | None = None):
    """A Ray pool, or a local one when ``cfg.backend == "local"``."""
    return (LocalPool if cfg.backend == "local" else RenderPool)(spec, cfg, targets)
