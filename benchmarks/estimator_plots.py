"""Figures of ``benchmarks/estimators.py``: ELBO gain and held-out IoU against renders (mean over
seeds, min-max band), variance and SNR per estimator; written as PNG and to TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from learners import plots


def stacked(per: dict[str, list]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{estimator: (x, y over seeds)} from {estimator: [(x, y) per seed]}, cut to the shortest
    seed."""
    out = {}
    for n, xy in per.items():
        m = min(len(x) for x, _ in xy)
        out[n] = (np.asarray(xy[0][0][:m]), np.stack([np.asarray(y[:m]) for _, y in xy]))
    return out


def series_from_runs(runs: dict, cfg0) -> dict:
    """The figures' data from finished runs: ELBO gain at every step, IoU at its points."""
    bk = cfg0.train.batch * cfg0.train.samples
    elbo: dict[str, list] = {}
    iou: dict[str, list] = {}
    for (_, n), r in runs.items():
        if "gain" not in r:
            continue
        label = f"{n} (soft ELBO)" if r["render_kind"] == "soft" else n
        elbo.setdefault(label, []).append(((np.arange(len(r["gain"])) + 1) * bk, r["gain"]))
        iou.setdefault(n, []).append(([s * bk for s, _ in r["iou_points"]],
                                      [v for _, v in r["iou_points"]]))
    floor = next((r["report"]["scores"].get("iou_sphere_floor") for r in runs.values()
                  if "report" in r), None)
    return {"elbo_gain": stacked(elbo), "heldout_iou": stacked(iou), "iou_floor": floor,
            "names": list(dict.fromkeys(n for _, n in runs))}


def series_from_json(res: dict) -> dict:
    """The figures' data from the benchmark's JSON (its curves keep about 100 points each)."""
    kinds = {r["estimator"]: r.get("render_kind") for r in res["rows"]}
    elbo: dict[str, list] = {}
    iou: dict[str, list] = {}
    for n, seeds in res["curves"].items():
        label = f"{n} (soft ELBO)" if kinds.get(n) == "soft" else n
        for c in seeds.values():
            elbo.setdefault(label, []).append((c["renders"], c["elbo_gain"]))
            iou.setdefault(n, []).append((c["iou_renders"], c["iou"]))
    return {"elbo_gain": stacked(elbo), "heldout_iou": stacked(iou),
            "iou_floor": res.get("iou_sphere_floor"), "names": [r["estimator"] for r in res["rows"]]}


def write_all(series: dict, diag: list[dict], plot_dir: Path, stem: str, tb_dir: Path,
              target: float | None) -> dict[str, str]:
    """Writes ``<stem>_elbo_gain.png``, ``<stem>_heldout_iou.png`` and ``<stem>_variance.png``
    (the last when there are diagnoses, one per seed) and logs them with their curves to
    TensorBoard; returns {figure: path}."""
    from learners.diagnose import figure as variance_figure

    colours = plots.palette(series["names"])
    colours |= {f"{n} (soft ELBO)": c for n, c in colours.items()}
    elbo, iou = series["elbo_gain"], series["heldout_iou"]
    figs = {}
    if elbo:
        figs["elbo_gain"] = plots.curves(elbo, "renders", "training ELBO gain (nats, smoothed)",
                                         "ELBO gain over the initial sphere; dashed: target",
                                         hline=target, colours=colours)
    if iou:
        figs["heldout_iou"] = plots.curves(iou, "renders", "held-out silhouette IoU",
                                           "held-out IoU; dashed: best fixed sphere",
                                           hline=series["iou_floor"], colours=colours)
    if diag:
        figs["variance"] = variance_figure(diag, colours)
    paths, pixels = {}, {}
    for key, fig in figs.items():
        path = plot_dir / f"{stem}_{key}.png"
        pixels[key] = plots.save(fig, path)
        paths[key] = str(path)
    to_tensorboard(tb_dir, {"elbo_gain": elbo, "heldout_iou": iou}, diag, pixels)
    return paths


def to_tensorboard(tb_dir: Path, series: dict, diag: list[dict], pixels: dict) -> None:
    """Mean, min and max over seeds of each curve against renders, each estimator's diagnosis
    figures (mean over seeds) and the figures as images."""
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(tb_dir))
    try:
        for what, curves in series.items():
            for name, (x, y) in curves.items():
                every = max(1, len(x) // 500)  # TensorBoard keeps a sample of long series anyway
                for i in range(0, len(x), every):
                    for stat, v in (("mean", y[:, i].mean()), ("min", y[:, i].min()),
                                    ("max", y[:, i].max())):
                        tb.add_scalar(f"{what}_{stat}/{name}", float(v), int(x[i]))
        for key in ("var_mean", "dsnr", "snr_mean", "cos_oracle"):
            vals: dict[str, list] = {}
            for d in diag:
                for r in d["rows"]:
                    if key in r:
                        vals.setdefault(r["estimator"], []).append(r[key])
            for name, v in sorted(vals.items()):
                tb.add_scalar(f"diagnose_{key}/{name}", float(np.mean(v)), 0)
        for key, img in pixels.items():
            tb.add_image(f"figures/{key}", img, 0, dataformats="HWC")
    finally:
        tb.close()
