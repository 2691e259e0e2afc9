"""A finished mesh run's network, looking at each held-out image through the camera's mirrors
and, with ``model.infer_colour_orders``, its colour orders (``gen3d.image_symmetries``): the
silhouette IoU of its answer to the image itself, to each look (mapped back), and of the mean
of the looks (the run's answer with ``model.infer_mirrors``), overall and per kind; and of the
look each image's own render likes best (the highest Gaussian log-likelihood of the image under
the look's render, ``loglik``, in nats per image: it uses the renderer and the image, not the
truth, so it is a cheap refinement, not the network's answer). With ``--pose``, each row also
reads the turn off each answer's shape given its kind (``rot_err_kind_deg`` per kind, as
``benchmarks/pose_read.py`` does; for pyramids the axis's tilt and the twist too): does one
look keep a turn that the mean of the looks rounds away?

    python benchmarks/mirror_looks.py --run runs/<name> [--n 500] [--pose] [--json PATH]

A network trained without ``train.mirror_images`` has never seen a mirrored image, whose
shading (the lights are not mirrored) no training image has; one trained with it answers a
mirror about as well as the image. The looks are those of the run's ``infer_mirrors`` and
``infer_colour_orders`` (the four mirrors when both are off, to show what they would give);
with either on, their mean is the answer the run scores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import image_loglik, iou_row, machine, run_images, run_parser, table, write_json  # noqa: E402
from gen3d.image_symmetries import ImageSymmetries  # noqa: E402
from gen3d.mesh_model import images_to_tensor  # noqa: E402


def pose_columns(actions: np.ndarray, data) -> dict:
    """The turn read off each shape of ``actions`` (N, A), per kind of ``data`` with a template:
    ``<kind>_deg`` (median ``rot_err_kind_deg``), and for pyramids ``pyramid_axis_deg`` and
    ``pyramid_twist_deg``."""
    from benchmarks.pose_read import pose_rows

    out = {}
    for row in pose_rows(actions, data):
        out[f"{row['kind']}_deg"] = row["rot_err_kind_deg"]
        if row["kind"] == "pyramid":
            out |= {"pyramid_axis_deg": row["axis_err_deg"], "pyramid_twist_deg": row["twist_err_deg"]}
    return out


def look_rows(run: str, n: int, pose: bool = False) -> list[dict]:
    with run_images(run, n) as (cfg, model, r, _, test):
        x = images_to_tensor(test.images)
        with torch.no_grad():
            looks = model.looks(x)
        names = (model.symmetries or ImageSymmetries(model.decoder)).names
        actions = [model.to_actions(m, x).numpy() for m in [*looks, looks.mean(0)]]
        loglik = np.stack([image_loglik(r, a, test.images, cfg.train.sigma) for a in actions])
        best = loglik[:len(looks)].argmax(0)
        actions.append(np.stack(actions[:len(looks)])[best, np.arange(len(best))])
        loglik = np.concatenate([loglik, loglik[best, np.arange(len(best))][None]])
        return [iou_row(r, a, test, look=name) | {"loglik": float(ll.mean())}
                | (pose_columns(a, test) if pose else {})
                for name, a, ll in zip([*names, f"mean of the {len(names)}", "most likely look"],
                                       actions, loglik)]


def main() -> int:
    ap = run_parser(__doc__, 500, "held-out images (the first n)")
    ap.add_argument("--pose", action="store_true", help="also read each answer's turn per kind")
    args = ap.parse_args()
    rows = look_rows(args.run, args.n, args.pose)
    cols = [k for k in rows[0] if k != "look"]  # 4 decimals: the looks differ in the third
    print(table([{"look": r["look"], **{c: f"{r[c]:.1f}" if c == "loglik" or c.endswith("_deg")
                                        else f"{r[c]:.4f}" for c in cols}}
                 for r in rows],
                ["look", *cols]))
    write_json(args.json, {"machine": machine(), "run": args.run, "n": args.n, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
