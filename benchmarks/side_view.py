"""A finished mesh run's answers seen from the side: per kind, the silhouette IoU from the front
and turned 90° about the vertical axis through each centre (``iou_turned``, as the report
scores it), how far the turned silhouette sits from the truth's (median, in pixels along the
image's width), and how much nearer the camera than the object the inferred centre is (median
of the translations' z difference, in scene units).

    python benchmarks/side_view.py --run runs/<name> [--n 500] [--json PATH]

A turn about the object's own centre, in front of the same camera, does not show where along
the line of sight the object is: a nearer, smaller mesh looks the same from the front and
turned. So ``depth_err`` can be large while the turned silhouettes line up; the camera-frame
Chamfer distance pays for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_images, run_parser, table, write_json  # noqa: E402


def column_centre(masks: np.ndarray) -> np.ndarray:
    """The mean column (N,) of each mask (N,H,W); NaN where a mask is empty."""
    cols = np.arange(masks.shape[2])[None, None]
    area = masks.sum((1, 2))
    return np.where(area > 0, (masks * cols).sum((1, 2)) / np.maximum(area, 1), np.nan)


def side_rows(renderer, actions: np.ndarray, data) -> list[dict]:
    """Rows per kind present and over all of ``data``'s images, for ``actions`` (N, A)."""
    from envs import spaces
    from gen3d import geometry as geo
    from learners import mesh_eval

    front = renderer.render_rays(**spaces.unpack(actions), mask=True).mask
    turned = renderer.render_rays(**spaces.unpack(geo.turn_actions(actions, geo.vertical_turn(90))),
                                  mask=True).mask
    truth = mesh_eval.truth_turned(renderer, data, mask=True).mask
    per = {"iou": mesh_eval.iou(front, data.masks), "iou_turned": mesh_eval.iou(turned, truth),
           "turned_offset_px": column_centre(turned) - column_centre(truth),
           "depth_err": actions[:, geo.ACTION_SLICES["translation"]][:, 2] - data.translation[:, 2]}
    groups = [(k, data.kind == j) for j, k in enumerate(data.kinds)] + [("all", np.ones(len(data), bool))]
    return [{"kind": k, "n": int(sel.sum()), "iou": float(per["iou"][sel].mean()),
             "iou_turned": float(per["iou_turned"][sel].mean()),
             "turned_offset_px": float(np.nanmedian(per["turned_offset_px"][sel])),
             "depth_err": float(np.median(per["depth_err"][sel]))}
            for k, sel in groups if sel.any()]


def main() -> int:
    args = run_parser(__doc__, 500, "held-out images (the first n)").parse_args()
    from learners import mesh_eval

    with run_images(args.run, args.n) as (_, model, r, _, test):
        rows = side_rows(r, mesh_eval.infer_actions(model, test.images), test)
    cols = ["kind", "n", "iou", "iou_turned", "turned_offset_px", "depth_err"]
    print(table(rows, cols))
    write_json(args.json, {"machine": machine(), "run": args.run, "n": args.n, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
