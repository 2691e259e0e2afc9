"""Where a run happened and what it ended with, for its report and for benchmark JSON: the
machine (CPU model, cores, library versions, the learner's device) and digests of the final
weights and of the whole training state.

Two runs of one config, seed and step count end bit-identical on one machine, so their digests
match. On another CPU model the float kernels of torch (and of Mesa's llvmpipe) differ in
the last bits, so the runs part after some steps and their figures differ at the level of
seed-to-seed noise: compare digests only between reports with the same ``machine``."""

from __future__ import annotations

import hashlib
import os
import platform
from typing import Any

import numpy as np
import torch

from learners.device import describe


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the architecture where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | None = None) -> dict[str, Any]:
    """The machine and libraries a run or benchmark ran on, as JSON-ready values."""
    info: dict[str, Any] = {
        "host": platform.node(), "cpu": cpu_model(), "arch": platform.machine(),
        "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "lp_num_threads": os.environ.get("LP_NUM_THREADS")}
    if device is not None:
        info["device"] = describe(device)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def digest(obj: Any) -> str:
    """A sha1 (16 hex digits) of nested dicts, lists, tensors, arrays and plain values: equal
    exactly when every tensor is equal bit for bit (dtype and shape included), wherever the
    tensors live."""
    h = hashlib.sha1()
    _feed(h, obj)
    return h.hexdigest()[:16]


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(obj, torch.Tensor):
        _feed_array(h, obj.detach().cpu().contiguous().numpy() if obj.dtype != torch.bfloat16
                    else obj.detach().cpu().float().numpy(), str(obj.dtype))
    elif isinstance(obj, np.ndarray):
        _feed_array(h, np.ascontiguousarray(obj), str(obj.dtype))
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def _feed_array(h: Any, a: np.ndarray, dtype: str) -> None:
    h.update(f"{dtype}{tuple(a.shape)}".encode())
    h.update(a.tobytes())
