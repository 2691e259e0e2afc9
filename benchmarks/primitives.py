"""The main job, measured: learner steps/s, renders/s and the fraction of learner time spent
waiting on renders for 1 and 2 render workers, then (without --quick) the full
``configs/primitives.yaml`` run and its held-out scores (silhouette IoU against the best
single fixed sphere, PSNR, Chamfer, wall time; with per-image refinement on, the inference
network's own scores beside the refined ones, and the same refinement from an untrained
network, which tells what refinement does without what the run learned).

    python benchmarks/primitives.py [--quick] [--json PATH] [--config configs/primitives.yaml]
    python benchmarks/primitives.py --seeds 0,1,2 --steps-bounded   # run-to-run spread

Each full run's row: seed, held-out IoU (and the sphere floor), PSNR, Chamfer, the median
rotation error modulo symmetry (as inferred, in the best fixed frame, and read off the inferred
mesh's shape with the fraction of kinds read right: ``gen3d.mesh_pose``), the IoU on kinds never
trained on (``scores_unseen``, with its floor and the seen kinds' IoU at equal image area),
wall seconds; the JSON keeps per-kind scores and the IoU-against-time curve too.

With ``--seeds`` the full run is repeated once per seed (the model's initialisation, batches
and samples; the data stay the same) and the scores are summarised over the seeds: mean,
std, minimum and maximum. ``--steps-bounded`` lifts the config's time limit so that every run
ends on its step count (a run the clock stopped is flagged in its row).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, seed_spread, table, write_json  # noqa: E402
from learners.config import load  # noqa: E402


def untrained_start(cfg) -> dict:
    """The same refinement from an untrained network (every image starts at the base sphere):
    what refinement does without what the run learned."""
    import torch

    from benchmarks.refine import refine_and_score
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel
    from learners.mesh_train import local_renderer

    torch.manual_seed(cfg.seed)
    r = local_renderer(cfg)
    try:
        _, test = mesh_images.load(cfg.data)
        sub = test.subset(slice(0, cfg.eval.n_test or len(test)))
        s = refine_and_score(cfg, MeshModel(cfg.model, cfg.data.size), sub, r)
    finally:
        r.release()
    return {"iou_refined_untrained": s["iou"], "psnr_refined_untrained": s["psnr"],
            "chamfer_refined_untrained": s["chamfer"]}


def speed_rows(args, tmp: str) -> list[dict]:
    """Short runs for 1, 2, ... workers: learner steps/s, renders/s and the wait fraction."""
    rows = []
    for w in (int(x) for x in args.workers.split(",")):
        task, cfg = load(args.config, args.overrides + [
            f"name=speed_w{w}", f"out_dir={tmp}", f"pool.workers={w}",
            f"train.steps={args.speed_steps}", "train.progress=false", "train.time_limit_s=0",
            "eval.n_test=32", "eval.refine.steps=0", "train.checkpoint_every=100000",
            "train.image_every=100000"])
        rep = task.run(cfg)
        sp = rep["speed"]
        rows.append({"workers": w, "steps_per_s": sp["steps_per_s"], "renders_per_s": sp["renders_per_s"],
                     "wait_frac": sp["wait_frac"], "learner_step_s": sp["learner_step_s"]})
    return rows


def quality_run(args, tmp: str, seed: int | None) -> tuple[dict, list[str]]:
    """The full config's run (at ``seed`` when given): its scores, and the table's columns."""
    extra = [f"out_dir={tmp}", "train.progress=false"]
    if seed is not None:
        extra += [f"seed={seed}", f"name=primitives_seed{seed}"]
    if args.steps_bounded:
        extra.append("train.time_limit_s=0")
    task, cfg = load(args.config, args.overrides + extra)
    t0 = time.time()
    rep = task.run(cfg)
    s = rep["scores"]
    u = rep.get("scores_unseen", {})
    out = {"seed": cfg.seed, "iou": s["iou"], "iou_sphere_floor": s["iou_sphere_floor"],
           "iou_turned": s["iou_turned"], "psnr": s["psnr"], "chamfer": s["chamfer"],
           "rot_err_deg": s["rot_err_deg"],
           "rot_err_aligned_deg": s["rot_err_aligned_deg"],
           "rot_err_mesh_deg": s.get("rot_err_mesh_deg"), "kind_read": s.get("kind_read"),
           "rot_err_kind_deg": s.get("rot_err_kind_deg"),
           "iou_unseen": u.get("iou"),
           "iou_unseen_floor": u.get("iou_sphere_floor"),
           "iou_seen_area_matched": u.get("iou_seen_area_matched"), "wall_s": time.time() - t0,
           "steps": s["steps"], "stopped_by": rep["budget"]["stopped_by"],
           "per_kind": s["per_kind"], "per_kind_unseen": u.get("per_kind"),
           "iou_vs_time": rep.get("iou_vs_time")}
    cols = ["seed", "iou", "iou_sphere_floor", "iou_turned", "psnr", "chamfer", "rot_err_deg",
            "rot_err_aligned_deg", "rot_err_mesh_deg", "kind_read", "rot_err_kind_deg", "iou_unseen",
            "iou_unseen_floor",
            "iou_seen_area_matched", "wall_s", "steps", "stopped_by"]
    if "scores_refined" in rep:
        f = rep["scores_refined"]
        out.update(iou_refined=f["iou"], psnr_refined=f["psnr"], chamfer_refined=f["chamfer"],
                   per_kind_iou_refined=f["per_kind_iou"], refine_s=rep["refine"]["wall_s"])
        cols += ["iou_refined", "psnr_refined", "chamfer_refined"]
        if not args.no_ablation:
            out.update(untrained_start(cfg))
            cols += ["iou_refined_untrained"]
    return out, cols


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="speed only (short runs)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--config", default="configs/primitives.yaml")
    ap.add_argument("--workers", default="1,2", help="worker counts for the speed rows")
    ap.add_argument("--speed-steps", type=int, default=60)
    ap.add_argument("--seeds", default="", help="comma-separated seeds of the full run "
                    "(default: the config's seed), summarised as mean, std, min and max")
    ap.add_argument("--steps-bounded", action="store_true",
                    help="lift train.time_limit_s: every full run ends on its step count")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--no-ablation", action="store_true",
                    help="skip refining from an untrained network (with eval.refine on)")
    args = ap.parse_args(argv)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds else [None]
    os.environ.setdefault("LP_NUM_THREADS", "0")
    tmp = tempfile.mkdtemp(prefix="gen3d-bench-")
    rows = speed_rows(args, tmp)
    print(table(rows, ["workers", "steps_per_s", "renders_per_s", "wait_frac", "learner_step_s"]))
    out = {"machine": machine(), "rows": rows}
    if not args.quick:
        runs = [quality_run(args, tmp, seed) for seed in seeds]
        cols = runs[0][1]
        out["runs"] = [r for r, _ in runs]
        out["scores"] = out["runs"][0]
        print(table(out["runs"], cols))
        if len(runs) > 1:  # the spread over seeds, one row per statistic
            out["spread"] = seed_spread(out["runs"], cols)
            stat_cols = list(out["spread"]["mean"])
            print(table([{"stat": k, **v} for k, v in out["spread"].items()], ["stat", *stat_cols]))
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
