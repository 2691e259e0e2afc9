"""Does one image's reward see an object's depth? For a finished run's held-out images, two
meshes of each object are squashed or stretched along the camera's axis (z) about their centre,
by each of ``--factors``, and scored by the reward the run trains on: the render, painted as
training paints it (``model.train_colours: read``: the albedo the image shows at the seen
vertices, fit by the colour harmonics), against the image (nats per image):

- the truth's own ray mesh (about its kind's template origin);
- the network's answer (``MeshModel.infer``, held on the camera's rays where the model infers
  a rotation, and repainted the same way).

A squash reaches the reward two ways: through the outline, since in the camera's perspective
the near side looks larger than the far one, and through the shading of the sides (the lights
are fixed, the sides' normals turn with the squash). For scale, the row ``shrunk 5%``
scales the truth's mesh by 0.95 in every direction: a change the silhouette shows (about a
pixel at the rim of a 40-pixel object).

Per kind: the mean log-likelihood less the unsquashed mesh's (``d_<factor>``), the fraction
of images whose unsquashed mesh is the most likely of the factors (``depth_1_best``), and the
silhouette IoU of the most squashed mesh against the unsquashed one (``sil_iou_squashed``:
how far the outline moves).

    python benchmarks/depth_cue.py --run runs/<name> [--n 300] [--factors 0.5,0.75,1.33,2] [--json PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (image_loglik, machine, number_list, run_images, run_parser,  # noqa: E402
                               table, write_json)
from envs import spaces  # noqa: E402
from gen3d import geometry as geo  # noqa: E402
from gen3d.mesh_model import images_to_tensor  # noqa: E402
from learners import mesh_eval  # noqa: E402


def scaled(actions: np.ndarray, factors=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Actions (N, A) of ray meshes (no rotation) scaled by ``factors`` along x, y, z about
    their centres, recast on the rays (the ray mesh closest to the scaled one; a ray longer
    than the action space allows is cut to ``geo.MAX_LENGTH``)."""
    a = spaces.unpack(actions)
    if np.abs(a["rotation"]).max(initial=0) > 0:
        raise ValueError("scaled: meshes with a rotation; scale their camera-frame lengths "
                         "(learners.mesh_eval.camera_lengths) instead")
    verts = geo.ray_mesh(a["lengths"]) * np.asarray(factors, np.float32)
    faces = geo.ico_faces()
    lengths = np.stack([geo.ray_lengths_of_mesh(v, faces) for v in verts])
    lengths = np.minimum(lengths, geo.MAX_LENGTH).astype(np.float32)
    return spaces.pack(lengths, a["rotation"], a["translation"], a["colours"])


def camera_frame(actions: np.ndarray) -> np.ndarray:
    """Actions (N, A) as ray meshes with no rotation: a turned mesh's lengths along the
    camera's rays (its colours are painted afresh before it is scored)."""
    a = spaces.unpack(actions)
    return spaces.pack(mesh_eval.camera_lengths(actions), translation=a["translation"])


def painted(model, images: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``actions`` with the colours training paints them (``MeshModel.paint``)."""
    out = model.paint(torch.from_numpy(np.ascontiguousarray(actions, np.float32)), images_to_tensor(images))
    return out.numpy()


def depth_rows(model, renderer, data, factors, sigma: float) -> list[dict]:
    """Rows (mesh, kind) of each kind's mean log-likelihood change per depth factor."""
    lengths, centre = mesh_eval.true_rays(data)
    meshes = {"truth": spaces.pack(lengths, translation=centre),
              "network": camera_frame(mesh_eval.infer_actions(model, data.images))}

    def loglik(actions):
        return image_loglik(renderer, painted(model, data.images, actions), data.images, sigma)

    def mask(actions):
        return renderer.render_rays(**spaces.unpack(actions), mask=True).mask

    rows = []
    for name, actions in meshes.items():
        ll = {f: loglik(scaled(actions, (1.0, 1.0, f))) for f in sorted({1.0, *factors})}
        if name == "truth":
            ll["shrunk 5%"] = loglik(scaled(actions, (0.95, 0.95, 0.95)))
        best = np.argmax(np.stack([ll[f] for f in sorted(k for k in ll if k != "shrunk 5%")]), 0)
        ones = sorted(k for k in ll if k != "shrunk 5%").index(1.0)
        sil = mesh_eval.iou(mask(scaled(actions, (1.0, 1.0, min(factors)))), mask(scaled(actions)))
        for j, k in enumerate(data.kinds):
            sel = data.kind == j
            if not sel.any():
                continue
            row = {"mesh": name, "kind": k, "n": int(sel.sum()), "loglik": float(ll[1.0][sel].mean())}
            row |= {_col(f): float((ll[f][sel] - ll[1.0][sel]).mean()) for f in ll if f != 1.0}
            row["depth_1_best"] = float((best[sel] == ones).mean())
            row["sil_iou_squashed"] = float(sil[sel].mean())
            rows.append(row)
    return rows


def _col(f) -> str:
    return "d_shrunk5" if f == "shrunk 5%" else f"d_{f:g}"


def main(argv: list[str] | None = None) -> int:
    ap = run_parser(__doc__, 300, "held-out images (the first n)")
    ap.add_argument("--factors", type=number_list(float), default=(0.5, 0.75, 1.33, 2.0),
                    help="depth factors to try beside 1, e.g. 0.5,0.75,1.33,2")
    args = ap.parse_args(argv)
    if not args.factors or min(args.factors) <= 0:
        raise SystemExit(f"--factors: need positive numbers, got {args.factors}")
    with run_images(args.run, args.n) as (cfg, model, r, _, test):
        if model.reader is None:
            raise SystemExit(f"--run: {args.run} does not read colours (model.read_colours: false); "
                             "the probe paints as a run with train_colours: read does")
        rows = depth_rows(model, r, test, args.factors, cfg.train.sigma)
    cols = ["mesh", "kind", "n", "loglik", "d_shrunk5", *(_col(f) for f in sorted(args.factors) if f != 1),
            "depth_1_best", "sil_iou_squashed"]
    print(table(rows, cols))
    write_json(args.json, {"machine": machine(), "run": args.run, "n": args.n,
                           "factors": list(args.factors), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
