"""How the width of the search sets the quality of a mesh run's gradient, at a fixed network.

For a batch of training images, the gradient of E_m[log p(x | render(m))] with respect to each
image's mean mesh parameters, as the run's own estimator forms it from K samples of p(m | z)
(posterior-mean z), with the sampling std multiplied by each scale (as ``train.std_final``
does late in a run). Reports, per scale: the cosine between two
independent K-sample estimates, the cosine of one with a K_ref-sample estimate, and how far the
mean sample's reward falls below the reward of the mean.

    python benchmarks/search_width.py --run runs/primitives [--scales 2,1,0.5,0.25] [--json PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_run, machine, run_parser, table, write_json  # noqa: E402
from envs import spaces  # noqa: E402
from envs.mesh_env import render_actions  # noqa: E402
from gen3d import estimators  # noqa: E402
from gen3d.data import mesh_images  # noqa: E402
from gen3d.mesh_model import images_to_tensor  # noqa: E402
from learners.mesh_train import local_renderer  # noqa: E402


def main(argv=None) -> dict:
    ap = run_parser(__doc__, 32, "the first N training images")
    ap.add_argument("--scales", default="2,1,0.5,0.25", help="std scales, comma-separated")
    ap.add_argument("--k", type=int, default=16, help="samples per estimate")
    ap.add_argument("--k-ref", type=int, default=256, help="samples of the reference estimate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg, model = load_run(args.run)
    est = estimators.build(cfg.estimator.name, **cfg.estimator.kwargs)
    r = local_renderer(cfg, max_batch=1024)
    gen = torch.Generator().manual_seed(args.seed)
    try:
        train, _ = mesh_images.load(cfg.data)
        targets = train.images[:args.n]
        with torch.no_grad():
            u = model.mean_params(images_to_tensor(targets))

        def rewards(m: torch.Tensor) -> torch.Tensor:  # (n, k, D) -> (n, k) nats
            k = m.shape[1]
            img = render_actions(r, model.decoder(m.reshape(-1, m.shape[-1])).numpy()).rgb
            ll = spaces.gaussian_loglik(np.repeat(targets, k, 0), img, cfg.train.sigma)
            return torch.as_tensor(ll, dtype=torch.float32).reshape(len(m), k)

        def estimate(std: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
            noise = torch.randn(len(u), k, len(std), generator=gen)
            m = u[:, None] + std * noise
            mean = u[:, None].clone().requires_grad_(True)
            reward = rewards(m)
            loss = est.loss(estimators.Batch(model.log_prob(m, mean, std), reward, noise=noise))
            (g,) = torch.autograd.grad(loss, mean)
            return -g.sum(1), reward

        cos = torch.nn.functional.cosine_similarity
        r_mean = rewards(u[:, None])[:, 0]
        rows = []
        for scale in (float(s) for s in args.scales.split(",")):
            std = scale * model.std().detach()
            a, _ = estimate(std, args.k)
            b, _ = estimate(std, args.k)
            ref, r_ref = estimate(std, args.k_ref)
            rows.append({"std_scale": scale, "std_mean": float(std.mean()),
                         "cos_two_estimates": float(cos(a, b, dim=1).mean()),
                         "cos_reference": float(cos(a, ref, dim=1).mean()),
                         "sample_loss_nats": float((r_mean - r_ref.mean(1)).mean())})
    finally:
        r.release()
    print(table(rows, list(rows[0])))
    out = {"machine": machine(), "run": args.run, "n": args.n, "k": args.k, "k_ref": args.k_ref,
           "estimator": {"name": cfg.estimator.name, "kwargs": cfg.estimator.kwargs}, "rows": rows}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
