"""Renders per second through gen3d's renderer API (``MeshRenderer.render_rays``, the copy
into numpy included): one mesh per call ("single") against B meshes per atlas call ("atlas"),
at 64² and 128², B in {1, 64, 256}. Fresh random ray lengths, poses and colours every call.
Atlas rows come twice: into fresh arrays, and with ``reuse=True`` (read-back memory kept by
the renderer). "worker" rows are what a render worker delivers: a request of B actions and
target indices in, B rewards out (``RenderWorker.evaluate`` without Ray: target handling and
the reward included), with the reward reduced on the GL side ("gl") or in numpy. The
one-process modes take turns, one call each, ``--rounds`` times, and report the median call:
on a machine shared with other jobs the calls compared ran moments apart. ``--procs 4`` adds
rows of 4 processes, each with its own GL context, drawing at once for ``--seconds`` (as render
workers sharing a GPU do): their summed renders/s.

    python benchmarks/render.py [--quick] [--json PATH] [--rounds N] [--procs 1,4] [--seconds S]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json
from envs import spaces
from envs.renderer import MeshRenderer
from gen3d import geometry as geo

N_TARGETS = 1024  # the worker's target set; each request indexes B of them


def random_meshes(rng, b: int, n_sets: int = 4):
    y = geo.real_sph_harm(geo.ico_rays(), 3)
    sets = []
    for _ in range(n_sets):
        lengths = np.clip(0.7 + rng.normal(0, 0.1, (b, y.shape[1])) @ y.T, 0.2, 1.4).astype(np.float32)
        sets.append((lengths, rng.uniform(-np.pi, np.pi, (b, 3)).astype(np.float32),
                     rng.uniform(-0.3, 0.3, (b, 3)).astype(np.float32),
                     rng.uniform(0, 1, (b, 162, 3)).astype(np.float32)))
    return sets


def measure(r: MeshRenderer, sets, per_call: int, seconds: float, reuse: bool = False) -> float:
    """Meshes per second, cycling through pre-made parameter sets of B meshes."""
    b = len(sets[0][0])
    done, i = 0, 0
    t0 = time.perf_counter()
    while True:
        L, R, T, C = sets[i % len(sets)]
        for s in range(0, b, per_call):
            r.render_rays(L[s:s + per_call], R[s:s + per_call], T[s:s + per_call], C[s:s + per_call],
                          reuse=reuse)
        done += b
        i += 1
        dt = time.perf_counter() - t0
        if dt > seconds and i >= 2:
            return done / dt


class WorkerBench:
    """A ``RenderWorker`` (no Ray) with a target set of renders, answering requests of B
    actions with target indices, as the learner sends them."""

    def __init__(self, res: int, b: int, reward: str, seed: int = 0):
        from workers.worker import EnvSpec, RenderWorker

        rng = np.random.default_rng(seed)
        self.sets = [spaces.pack(L, R, T, C) for L, R, T, C in random_meshes(rng, b)]
        r = MeshRenderer(res, res, max_batch=b)
        targets = np.concatenate([r.render_rays(*m).rgb for m in random_meshes(rng, b, -(-N_TARGETS // b))])
        r.release()
        self.idx = [rng.integers(0, len(targets), b) for _ in self.sets]
        self.worker = RenderWorker(EnvSpec(kwargs={"width": res, "height": res, "reward": reward}),
                                   targets[:N_TARGETS])
        self.evaluate(0)  # warm-up: shaders, target upload

    def evaluate(self, i: int) -> None:
        reply = self.worker.evaluate(i, self.sets[i % len(self.sets)], target_idx=self.idx[i % len(self.idx)])
        if "error" in reply:
            raise RuntimeError(reply["error"])

    def measure(self, seconds: float) -> float:
        b = len(self.sets[0])
        done, i = 0, 0
        t0 = time.perf_counter()
        while True:
            self.evaluate(i)
            done += b
            i += 1
            dt = time.perf_counter() - t0
            if dt > seconds and i >= 2:
                return done / dt


def _worker(mode: str, res: int, b: int, seconds: float, seed: int, barrier, out) -> None:
    if mode == "worker":
        w = WorkerBench(res, b, "gl", seed)
        barrier.wait()
        out.put(w.measure(seconds))
        return
    r = MeshRenderer(res, res, max_batch=b)
    sets = random_meshes(np.random.default_rng(seed), b)
    r.render_rays(*sets[0], reuse=True)
    barrier.wait()
    out.put(measure(r, sets, b, seconds, reuse=True))
    r.release()


def measure_procs(res: int, b: int, seconds: float, procs: int, mode: str = "atlas") -> float:
    """Summed renders/s of ``procs`` processes drawing at once (spawned: a GL context must not
    cross a fork); ``mode`` "worker": each answers worker requests."""
    mp = multiprocessing.get_context("spawn")
    barrier, out = mp.Barrier(procs), mp.Queue()
    ps = [mp.Process(target=_worker, args=(mode, res, b, seconds, i, barrier, out)) for i in range(procs)]
    for p in ps:
        p.start()
    rates = [out.get(timeout=120 + 4 * seconds) for _ in ps]
    for p in ps:
        p.join()
    return float(sum(rates))


def one_process_rows(res: int, b: int, rounds: int, rng) -> tuple[list[dict], dict]:
    """Every one-process mode of (res, B): one call of each in turn, ``rounds`` times, so that
    calls compared were made moments apart under the same load; renders/s from the median
    call ("single": B calls of one mesh)."""
    r = MeshRenderer(res, res, max_batch=b)
    sets = random_meshes(rng, b)
    r.render_rays(*sets[0])  # warm-up: shader compile, first allocation
    workers = {reward: WorkerBench(res, b, reward) for reward in ("gl", "numpy")}

    def single(i: int) -> None:
        m = sets[i % len(sets)]
        for s in range(b):
            r.render_rays(*(x[s:s + 1] for x in m))

    calls = {("single", False, None): single,
             ("atlas", False, None): lambda i: r.render_rays(*sets[i % len(sets)]),
             ("atlas", True, None): lambda i: r.render_rays(*sets[i % len(sets)], reuse=True)}
    for reward, w in workers.items():
        calls[("worker", None, reward)] = w.evaluate
    wall: dict = {k: [] for k in calls}
    cpu: dict = {k: [] for k in calls}
    for i in range(rounds):
        for k, fn in calls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(i)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    gl = r.gl
    r.release()
    rows = [{"res": res, "batch": b, "mode": k[0], "reuse": k[1], "reward": k[2], "procs": 1,
             "renders_per_s": b / float(np.median(wall[k])),
             "renders_per_cpu_s": b / float(np.median(cpu[k])),
             "call_ms": [round(1e3 * x, 2) for x in wall[k]],
             "call_cpu_ms": [round(1e3 * x, 2) for x in cpu[k]]} for k in calls]
    return rows, gl


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds, 0.3 s a multi-process row")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--seconds", type=float, default=None, help="time per multi-process row")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--res", default="64,128")
    ap.add_argument("--procs", default="1", help="process counts for the multi-process rows")
    ap.add_argument("--rounds", type=int, default=None,
                    help="calls of each one-process mode, in turn (default 20, 3 with --quick)")
    args = ap.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 2.0)
    rounds = max(1, args.rounds or (3 if args.quick else 20))
    rng = np.random.default_rng(0)
    rows, gl = [], None
    for res in (int(x) for x in args.res.split(",")):
        for b in (int(x) for x in args.batches.split(",")):
            new, gl = one_process_rows(res, b, rounds, rng)
            rows += new
            for procs in (int(x) for x in args.procs.split(",")):
                if procs > 1:
                    for mode, reuse, reward in (("atlas", True, None), ("worker", None, "gl")):
                        rows.append({"res": res, "batch": b, "mode": mode, "reuse": reuse,
                                     "reward": reward, "procs": procs,
                                     "renders_per_s": measure_procs(res, b, seconds, procs, mode)})
    print(table(rows, ["res", "batch", "mode", "reuse", "reward", "procs", "renders_per_s",
                       "renders_per_cpu_s"]))
    ratios = summary(rows)
    out = {"machine": machine(gl), "rounds": rounds, "rows": rows, "worker_over_atlas": ratios}
    write_json(args.json, out)
    return out


def summary(rows: list[dict]) -> list[dict]:
    """Best atlas over best single per resolution, and the worker's rewards/s over the atlas's
    renders/s (reuse) per (res, B): the median over rounds of the ratio of the two calls made
    moments apart, in wall time and in this process's CPU time (with ``LP_NUM_THREADS=0``
    llvmpipe draws in the calling thread, so CPU time is what a call costs, whatever else the
    machine runs)."""
    def row(res, b, mode, **kw):
        got = [r for r in rows if r["res"] == res and r["batch"] == b and r["mode"] == mode
               and r["procs"] == 1 and all(r[k] == v for k, v in kw.items())]
        return got[0] if got else None

    ratios = []
    for res in sorted({r["res"] for r in rows}):
        single = max(r["renders_per_s"] for r in rows if r["res"] == res and r["mode"] == "single")
        best = max(r["renders_per_s"] for r in rows
                   if r["res"] == res and r["mode"] == "atlas" and r["procs"] == 1)
        print(f"{res}²: best atlas / best single (one process) = {best / single:.2f}x")
        for b in sorted({r["batch"] for r in rows if r["res"] == res}):
            atlas, worker = row(res, b, "atlas", reuse=True), row(res, b, "worker", reward="gl")
            if not (atlas and worker):
                continue
            out = {"res": res, "batch": b}
            for clock in ("call_ms", "call_cpu_ms"):
                paired = np.array(atlas[clock]) / np.maximum(np.array(worker[clock]), 1e-6)
                out[clock.replace("call", "worker_over_atlas")] = float(np.median(paired))
            ratios.append(out)
            print(f"{res}², B={b}: worker (GL rewards) / atlas (reuse), median of paired calls: "
                  f"{out['worker_over_atlas_ms']:.2f} in wall time, "
                  f"{out['worker_over_atlas_cpu_ms']:.2f} in CPU time")
    return ratios

if __name__ == "__main__":
    main()
