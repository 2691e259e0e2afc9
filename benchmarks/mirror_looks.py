"""A finished mesh run's network, looking at each held-out image through the camera's mirrors
and, with ``model.infer_colour_orders``, its colour orders (``gen3d.image_symmetries``): the
silhouette IoU of its answer to the image itself, to each look (mapped back), and of the mean
of the looks (the run's answer with ``model.infer_mirrors``), overall and per kind.

    python benchmarks/mirror_looks.py --run runs/<name> [--n 500] [--json PATH]

A network trained without ``train.mirror_images`` has never seen a mirrored image, whose
shading (the lights are not mirrored) no training image has; one trained with it answers a
mirror about as well as the image. The looks are those of the run's ``infer_mirrors`` and
``infer_colour_orders`` (the four mirrors when both are off, to show what they would give);
with either on, their mean is the answer the run scores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import iou_row, machine, run_images, run_parser, table, write_json  # noqa: E402
from gen3d.image_symmetries import ImageSymmetries  # noqa: E402
from gen3d.mesh_model import images_to_tensor  # noqa: E402


def look_rows(run: str, n: int) -> list[dict]:
    with run_images(run, n) as (_, model, r, _, test):
        x = images_to_tensor(test.images)
        with torch.no_grad():
            looks = model.looks(x)
            answers = [*looks, looks.mean(0)]
        names = (model.symmetries or ImageSymmetries(model.decoder)).names
        return [iou_row(r, model.to_actions(m, x).numpy(), test, look=name)
                for name, m in zip([*names, f"mean of the {len(names)}"], answers)]


def main() -> int:
    args = run_parser(__doc__, 500, "held-out images (the first n)").parse_args()
    rows = look_rows(args.run, args.n)
    cols = [k for k in rows[0] if k != "look"]  # 4 decimals: the looks differ in the third
    print(table([{"look": r["look"], **{c: f"{r[c]:.4f}" for c in cols}} for r in rows],
                ["look", *cols]))
    write_json(args.json, {"machine": machine(), "run": args.run, "n": args.n, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
