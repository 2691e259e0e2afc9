"""Gradient estimators compared on the primitives task under one render budget, over paired seeds.

Trains the main config (``configs/primitives.yaml``, at the preset's sizes) once per estimator
and seed with ``learners.mesh_train.run``. Each estimator runs with its own options: the
config's estimator with the config's ``estimator.kwargs``, the others at their defaults, and
``--opt NAME.KEY=VALUE`` on top. An estimator that fails (an option it does not take, too few
samples) reports its error in its row; the others run. Seeds are paired: for one seed every
estimator sees the same data, the same initial network and the same batches of images (the
data's own seed is the config's ``data.seed``, the same for every seed).

Reports, per estimator, the mean, minimum and maximum over seeds of: the ELBO gain reached, the
renders to a target ELBO gain and to zero gain, the held-out IoU/PSNR/Chamfer, and the gradient
variance and SNR of ``learners.diagnose`` at each seed's checkpoint of the config's estimator.
Writes the JSON, PNG figures (ELBO gain and held-out IoU against renders, mean line and
min-max band over seeds; variance and SNR bars) and the same to TensorBoard (``<out>/tb``).

A step's ELBO mostly says which images it drew (a red cube far off centre costs far more than
a grey ball), so the curves are of the ELBO *gain*: the step's ELBO minus the log-likelihood
of the same images under the initial model (one grey sphere for every image; the batches are
replayed from the seed), smoothed over ``--smooth`` steps. The target is by default 75% of
the best seed-mean final gain among the score-function runs.

    python benchmarks/estimators.py [--quick] [--seeds 3] [--json PATH] [--plots DIR] \\
        [--estimators rloo,reinforce,...] [--opt rloo.normalize=false] [--set train.lr=1e-3]
    python benchmarks/estimators.py --only-softras   # the oracle against GL: agreement, speed

The pathwise run trains through the soft rasteriser: its renders are soft ones, and its logged
ELBO is the soft renderer's, so it takes no part in the target; its final ELBO is measured
through GL like every other run's (``elbo_gl_test``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import estimator_runs as er  # noqa: E402
from benchmarks.common import machine, table, write_json  # noqa: E402
from gen3d import estimators  # noqa: E402
from learners.config import IMPORT_HELP, ConfigError, import_modules  # noqa: E402

ALL = ["reinforce", "moving_average", "neural", "rloo", "optimal_cv", "antithetic", "vimco",
       "lax", "pathwise"]
SETTINGS = {  # (quick, full): data, model and step sizes
    "quick": {"size": 32, "n_train": 400, "n_test": 48, "hidden": 64, "channels": 8,
              "batch": 8, "samples": 4, "budget": 6400, "estimates": 100},
    "full": {"size": 64, "n_train": 2000, "n_test": 200, "hidden": 300, "channels": 32,
             "batch": 16, "samples": 8, "budget": 64000, "estimates": 100},
}
STATS = ["final_elbo_gain", "renders_to_target", "renders_to_zero_gain", "elbo_gl_test", "iou",
         "psnr", "chamfer", "var_mean", "var_ratio_vs_reinforce", "dsnr", "cos_oracle", "wall_s"]


def base_config(out: Path, s: dict, config: str, overrides: list[str]):
    """The config file at the benchmark's sizes, then ``overrides`` (``--set``); the steps are
    the render budget over the renders a step (unless ``train.steps`` is overridden)."""
    from learners.config import apply_overrides, from_dict, read_yaml
    from learners.mesh_train import MeshRunConfig

    d = read_yaml(config)
    d.pop("task", None)
    d["out_dir"] = str(out / "runs")
    d.setdefault("data", {}).update(size=s["size"], n_train=s["n_train"], n_test=s["n_test"],
                                    cache_dir=str(out / "cache"))
    d.setdefault("model", {}).update(hidden=s["hidden"], channels=s["channels"])
    d.setdefault("train", {}).update(batch=s["batch"], samples=s["samples"], log_every=1,
                                     progress=False, time_limit_s=0.0)
    d["eval"] = {"chamfer_points": 500, "n_obj": 0}
    apply_overrides(d, overrides, config)
    t = d["train"]
    if not any(o.strip().startswith("train.steps=") for o in overrides):
        t["steps"] = s["budget"] // (int(t["batch"]) * int(t["samples"]))
    if t["steps"] < 1:
        raise ValueError(f"--budget {s['budget']} is under one step of {t['batch']} x "
                         f"{t['samples']} renders; raise --budget")
    t.setdefault("image_every", t["steps"] + 1)
    return from_dict(MeshRunConfig, d, config)


def smooth(v: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over ``w`` steps (fewer at the start)."""
    c = np.cumsum(np.insert(v, 0, 0.0))
    n = np.minimum(np.arange(1, len(v) + 1), w)
    return (c[1:] - c[np.arange(1, len(v) + 1) - n]) / n


def first_at_least(curve: np.ndarray, level: float | None) -> int | None:
    """The first index where ``curve >= level`` (None: never, or no level)."""
    if level is None:
        return None
    hit = np.nonzero(curve >= level)[0]
    return int(hit[0]) if len(hit) else None


def spread(values: list) -> dict | None:
    """Mean, std (n-1), min, max and count of the values that exist (None where none does):
    a figure that only some seeds reach (renders to target) counts the seeds that did."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return None
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": len(v)}


def seed_rows(runs: dict, var: dict, cfg0, names: list[str],
              target: float | None) -> dict:
    """{estimator: [per-seed row]} from the runs and diagnoses; each row has its seed."""
    bk = cfg0.train.batch * cfg0.train.samples
    out: dict[str, list] = {n: [] for n in names}
    for (seed, n), r in runs.items():
        if "error" in r:
            out[n].append({"seed": seed, "error": r["error"]})
            continue
        gl = r["render_kind"] == "gl"
        hit = first_at_least(r["gain"], target) if gl else None
        hit0 = first_at_least(r["gain"], 0.0) if gl else None
        sc = r["report"]["scores"]
        v = var.get(seed, {}).get(n, {})
        out[n].append({"seed": seed, "renders": len(r["gain"]) * bk,
                       "renders_to_target": None if hit is None else (hit + 1) * bk,
                       # renders until it beats the initial model (one grey sphere) on average
                       "renders_to_zero_gain": None if hit0 is None else (hit0 + 1) * bk,
                       "final_elbo_gain": float(r["gain"][-1]), "elbo_gl_test": r["elbo_gl_test"],
                       "iou": sc["iou"], "psnr": sc["psnr"], "chamfer": sc["chamfer"],
                       "wall_s": r["wall_s"], "digests": r["digests"],
                       **{k: v.get(k) for k in ("var_mean", "var_ratio_vs_reinforce", "dsnr",
                                                "cos_oracle", "error") if k in v}})
    return out


def summary_rows(per_seed: dict, options: dict, kinds: dict) -> list[dict]:
    """One row per estimator: its options, the spread of each figure over seeds, its seeds' rows
    and the errors of any seed that failed."""
    rows = []
    for n, seeds in per_seed.items():
        ok = [s for s in seeds if "error" not in s or "final_elbo_gain" in s]
        row = {"estimator": n, "options": options[n], "render_kind": kinds.get(n),
               "seeds_done": len(ok), "seeds": seeds}
        errors = sorted({s["error"] for s in seeds if "error" in s})
        if errors:
            row["error"] = "; ".join(errors)
        for k in STATS:
            row[k] = spread([s.get(k) for s in ok])
        rows.append(row)
    return rows


def flat(rows: list[dict]) -> list[dict]:
    """The rows for the printed table: mean [min, max] of each figure."""
    def cell(v):
        if v is None:
            return None
        if v["n"] == 1 or v["min"] == v["max"]:
            return f"{v['mean']:.4g}"
        return f"{v['mean']:.4g} [{v['min']:.4g}, {v['max']:.4g}]"
    return [{"estimator": r["estimator"], "seeds": r["seeds_done"],
             "options": ",".join(f"{k}={v}" for k, v in r["options"].items()) or "-",
             **{k: cell(r[k]) for k in STATS}, "error": (r.get("error") or "")[:60]}
            for r in rows]


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="32x32, small model, 6400 renders each")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--plots", default="", help="PNG figures here (default: beside --json, "
                                                "else <out>/plots)")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" /
                                            "primitives.yaml"), help="the mesh config compared on")
    ap.add_argument("--estimators", default=",".join(ALL))
    ap.add_argument("--opt", action="append", default=[], metavar="ESTIMATOR.KEY=VALUE",
                    help="an option of one estimator, e.g. rloo.normalize=false (repeatable)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key for every run, e.g. train.lr=1e-3 (repeatable)")
    ap.add_argument("--budget", type=int, default=0, help="renders per estimator (0: preset)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per estimator, paired")
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--points", type=int, default=8, help="held-out IoU points along each run")
    ap.add_argument("--estimates", type=int, default=0, help="diagnose estimates (0: preset)")
    ap.add_argument("--target", type=float, default=None, help="target ELBO gain (nats)")
    ap.add_argument("--target-frac", type=float, default=0.75)
    ap.add_argument("--smooth", type=int, default=0,
                    help="steps in the ELBO's trailing mean (0: a 20th of the run, >= 10)")
    ap.add_argument("--out", default="runs/bench_estimators", help="runs and data cache")
    ap.add_argument("--no-softras", action="store_true", help="skip the oracle-vs-GL table")
    ap.add_argument("--only-softras", action="store_true", help="only the oracle-vs-GL table")
    ap.add_argument("--replot", metavar="JSON", help="only draw the figures of an earlier run's "
                                                     "JSON again (to --plots, else beside it)")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                    help=IMPORT_HELP)
    a = ap.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        import_modules(a.imports)
    except ConfigError as e:
        ap.error(str(e))
    a.names = [n.strip() for n in a.estimators.split(",") if n.strip()]
    bad = sorted(set(a.names) - set(estimators.available()))
    if bad:
        ap.error(f"unknown estimators {bad}; choose from {estimators.available()}")
    if a.seeds < 1 or a.points < 1:
        ap.error("--seeds and --points must be >= 1")
    return ap, a


def main(argv: list[str] | None = None) -> dict:
    from learners.diagnose import options_for, parse_options

    ap, a = parse_args(argv)
    if a.replot:
        return replot(Path(a.replot), Path(a.plots) if a.plots else None, Path(a.out) / "tb")
    torch.set_num_threads(1)
    soft = [] if a.no_softras else er.softras_rows()
    if soft:
        print(table(soft, list(soft[0])))
    if a.only_softras:
        res = {"machine": machine(), "softras": soft}
        write_json(a.json, res)
        return res
    s = dict(SETTINGS["quick" if a.quick else "full"])
    s["budget"] = a.budget or s["budget"]
    try:
        extra = parse_options(a.opt, a.names)
        cfg0 = base_config(Path(a.out), s, a.config, a.overrides)
    except (ConfigError, ValueError) as e:
        ap.error(str(e))
    options = {n: options_for(n, cfg0, extra) for n in a.names}
    seeds = list(range(a.seed, a.seed + a.seeds))
    t0 = time.time()
    runs = er.train_all(cfg0, options, seeds, a.points,
                        lambda m: print(f"[{time.time() - t0:5.0f} s] {m}", flush=True))
    res = report(a, cfg0, s, runs, options, extra, seeds, t0)
    res["softras"] = soft
    write_json(a.json, res)
    return res


def replot(path: Path, plot_dir: Path | None, tb_dir: Path) -> dict:
    """The figures of a finished benchmark drawn again from its JSON alone."""
    import json

    from benchmarks import estimator_plots

    res = json.loads(path.read_text())
    diag = [res["diagnose"][k] for k in sorted(res.get("diagnose", {}), key=int)]
    figures = estimator_plots.write_all(estimator_plots.series_from_json(res), diag,
                                        plot_dir or path.parent, path.stem, tb_dir,
                                        res.get("target_elbo_gain"))
    for p in figures.values():
        print(f"wrote {p}")
    return {"figures": figures}


def report(a, cfg0, s: dict, runs: dict, options: dict, extra: dict, seeds: list[int],
           t0: float) -> dict:
    """Curves, targets, diagnoses, rows, table, figures and TensorBoard for finished runs."""
    from benchmarks import estimator_plots

    a.smooth = a.smooth or max(10, cfg0.train.steps // 20)
    base = er.batch_baselines(cfg0, seeds)
    for (seed, _), r in runs.items():
        if "error" not in r:
            r["gain"] = smooth(np.asarray(r["elbo"]) - base[seed][:len(r["elbo"])], a.smooth)
    finals = {}
    for (_, n), r in runs.items():
        if "error" not in r and r["render_kind"] == "gl":
            finals.setdefault(n, []).append(r["gain"][-1])
    best = max((float(np.mean(v)) for v in finals.values()), default=None)
    # a fraction of a loss is no target: with no run past the initial model, there is none
    target = a.target if a.target is not None else (
        a.target_frac * best if best is not None and best > 0 else None)
    main_name = cfg0.estimator.name if cfg0.estimator.name in a.names else a.names[0]
    diag = er.diagnose_seeds(cfg0, runs, main_name, a.names, extra, a.estimates or s["estimates"])
    var = {seed: {r["estimator"]: r for r in d["rows"]} for seed, d in diag.items()}
    kinds = {n: r["render_kind"] for (_, n), r in runs.items() if "render_kind" in r}
    rows = summary_rows(seed_rows(runs, var, cfg0, a.names, target), options, kinds)
    print(table(flat(rows), ["estimator", "seeds", "options", *STATS, "error"]))
    print(f"target ELBO gain {target} nats (best seed-mean final {best}); "
          f"{time.time() - t0:.0f} s in all")
    plot_dir = Path(a.plots) if a.plots else (Path(a.json).parent if a.json else
                                               Path(a.out) / "plots")
    stem = Path(a.json).stem if a.json else "estimators"
    series = estimator_plots.series_from_runs(runs, cfg0)
    figures = estimator_plots.write_all(series, [diag[k] for k in sorted(diag)], plot_dir, stem,
                                        Path(a.out) / "tb", target)
    return {"machine": machine(), "command": ["benchmarks/estimators.py", *a.argv], "config": a.config,
            "settings": s | {"steps": cfg0.train.steps, "seeds": seeds, "smooth": a.smooth,
                             "overrides": a.overrides},
            "target_elbo_gain": target, "iou_sphere_floor": series["iou_floor"], "rows": rows,
            "figures": figures,
            "diagnose": {str(k): {kk: v for kk, v in d.items() if kk != "var_per_coordinate"}
                         for k, d in diag.items()},
            "curves": er.curves_json(runs, cfg0)}


if __name__ == "__main__":
    main()
