"""Per-image refinement of a finished mesh run, measured: IoU, PSNR and Chamfer of the inference
network's meshes and of the same meshes refined, on training or held-out images, for one or more
refinement settings; ``--untrained`` starts from an untrained network (the base sphere) instead.

    python benchmarks/refine.py --run runs/primitives [--split train] [--n 100]
        [--settings 150:16:0.01:0.01,100:16:0.02:0.01] [--untrained] [--json PATH]

A setting is steps:samples:std:lr (``learners.mesh_refine.RefineConfig``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_run, machine, run_parser, table, write_json  # noqa: E402
from gen3d import geometry as geo  # noqa: E402
from gen3d.data import mesh_images  # noqa: E402
from gen3d.mesh_model import MeshModel  # noqa: E402
from learners import mesh_eval  # noqa: E402
from learners.mesh_refine import RefineConfig  # noqa: E402
from learners.mesh_report import refine_actions  # noqa: E402
from learners.mesh_train import local_renderer  # noqa: E402


def refine_and_score(cfg, model: MeshModel, data, r) -> dict:
    """IoU, PSNR, Chamfer (and per kind) of ``model``'s meshes of ``data`` refined with
    ``cfg.eval.refine`` through ``cfg.pool.workers`` Ray workers, and the seconds it took."""
    t0 = time.time()
    actions, _ = refine_actions(cfg, model, data, "cpu", workers=cfg.pool.workers)
    dt = time.time() - t0
    s, _ = mesh_eval.score(r, actions, data, geo.Camera(), cfg.eval.chamfer_points)
    return {"iou": s["iou"], "psnr": s["psnr"], "chamfer": s["chamfer"], "s": dt,
            "per_kind_iou": s["per_kind_iou"]}


def parse_settings(text: str) -> list[tuple[str, RefineConfig]]:
    """``--settings``: comma-separated steps:samples:std:lr, each with its ``RefineConfig``."""
    out = []
    for part in text.split(","):
        bits = part.split(":")
        try:
            if len(bits) != 4:
                raise ValueError("need steps:samples:std:lr, e.g. 150:16:0.01:0.01")
            out.append((part, RefineConfig(int(bits[0]), int(bits[1]), float(bits[2]), float(bits[3]))))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{part!r}: {e}") from None
    return out


def main(argv=None) -> dict:
    ap = run_parser(__doc__, 100, "the first N images of the split")
    ap.add_argument("--split", choices=["train", "test"], default="train",
                    help="images to refine (tune settings on train)")
    ap.add_argument("--settings", type=parse_settings, default="150:16:0.01:0.01",
                    help="steps:samples:std:lr, comma-separated")
    ap.add_argument("--untrained", action="store_true", help="start from an untrained network")
    args = ap.parse_args(argv)
    cfg, model = load_run(args.run, trained=not args.untrained)
    r = local_renderer(cfg)
    rows = []
    try:
        train, test = mesh_images.load(cfg.data)
        data = (train if args.split == "train" else test).subset(slice(0, args.n))
        s, _ = mesh_eval.score(r, mesh_eval.infer_actions(model, data.images), data, geo.Camera(),
                               cfg.eval.chamfer_points)
        rows.append({"setting": "start", "s": 0.0} | {k: s[k] for k in ("iou", "psnr", "chamfer")})
        for text, setting in args.settings:
            cfg.eval.refine = setting
            rows.append({"setting": text} | refine_and_score(cfg, model, data, r))
    finally:
        r.release()
    print(table(rows, ["setting", "iou", "psnr", "chamfer", "s"]))
    out = {"machine": machine(), "run": args.run, "split": args.split, "n": args.n,
           "untrained": args.untrained, "rows": rows}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
