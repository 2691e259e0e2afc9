"""What each colour model of the mesh model can hold: its parameters fitted (Adam on the
squared error, pathwise through the decoder) to the true colour at each of the 162 vertices of
held-out primitives, then rendered on the true geometry (the primitives sampled on the model's
rays) and scored against the images by PSNR. A ceiling of the colour model alone: no
inference, no score-function noise; the parameter count is what a learner must search.

    python benchmarks/colour_fit.py [--quick] [--json PATH] [--n 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json  # noqa: E402
from envs import spaces  # noqa: E402
from envs.renderer import MeshRenderer  # noqa: E402
from gen3d import geometry as geo  # noqa: E402
from gen3d import primitives as prim  # noqa: E402
from gen3d.data import mesh_images  # noqa: E402
from gen3d.mesh_model import MeshDecoder, MeshModelConfig  # noqa: E402
from learners import mesh_eval  # noqa: E402
from learners.mesh_train import render_fn  # noqa: E402

MODELS = {
    "uniform": {"colour": "uniform"},
    "sh 2": {"colour": "sh", "colour_degree": 2},
    "sh 4": {"colour": "sh", "colour_degree": 4},
    "sh 6": {"colour": "sh", "colour_degree": 6},
    "palette 6, sh 2": {"colour": "palette", "colour_degree": 2},
    "palette 6, sh 4": {"colour": "palette", "colour_degree": 4},
    "raw (per vertex)": {"colour": "raw"},
    "sh 2 at the normals": {"colour": "sh", "colour_degree": 2, "colour_at": "normals"},
    "sh 4 at the normals": {"colour": "sh", "colour_degree": 4, "colour_at": "normals"},
}


def vertex_colours(data) -> np.ndarray:
    """The true colour (N,162,3) where each vertex's ray meets the posed primitive."""
    out = []
    for i in range(len(data)):
        kind = data.kinds[data.kind[i]]
        m = prim.primitive(kind).transformed(data.rotation[i], None, float(data.scale[i]))
        _, face = geo.ray_hits(m.verts, m.faces, geo.ico_rays())
        out.append(data.colours[i][m.side_ids[np.maximum(face, 0)]])
    return np.stack(out).astype(np.float32)


def fit(dec: MeshDecoder, target: torch.Tensor, steps: int, basis=None, seed: int = 0) -> torch.Tensor:
    """Colour parameters (N, n) whose decoded colours (with the colour ``basis`` at the
    vertices, ``MeshDecoder.colour_basis``) are nearest ``target`` (N,162,3)."""
    g = torch.Generator().manual_seed(seed)
    n = dec.slices["colour"].stop - dec.slices["colour"].start
    c = (0.5 * torch.randn(len(target), n, generator=g)).requires_grad_()  # breaks a palette's tie
    opt = torch.optim.Adam([c], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((dec._colours(c, basis) - target) ** 2).sum()
        loss.backward()
        opt.step()
    return c.detach()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 images, 150 steps")
    ap.add_argument("--n", type=int, default=200, help="held-out images")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    n, steps = (40, 150) if args.quick else (args.n, args.steps)
    torch.set_num_threads(1)
    r = MeshRenderer(64, 64, 256)
    try:
        cfg = mesh_images.MeshImageConfig(n_train=1, n_test=n, mesh="rays", seed=7,
                                          cache_dir=tempfile.mkdtemp(prefix="gen3d-colour-"))
        _, data = mesh_images.load(cfg, render_fn(r))
        target = torch.from_numpy(vertex_colours(data))
        lengths = np.stack([np.linalg.norm(data.mesh(i).verts - data.translation[i], axis=1)
                            for i in range(len(data))])
        rows = []
        for name, kw in MODELS.items():
            t0 = time.time()
            dec = MeshDecoder(MeshModelConfig(**kw))
            basis = dec.colour_basis(torch.tensor(lengths, dtype=torch.float32))
            c = fit(dec, target, steps, basis)
            with torch.no_grad():
                cols = dec._colours(c, basis)
            a = spaces.pack(lengths, None, data.translation, cols.numpy())
            img = r.render_rays(**spaces.unpack(a)).rgb
            rows.append({"model": name, "params": dec.slices["colour"].stop - dec.slices["colour"].start,
                         "vertex_rmse": float(((cols - target) ** 2).mean().sqrt()),
                         "psnr": float(mesh_eval.psnr(img, data.images).mean()), "fit_s": time.time() - t0})
    finally:
        r.release()
    print(table(rows, ["model", "params", "vertex_rmse", "psnr", "fit_s"]))
    out = {"machine": machine(), "n": n, "steps": steps, "rows": rows}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
