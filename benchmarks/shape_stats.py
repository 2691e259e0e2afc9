"""What a finished mesh run's answers look like as shapes, beside the truth's, per kind.

Three measures of each held-out answer and of its true object, both as the 162 rays hold them
about the model's own origin for the kind (``learners.mesh_eval.model_origin``):
- ``depth``: the shape's extent along the camera's axis over its extent across (x). One view
  sees depth only through perspective and shading (``benchmarks/depth_cue.py``); a value
  below the truth's is an answer squashed towards the camera's image plane.
- ``asym``: the RMS over the sphere of its log ray length less its mirror's, in its most
  nearly symmetric plane (``gen3d.mirror_prior``). Every kind the data makes has such a plane;
  the truth is not exactly symmetric on the rays, which cut its corners, nor in planes 2.4
  degrees apart.
- ``deg1`` .. ``deg3``: the size (L2 norm of the coefficients) of the shape's log-length
  harmonics of degree 1, 2 and 3: how far it is from a ball at the degrees that hold its pose
  (an apex, a stretch).

    python benchmarks/shape_stats.py --run runs/<name> [--n 500] [--json PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_images, run_parser, table, write_json  # noqa: E402

DEGREES = (1, 2, 3)
"""The degrees whose size each row gives."""


def log_harmonics(lengths: np.ndarray, degree: int = 6) -> np.ndarray:
    """(N, (degree+1)^2) real harmonics of log ray lengths (N, 162), fit on the rays."""
    from gen3d import geometry as geo

    return np.log(np.maximum(lengths, 1e-6)) @ geo.ray_harmonics(degree)[1].T


def asymmetry(coefs: np.ndarray) -> np.ndarray:
    """(N,) each shape's RMS distance over the sphere to its mirror in its best plane."""
    import torch

    from gen3d.mirror_prior import MirrorPrior

    degree = int(round(np.sqrt(coefs.shape[1]))) - 1
    nats = MirrorPrior(degree, 1.0)(torch.tensor(coefs, dtype=torch.float32))
    # the harmonics are orthonormal over the sphere's 4 pi: an RMS per unit area
    return np.sqrt(2 * nats.numpy() / (4 * np.pi))


def depth_ratio(lengths: np.ndarray) -> np.ndarray:
    """(N,) each ray mesh's extent along the camera's z over its extent along x."""
    from gen3d import geometry as geo

    v = geo.ray_mesh(lengths)
    ext = v.max(-2) - v.min(-2)
    return ext[:, 2] / np.maximum(ext[:, 0], 1e-9)


def stats(lengths: np.ndarray, suffix: str = "") -> dict[str, float]:
    """The medians of every measure of ray meshes ``lengths`` (N, 162), keys ending in ``suffix``."""
    coefs = log_harmonics(lengths)
    out = {f"depth{suffix}": float(np.median(depth_ratio(lengths))),
           f"asym{suffix}": float(np.median(asymmetry(coefs)))}
    for d in DEGREES:
        out[f"deg{d}{suffix}"] = float(np.median(np.linalg.norm(coefs[:, d * d:(d + 1) ** 2], axis=1)))
    return out


def rows(actions: np.ndarray, data) -> list[dict]:
    """One row per kind of ``data`` for the answers ``actions`` (N, A)."""
    from learners import mesh_eval

    net = mesh_eval.camera_lengths(actions)
    out = []
    for k, kind in enumerate(data.kinds):
        sel = np.flatnonzero(data.kind == k)
        if len(sel):
            truth = mesh_eval.true_rays(data.subset(sel), mesh_eval.model_origin(actions, data, sel))[0]
            out.append({"kind": kind, "n": len(sel), **stats(net[sel]), **stats(truth, "_truth")})
    return out


def main() -> int:
    ap = run_parser(__doc__, 500, "held-out images (the first n)")
    args = ap.parse_args()
    from learners import mesh_eval

    with run_images(args.run, args.n) as (_, model, _, _, test):
        found = rows(mesh_eval.infer_actions(model, test.images), test)
    names = ["depth", "asym"] + [f"deg{d}" for d in DEGREES]
    print(table(found, ["kind", "n"] + [f"{c}{s}" for c in names for s in ("", "_truth")]))
    write_json(args.json, {"machine": machine(), "run": args.run, "n": args.n, "rows": found})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
