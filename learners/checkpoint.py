"""Atomic checkpoints: write to a temp file in the same directory, fsync, then rename, so a
crash mid-write never leaves a truncated checkpoint where a good one stood."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; run without --resume to start afresh")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a torn or foreign file
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({e}); delete it or point "
                         "--resume at another run") from None


def rng_state() -> dict[str, Any]:
    import random

    import numpy as np
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(s: dict[str, Any]) -> None:
    import random

    import numpy as np
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
