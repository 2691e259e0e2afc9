"""Where one batched ``render_rays`` call spends its time: each phase timed alone, ending in a
``finish`` so that GPU work is counted (milliseconds per call). It reaches into the renderer's
GL objects on purpose: the phases are not public API.

    python benchmarks/render_profile.py [--json PATH] [--batches 256,1024] [--res 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json
from envs.renderer import MeshRenderer
from envs.validate import check_array, check_colours, check_pose
from gen3d import geometry as geo


def ms_per_call(f, n: int = 30) -> float:
    f()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1e3


def profile(res: int, b: int, rng: np.random.Generator) -> dict:
    r = MeshRenderer(res, res, max_batch=b)
    L, R, T, C = geo.random_ray_meshes(rng, b)
    ctx = r.ctx
    w, h = r._used(b)
    rgba = np.empty((h, w, 4), np.uint8)

    def draw():
        with ctx:
            r._begin(b)
            r.ray_vao.render(instances=b)
            ctx.finish()

    def upload():
        with ctx:
            r._len_tex.write(L.tobytes(), viewport=(0, 0, geo.N_RAYS, b))
            r._vcol_tex.write(C.tobytes(), viewport=(0, 0, geo.N_RAYS, b))
            ctx.finish()

    def read():
        with ctx:
            r.fbo.read_into(rgba, viewport=(0, 0, w, h), components=4)

    def checks():
        check_array("lengths", L, (None, geo.N_RAYS), nonneg=True)
        check_pose(b, R, T, None)
        check_colours(b, C, (geo.N_RAYS, geo.N_FACES))

    row = {"res": res, "batch": b,
           "full_ms": ms_per_call(lambda: r.render_rays(L, R, T, C)),
           "full_reuse_ms": ms_per_call(lambda: r.render_rays(L, R, T, C, reuse=True)),
           "draw_ms": ms_per_call(draw), "upload_ms": ms_per_call(upload),
           "read_rgba_ms": ms_per_call(read), "checks_ms": ms_per_call(checks)}
    row["renders_per_s"] = b / row["full_reuse_ms"] * 1e3
    row["draw_bound_per_s"] = b / row["draw_ms"] * 1e3
    r.release()
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--res", default="64")
    ap.add_argument("--batches", default="256,1024")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = [profile(res, b, rng) for res in map(int, args.res.split(","))
            for b in map(int, args.batches.split(","))]
    print(table(rows, list(rows[0])))
    out = {"machine": machine(), "rows": rows}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
