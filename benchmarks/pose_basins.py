"""Is a kind's pose lost to the likelihood or to the search? For a finished run's training
images of one kind, three starts are refined by the run's own reward, the decoded mesh with
its decoder's colours rendered against the image (``learners/mesh_refine.py``: no truth):

- the self-imitation best the run kept for the image, as kept and with its colours read;
- the truth's own ray mesh (about the model's origin for the kind), with its colours read;
- optionally, how far from the truth a start may be and still climb to it: the truth's mesh
  turned by ``--turned`` degrees about random axes, or cut to the harmonics of degree at most
  ``--coarse`` (the truth's turn in a coarse shape, as a network early in training might hold
  it), each with its colours read.

Colours read are those the image shows at the mesh's seen vertices, fit in the decoder's
colour harmonics (``MeshDecoder.params``): the two read starts differ only in their geometry.

Each start and each refined mesh is scored by its log-likelihood (nats per image; and
``beats_truth``, the fraction of images where it is at least as likely as the truth's start
after as many steps), silhouette IoU and the turn read off its shape given the kind
(``rot_err_kind_deg``). If refinement from the truth keeps the true turn and ends more likely
than refinement from the bests, the likelihood favours the true pose and the run's search does
not reach it.

    python benchmarks/pose_basins.py --run runs/<name> [--kind pyramid] [--n 60] [--steps 150]
        [--turned 15,30,45,90] [--coarse 2,4] [--json PATH]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (checkpoint, image_loglik, machine, number_list, positive_int,  # noqa: E402
                               run_images, run_parser, table, write_json)
from envs import spaces  # noqa: E402
from gen3d import geometry as geo  # noqa: E402
from gen3d import mesh_pose, symmetry  # noqa: E402
from gen3d.image_colours import ImageColours  # noqa: E402
from gen3d.mesh_model import images_to_tensor  # noqa: E402
from learners import mesh_eval  # noqa: E402
from learners.mesh_refine import RefineConfig, refine  # noqa: E402


def truth_actions(data, origin) -> np.ndarray:
    """Actions (N, A) of each true object's ray mesh about ``origin`` in its kind's frame."""
    lengths, centre = mesh_eval.true_rays(data, origin)
    return spaces.pack(lengths, translation=centre)


def turned_by(data, degrees: float, seed: int = 0):
    """``data`` with each object turned a further ``degrees`` about its own random axis
    (seeded), its position kept."""
    axes = np.random.default_rng(seed).normal(size=(len(data), 3))
    turn = geo.axis_angle_to_matrix(axes / np.linalg.norm(axes, axis=1, keepdims=True) * np.deg2rad(degrees))
    return dataclasses.replace(data, rotation=np.einsum("nij,njk->nik", turn, data.rotation))


def truth_starts(model, data, origin, turned=(), degrees=(), seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """(label, parameters) of the truth's ray mesh with its colours read, as is, turned by each
    of ``turned`` degrees and cut to each of ``degrees``."""
    truth = read_params(model, data, truth_actions(data, origin))
    starts = [("truth, colours read", truth)]
    starts += [(f"truth turned {t:g}°, colours read",
                read_params(model, data, truth_actions(turned_by(data, t, seed), origin))) for t in turned]
    starts += [(f"truth to degree {d}, colours read", model.decoder.cut(truth, d)) for d in degrees]
    return starts


def read_params(model, data, actions: np.ndarray) -> torch.Tensor:
    """Parameters (N, D) of meshes ``actions`` with the colours the image shows at their seen
    vertices, fit in the decoder's colour harmonics."""
    a = spaces.unpack(actions)
    albedo, seen = ImageColours(data.images.shape[1])(
        images_to_tensor(data.images),
        *(torch.from_numpy(a[k]).float() for k in ("lengths", "rotation", "translation")))
    read = spaces.pack(a["lengths"], a["rotation"], a["translation"], albedo.numpy())
    return model.decoder.params(torch.from_numpy(read), seen)


def scored(model, r, data, m: torch.Tensor, kind: str, origin, sigma: float, **labels) -> dict:
    """``labels`` with the mean log-likelihood, IoU and median turn error of parameters m."""
    a = model.decoder(m).detach().numpy()
    out = r.render_rays(**spaces.unpack(a), mask=True)
    err = symmetry.rotation_error_deg(
        data.rotation, mesh_pose.read_turns(mesh_eval.camera_lengths(a), kind, 3000, origin), kind)
    loglik = spaces.gaussian_loglik(data.images, out.rgb, sigma)
    return {**labels, "loglik": float(loglik.mean()), "per_image": loglik,
            "iou": float(mesh_eval.iou(out.mask, data.masks).mean()),
            "rot_err_kind_deg": float(np.median(err)), "below_20": float((err < 20).mean())}


def basin_rows(model, r, data, best: torch.Tensor, kind: str, sigma: float, refine_cfg: RefineConfig,
               seed: int = 0, turned=(), degrees=()) -> list[dict]:
    """Rows for the starts (the bests ``best`` (N, D) and the truth, with ``truth_starts``'
    ``turned`` and ``degrees``) of ``data``'s images, all of ``kind``, before and after
    ``refine_cfg``."""
    kept = model.decoder(best).detach().numpy()
    origin = mesh_eval.model_origin(kept, data, np.ones(len(data), bool))

    def evaluate(actions, idx):
        return image_loglik(r, actions, data.images[idx], sigma)

    starts = [("bests", best), ("bests, colours read", read_params(model, data, kept)),
              *truth_starts(model, data, origin, turned, degrees, seed)]
    rows = []
    for start, m0 in starts:
        m1, _ = refine(m0.float(), model.decoder, evaluate, refine_cfg,
                       generator=torch.Generator().manual_seed(seed))
        rows += [scored(model, r, data, m, kind, origin, sigma, start=start, refined=k)
                 for k, m in ((0, m0.float()), (refine_cfg.steps, m1))]
    truth = {row["refined"]: row["per_image"] for row in rows if row["start"] == "truth, colours read"}
    for row in rows:  # per image: as likely as the truth's start refined alike, or more?
        row["beats_truth"] = float((row.pop("per_image") >= truth[row["refined"]]).mean())
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = run_parser(__doc__, 60, "training images of the kind with a kept best (the first n)")
    ap.add_argument("--kind", default="pyramid", help="a trained kind with a turn (not the sphere)")
    ap.add_argument("--steps", type=positive_int, default=150, help="refinement steps")
    ap.add_argument("--turned", type=number_list(float), default=(),
                    help="also start from the truth turned by these degrees, e.g. 15,30,45")
    ap.add_argument("--coarse", type=number_list(int), default=(),
                    help="also start from the truth cut to these harmonic degrees, e.g. 2,4")
    args = ap.parse_args(argv)
    with run_images(args.run, 10**9) as (cfg, model, r, train, _):
        if args.kind not in train.kinds or args.kind in mesh_pose.ROUND_KINDS:
            raise SystemExit(f"--kind: {args.kind!r} is not a trained kind with a turn; pick one "
                             f"of {[k for k in train.kinds if k not in mesh_pose.ROUND_KINDS]}")
        replay = checkpoint(args.run).get("replay")
        if replay is None:
            raise SystemExit(f"--run: {args.run} kept no self-imitation bests (train.self_imitation "
                             "was 0); pick a run that trained with them")
        kept = torch.isfinite(replay["r"][:len(train)]).numpy()
        idx = np.flatnonzero(kept & (train.kind == train.kinds.index(args.kind)))[:args.n]
        if not len(idx):
            raise SystemExit(f"--kind: the run kept no best for any {args.kind} image; pick another kind")
        refine_cfg = RefineConfig(steps=args.steps, samples=16, std=0.02, lr=0.01)
        rows = basin_rows(model, r, train.subset(idx), replay["m"][idx], args.kind, cfg.train.sigma,
                          refine_cfg, turned=args.turned, degrees=args.coarse)
    print(table(rows, ["start", "refined", "loglik", "beats_truth", "iou", "rot_err_kind_deg", "below_20"]))
    write_json(args.json, {"machine": machine(), "run": args.run, "kind": args.kind, "n": len(idx),
                           "steps": args.steps, "turned": list(args.turned),
                           "coarse": list(args.coarse), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
