"""Where a finished mesh run's IoU is lost: its network's silhouette IoU on training and on
held-out images (the generalisation gap), that of the best sample self-imitation kept for
each training image (what the run's own search found), and that of the network's answer with
the bests' shape put in (all of it, or its harmonics above degree 3), overall and per kind.

    python benchmarks/search_gap.py --run runs/<name> [--n 500] [--json PATH]

If the bests are barely above the network on the same images, the network has learned what its
search found, and the search (samples of p(m | z) around the network's own answer) is what
holds it; per-image refinement (``learners/mesh_refine.py``) shows how much better meshes are.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import checkpoint, iou_row, machine, run_images, run_parser, table, write_json  # noqa: E402
from gen3d.mesh_model import images_to_tensor  # noqa: E402
from learners import mesh_eval  # noqa: E402


LOW_DEGREE = 3
"""The shape's harmonics up to this degree are its coarse form; those above, corners and apexes."""


def gap_rows(run: str, n: int) -> list[dict]:
    with run_images(run, n) as (_, model, r, train, test):
        rows, net = [], {}
        for name, d in (("training images", train), ("held-out images", test)):
            net[name] = mesh_eval.infer_params(model, d.images)
            rows.append(iou_row(r, answer_actions(model, net[name], d), d, meshes=f"network, {name}"))
        replay = checkpoint(run).get("replay")
        if replay is not None:
            seen = np.flatnonzero(torch.isfinite(replay["r"][:n]).numpy())
            best, data = replay["m"][:n][seen], train.subset(seen)
            rows.append(iou_row(r, model.decoder(best).detach().numpy(), data,
                                meshes="self-imitation's bests, training images seen"))
            rows += [iou_row(r, answer_actions(model, m, data), data,
                             meshes=f"network with the bests' {what}, the same images")
                     for what, m in swapped(model, net["training images"][seen], best)]
    return rows


def answer_actions(model, m: torch.Tensor, data) -> np.ndarray:
    """Renderer actions of parameters m (N, D) for ``data``'s images (colours read from them)."""
    return model.to_actions(m, images_to_tensor(data.images)).numpy()


def swapped(model, net: torch.Tensor, best: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The network's answers ``net`` (N, D) with one part taken from the bests (N, D): the
    shape, and (harmonic shapes above ``LOW_DEGREE``) its harmonics above that degree alone:
    where the IoU between network and bests lies."""
    sl = model.decoder.slices["shape"]
    parts = [("shape", sl)]
    cfg = model.cfg
    if cfg.shape == "sh" and cfg.shape_symmetry == "none" and cfg.shape_degree > LOW_DEGREE:
        high = slice(sl.start + (LOW_DEGREE + 1) ** 2, sl.stop)  # (l + 1)^2 harmonics up to l
        parts.append((f"shape harmonics above degree {LOW_DEGREE}", high))
    out = []
    for what, part in parts:
        m = net.clone()
        m[:, part] = best[:, part]
        out.append((what, m))
    return out


def main() -> int:
    args = run_parser(__doc__, 500, "images of each set (the first n)").parse_args()
    rows = gap_rows(args.run, args.n)
    kinds = [k for k in rows[0] if k not in ("meshes", "iou")]
    print(table(rows, ["meshes", "iou", *kinds]))
    write_json(args.json, {"machine": machine(), "run": args.run, "n": args.n, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
