"""Does one image's reward see an object's depth? For a finished run's held-out images, two
meshes of each object are squashed or stretched along the camera's axis (z) about their centre,
by each of ``--factors``, and scored by the reward the run trains on: the render, painted as
training paints it (``model.train_colours: read``: the albedo the image shows at the seen
vertices, fit by the colour harmonics), against the image (nats per image):

- the truth's own ray mesh (about its kind's template origin);
- the same cut to the model's shape harmonics (``rounded``: log ray lengths fit to degree
  ``model.shape_degree``, the corners rounded as the model's shapes must round them);
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
    """Ray meshes (N, A) held on the camera's rays with no rotation, scaled by ``factors``
    along the camera's x, y, z about their centres (``mesh_eval.camera_lengths``; a ray longer
    than the action space allows is cut to ``geo.MAX_LENGTH``). Their colours are not kept:
    the probe paints every mesh afresh."""
    lengths = np.minimum(mesh_eval.camera_lengths(actions, factors), geo.MAX_LENGTH)
    return spaces.pack(lengths.astype(np.float32), translation=spaces.unpack(actions)["translation"])


def painted(model, images: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``actions`` with the colours training paints them (``MeshModel.paint``)."""
    out = model.paint(torch.from_numpy(np.ascontiguousarray(actions, np.float32)), images_to_tensor(images))
    return out.numpy()


def rounded(lengths: np.ndarray, degree: int) -> np.ndarray:
    """Ray lengths (N, 162) whose logs are fit by real harmonics up to ``degree`` on the rays."""
    y, pinv = geo.ray_harmonics(degree)
    return np.exp(np.log(np.maximum(lengths, 1e-6)) @ pinv.T @ y.T).astype(np.float32)


def depth_rows(model, renderer, data, factors, sigma: float) -> list[dict]:
    """Rows (mesh, kind) of each kind's mean log-likelihood change per depth factor."""
    lengths, centre = mesh_eval.true_rays(data)
    meshes = {"truth": spaces.pack(lengths, translation=centre),
              "rounded": spaces.pack(rounded(lengths, model.cfg.shape_degree), translation=centre),
              "network": mesh_eval.infer_actions(model, data.images)}
    factors = sorted({1.0, *factors})
    one = factors.index(1.0)

    def loglik(actions):
        return image_loglik(renderer, painted(model, data.images, actions), data.images, sigma)

    def mask(actions):
        return renderer.render_rays(**spaces.unpack(actions), mask=True).mask

    rows = []
    for name, actions in meshes.items():
        versions = [scaled(actions, (1.0, 1.0, f)) for f in factors]
        ll = np.stack([loglik(v) for v in versions])  # (factors, N)
        gain = {_col(f): ll[i] - ll[one] for i, f in enumerate(factors) if i != one}
        if name == "truth":
            gain["d_shrunk5"] = loglik(scaled(actions, (0.95, 0.95, 0.95))) - ll[one]
        is_best = ll.argmax(0) == one
        sil = mesh_eval.iou(mask(versions[0]), mask(versions[one]))
        for j, k in enumerate(data.kinds):
            sel = data.kind == j
            if sel.any():
                rows.append({"mesh": name, "kind": k, "n": int(sel.sum()),
                             "loglik": float(ll[one][sel].mean()),
                             **{c: float(g[sel].mean()) for c, g in gain.items()},
                             "depth_1_best": float(is_best[sel].mean()),
                             "sil_iou_squashed": float(sil[sel].mean())})
    return rows


def _col(f: float) -> str:
    return f"d_{f:g}"


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
    cols = ["mesh", "kind", "n", "loglik", "d_shrunk5",
            *(_col(f) for f in sorted(set(args.factors)) if f != 1), "depth_1_best", "sil_iou_squashed"]
    print(table(rows, cols))
    write_json(args.json, {"machine": machine(), "run": args.run, "n": args.n,
                           "factors": list(args.factors), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
