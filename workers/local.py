"""``LocalPool``: the pool contract (``workers.contract.Pool``) over one in-process
``RenderWorker``: no Ray, no overlap. For debugging, and machines without Ray."""

from __future__ import annotations

import time

import numpy as np

from workers.contract import BASE_STATS, Result, Ticket, check_open, check_request
from workers.worker import EnvSpec, RenderWorker


class LocalPool:
    def __init__(self, spec: EnvSpec, cfg=None, targets: np.ndarray | None = None):
        self.cfg = cfg
        self.worker = RenderWorker(spec, targets)
        self.stats: dict[str, float] = dict.fromkeys(BASE_STATS, 0)
        self._rid = 0
        self.closed = False

    def set_targets(self, targets: np.ndarray) -> None:
        check_open(self.closed, "set_targets")
        self.worker.set_targets(targets)

    def submit(self, actions, target_idx=None, targets=None, return_images: bool = False) -> Ticket:
        """Renders at once (there is nothing to overlap with); ``collect`` hands it over."""
        check_open(self.closed, "submit")
        a = check_request(actions, target_idx, targets)
        t0 = time.monotonic()
        self._rid += 1
        reply = self.worker.evaluate(self._rid, a, targets, target_idx, return_images)
        self.stats["requested"] += len(a)
        self.stats["sent"] += len(a)
        if "error" in reply:
            self.stats["rejected"] += len(a)
            raise ValueError(f"render worker rejected the request: {reply['error']}")
        self.stats["completed"] += reply["renders"]
        reply["t"] = time.monotonic() - t0
        return Ticket(len(a), return_images, submitted_at=t0, payload=reply)

    def collect(self, ticket: Ticket) -> Result:
        check_open(self.closed, "collect")
        reply = ticket.payload
        return Result(reply["rewards"], reply.get("images"), reply["render_s"], reply["t"])

    def evaluate(self, actions, target_idx=None, targets=None, return_images=False) -> Result:
        return self.collect(self.submit(actions, target_idx, targets, return_images))

    def close(self) -> None:
        if not self.closed:
            self.worker.close()
        self.closed = True
