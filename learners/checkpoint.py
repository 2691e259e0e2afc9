"""Atomic checkpoints: write to a temp file in the same directory, fsync, then rename, so a
crash mid-write never leaves a truncated checkpoint where a good one stood."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from learners.config import ConfigError


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


class CheckpointError(ConfigError):
    """A checkpoint that cannot resume this run: missing, unreadable, or made with another model."""


def load(path: str | Path, map_location: str | torch.device = "cpu",
         other: str = "point --resume at another run") -> dict[str, Any]:
    """The state saved at ``path``; a ``CheckpointError`` in one line names it and what is
    wrong with it (and ends with ``other``, the caller's way to another checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; run without --resume to start afresh")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a torn or foreign file
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({why}); delete it or "
                              f"{other}") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a training checkpoint (no model "
                              f"and step in it); delete it or {other}")
    return state


def check_matches(state: dict[str, Any], config: dict, keys: tuple[str, ...], path: str | Path,
                  free: tuple[str, ...] = ()) -> None:
    """Refuse to resume when the config's ``keys`` (e.g. "model": what fixes the weights'
    shapes) differ from those the checkpoint was made with, naming each differing key; keys
    under them in ``free`` (e.g. "model.infer_mirrors": how the answer is read) may differ."""
    saved = state.get("config")
    if not isinstance(saved, dict):  # made before checkpoints kept their config
        return
    diffs = []
    for key in keys:
        a, b = _flat(_get(saved, key), key), _flat(_get(config, key), key)
        diffs += [f"{k}: checkpoint {a.get(k, '(none)')}, config {b.get(k, '(none)')}"
                  for k in sorted(set(a) | set(b))
                  if a.get(k, _NONE) != b.get(k, _NONE) and k not in free]
    if diffs:
        raise CheckpointError(f"checkpoint {str(path)!r} was made with another model ("
                              f"{'; '.join(diffs)}); resume with the checkpoint's values, or "
                              "start afresh without --resume or under another name")


_NONE = object()


def _get(d: dict, dotted: str) -> Any:
    for k in dotted.split("."):
        d = d.get(k, _NONE) if isinstance(d, dict) else _NONE
    return d


def _flat(v: Any, key: str) -> dict[str, Any]:
    """Nested mappings as {"a.b.c": leaf}; tuples read as lists (JSON writes both as lists)."""
    if v is _NONE:
        return {}
    if isinstance(v, dict):
        return {k2: x for k, sub in v.items() for k2, x in _flat(sub, f"{key}.{k}").items()}
    return {key: list(v) if isinstance(v, tuple) else v}


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
