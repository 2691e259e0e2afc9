"""A finished mesh run's network, looking at each held-out image through the camera's mirrors
and, with ``model.infer_colour_orders``, its colour orders (``gen3d.image_symmetries``): the
silhouette IoU of its answer to the image itself, to each look (mapped back), and of the mean
of the looks (the run's answer with ``model.infer_mirrors``), overall and per kind; and of the
look each image's own render likes best (the highest Gaussian log-likelihood of the image under
the look's render, ``loglik``, in nats per image: it uses the renderer and the image, not the
truth, so it is a cheap refinement, not the network's answer).

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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import image_loglik, iou_row, machine, run_images, run_parser, table, write_json  # noqa: E402
from gen3d.image_symmetries import ImageSymmetries  # noqa: E402
from gen3d.mesh_model import images_to_tensor  # noqa: E402


def look_rows(run: str, n: int) -> list[dict]:
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
                for name, a, ll in zip([*names, f"mean of the {len(names)}", "most likely look"],
                                       actions, loglik)]


def main() -> int:
    args = run_parser(__doc__, 500, "held-out images (the first n)").parse_args()
    rows = look_rows(args.run, args.n)
    cols = [k for k in rows[0] if k != "look"]  # 4 decimals: the looks differ in the third
    print(table([{"look": r["look"], **{c: f"{r[c]:.4f}" if c != "loglik" else f"{r[c]:.1f}" for c in cols}}
                 for r in rows],
                ["look", *cols]))
    write_json(args.json, {"machine": machine(), "run": args.run, "n": args.n, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
