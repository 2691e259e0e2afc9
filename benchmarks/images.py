"""Learning volumes from images alone (issue 5): image bounds and 3D IoU after a stated budget.

Trains ``configs/images_single.yaml`` and ``configs/images_multiview.yaml`` (each image kind
asked for) for a wall-clock budget, scores the inferred 3D against held-out volumes that the
model never saw, prints a table and writes JSON:
``{"machine": ..., "rows": [{"experiment": "single" | "multiview", "bound_nats": ...,
"iou3d": ...}]}``.

    python benchmarks/images.py --quick                       # tiny CPU smoke run
    python benchmarks/images.py --small --minutes 4 --jobs 2 --set views.n_targets=10  # CPU
    python benchmarks/images.py --device cuda --minutes 6 --jobs 4 --image silhouette depth \\
        --json bench_out/images.json

Runs go through ``python -m learners.run`` (one process each, ``--jobs`` at a time), so each
writes its own ``runs/<name>/`` with TensorBoard logs, report.json and views.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMALL = ["data.size=16", "views.image_size=16",
         "views.depth_samples=32", "views.n_targets=3", "model.projection.image_size=16",
         "model.projection.conv3d=[4]", "model.projection.conv2d=[16]",
         "model.volume.canvas_size=16", "model.volume.steps=2", "model.volume.hidden=64",
         "model.volume.enc_hidden=64", "model.volume.write_patch=4", "model.volume.read_patch=4",
         "model.volume.context_dim=32", "model.reader_dim=64", "train.batch=8",
         "train.lr=0.004", "eval.iwae_samples=2"]
QUICK = SMALL + ["data.n_train=48", "data.n_test=16"]
IMAGE = {"silhouette": ["views.image=silhouette", "model.projection.likelihood=bernoulli",
                        "model.projection.render=max"],
         "depth": ["views.image=depth", "model.projection.likelihood=gaussian",
                   "model.projection.render=alpha"]}


def overrides(args: argparse.Namespace, experiment: str, image: str) -> list[str]:
    over = list(QUICK) if args.quick else list(SMALL) if args.small else []
    over += IMAGE[image]
    over += [f"name=bench_{experiment}_{image}", f"out_dir={args.out}", f"device={args.device}",
             f"train.steps={args.steps}", f"train.max_minutes={args.minutes}",
             f"data.cache_dir={args.cache}"]
    return over + list(args.set)


def fill_cache(args: argparse.Namespace) -> None:
    """Make the procedural volumes once, before parallel runs would each make them."""
    from learners.config import load

    for experiment in args.experiments:
        cfg = load(ROOT / "configs" / f"images_{experiment}.yaml",
                   overrides(args, experiment, args.image[0]))[1]
        from gen3d.data.volumes import load_volumes

        load_volumes(cfg.data)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 60 steps: a smoke run")
    ap.add_argument("--small", action="store_true",
                    help="the model sizes of --quick (16^3, T=2) with the configs' data and the "
                    "full budget: a CPU run")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--minutes", type=float, default=None,
                    help="wall-clock training budget per run (default 10, quick 0 = steps only)")
    ap.add_argument("--steps", type=int, default=None,
                    help="step budget per run (default 1000000, quick 60)")
    ap.add_argument("--experiments", nargs="+", default=["single", "multiview"],
                    choices=["single", "multiview"])
    ap.add_argument("--image", nargs="+", default=["silhouette"], choices=sorted(IMAGE))
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (they share the device)")
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "runs"), help="runs directory")
    ap.add_argument("--cache", default=str(ROOT / "data_cache"), help="volume cache directory")
    ap.add_argument("--resume", action="store_true",
                    help="continue each run from its checkpoint up to the (larger) new budget")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for every run (repeatable)")
    args = ap.parse_args(argv)
    if args.minutes is None:
        args.minutes = 0.0 if args.quick else 10.0
    if args.steps is None:
        args.steps = 60 if args.quick else 1_000_000
    return args


def run_all(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Every (experiment, image) run, ``args.jobs`` at a time; returns the failed ones."""
    todo = [(e, i) for e in args.experiments for i in args.image]
    running: list[tuple[tuple[str, str], subprocess.Popen]] = []
    failed = []
    while todo or running:
        while todo and len(running) < args.jobs:
            e, i = todo.pop(0)
            cmd = [sys.executable, "-m", "learners.run", "--config",
                   str(ROOT / "configs" / f"images_{e}.yaml")]
            for o in overrides(args, e, i):
                cmd += ["--set", o]
            if args.resume and (Path(args.out) / f"bench_{e}_{i}" / "checkpoint.pt").is_file():
                cmd.append("--resume")
            running.append(((e, i), subprocess.Popen(cmd, cwd=ROOT)))
        time.sleep(1)
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                if item[1].returncode:
                    failed.append(item[0])
    return failed


def read_rows(args: argparse.Namespace, failed: list) -> tuple[list[dict], str | None]:
    rows, machine = [], None
    for e in args.experiments:
        for i in args.image:
            p = Path(args.out) / f"bench_{e}_{i}" / "report.json"
            if (e, i) in failed or not p.is_file():
                print(f"run {e}/{i} failed; see its output above", file=sys.stderr)
                continue
            r = json.loads(p.read_text())
            machine = r["machine"]
            rows.append({"experiment": e, "image": i, "bound_nats": r["bound_nats"],
                         "iwae_nats": r["iwae_nats"], "iou3d": r["iou3d"],
                         "iou3d_context_only": r.get("iou3d_context_only"),
                         "iou3d_full": r["iou3d_full"],
                         "iou3d_by_threshold": r["iou3d_by_threshold"],
                         "steps": r["budget"]["steps"],
                         "train_seconds": r["budget"]["train_seconds"],
                         "batch": r["budget"]["batch"], "T": r["budget"]["T"]})
    return rows, machine


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fill_cache(args)
    t0 = time.time()
    failed = run_all(args)
    rows, machine = read_rows(args, failed)
    out = {"machine": f"{machine}; {args.jobs} run(s) at a time on it",
           "budget": {"minutes_per_run": args.minutes, "max_steps": args.steps,
                      "quick": args.quick, "small": args.small, "resumed": args.resume, "overrides": args.set,
                      "wall_s": round(time.time() - t0, 1)},
           "rows": rows}
    print(f"\n{'experiment':<10} {'image':<10} {'steps':>6} {'bound':>9} {'iwae':>9} "
          f"{'iou3d':>6} {'ctx':>6} {'full':>6}")
    for r in rows:
        ctx = r["iou3d_context_only"]
        print(f"{r['experiment']:<10} {r['image']:<10} {r['steps']:>6} {r['bound_nats']:>9.1f} "
              f"{r['iwae_nats'] or float('nan'):>9.1f} {r['iou3d']:>6.3f} "
              f"{'-' if ctx is None else f'{ctx:.3f}':>6} {r['iou3d_full']:>6.3f}")
    print(f"machine: {out['machine']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
