"""The pool contract: what the learner may ask of any render backend.

``RenderPool`` (Ray actors across machines) and ``LocalPool`` (in-process) follow it; a third
backend (another cluster manager, a remote service) needs only these members:

- ``submit(actions, target_idx=None, targets=None, return_images=False) -> Ticket``: start
  rendering ``actions`` (N, A) float32 against ``targets`` (N, H, W, 3) uint8, or against the
  target images given to ``set_targets`` at ``target_idx`` (N,); returns at once.
- ``collect(ticket) -> Result``: wait for that ticket's rewards (N,) float64 (and images when
  asked), each render exactly once, in the order submitted.
- ``evaluate(...) -> Result``: ``collect(submit(...))``.
- ``set_targets(images)``: send the target images once; requests then carry indices.
- ``close()``: free the workers; the pool is unusable after it.
- ``stats``: a flat ``dict[str, float]`` of counters the learner logs as ``pool/<key>``. It
  has at least ``requested``, ``sent``, ``resent``, ``completed``, ``rejected`` and
  ``restarts`` (renders and worker restarts since the start), with ``completed + rejected ==
  requested`` once every ticket is collected: a render a worker refused (``ValueError`` from
  ``collect``) counts as requested and rejected, on every backend.

A bad request raises ``ValueError`` naming the problem; a backend that can no longer render
raises ``WorkerError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

BASE_STATS = ("requested", "sent", "resent", "completed", "rejected", "restarts")


@dataclass
class Ticket:
    """A submitted batch: ``n`` renders, split into requests that the backend tracks."""

    n: int
    return_images: bool
    requests: list = field(default_factory=list)
    submitted_at: float = 0.0
    payload: Any = None
    """Backend-specific state (the actions and targets for a resend, or a finished reply)."""


@dataclass
class Result:
    rewards: np.ndarray
    """(N,) float64, in the order of the submitted actions."""
    images: np.ndarray | None
    """(N, H, W, 3) uint8 when ``return_images``, else None."""
    render_s: float
    """Seconds the workers spent drawing, summed over requests."""
    wait_s: float
    """Seconds ``collect`` waited."""


class WorkerError(RuntimeError):
    """No worker is left to render, or workers kept dying past ``max_restarts``."""


def check_open(closed: bool, what: str) -> None:
    """A pool refuses every use after ``close``: its workers are gone, and a restart then
    would start one that nobody stops."""
    if closed:
        raise WorkerError(f"pool: {what} after close(); the pool's workers are gone, make a new "
                          "pool (workers.pool.make_pool)")


@runtime_checkable
class Pool(Protocol):
    stats: dict[str, float]

    def submit(self, actions: np.ndarray, target_idx: np.ndarray | None = None,
               targets: np.ndarray | None = None, return_images: bool = False) -> Ticket: ...

    def collect(self, ticket: Ticket) -> Result: ...

    def evaluate(self, actions: np.ndarray, target_idx: np.ndarray | None = None,
                 targets: np.ndarray | None = None, return_images: bool = False) -> Result: ...

    def set_targets(self, targets: np.ndarray) -> None: ...

    def close(self) -> None: ...


def check_request(actions: Any, target_idx: Any, targets: Any) -> np.ndarray:
    """The checks every backend makes before sending: a clear error, not a worker's."""
    a = np.ascontiguousarray(actions, np.float32)
    if a.ndim != 2 or len(a) == 0:
        raise ValueError(f"actions: need a non-empty (N, A) array, got shape {a.shape}")
    if (target_idx is None) == (targets is None):
        raise ValueError("give exactly one of target_idx (after set_targets) or targets")
    return a
