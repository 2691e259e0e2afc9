"""Starting or joining Ray.

Local by default: ``num_cpus`` from the config, no dashboard, bound to 127.0.0.1, with a temp
dir of the run's own. With an address (``ray://...`` or ``host:port``) the run joins an
existing cluster, whose token authentication stays on.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass


@dataclass
class RayConfig:
    address: str | None = None
    """Join this cluster instead of starting a local Ray (e.g. "10.0.0.5:6379" or "auto")."""
    num_cpus: int = 2
    """CPUs a local Ray may use (learner and render workers together)."""
    num_gpus: int = 0
    """GPUs a local Ray may hand to workers."""


def start(cfg: RayConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=True)
        return
    # a short path: Ray's unix sockets live under it and their paths are length-limited
    tmp = tempfile.mkdtemp(prefix="gen3d-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    ray.init(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=tmp, log_to_driver=True,
             configure_logging=False)


def stop() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
