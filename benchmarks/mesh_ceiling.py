"""Ceilings for the main job's held-out IoU, from the truth the learner never sees:

- ``fit``: the true primitive as a ray mesh (ray lengths about its centre, at its true position),
  raw and projected onto each spherical-harmonic basis: what the parameterisation can show;
- ``supervised``: the mesh model's own networks (encoder, posterior mean, LSTM, write) trained
  by regression on the true ray lengths and position: what the architecture can infer from the
  images when the gradient is exact and the target is known.

    python benchmarks/mesh_ceiling.py [--quick] [--json PATH] [--config configs/primitives.yaml]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json
from gen3d import geometry as geo
from gen3d.data import mesh_images
from gen3d.mesh_model import MeshModel, images_to_tensor
from learners import mesh_eval
from learners import config as config_io
from learners.mesh_train import local_renderer, render_fn


def sh_fit(lengths: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares projection of log ray lengths onto harmonics up to ``degree``."""
    y = geo.real_sph_harm(geo.ico_rays(), degree).astype(np.float64)
    c, *_ = np.linalg.lstsq(y, np.log(np.maximum(lengths, 1e-3)).T, rcond=None)
    return np.exp(y @ c).T.astype(np.float32)


def render_iou(r, lengths, trans, data) -> float:
    out = r.render_rays(lengths, translation=trans, mask=True)
    return float(mesh_eval.iou(out.mask, data.masks).mean())


def supervised(cfg, train, test, r, minutes: float, seed: int = 0) -> tuple[float, int]:
    torch.manual_seed(seed)
    model = MeshModel(cfg.model, cfg.data.size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    L, T = mesh_eval.true_rays(train)
    logL = torch.from_numpy(np.log(np.maximum(L, 1e-3)))
    Tt = torch.from_numpy(T)
    rng = np.random.default_rng(seed)
    sl = geo.ACTION_SLICES
    t0, step = time.time(), 0
    while time.time() - t0 < minutes * 60:
        idx = rng.integers(len(train), size=64)
        a = model.decoder(model.mean_params(images_to_tensor(train.images[idx])))
        loss = ((torch.log(a[:, sl["lengths"]]) - logL[idx]) ** 2).mean() \
            + ((a[:, sl["translation"]] - Tt[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    acts = mesh_eval.infer_actions(model, test.images)
    return render_iou(r, acts[:, sl["lengths"]], acts[:, sl["translation"]], test), step


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/primitives.yaml")
    ap.add_argument("--quick", action="store_true", help="fits only, on 200 held-out images")
    ap.add_argument("--minutes", type=float, default=6.0, help="supervised training time")
    ap.add_argument("--degrees", default="2,4,6,8")
    ap.add_argument("--inflate", type=float, default=1.04,
                    help="also score the raw fit with every ray this much longer")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. model.shape=raw")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    _, cfg = config_io.load(args.config, args.set)
    r = local_renderer(cfg)
    train, test = mesh_images.load(cfg.data, render_fn(r))
    if args.quick:
        test = test.subset(slice(0, 200))
    L, T = mesh_eval.true_rays(test)
    rows = [{"ceiling": "best fixed sphere", "shape": "-",
             "iou": mesh_eval.sphere_floor(r, train, test)[1]},
            {"ceiling": "fit", "shape": "raw", "iou": render_iou(r, L, T, test)},
            {"ceiling": f"fit x{args.inflate:g}", "shape": "raw",
             "iou": render_iou(r, L * args.inflate, T, test)}]
    for d in (int(x) for x in args.degrees.split(",")):
        rows.append({"ceiling": "fit", "shape": f"sh{d}", "iou": render_iou(r, sh_fit(L, d), T, test)})
    if not args.quick:
        iou, steps = supervised(cfg, train, test, r, args.minutes)
        shape = cfg.model.shape + (str(cfg.model.shape_degree) if cfg.model.shape == "sh" else "")
        rows.append({"ceiling": f"supervised ({steps} steps)", "shape": shape, "iou": iou})
    print(table(rows, ["ceiling", "shape", "iou"]))
    out = {"machine": machine(r.gl), "config": args.config, "rows": rows}
    write_json(args.json, out)
    r.release()
    return out


if __name__ == "__main__":
    main()
