"""What every long run shares: its directory ``runs/<name>/`` (owned while it runs), a
TensorBoard writer, a progress bar on a terminal (a progress line every
``RunLog.line_every_s`` seconds when stderr goes to a file), and atomic checkpoints that
``--resume`` continues from."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from learners import checkpoint
from learners.rundir import RunLock


class ProgressLines:
    """Progress for a log file: one line every ``every_s`` seconds (and at the last step) with
    the step, the rate, the time left and the latest values, where a bar would only write
    carriage returns."""

    def __init__(self, total: int, start: int, every_s: float, file: Any,
                 clock: Any = time.monotonic):
        self.total, self.n, self.every_s, self.file, self.clock = total, start, every_s, file, clock
        self._start_n, self._t0 = start, clock()
        self._last = self._t0

    def update(self, n: int, postfix: dict[str, float]) -> None:
        self.n += n
        now = self.clock()
        if now - self._last < self.every_s and self.n < self.total:
            return
        self._last = now
        rate = (self.n - self._start_n) / max(now - self._t0, 1e-9)
        left = (self.total - self.n) / rate if rate > 0 else float("inf")
        values = "".join(f" | {k} {v:.4g}" for k, v in postfix.items())
        print(f"step {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%) | "
              f"{rate:.3g} steps/s | {_duration(left)} left{values}", file=self.file, flush=True)


def _duration(s: float) -> str:
    if not np.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class RunLog:
    """Owns ``<out_dir>/<name>/`` for the run (``learners.rundir``: a second live run with the
    same name is refused). With ``resume`` it reads the checkpoint first and checks that the
    config's ``match`` keys (but those in ``free``) are the ones the checkpoint was made with:
    a checkpoint that cannot resume the run is named in one line before ``config.json`` or a
    TensorBoard file is written. ``load()`` then returns that state."""

    line_every_s: float = 30.0
    """Seconds between progress lines when stderr is not a terminal."""

    def __init__(self, out_dir: str | Path, name: str, total_steps: int, start_step: int = 0,
                 config: dict | None = None, progress: bool = True, resume: bool = False,
                 match: tuple[str, ...] = ("model",), free: tuple[str, ...] = ()):
        self.dir = Path(out_dir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.dir)
        self.lock.acquire()
        self.state: dict[str, Any] | None = None
        try:
            if resume:
                self.state = checkpoint.load(self.checkpoint_path)
                if config is not None:
                    checkpoint.check_matches(self.state, config, match, self.checkpoint_path,
                                             free)
                start_step = start_step or int(self.state["step"])
            self._open(total_steps, start_step, config, progress)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, total_steps: int, start_step: int, config: dict | None, progress: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=start_step if start_step else None)
        if config is not None:
            (self.dir / "config.json").write_text(json.dumps(config, indent=2))
            self.tb.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", start_step)
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True,
                            file=sys.stderr, disable=None)
        self._t0 = time.time()

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            if v is not None and np.isfinite(v):
                self.tb.add_scalar(k, float(v), step)

    def image(self, tag: str, img: np.ndarray, step: int) -> None:
        """``img`` is (H, W, 3) or (H, W) float in [0,1] or uint8."""
        a = np.asarray(img)
        if a.ndim == 2:
            a = a[..., None]
        self.tb.add_image(tag, a, step, dataformats="HWC")

    def progress(self, n: int = 1, **postfix: float) -> None:
        if self.bar is None:
            return
        if self.bar.disable:  # not a terminal: steady lines instead of a bar
            if getattr(self, "_lines", None) is None:
                self._lines = ProgressLines(self.bar.total, self.bar.n, self.line_every_s,
                                            sys.stderr)
            self._lines.update(n, postfix)
            return
        self.bar.update(n)
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def save(self, state: dict[str, Any]) -> Path:
        return checkpoint.save(state, self.checkpoint_path)

    def load(self) -> dict[str, Any]:
        return self.state if self.state is not None else checkpoint.load(self.checkpoint_path)

    def write_json(self, name: str, data: Any) -> Path:
        p = self.dir / name
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=float))
        tmp.replace(p)
        return p

    def close(self) -> None:
        self.tb.flush()
        self.tb.close()
        if self.bar is not None:
            self.bar.close()
        self.lock.release()


def image_grid(images: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """Tile (N, H, W, C) images into one (rows*H, cols*W, C) picture with a white gutter."""
    imgs = np.asarray(images)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    n, h, w, c = imgs.shape
    rows = (n + cols - 1) // cols
    fill = 255 if imgs.dtype == np.uint8 else 1.0
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=imgs.dtype)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y: y + h, x: x + w] = imgs[i]
    return out


def save_png(path: str | Path, img: np.ndarray) -> None:
    from PIL import Image

    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    Image.fromarray(a).save(str(path))
