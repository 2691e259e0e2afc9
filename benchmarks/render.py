"""Renders per second through gen3d's renderer API (``MeshRenderer.render_rays``, the copy
into numpy included): one mesh per call ("single") against B meshes per atlas call ("atlas"),
at 64² and 128², B in {1, 64, 256}. Fresh random ray lengths, poses and colours every call.
Atlas rows come twice: into fresh arrays, and with ``reuse=True`` (read-back memory kept by
the renderer). ``--procs 4`` adds rows of 4 processes, each with its own GL context and
renderer, drawing at once (as render workers sharing a GPU do): their summed renders/s.

    python benchmarks/render.py [--quick] [--json PATH] [--seconds S] [--procs 1,4]
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
from envs.renderer import MeshRenderer
from gen3d import geometry as geo


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


def _worker(res: int, b: int, seconds: float, seed: int, barrier, out) -> None:
    r = MeshRenderer(res, res, max_batch=b)
    sets = random_meshes(np.random.default_rng(seed), b)
    r.render_rays(*sets[0], reuse=True)
    barrier.wait()
    out.put(measure(r, sets, b, seconds, reuse=True))
    r.release()


def measure_procs(res: int, b: int, seconds: float, procs: int) -> float:
    """Summed renders/s of ``procs`` processes drawing at once (spawned: a GL context must not
    cross a fork)."""
    mp = multiprocessing.get_context("spawn")
    barrier, out = mp.Barrier(procs), mp.Queue()
    ps = [mp.Process(target=_worker, args=(res, b, seconds, i, barrier, out)) for i in range(procs)]
    for p in ps:
        p.start()
    rates = [out.get(timeout=120 + 4 * seconds) for _ in ps]
    for p in ps:
        p.join()
    return float(sum(rates))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short timings (0.3 s a row)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--seconds", type=float, default=None, help="time per row")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--res", default="64,128")
    ap.add_argument("--procs", default="1", help="process counts for the multi-process rows")
    args = ap.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 2.0)
    rng = np.random.default_rng(0)
    rows, gl = [], None
    for res in (int(x) for x in args.res.split(",")):
        for b in (int(x) for x in args.batches.split(",")):
            r = MeshRenderer(res, res, max_batch=b)
            gl = r.gl
            sets = random_meshes(rng, b)
            r.render_rays(*sets[0])  # warm-up: shader compile, first allocation
            for mode, per_call, reuse in (("single", 1, False), ("atlas", b, False), ("atlas", b, True)):
                rows.append({"res": res, "batch": b, "mode": mode, "reuse": reuse, "procs": 1,
                             "renders_per_s": measure(r, sets, per_call, seconds, reuse)})
            r.release()
            for procs in (int(x) for x in args.procs.split(",")):
                if procs > 1:
                    rows.append({"res": res, "batch": b, "mode": "atlas", "reuse": True, "procs": procs,
                                 "renders_per_s": measure_procs(res, b, seconds, procs)})
    print(table(rows, ["res", "batch", "mode", "reuse", "procs", "renders_per_s"]))
    for res in {r["res"] for r in rows}:
        single = max(r["renders_per_s"] for r in rows if r["res"] == res and r["mode"] == "single")
        best = max(r["renders_per_s"] for r in rows
                   if r["res"] == res and r["mode"] == "atlas" and r["procs"] == 1)
        print(f"{res}²: best atlas / best single (one process) = {best / single:.2f}x")
    out = {"machine": machine(gl), "rows": rows}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
