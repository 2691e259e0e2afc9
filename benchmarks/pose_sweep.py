"""Would a renderer-scored pose search find the pose, given the network's own shapes? For a
finished run with ``model.rotation`` on, each held-out image's inferred object-frame mesh (its
decoder's colours) is rendered under N random rotations at its inferred position, scored by
the training reward (the Gaussian log-likelihood of the image), and the most likely rotation is
kept; its median error modulo symmetry, per kind, beside the network's own rotation.

    python benchmarks/pose_sweep.py --run runs/<name> [--n 200] [--rotations 1000] [--json PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_run, machine, run_parser, table, write_json  # noqa: E402
from envs import spaces  # noqa: E402
from gen3d import geometry as geo  # noqa: E402
from gen3d import symmetry  # noqa: E402
from gen3d.data import mesh_images  # noqa: E402
from learners import mesh_eval  # noqa: E402
from learners.mesh_train import local_renderer  # noqa: E402


def best_rotations(r, parts: dict, candidates: np.ndarray, sigma: float) -> np.ndarray:
    """For each image i (of ``r``'s targets), the candidate rotation (C,3,3) under which its
    mesh ``parts`` (unpacked actions) renders most likely: (N,3,3)."""
    aa = geo.matrix_to_axis_angle(candidates).astype(np.float32)
    c = len(candidates)
    out = []
    for i in range(len(parts["lengths"])):
        mesh = {k: np.repeat(parts[k][i:i + 1], c, 0) for k in ("lengths", "translation", "colours")}
        ll, _ = r.rewards_rays(np.full(c, i), sigma, rotation=aa, **mesh)
        out.append(candidates[int(np.argmax(ll))])
    return np.stack(out)


def main(argv=None) -> dict:
    ap = run_parser(__doc__, 200, "the first N held-out images",
                    "a finished run's directory with model.rotation on")
    ap.add_argument("--rotations", type=int, default=1000, help="random rotations searched per image")
    args = ap.parse_args(argv)
    cfg, model = load_run(args.run)
    if not cfg.model.rotation:
        raise SystemExit(f"{args.run}: model.rotation is off, so its shapes are in the camera frame "
                         "and there is no object-frame mesh to turn; pass a run with model.rotation: true")
    _, test = mesh_images.load(cfg.data)
    test = test.subset(slice(0, args.n))
    with torch.no_grad():  # the decoder's colours: what training renders
        parts = spaces.unpack(model.decoder(mesh_eval.infer_params(model, test.images)).numpy())
    r = local_renderer(cfg)
    try:
        r.set_targets(test.images)
        cands = geo.random_rotation(np.random.default_rng(1), args.rotations)
        swept = best_rotations(r, parts, cands, cfg.train.sigma)
    finally:
        r.release()
    own = geo.axis_angle_to_matrix(parts["rotation"])
    rows = []
    for k, kind in enumerate(test.kinds):
        sel = test.kind == k
        truth = test.rotation[sel]
        own_deg, swept_deg = (float(np.median(symmetry.rotation_error_deg(truth, rot[sel], kind)))
                              for rot in (own, swept))
        rows.append({"kind": kind, "n": int(sel.sum()), "own_deg": own_deg, "swept_deg": swept_deg})
    print(table(rows, ["kind", "n", "own_deg", "swept_deg"]))
    out = {"machine": machine(), "run": args.run, "n": args.n, "rotations": args.rotations, "rows": rows}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
