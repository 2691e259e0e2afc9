"""Gradient estimators compared on the primitives task under one render budget.

Trains the primitives task once per estimator (same seed, data, model and renders per step;
``learners.mesh_train.run``), reads each run's ELBO per step from TensorBoard, and reports the
ELBO reached against renders consumed, the renders needed to reach a target ELBO (by default
75% of the way from the initial ELBO to the best final one among the score-function runs),
the held-out scores (IoU, PSNR, Chamfer), and the gradient-variance figures of
``learners.diagnose`` at one fixed checkpoint (the end of the RLOO run).

    python benchmarks/estimators.py [--quick] [--json PATH] [--estimators rloo,reinforce,...]

The pathwise run trains through the soft rasteriser: its renders are soft ones, and its logged
ELBO is the soft renderer's, so it takes no part in the target; its final ELBO is measured
through GL like every other run's (``elbo_gl_test``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json  # noqa: E402
from gen3d import estimators  # noqa: E402

ALL = ["reinforce", "moving_average", "neural", "rloo", "optimal_cv", "antithetic", "vimco",
       "lax", "pathwise"]
SETTINGS = {  # (quick, full): data, model and step sizes
    "quick": {"size": 32, "n_train": 400, "n_test": 48, "hidden": 64, "channels": 8,
              "batch": 8, "samples": 4, "budget": 6400, "estimates": 100},
    "full": {"size": 64, "n_train": 2000, "n_test": 200, "hidden": 300, "channels": 32,
             "batch": 16, "samples": 8, "budget": 64000, "estimates": 100},
}


def base_config(out: Path, s: dict, seed: int):
    """The primitives config (configs/primitives.yaml) at the benchmark's sizes."""
    from learners.config import from_dict, read_yaml
    from learners.mesh_train import MeshRunConfig

    d = read_yaml(Path(__file__).resolve().parents[1] / "configs" / "primitives.yaml")
    d.pop("task")
    steps = s["budget"] // (s["batch"] * s["samples"])
    d.update(out_dir=str(out / "runs"), seed=seed)
    d["data"].update(size=s["size"], n_train=s["n_train"], n_test=s["n_test"],
                     cache_dir=str(out / "cache"))
    d["model"].update(hidden=s["hidden"], channels=s["channels"])
    d["train"].update(steps=steps, batch=s["batch"], samples=s["samples"], log_every=1,
                      image_every=steps + 1, checkpoint_every=steps, progress=False,
                      time_limit_s=s.get("time_limit_s", 0.0))
    d["eval"] = {"chamfer_points": 500, "n_obj": 0}
    return from_dict(MeshRunConfig, d, "benchmarks/estimators.py")


def elbo_curve(run_dir: Path) -> np.ndarray:
    """(steps, 2): step and training ELBO (nats) as the run logged them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return np.array([(e.step, e.value) for e in acc.Scalars("train/elbo_nats")])


def smooth(v: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over ``w`` steps (fewer at the start)."""
    c = np.cumsum(np.insert(v, 0, 0.0))
    n = np.minimum(np.arange(1, len(v) + 1), w)
    return (c[1:] - c[np.arange(1, len(v) + 1) - n]) / n


def gl_elbo(cfg, model, images: np.ndarray, k: int, seed: int) -> float:
    """ELBO (nats per image) of held-out images through the GL renderer, K samples each."""
    from envs import spaces
    from envs.renderer import MeshRenderer
    from gen3d.mesh_model import images_to_tensor

    r = MeshRenderer(cfg.data.size, cfg.data.size, 256)
    g = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            s = model.sample(images_to_tensor(images), k, generator=g)
        rgb = r.render_rays(**spaces.unpack(s.actions.reshape(-1, s.actions.shape[-1]).numpy())).rgb
    finally:
        r.release()
    ll = spaces.gaussian_loglik(np.repeat(images, k, 0), rgb, cfg.train.sigma)
    return float(ll.mean() - s.kl.mean())


def train_all(cfg0, names: list[str], log) -> dict:
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel
    from learners.mesh_train import run

    out = {}
    test = None
    for name in names:
        cfg = copy.deepcopy(cfg0)
        cfg.name, cfg.estimator.name = f"est_{name}", name
        t0 = time.time()
        report = run(cfg)
        curve = elbo_curve(Path(cfg.out_dir) / cfg.name)
        if test is None:
            _, test = mesh_images.load(cfg.data)
        model = MeshModel(cfg.model, cfg.data.size)
        model.load_state_dict(torch.load(report["checkpoint"], weights_only=False)["model"])
        elbo_test = gl_elbo(cfg, model, test.images, cfg.train.samples, cfg.seed)
        out[name] = {"report": report, "curve": curve, "wall_s": time.time() - t0,
                     "elbo_gl_test": elbo_test, "checkpoint": report["checkpoint"]}
        log(f"{name}: {len(curve)} steps in {time.time() - t0:.0f} s, final train ELBO "
            f"{curve[-1, 1]:.0f}, held-out GL ELBO {elbo_test:.0f}, IoU "
            f"{report['scores']['iou']:.3f}")
    return out


def variance_rows(cfg0, ckpt: str, names: list[str], n: int, seed: int) -> dict:
    """learners.diagnose at one fixed checkpoint: {estimator: row}."""
    from envs.renderer import MeshRenderer
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel
    from learners.diagnose import Settings, diagnose

    model = MeshModel(cfg0.model, cfg0.data.size)
    model.load_state_dict(torch.load(ckpt, weights_only=False)["model"])
    train, _ = mesh_images.load(cfg0.data)
    idx = np.random.default_rng(seed).choice(len(train), cfg0.train.batch, replace=False)
    r = MeshRenderer(cfg0.data.size, cfg0.data.size, 256)
    try:
        out = diagnose(cfg0, model, train.images[idx], r,
                       Settings(names, estimates=n, ref_estimates=n, seed=seed), progress=False)
    finally:
        r.release()
    return {row["estimator"]: row for row in out["rows"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="32x32, small model, 6400 renders each")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--estimators", default=",".join(ALL))
    ap.add_argument("--budget", type=int, default=0, help="renders per estimator (0: preset)")
    ap.add_argument("--target", type=float, default=None, help="target ELBO (nats)")
    ap.add_argument("--target-frac", type=float, default=0.75)
    ap.add_argument("--smooth", type=int, default=10, help="steps in the ELBO's trailing mean")
    ap.add_argument("--out", default="runs/bench_estimators", help="runs and data cache")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.estimators.split(",") if n.strip()]
    bad = sorted(set(names) - set(estimators.available()))
    if bad:
        ap.error(f"unknown estimators {bad}; choose from {estimators.available()}")
    s = dict(SETTINGS["quick" if a.quick else "full"])
    if a.budget:
        s["budget"] = a.budget
    torch.manual_seed(a.seed)
    cfg0 = base_config(Path(a.out), s, a.seed)
    t0 = time.time()
    from workers import cluster

    try:
        runs = train_all(cfg0, names, lambda m: print(f"[{time.time() - t0:5.0f} s] {m}", flush=True))
    finally:
        cluster.stop()
    bk = cfg0.train.batch * cfg0.train.samples
    curves = {n: smooth(r["curve"][:, 1], a.smooth) for n, r in runs.items()}
    gl_runs = [n for n in runs if not getattr(estimators.build(n), "pathwise", False)]
    init = float(np.mean([runs[n]["curve"][: a.smooth, 1].mean() for n in gl_runs]))
    best = max(curves[n][-1] for n in gl_runs)
    target = a.target if a.target is not None else init + a.target_frac * (best - init)
    ckpt = runs["rloo"]["checkpoint"] if "rloo" in runs else next(iter(runs.values()))["checkpoint"]
    var = variance_rows(cfg0, ckpt, names, s["estimates"], a.seed)
    rows = []
    for n, r in runs.items():
        hit = np.nonzero(curves[n] >= target)[0] if n in gl_runs else np.array([])
        steps = r["curve"][:, 0]
        sc = r["report"]["scores"]
        v = var.get(n, {})
        rows.append({"estimator": n, "renders": int(steps[-1]) * bk,
                     "render_kind": "gl" if n in gl_runs else "soft",
                     "renders_to_target": int(steps[hit[0]]) * bk if len(hit) else None,
                     "final_elbo": float(curves[n][-1]), "elbo_gl_test": r["elbo_gl_test"],
                     "iou": sc["iou"], "psnr": sc["psnr"], "chamfer": sc["chamfer"],
                     "var_mean": v.get("var_mean"), "var_ratio_vs_reinforce": v.get("var_ratio_vs_reinforce"),
                     "dsnr": v.get("dsnr"), "cos_oracle": v.get("cos_oracle"),
                     "wall_s": r["wall_s"],
                     "curve": [[int(st) * bk, float(e)] for st, e in
                               zip(steps[:: max(1, len(steps) // 50)], curves[n][:: max(1, len(steps) // 50)])]})
    ma = next((r["renders_to_target"] for r in rows if r["estimator"] == "moving_average"), None)
    for r in rows:
        r["speedup_vs_moving_average"] = (ma / r["renders_to_target"]
                                          if ma and r["renders_to_target"] else None)
    cols = ["estimator", "render_kind", "renders", "renders_to_target", "speedup_vs_moving_average",
            "final_elbo", "elbo_gl_test", "var_mean", "var_ratio_vs_reinforce", "dsnr",
            "cos_oracle", "iou", "psnr", "chamfer", "wall_s"]
    print(table(rows, cols))
    print(f"target ELBO {target:.1f} nats (initial {init:.1f}, best final {best:.1f}); "
          f"variance at {ckpt}; {time.time() - t0:.0f} s in all")
    res = {"machine": machine(), "settings": s | {"steps": cfg0.train.steps, "seed": a.seed},
           "target_elbo": target, "initial_elbo": init, "variance_checkpoint": ckpt, "rows": rows}
    write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
