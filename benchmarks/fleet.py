"""How the render fleet scales: renders/s through ``RenderPool`` against ideal scaling.

- "stand-in" rows: orchestration alone. Each request sleeps 20-50 ms (``workers.standin``: no
  CPU), so W workers could at best finish W requests per 35 ms; efficiency is the measured
  renders/s over that ideal. 1 to 64 workers on a local Ray (0.01 CPU each, so that 64 fit).
- "bare-ray" rows (``--bare``): the same requests to minimal Ray actors that only sleep, with
  no pool: what Ray itself allows on this machine, so that the pool's own cost is the gap
  between the two rows.
- "gl" rows: the real renderer (64x64 meshes), 1..N workers on a local Ray and over a
  simulated two-node cluster (Ray's ``cluster_utils``, one worker per node); efficiency is
  renders/s over W times the one-worker local figure.

Each row is timed after the fleet has started and warmed up. A step is 4 requests per worker;
the next step is submitted before the current one is collected, as the learner overlaps its
micro-batches, so renders/s is what a learner consumes.

    python benchmarks/fleet.py [--quick] [--json PATH] [--workers 1,2,4,...] [--bare] [--gl-workers 1,2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json  # noqa: E402
from workers import cluster  # noqa: E402
from workers.pool import PoolConfig, RenderPool  # noqa: E402
from workers.standin import ACTION_DIM, STANDIN_ID  # noqa: E402
from workers.worker import EnvSpec  # noqa: E402

DELAY_S, JITTER_S = 0.02, 0.03  # a request sleeps 20-50 ms: 35 ms on average
COLS = ["env", "nodes", "workers", "renders_per_s", "ideal_per_s", "efficiency", "step_p50_s",
        "step_p99_s", "straggler_resends", "start_s"]


def _steps(pool: RenderPool, actions, targets, steps: int) -> list[float]:
    """Seconds between consecutive collected steps, with the next step submitted before the
    current one is collected (as the learner overlaps its micro-batches)."""
    times = []
    ticket = pool.submit(actions, targets=targets)
    t0 = time.perf_counter()
    for i in range(steps):
        nxt = pool.submit(actions, targets=targets) if i + 1 < steps else None
        pool.collect(ticket)
        times.append(time.perf_counter() - t0)
        t0, ticket = time.perf_counter(), nxt
    return times


def measure(spec: EnvSpec, cfg: PoolConfig, actions, targets, steps: int, warmup: int = 2) -> dict:
    t0 = time.perf_counter()
    pool = RenderPool(spec, cfg)
    start_s = time.perf_counter() - t0
    try:
        _steps(pool, actions, targets, warmup)
        before = pool.stats["straggler_resends"]
        times = _steps(pool, actions, targets, steps)
        nodes = len({s.info.get("node_id") for s in pool.slots})
        resends = pool.stats["straggler_resends"] - before
    finally:
        pool.close()
    return {"workers": len(pool.slots) or cfg.workers, "nodes": nodes,
            "renders_per_s": len(actions) * steps / sum(times),
            "step_p50_s": statistics.median(times),
            "step_p99_s": float(np.percentile(times, 99)), "straggler_resends": resends,
            "start_s": start_s}


def standin_rows(counts: list[int], steps: int, chunk: int = 16) -> list[dict]:
    rows = []
    spec = EnvSpec(STANDIN_ID, {"delay_s": DELAY_S, "jitter_s": JITTER_S})
    for w in counts:
        n = w * 4 * chunk
        a = np.zeros((n, ACTION_DIM), np.float32)
        t = np.zeros((n, 4, 4, 3), np.uint8)
        cfg = PoolConfig(workers=w, chunk=chunk, worker_cpus=0.01, start_timeout_s=600)
        row = {"env": "stand-in"} | measure(spec, cfg, a, t, steps)
        row["ideal_per_s"] = w * chunk / (DELAY_S + JITTER_S / 2)
        row["efficiency"] = row["renders_per_s"] / row["ideal_per_s"]
        rows.append(row)
        print(table([row], COLS), flush=True)
    return rows


def _bare_actor():
    import ray

    @ray.remote(num_cpus=0.01)
    class Sleeper:
        """What a stand-in worker does, without the pool's worker or gymnasium around it."""

        def evaluate(self, request_id, actions, targets=None, return_images=False):
            time.sleep(DELAY_S + JITTER_S * random.random())
            return {"request_id": request_id, "rewards": np.zeros(len(actions)), "renders": len(actions)}

    return Sleeper


def _feed(actors, n: int, chunk: int, queue: int) -> float:
    """Send ``n`` requests of ``chunk`` renders, ``queue`` in flight per actor, taking replies
    as they come; the seconds it took."""
    import ray

    a, t = np.zeros((chunk, ACTION_DIM), np.float32), np.zeros((chunk, 4, 4, 3), np.uint8)
    sent, done, owner, load = 0, 0, {}, [0] * len(actors)
    t0 = time.perf_counter()
    while done < n:
        for k, actor in enumerate(actors):
            while load[k] < queue and sent < n:
                owner[actor.evaluate.remote(sent, a, targets=t)] = k
                load[k], sent = load[k] + 1, sent + 1
        ready, _ = ray.wait(list(owner), num_returns=1, timeout=1.0)
        for ref in ready:
            ray.get(ref)
            load[owner.pop(ref)] -= 1
            done += 1
    return time.perf_counter() - t0


def bare_row(w: int, steps: int, chunk: int = 16, queue: int = 2) -> dict:
    """``w`` sleeping actors fed ``queue`` requests each at a time: the stand-in rows' load,
    straight through Ray (after the same 2 steps of warm-up)."""
    import ray

    actors = [_bare_actor().remote() for _ in range(w)]
    _feed(actors, w * 4 * 2, chunk, queue)
    elapsed = _feed(actors, w * 4 * steps, chunk, queue)
    for actor in actors:
        ray.kill(actor)
    ideal = w * chunk / (DELAY_S + JITTER_S / 2)
    row = {"env": "bare-ray", "nodes": 1, "workers": w, "renders_per_s": w * 4 * steps * chunk / elapsed,
           "ideal_per_s": ideal, "step_p50_s": elapsed / steps, "step_p99_s": None,
           "straggler_resends": 0, "start_s": None}
    row["efficiency"] = row["renders_per_s"] / ideal
    print(table([row], COLS), flush=True)
    return row


def _gl_batch(n: int, seed: int = 0):
    from envs import spaces
    from gen3d import geometry as geo

    rng = np.random.default_rng(seed)
    y = geo.real_sph_harm(geo.ico_rays(), 2)
    lengths = np.clip(0.7 + rng.normal(0, 0.1, (n, 9)) @ y.T, 0.3, 1.2)
    a = spaces.pack(lengths, translation=rng.uniform(-0.3, 0.3, (n, 3)),
                    colours=rng.uniform(0.2, 1, (n, 3)))
    return a, rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)


def gl_rows(counts: list[int], steps: int, chunk: int = 64, cpus: float = 0.5) -> list[dict]:
    spec = EnvSpec(kwargs={"width": 64, "height": 64, "sigma": 0.1})
    rows, one = [], None
    for w in counts:
        a, t = _gl_batch(w * 4 * chunk)
        cfg = PoolConfig(workers=w, chunk=chunk, worker_cpus=cpus, start_timeout_s=300)
        row = {"env": "gl"} | measure(spec, cfg, a, t, steps)
        one = one or row["renders_per_s"]
        row["ideal_per_s"] = w * one
        row["efficiency"] = row["renders_per_s"] / row["ideal_per_s"]
        rows.append(row)
        print(table([row], COLS), flush=True)
    return rows


def two_node_gl_row(steps: int, one_worker: float, chunk: int = 64) -> dict:
    """One GL worker on each of two simulated nodes (1 CPU each; the head has none)."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for name in ("machine_a", "machine_b"):
        c.add_node(num_cpus=1, resources={name: 1})
    c.wait_for_nodes()
    c.connect()
    try:
        a, t = _gl_batch(2 * 4 * chunk)
        cfg = PoolConfig(workers=2, chunk=chunk, worker_cpus=1, start_timeout_s=300)
        row = {"env": "gl"} | measure(EnvSpec(kwargs={"width": 64, "height": 64, "sigma": 0.1}),
                                      cfg, a, t, steps)
    finally:
        ray.shutdown()
        c.shutdown()
    row["ideal_per_s"] = 2 * one_worker
    row["efficiency"] = row["renders_per_s"] / row["ideal_per_s"]
    print(table([row], COLS), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and steps")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--workers", default=None, help="stand-in fleet sizes (default 1..64)")
    ap.add_argument("--gl-workers", default="1,2", help="GL fleet sizes on the local Ray")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per row (default 50; "
                    "--quick 5): at 32 workers a step takes ~0.15 s, and 20 steps varied by 0.03")
    ap.add_argument("--bare", action="store_true", help="also time bare Ray actors under the "
                    "same load (bare-ray rows)")
    ap.add_argument("--no-cluster", action="store_true", help="skip the two-node GL row")
    args = ap.parse_args()
    steps = args.steps or (5 if args.quick else 50)
    counts = [int(x) for x in (args.workers or ("1,4,16" if args.quick else "1,2,4,8,16,32,64")).split(",")]
    cluster.start(cluster.RayConfig(num_cpus=2))
    rows = standin_rows(counts, steps)
    if args.bare:
        rows += [bare_row(w, steps) for w in counts]
    gl = gl_rows([int(x) for x in args.gl_workers.split(",")], steps)
    rows += gl
    if not args.no_cluster:
        rows.append(two_node_gl_row(steps, gl[0]["renders_per_s"]))
    print()
    print(table(rows, COLS))
    write_json(args.json, {"machine": machine(), "command": " ".join(sys.argv), "rows": rows})


if __name__ == "__main__":
    main()
