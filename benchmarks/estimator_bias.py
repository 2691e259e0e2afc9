"""Bias and variance of every estimator (and its biased options) on a Gaussian policy whose
gradient is known exactly (``gen3d.estimators.toys``: z ~ N(mu, sigma^2) in 2D, reward
offset + a.z + q.z^2, every input with its own copy of the parameters).

For each estimator and K it reports ``gain`` (the mean estimate's projection on the exact
gradient, as a fraction of it: 1 is unbiased in size), ``cos`` (the mean estimate's cosine to
the exact gradient), ``max_z`` (the largest per-coordinate z-score of the mean against the
exact value: above 4, biased beyond noise) and ``var_vs_reinforce`` (REINFORCE's mean
per-coordinate variance over this estimator's: above 1, less noisy). Optimal_cv, which takes
a backward pass per sample, gets an eighth of the estimates.

    python benchmarks/estimator_bias.py [--quick] [--json PATH] [--ks 2,4,8,16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json  # noqa: E402

# (row name, estimator, options): every built-in at its defaults, and the biased options
ROWS = [("reinforce", "reinforce", {}), ("moving_average", "moving_average", {}),
        ("neural", "neural", {"hidden": 16}), ("rloo", "rloo", {}),
        ("rloo normalize", "rloo", {"normalize": True}),
        ("rloo normalize keep_scale", "rloo", {"normalize": True, "keep_scale": True}),
        ("optimal_cv", "optimal_cv", {}), ("antithetic", "antithetic", {}),
        ("lax", "lax", {"hidden": 16}), ("pathwise (exact soft reward)", "pathwise", {})]


def measure(name: str, opts: dict, k: int, inputs: int, steps: int) -> dict:
    import torch

    from gen3d.estimators import build
    from gen3d.estimators.toys import Q, gaussian_estimates, gaussian_exact, z_scores

    est = build(name, **opts)
    est.check_samples(k)
    g = gaussian_estimates(est, Q, B=inputs, K=k, warmup=20, steps=steps)
    exact = gaussian_exact(Q)
    m = g.mean(0)
    return {"gain": float(m @ exact / (exact @ exact)),
            "cos": float(m @ exact / (m.norm() * exact.norm()).clamp_min(1e-30)),
            "max_z": float(z_scores(g, exact).abs().max()), "var": float(g.var(0).mean()),
            "estimates": len(g), "torch": torch.__version__}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer estimates (noisier figures)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--ks", default="2,4,8,16", help="samples per input K")
    a = ap.parse_args(argv)
    inputs, steps = (512, 10) if a.quick else (2048, 20)
    rows = []
    t0 = time.time()
    for k in (int(x) for x in a.ks.split(",")):
        ref = None
        for label, name, opts in ROWS:
            if name == "antithetic" and (k % 2 or k < 4):
                continue  # needs pairs, and two of them for its default baseline
            n = inputs // 8 if name == "optimal_cv" else inputs  # a backward per sample
            row = {"estimator": label, "K": k, **measure(name, opts, k, n, steps)}
            ref = row["var"] if name == "reinforce" else ref
            row["var_vs_reinforce"] = ref / row["var"] if ref and row["var"] > 0 else None
            rows.append(row)
    cols = ["estimator", "K", "gain", "cos", "max_z", "var_vs_reinforce"]
    print(table(rows, cols))
    out = {"machine": machine(), "inputs_per_step": inputs, "steps": steps,
           "wall_s": time.time() - t0, "rows": rows}
    write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
