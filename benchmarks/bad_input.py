"""How fast bad input to the renderer, the environments and the data loaders is answered, and
what the input checks cost on the hot path.

Each case is run as a user would meet it; the table gives the outcome (the error's type, or
what happened instead: a torn cache made again, a large vector env that renders), the seconds
until it, and the start of the message. The second table times the checks of one
``render_rays`` call against the whole call.

    python benchmarks/bad_input.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json


def _run(name: str, fn) -> dict:
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            what = fn()
            outcome, msg = "ok", str(what)
        except Exception as e:
            outcome, msg = type(e).__name__, str(e)
    if caught and outcome == "ok":
        outcome, msg = "warned, ok", str(caught[0].message)
    return {"case": name, "outcome": outcome, "seconds": time.perf_counter() - t0, "message": msg[:90]}


def renderer_cases(quick: bool) -> list[tuple]:
    import gymnasium as gym

    import envs
    from envs import mesh_env, spaces
    from envs.renderer import MeshRenderer

    r = MeshRenderer(64, 64, max_batch=64)
    good = np.full((1, 162), 0.8, np.float32)
    act = spaces.pack(good)[0]
    act[spaces.SLICES["translation"]][0] = 1e30

    def env_step():
        env = gym.make(envs.ENV_ID, target_source=mesh_env.ImageTargets(np.zeros((1, 64, 64, 3), np.uint8)))
        env.reset(seed=0)
        return env.step(act)

    def big_vector_env(n: int):
        venv = gym.make_vec(envs.ENV_ID, num_envs=n, vectorization_mode="vector_entry_point")
        venv.reset(options={"targets": np.zeros((n, 64, 64, 3), np.uint8)})
        a = np.repeat(spaces.pack(good), n, 0)
        rewards = venv.step(a)[1]
        return f"{n} rewards, finite: {np.isfinite(rewards).all()}, drawn {venv.renderer.max_batch} at a time"

    cases = [
        ("render_rays lengths=1e6", lambda: r.render_rays(np.full((1, 162), 1e6, np.float32))),
        ("render_rays translation=1e30", lambda: r.render_rays(good, translation=np.full((1, 3), 1e30))),
        ("render_rays scale=1e30", lambda: r.render_rays(good, scale=np.full(1, 1e30))),
        ("env step, action off the bounds", env_step),
        ("gym.make sigma=NaN", lambda: gym.make(envs.ENV_ID, sigma=float("nan"))),
        ("gym.make width=-3", lambda: gym.make(envs.ENV_ID, width=-3)),
        ("gym.make render_mode=human", lambda: gym.make(envs.ENV_ID, render_mode="human")),
        ("MeshRenderer(max_batch=20000)", lambda: MeshRenderer(64, 64, max_batch=20000)),
    ]
    if not quick:
        cases.append(("vector env, 20,000 envs: reset + step", lambda: big_vector_env(20000)))
    return cases


def data_cases(tmp: Path, quick: bool) -> list[tuple]:
    import gzip

    from gen3d.data import vol_files
    from gen3d.data.volumes import VolumeDataConfig, load_volumes

    files = {"dims.binvox": b"#binvox 1\ndim a b c\ndata\n\x00\x40",
             "zero.binvox": b"#binvox 1\ndim 0 0 0\ndata\n",
             "cut.binvox": b"#binvox 1\ndim 32 32 32\ndata\n\x00\xff\x01",
             "header.idx": bytes([0, 0, 8, 3, 0, 0]),
             "plain.idx.gz": bytes([0, 0, 8, 1, 0, 0, 0, 1, 7])}
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    (tmp / "cut.idx.gz").write_bytes(gzip.compress(bytes(range(256)) * 64)[:100])
    cfg = VolumeDataConfig(n_train=200, n_test=20, cache_dir=str(tmp / "cache"))
    load_volumes(cfg)

    def torn_cache():
        for f in (tmp / "cache").glob("*-train-*.npz"):
            f.write_bytes(f.read_bytes()[:1000])
        return f"{len(load_volumes(cfg)[0])} volumes made again"

    cases = [(f"read {n}", lambda n=n: (vol_files.read_binvox if n.endswith("binvox") else
                                        vol_files.read_idx)(tmp / n)) for n in (*files, "cut.idx.gz")]
    return cases + [("torn volume cache (200 primitives)", torn_cache)]


def check_cost(b: int, n: int = 30) -> dict:
    """Milliseconds per call of the input checks alone and of a whole ``render_rays``."""
    from envs import spaces
    from envs.renderer import MeshRenderer
    from envs.validate import check_array, check_at_most, check_colours, check_pose
    from gen3d import geometry as geo

    rng = np.random.default_rng(0)
    lengths, _, trans, cols = geo.random_ray_meshes(rng, b)
    actions = spaces.pack(lengths, rng.uniform(-3, 3, (b, 3)), trans, cols)
    r = MeshRenderer(64, 64, max_batch=b)
    parts = spaces.unpack(actions)

    def per_call(f) -> float:
        f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n * 1e3

    def renderer_checks():  # what render_rays checks before it draws
        ln = check_array("lengths", parts["lengths"], (None, geo.N_RAYS), nonneg=True)
        check_at_most("lengths", ln, geo.MAX_LENGTH, "")
        check_pose(b, parts["rotation"], parts["translation"], None)
        check_colours(b, parts["colours"], (geo.N_RAYS, geo.N_FACES))

    actions_ms = per_call(lambda: spaces.check_actions(actions))
    renderer_ms = per_call(renderer_checks)
    render = per_call(lambda: r.render_rays(**parts, reuse=True))
    r.release()
    return {"batch": b, "check_actions_ms": actions_ms, "renderer_checks_ms": renderer_ms,
            "render_rays_ms": render, "step_checks_share": (actions_ms + renderer_ms) / render}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the 20,000-env vector env")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_run(name, fn) for name, fn in renderer_cases(args.quick) + data_cases(Path(tmp), args.quick)]
    print(table(rows, ["case", "outcome", "seconds", "message"]))
    costs = [check_cost(b) for b in ((256,) if args.quick else (256, 1024, 4096))]
    print()
    print(table(costs, ["batch", "check_actions_ms", "renderer_checks_ms", "render_rays_ms",
                        "step_checks_share"]))
    write_json(args.json, {"machine": machine(), "cases": rows, "check_cost": costs})


if __name__ == "__main__":
    main()
