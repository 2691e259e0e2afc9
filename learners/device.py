"""The learner's torch device from a config's ``device`` field: ``auto`` takes the GPU when
this torch can use one and the CPU otherwise; ``cpu``, ``cuda`` and ``cuda:N`` are taken as
asked, with an error that says why CUDA is not usable and what to do about it."""

from __future__ import annotations

import sys

import torch

from learners.config import ConfigError

INSTALL_HINT = ("install a CUDA build of torch (README, 'The two commands': TORCH_INDEX_URL) or set "
                "device: cpu (or auto)")


def cuda_problem() -> str | None:
    """Why this process cannot use CUDA, or None when it can."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    return (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no usable "
            "GPU (no device, no driver, or CUDA_VISIBLE_DEVICES hides it)")


def resolve_device(name: str, announce: bool = True) -> torch.device:
    """The torch device ``name`` ("auto", "cpu", "cuda", "cuda:N") stands for on this machine;
    ``announce`` prints which one was chosen."""
    key = str(name).strip().lower()
    if key == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif key == "cpu":
        dev = torch.device("cpu")
    elif key == "cuda" or (key.startswith("cuda:") and key[5:].isdigit()):
        why = cuda_problem()
        if why:
            raise ConfigError(f"device: {name!r} asked for, but {why}; {INSTALL_HINT}")
        dev = torch.device(key)
        n = torch.cuda.device_count()
        if dev.index is not None and 0 < n <= dev.index:
            raise ConfigError(f"device: {name!r} asked for, but this machine has {n} CUDA "
                              f"device(s) (cuda:0 to cuda:{n - 1}); pick one of those, or cuda")
    else:
        raise ConfigError(f"device: {name!r} is not a device; use auto, cpu, cuda or cuda:N")
    if announce:
        print(f"device: {name} -> {describe(dev)}", file=sys.stderr, flush=True)
    return dev


def describe(dev: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU with the reason no GPU was used."""
    if dev.type == "cuda":
        try:
            gpu = torch.cuda.get_device_name(dev.index if dev.index is not None else 0)
        except (AssertionError, RuntimeError):  # a GPU this process cannot query
            gpu = "GPU"
        return f"{dev} ({gpu}, torch {torch.__version__})"
    why = cuda_problem()
    return f"cpu (torch {torch.__version__}" + (f"; no GPU: {why})" if why else ")")
