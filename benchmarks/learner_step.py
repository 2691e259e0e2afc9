"""The learner's own step time, with rendering taken out: the main job's forward, backward,
clipping and optimiser step (``MeshStep``, ``make_optimiser``, ``clipped_step``, self-imitation
with the config's search, its soft renders included; the camera's mirrors and colour orders
when the config shows them; no schedules), fed rewards by a stand-in
pool that answers at once (a cheap function of the actions, computed on the host as the real
pool's replies are). What the learner costs at each batch size and number of micro-batches
on a device, so that a run whose learner is the bottleneck (it waits little for renders) can
be sized: renders/s it can take = batch x samples / step time.

    python benchmarks/learner_step.py [--config configs/primitives_gpu.yaml] [--device cuda] \
        [--batches 128,256] [--microbatches 1,2,4] [--steps 40] [--profile] [--json PATH]

``--profile`` adds, for the first combination, PyTorch's profiler table of the operators that
take the most time (on a GPU: CUDA time and kernel launches).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json  # noqa: E402
from gen3d import estimators  # noqa: E402
from gen3d.image_symmetries import group  # noqa: E402
from gen3d.mesh_model import MeshModel  # noqa: E402
from learners.config import load  # noqa: E402
from learners.device import resolve_device  # noqa: E402
from learners.mesh_optim import clipped_step, make_optimiser  # noqa: E402
from learners.mesh_step import MeshStep, RewardSource  # noqa: E402
from learners.mesh_train import make_replay  # noqa: E402


class StandInPool:
    """Answers each request at once: minus the squared norm of each action (host arrays in,
    host rewards out, as a render pool's)."""

    stats: dict = {}

    def submit(self, flat: np.ndarray, target_idx: np.ndarray):
        return -(flat.astype(np.float64) ** 2).sum(1)

    def collect(self, ticket):
        return SimpleNamespace(rewards=ticket, wait_s=0.0)

    def close(self) -> None:
        pass


def learner(cfg, dev, batch: int, microbatches: int):
    """The model, optimiser and step of ``cfg`` at this batch split, on ``dev``: a function
    that runs one optimiser step on random images, and the model it trains."""
    tc = cfg.train
    model = MeshModel(cfg.model, cfg.data.size).to(dev)
    est = estimators.build(cfg.estimator.name, **cfg.estimator.kwargs).to(dev)
    opt = make_optimiser(model, tc)
    n = 1024  # replay slots: images are drawn from this many
    replay = make_replay(cfg, model, est, n, dev)
    sym = group(model.decoder, tc.mirror_images, tc.colour_orders)
    step_fn = MeshStep(model, est, RewardSource(StandInPool()), microbatches, replay,
                       tc.self_imitation, symmetries=sym)
    gen = torch.Generator(device=dev).manual_seed(0)
    rng = np.random.default_rng(0)
    size = cfg.data.size
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)

    def one(step: int) -> None:
        idx = rng.integers(n, size=batch)
        opt.zero_grad(set_to_none=True)
        step_fn(images[idx], idx, tc.samples, gen, step)
        clipped_step(opt, model, tc)

    return one, model


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_steps(one, dev, steps: int, warmup: int) -> float:
    """Median seconds of one step over ``steps`` after ``warmup``."""
    for i in range(warmup):
        one(i + 1)
    sync(dev)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        one(warmup + i + 1)
        sync(dev)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def profile_table(one, dev, steps: int = 5) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(steps):
            one(1000 + i)
        sync(dev)
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=15)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/primitives_gpu.yaml")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--batches", default="", help="batch sizes (default: the config's)")
    ap.add_argument("--microbatches", default="", help="micro-batch counts (default: the config's)")
    ap.add_argument("--steps", type=int, default=40, help="timed steps a row (the median is kept)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="profiler table for the first row")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    _, cfg = load(args.config, args.overrides)
    dev = resolve_device(args.device)
    torch.set_num_threads(cfg.train.torch_threads)
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [cfg.train.batch]
    splits = ([int(m) for m in args.microbatches.split(",")] if args.microbatches
              else [cfg.train.microbatches])
    rows = []
    for b in batches:
        for mb in splits:
            one, _ = learner(cfg, dev, b, mb)
            s = time_steps(one, dev, args.steps, args.warmup)
            rows.append({"batch": b, "samples": cfg.train.samples, "microbatches": mb,
                         "step_ms": 1000 * s, "steps_per_s": 1 / s,
                         "renders_per_s": b * cfg.train.samples / s})
            if args.profile and len(rows) == 1:
                print(profile_table(one, dev))
    print(table(rows, ["batch", "samples", "microbatches", "step_ms", "steps_per_s", "renders_per_s"]))
    write_json(args.json, {"machine": machine(), "config": args.config, "device": str(dev),
                           "overrides": args.overrides, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
