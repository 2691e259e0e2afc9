"""A finished mesh run's answers read for their turn, per kind with a template (every kind but
the sphere): the median rotation error of the turn read off each inferred shape given its
true kind (``rot_err_kind_deg``, as the report scores it, about the model's own origin for the
kind), the fraction within 20°, the same reads scored against the truths of other images of
the kind (shuffled: what a shape that says nothing of its turn scores), the read about the
template's own origin, where the model puts the centre in the kind's frame, and, for kinds with
an apex, the fraction read back to front (the read apex more than 90° from the true one) and
the error split into the axis's tilt and the twist about it (``gen3d.symmetry.axis_and_twist_deg``:
a pyramid's twist is modulo its quarter turns, at most 45°), and the error by how far the true
axis is from the camera's line of sight (``VIEW_BINS``: end-on, oblique, side-on). The
``with_colours`` columns read the turn off the shape and the seen vertices' colours together
(``gen3d.mesh_pose.read_turns`` with ``colours``): does the reconstruction's colouring put the
sides' boundaries where its shape's turn does? The ``seen_only`` columns read the turn off
the rays the camera sees alone (``read_turns`` with ``weights``): does the answer's front hold
its turn better than the whole shape, whose back the image never showed?

    python benchmarks/pose_read.py --run runs/<name> [--n 500] [--n-rot 3000] [--json PATH]

``--n-rot`` sets how many turns each kind's table tries (the report's 3,000 are about 8
degrees apart): more shows what the table's spacing adds to each median.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, positive_int, run_images, run_parser, table, write_json  # noqa: E402

APEX_KINDS = ("cone", "pyramid")
"""Kinds whose template's +y is an apex: back to front is a question for them."""

VIEW_BINS = ((0, 30, "axis_on_view_deg"), (30, 60, "axis_oblique_deg"), (60, 90, "axis_side_on_deg"))
"""Bins of the angle (degrees) between an apex kind's true axis and the camera's line of
sight (the z axis; folded, so the apex towards or away from the camera is 0): from one view,
an apex seen end-on hides its depth, one seen side-on shows it."""


def by_view(truth: np.ndarray, err: np.ndarray) -> dict:
    """The median of errors ``err`` (N,) in each of ``VIEW_BINS`` of the true rotations' (N, 3, 3)
    axis (their +y) to the line of sight, with the bin's count; NaN for an empty bin."""
    angle = np.degrees(np.arccos(np.clip(np.abs(truth[:, 2, 1]), 0.0, 1.0)))
    out = {}
    for lo, hi, name in VIEW_BINS:
        sel = (angle >= lo) & (angle < hi) if hi < 90 else angle >= lo
        out[name] = float(np.median(err[sel])) if sel.any() else float("nan")
        out[name.replace("_deg", "_n")] = int(sel.sum())
    return out


def pose_rows(actions: np.ndarray, data, n_rot: int = 3000, seed: int = 0) -> list[dict]:
    """One row per kind of ``data`` that has a template turn to read, for ``actions`` (N, A)."""
    from gen3d import mesh_pose, symmetry
    from learners import mesh_eval

    lengths = mesh_eval.camera_lengths(actions)
    colours, seen = mesh_eval.seen_colours(actions)
    rng = np.random.default_rng(seed)
    rows = []
    for j, k in enumerate(data.kinds):
        sel = data.kind == j
        if not sel.any() or k in mesh_pose.ROUND_KINDS:
            continue
        origin = mesh_eval.model_origin(actions, data, sel)
        truth = data.rotation[sel]
        read = mesh_pose.read_turns(lengths[sel], k, n_rot, origin)
        err = symmetry.rotation_error_deg(truth, read, k)
        row = {"kind": k, "n": int(sel.sum()), "rot_err_kind_deg": float(np.median(err)),
               "below_20": float((err < 20).mean()),
               "shuffled_truth_deg": float(np.median(symmetry.rotation_error_deg(
                   truth[rng.permutation(len(truth))], read, k))),
               "about_template_origin_deg": float(np.median(symmetry.rotation_error_deg(
                   truth, mesh_pose.read_turns(lengths[sel], k, n_rot), k))),
               "model_origin": list(origin)}
        coloured = symmetry.rotation_error_deg(
            truth, mesh_pose.read_turns(lengths[sel], k, n_rot, origin, colours[sel], seen[sel]), k)
        front = symmetry.rotation_error_deg(
            truth, mesh_pose.read_turns(lengths[sel], k, n_rot, origin, weights=seen[sel]), k)
        row |= {"with_colours_deg": float(np.median(coloured)),
                "with_colours_below_20": float((coloured < 20).mean()),
                "seen_only_deg": float(np.median(front)),
                "seen_only_below_20": float((front < 20).mean())}
        if k in APEX_KINDS:
            row["back_to_front"] = float(((read[:, :, 1] * truth[:, :, 1]).sum(1) < 0).mean())
            tilt, twist = symmetry.axis_and_twist_deg(truth, read, k)
            row["axis_err_deg"] = float(np.median(tilt))
            row |= by_view(truth, err)
            if not np.isnan(twist).all():  # a cone's any turn about its axis is one
                row["twist_err_deg"] = float(np.median(twist))
        rows.append(row)
    return rows


def main() -> int:
    ap = run_parser(__doc__, 500, "held-out images (the first n)")
    ap.add_argument("--n-rot", type=positive_int, default=3000,
                    help="random turns each kind's table tries, beside the cube's 24 (the report's: 3000)")
    args = ap.parse_args()
    from learners import mesh_eval

    with run_images(args.run, args.n) as (_, model, _, _, test):
        rows = pose_rows(mesh_eval.infer_actions(model, test.images), test, args.n_rot)
    cols = ["kind", "n", "rot_err_kind_deg", "below_20", "shuffled_truth_deg",
            "about_template_origin_deg", "model_origin", "back_to_front", "axis_err_deg",
            "twist_err_deg", *(name for *_, name in VIEW_BINS), "with_colours_deg",
            "with_colours_below_20", "seen_only_deg", "seen_only_below_20"]
    print(table(rows, cols))
    write_json(args.json, {"machine": machine(), "run": args.run, "n": args.n, "n_rot": args.n_rot,
                           "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
