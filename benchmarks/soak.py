"""Soak: the main job (``configs/primitives.yaml`` on the Ray pool) with its render workers
killed by SIGKILL at random intervals. Reports the learner's and the workers' memory (RSS) over
time, renders requested against completed, resent and restarts (the pool's ``stats``), renders
the learner received against the steps it took, and steps lost.

    python benchmarks/soak.py --minutes 60 [--kill-every 60] [--json PATH] [--set k=v ...]
    python benchmarks/soak.py --quick            # 0.5 minutes, a kill every 5 s on average

Targets: memory flat after warm-up (< 5% growth), 0 renders lost or doubled, 0 steps lost.
Only worker processes that descend from this process are killed (other Ray sessions on the
machine are left alone).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json  # noqa: E402

WORKER_TITLE = b"ray::RenderWorker"


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command name may hold spaces: the fields after it follow the last ')'
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def descends_from(pid: int, root: int, depth: int = 6) -> bool:
    for _ in range(depth):
        pid = _parent(pid)
        if pid == root:
            return True
        if pid <= 1:
            return False
    return False


def worker_pids(root: int | None = None) -> list[int]:
    """Render worker processes (Ray titles them ``ray::RenderWorker...``) under ``root``."""
    root = root or os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if title.startswith(WORKER_TITLE) and descends_from(int(d), root):
            out.append(int(d))
    return sorted(out)


class Monitor(threading.Thread):
    """Samples memory and pool counts every ``sample_s`` and kills a random render worker at
    exponentially distributed intervals of mean ``kill_every_s`` (0: never)."""

    def __init__(self, holder: dict, sample_s: float, kill_every_s: float, seed: int,
                 root: int | None = None, partial: str | None = None):
        super().__init__(daemon=True)
        self.partial = partial  # the samples so far go here as they come: a run cut short keeps them
        self.holder, self.sample_s, self.kill_every_s = holder, sample_s, kill_every_s
        self.root = root or os.getpid()
        self.rng = np.random.default_rng(seed)
        self.samples: list[dict] = []
        self.kills: list[dict] = []
        self.stop = threading.Event()
        self.t0 = time.time()

    def _next_kill(self, now: float) -> float:
        if self.kill_every_s <= 0:
            return float("inf")
        return now + float(self.rng.exponential(self.kill_every_s))

    def run(self) -> None:
        next_sample, next_kill = 0.0, self._next_kill(0.0)
        while not self.stop.wait(0.2):
            now = time.time() - self.t0
            if now >= next_kill and self.holder.get("pool") is not None:
                self._kill(now)
                next_kill = self._next_kill(now)
            if now >= next_sample:
                self.sample(now)
                next_sample = now + self.sample_s

    def _kill(self, now: float) -> None:
        pids = worker_pids(self.root)
        if not pids:
            return
        pid = int(self.rng.choice(pids))
        try:
            os.kill(pid, signal.SIGKILL)
            self.kills.append({"t_s": round(now, 1), "pid": pid})
        except ProcessLookupError:
            pass

    def sample(self, now: float) -> None:
        workers = [m for m in (rss_mb(p) for p in worker_pids(self.root)) if m is not None]
        pool = self.holder.get("pool")
        stats = dict(pool.stats) if pool is not None else {}
        self.samples.append({
            "t_s": round(now, 1), "learner_rss_mb": rss_mb(os.getpid()),
            "workers": len(workers), "worker_rss_mb_mean": float(np.mean(workers)) if workers else None,
            "worker_rss_mb_max": max(workers) if workers else None,
            "kills": len(self.kills), "received": self.holder.get("received", 0), **stats})
        if self.partial:
            tmp = Path(self.partial + ".tmp")
            tmp.write_text(json.dumps({"partial": True, "kills": self.kills, "samples": self.samples}))
            tmp.replace(self.partial)


def capture_pool(holder: dict) -> None:
    """Keep the Ray pool the run makes (to read its ``stats``) and count the rewards the
    learner receives from it, so that what it got can be checked against what it asked for."""
    from workers.pool import RenderPool

    init, collect = RenderPool.__init__, RenderPool.collect

    def init_and_keep(self, *a, **kw):
        init(self, *a, **kw)
        holder["pool"] = self

    def counted(self, ticket):
        res = collect(self, ticket)
        holder["received"] = holder.get("received", 0) + len(res.rewards)
        holder["nonfinite"] = holder.get("nonfinite", 0) + int((~np.isfinite(res.rewards)).sum())
        return res

    RenderPool.__init__, RenderPool.collect = init_and_keep, counted


def growth(samples: list[dict], key: str, warmup_frac: float) -> float | None:
    """Relative growth of ``key`` from the end of warm-up (median of the samples in the next
    tenth of the run) to the end (median of the last tenth); samples while the pool runs."""
    pts = [(s["t_s"], s[key]) for s in samples
           if s.get(key) is not None and s.get("requested") is not None and not s.get("after")]
    if len(pts) < 4:
        return None
    t_end = pts[-1][0]
    lo, hi = warmup_frac * t_end, (warmup_frac + 0.1) * t_end
    base = [v for t, v in pts if lo <= t <= hi] or [pts[len(pts) // 4][1]]
    last = [v for t, v in pts if t >= 0.9 * t_end] or [pts[-1][1]]
    return float(np.median(last) / np.median(base) - 1)


def summarise(mon: Monitor, holder: dict, report: dict | None, error: str | None,
              cfg, warmup_frac: float) -> dict:
    stats = dict(holder["pool"].stats) if holder.get("pool") is not None else {}
    per_step = cfg.renders_per_step
    steps = report["scores"]["steps"] if report else None
    received = holder.get("received", 0)
    return {
        "finished": report is not None, "error": error, "steps": steps,
        # a step redone (after a failure) asks for its renders again; a failed run loses the
        # steps since its checkpoint (None: see error)
        "steps_lost": (stats.get("requested", 0) - steps * per_step) / per_step if report else None,
        "elbo_finite_steps": int(np.isfinite(report["elbo_history"]).sum()) if report else None,
        "renders_expected": steps * per_step if steps is not None else None,
        "requested": stats.get("requested"), "completed": stats.get("completed"),
        "received": received, "nonfinite_rewards": holder.get("nonfinite", 0),
        "lost": stats.get("requested", 0) - stats.get("completed", 0),
        "doubled": max(0, received - stats.get("requested", 0)),
        "resent": stats.get("resent"), "restarts": stats.get("restarts"), "kills": len(mon.kills),
        "learner_rss_growth": growth(mon.samples, "learner_rss_mb", warmup_frac),
        "worker_rss_growth": growth(mon.samples, "worker_rss_mb_mean", warmup_frac),
        "learner_rss_mb_end": mon.samples[-1]["learner_rss_mb"] if mon.samples else None,
        "worker_rss_mb_end": mon.samples[-1]["worker_rss_mb_mean"] if mon.samples else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="training time (default 60)")
    ap.add_argument("--kill-every", type=float, default=60.0,
                    help="mean seconds between worker kills (0: none; default 60)")
    ap.add_argument("--sample-every", type=float, default=0.0,
                    help="seconds between memory samples (0: about 100 samples over the run)")
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of the run counted as warm-up")
    ap.add_argument("--config", default="configs/primitives.yaml")
    ap.add_argument("--name", default="soak", help="run name (runs/<name>/)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times and choices")
    ap.add_argument("--quick", action="store_true", help="0.5 minutes, a kill every 5 s")
    ap.add_argument("--json", help="write the samples and the summary here")
    args = ap.parse_args(argv)
    if args.quick:
        args.minutes, args.kill_every = 0.5, 5.0
    os.environ.setdefault("LP_NUM_THREADS", "0")
    from learners import mesh_train
    from learners.config import load

    over = [f"name={args.name}", f"train.time_limit_s={args.minutes * 60}", "train.steps=1000000000",
            "pool.backend=ray", "pool.max_restarts=1000000", "eval.n_test=50", "eval.n_obj=0",
            "eval.refine.steps=0", *args.overrides]
    _, cfg = load(args.config, over)
    holder: dict = {}
    capture_pool(holder)
    sample_s = args.sample_every or max(1.0, args.minutes * 60 / 100)
    mon = Monitor(holder, sample_s, args.kill_every, args.seed,
                  partial=args.json and args.json + ".partial")
    mon.start()
    report, error = None, None
    try:
        report = mesh_train.run(cfg)
    except Exception as e:  # the soak reports a failed run rather than dying with it
        error = f"{type(e).__name__}: {e}"
    finally:
        mon.stop.set()
        mon.join()
        mon.sample(time.time() - mon.t0)
        mon.samples[-1]["after"] = True  # the pool is closed: not part of the growth
    summary = summarise(mon, holder, report, error, cfg, args.warmup)
    cols = ["t_s", "learner_rss_mb", "workers", "worker_rss_mb_mean", "worker_rss_mb_max",
            "kills", "requested", "completed", "resent", "restarts"]
    every = max(1, len(mon.samples) // 12)
    print(table(mon.samples[::every] + mon.samples[-1:], cols))
    print()
    print(table([summary], ["finished", "steps", "steps_lost", "renders_expected", "requested",
                            "completed", "received", "lost", "doubled", "resent", "restarts", "kills"]))
    print(table([summary], ["learner_rss_growth", "worker_rss_growth", "learner_rss_mb_end",
                            "worker_rss_mb_end", "nonfinite_rewards"]))
    if error:
        print(f"the run failed: {error}")
    write_json(args.json, {"machine": machine(), "args": vars(args), "summary": summary,
                           "kills": mon.kills, "samples": mon.samples})
    if args.json:
        Path(args.json + ".partial").unlink(missing_ok=True)
    ok = report is not None and summary["lost"] == 0 and summary["doubled"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
