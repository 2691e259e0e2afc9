"""Gradient estimators compared on the primitives task under one render budget.

Trains the primitives task once per estimator (same seed, data, batches, model and renders
per step; ``learners.mesh_train.run``), reads each run's training ELBO per step from
TensorBoard, and reports the ELBO reached against renders consumed, the renders needed to
reach a target ELBO, the held-out scores (IoU, PSNR, Chamfer) and the gradient-variance
figures of ``learners.diagnose`` at one fixed checkpoint (the end of the RLOO run).

A step's ELBO mostly says which images it drew (a red cube far off centre costs far more than
a grey ball), so the curves are of the ELBO *gain*: the step's ELBO minus the log-likelihood
of the same images under the initial model (one grey sphere for every image; the batches are
replayed from the seed), smoothed over ``--smooth`` steps. The target is by default 75% of
the way from 0 to the best final gain among the score-function runs.

    python benchmarks/estimators.py [--quick] [--json PATH] [--estimators rloo,reinforce,...]
    python benchmarks/estimators.py --only-softras   # the oracle against GL: agreement, speed

It also measures the soft rasteriser (the pathwise oracle) against the GL renderer on random
meshes: silhouette IoU, colour error and milliseconds per mesh (forward + backward).

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


def initial_loglik(cfg) -> np.ndarray:
    """log p(x | initial model's mesh) of every training image: the model starts at one
    sphere (its last layer is zero), the same for every input."""
    from envs import spaces
    from envs.renderer import MeshRenderer
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel

    train, _ = mesh_images.load(cfg.data)
    dec = MeshModel(cfg.model, cfg.data.size).decoder
    with torch.no_grad():
        action = dec(torch.zeros(1, dec.dim)).numpy()
    r = MeshRenderer(cfg.data.size, cfg.data.size, 1)
    try:
        rgb = r.render_rays(**spaces.unpack(action)).rgb
    finally:
        r.release()
    return spaces.gaussian_loglik(train.images, np.repeat(rgb, len(train), 0), cfg.train.sigma)


def batch_baseline(cfg, ll0: np.ndarray, steps: int) -> np.ndarray:
    """Mean initial log-likelihood of each step's batch, replaying the learner's draws."""
    rng = np.random.default_rng(cfg.seed)
    b = cfg.train.batch
    return np.array([ll0[rng.integers(len(ll0), size=b)].mean() for _ in range(steps)])


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


def softras_rows(size: int = 64, n: int = 64, seed: int = 0) -> list[dict]:
    """The oracle against GL on n random meshes (half smooth, half bumpy): silhouette IoU
    (soft alpha > 0.5), mean |colour error| where both cover, and ms per mesh forward +
    backward, per mode and softness."""
    from envs.renderer import Lights, MeshRenderer
    from gen3d import geometry as geo
    from gen3d.softras import SoftRasteriser

    parts = geo.random_ray_meshes(np.random.default_rng(seed), n)
    r = MeshRenderer(size, size, n)
    try:
        gl = r.render_rays(*parts, mask=True, as_float=True)
    finally:
        r.release()
    rows = []
    for mode in ("edges", "faces"):
        for sigma in (0.02, 0.1, 0.5, 1.0):
            t = [torch.from_numpy(p).requires_grad_(True) for p in parts]
            sr = SoftRasteriser(size, size, Lights().arrays(), sigma=sigma, mode=mode)
            t0 = time.perf_counter()
            out = sr.render_rays(*t)
            (out.rgb.sum() + out.alpha.sum()).backward()
            ms = (time.perf_counter() - t0) * 1e3 / n
            m = out.alpha.detach().numpy() > 0.5
            iou = (m & gl.mask).sum((1, 2)) / np.maximum((m | gl.mask).sum((1, 2)), 1)
            err = np.abs(out.rgb.detach().numpy() - gl.rgb)
            rows.append({"mode": mode, "sigma_px": sigma, "iou_mean": float(iou.mean()),
                         "iou_min": float(iou.min()),
                         "colour_mae_both": float(err[m & gl.mask].mean()),
                         "colour_mae_all": float(err.mean()), "ms_per_mesh_fwd_bwd": ms})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="32x32, small model, 6400 renders each")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--estimators", default=",".join(ALL))
    ap.add_argument("--budget", type=int, default=0, help="renders per estimator (0: preset)")
    ap.add_argument("--target", type=float, default=None, help="target ELBO gain (nats)")
    ap.add_argument("--target-frac", type=float, default=0.75)
    ap.add_argument("--smooth", type=int, default=0,
                    help="steps in the ELBO's trailing mean (0: a 20th of the run, >= 10)")
    ap.add_argument("--out", default="runs/bench_estimators", help="runs and data cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only-softras", action="store_true", help="only the oracle-vs-GL table")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    soft = softras_rows()
    print(table(soft, list(soft[0])))
    if a.only_softras:
        res = {"machine": machine(), "softras": soft}
        write_json(a.json, res)
        return res
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
        runs = train_all(cfg0, names,
                         lambda m: print(f"[{time.time() - t0:5.0f} s] {m}", flush=True))
    finally:
        cluster.stop()
    bk = cfg0.train.batch * cfg0.train.samples
    a.smooth = a.smooth or max(10, cfg0.train.steps // 20)
    base = batch_baseline(cfg0, initial_loglik(cfg0), cfg0.train.steps)
    curves = {n: smooth(r["curve"][:, 1] - base[r["curve"][:, 0].astype(int) - 1], a.smooth)
              for n, r in runs.items()}
    gl_runs = [n for n in runs if not getattr(estimators.build(n), "pathwise", False)]
    best = max(curves[n][-1] for n in gl_runs)
    # a fraction of a loss is no target: with no run past the initial model, there is none
    target = a.target if a.target is not None else (a.target_frac * best if best > 0 else None)
    ckpt = runs["rloo"]["checkpoint"] if "rloo" in runs else next(iter(runs.values()))["checkpoint"]
    var = variance_rows(cfg0, ckpt, names, s["estimates"], a.seed)
    rows = []
    every = max(1, cfg0.train.steps // 50)  # curve points kept in the JSON
    for n, r in runs.items():
        hit = (np.nonzero(curves[n] >= target)[0] if n in gl_runs and target is not None
               else np.array([]))
        hit0 = np.nonzero(curves[n] >= 0)[0] if n in gl_runs else np.array([])
        steps = r["curve"][:, 0]
        sc = r["report"]["scores"]
        v = var.get(n, {})
        rows.append({"estimator": n, "renders": int(steps[-1]) * bk,
                     "render_kind": "gl" if n in gl_runs else "soft",
                     "renders_to_target": int(steps[hit[0]]) * bk if len(hit) else None,
                     # renders until it beats the initial model (one grey sphere) on average
                     "renders_to_zero_gain": int(steps[hit0[0]]) * bk if len(hit0) else None,
                     "final_elbo_gain": float(curves[n][-1]), "elbo_gl_test": r["elbo_gl_test"],
                     "iou": sc["iou"], "psnr": sc["psnr"], "chamfer": sc["chamfer"],
                     "var_mean": v.get("var_mean"),
                     "var_ratio_vs_reinforce": v.get("var_ratio_vs_reinforce"),
                     "dsnr": v.get("dsnr"), "cos_oracle": v.get("cos_oracle"),
                     "wall_s": r["wall_s"],
                     "curve": [[int(st) * bk, float(e)] for st, e in
                               zip(steps[::every], curves[n][::every])]})
    ma = next((r for r in rows if r["estimator"] == "moving_average"), None)
    for r in rows:  # where moving_average never got there, its whole budget is a lower bound
        if ma is not None and r["renders_to_target"]:
            ma_renders = ma["renders_to_target"] or ma["renders"]
            r["speedup_vs_moving_average"] = ma_renders / r["renders_to_target"]
            r["speedup_is_lower_bound"] = ma["renders_to_target"] is None
    cols = ["estimator", "render_kind", "renders", "renders_to_target", "renders_to_zero_gain",
            "speedup_vs_moving_average",
            "final_elbo_gain", "elbo_gl_test", "var_mean", "var_ratio_vs_reinforce", "dsnr",
            "cos_oracle", "iou", "psnr", "chamfer", "wall_s"]
    print(table(rows, cols))
    print(f"target ELBO gain {target} nats (best final {best:.1f}"
          f"{'' if target is not None else ': no run beat the initial model, raise --budget'}); "
          f"variance at {ckpt}; {time.time() - t0:.0f} s in all")
    res = {"machine": machine(), "settings": s | {"steps": cfg0.train.steps, "seed": a.seed},
           "target_elbo_gain": target, "variance_checkpoint": ckpt, "rows": rows,
           "softras": soft}
    write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
