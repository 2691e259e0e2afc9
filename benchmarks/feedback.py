"""What the feedback passes of a finished ``model.feedback`` run do: its network's silhouette
IoU on training and held-out images, with its correction passes and with none (the first
pass alone), overall and per kind.

    python benchmarks/feedback.py --run runs/<name> [--n 500] [--json PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import iou_row, machine, run_images, run_parser, table, write_json  # noqa: E402
from learners import mesh_eval  # noqa: E402


def pass_rows(model, r, images, passes: list[int]) -> list[dict]:
    """IoU rows of ``images`` (a ``MeshImages``) with each number of feedback passes."""
    rows, kept = [], model.cfg.feedback
    try:
        for n in passes:
            model.cfg.feedback = n
            rows.append(iou_row(r, mesh_eval.infer_actions(model, images.images), images, passes=n))
    finally:
        model.cfg.feedback = kept
    return rows


def main() -> int:
    args = run_parser(__doc__, 500, "images of each set").parse_args()
    out = {"machine": machine(), "run": args.run, "n": args.n}
    with run_images(args.run, args.n) as (cfg, model, r, train, test):  # r feeds the passes too
        if not cfg.model.feedback:
            raise SystemExit(f"{args.run}: its model has no feedback passes (model.feedback: 0)")
        for name, data in (("train", train), ("test", test)):
            rows = pass_rows(model, r, data, [cfg.model.feedback, 0])
            print(f"{name} images:\n" + table(rows, ["passes", "iou", *data.kinds]))
            out[name] = rows
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
