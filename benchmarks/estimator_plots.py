"""Figures of ``benchmarks/estimators.py``: ELBO gain and held-out IoU against renders (mean over
seeds, min-max band), variance and SNR per estimator; written as PNG and to TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from learners import plots


def stacked(runs: dict, key) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{estimator: (x, y over seeds)} from ``key(run) -> (x, y)``, cut to the shortest seed."""
    per: dict[str, list] = {}
    for (_, n), r in runs.items():
        if "gain" in r:
            per.setdefault(n, []).append(key(r))
    out = {}
    for n, xy in per.items():
        m = min(len(x) for x, _ in xy)
        out[n] = (np.asarray(xy[0][0][:m]), np.stack([np.asarray(y[:m]) for _, y in xy]))
    return out


def write_all(runs: dict, diag: dict, cfg0, plot_dir: Path, stem: str, tb_dir: Path,
              target: float | None) -> dict[str, str]:
    """Writes ``<stem>_elbo_gain.png``, ``<stem>_heldout_iou.png`` and ``<stem>_variance.png``
    (the last when there are diagnoses) and logs them with their curves to TensorBoard;
    returns {figure: path}."""
    from learners.diagnose import figure as variance_figure

    bk = cfg0.train.batch * cfg0.train.samples
    names = list(dict.fromkeys(n for _, n in runs))  # the order given: one colour each
    colours = plots.palette(names) | {f"{n} (soft ELBO)": c for n, c in plots.palette(names).items()}
    elbo = stacked(runs, lambda r: ((np.arange(len(r["gain"])) + 1) * bk, r["gain"]))
    elbo = {(f"{n} (soft ELBO)" if _kind(runs, n) == "soft" else n): v for n, v in elbo.items()}
    iou = stacked(runs, lambda r: ([s * bk for s, _ in r["iou_points"]],
                                   [v for _, v in r["iou_points"]]))
    floor = next((r["report"]["scores"].get("iou_sphere_floor") for r in runs.values()
                  if "report" in r), None)
    figs = {}
    if elbo:
        figs["elbo_gain"] = plots.curves(elbo, "renders", "training ELBO gain (nats, smoothed)",
                                         "ELBO gain over the initial sphere; dashed: target",
                                         hline=target, colours=colours)
    if iou:
        figs["heldout_iou"] = plots.curves(iou, "renders", "held-out silhouette IoU",
                                           "held-out IoU; dashed: best fixed sphere", hline=floor,
                                           colours=colours)
    if diag:
        figs["variance"] = variance_figure([diag[s] for s in sorted(diag)], colours)
    paths, pixels = {}, {}
    for key, fig in figs.items():
        path = plot_dir / f"{stem}_{key}.png"
        pixels[key] = plots.save(fig, path)
        paths[key] = str(path)
    to_tensorboard(tb_dir, {"elbo_gain": elbo, "heldout_iou": iou}, diag, pixels)
    return paths


def _kind(runs: dict, name: str) -> str | None:
    return next((r.get("render_kind") for (_, n), r in runs.items() if n == name), None)


def to_tensorboard(tb_dir: Path, series: dict, diag: dict, pixels: dict) -> None:
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
            for d in diag.values():
                for r in d["rows"]:
                    if key in r:
                        vals.setdefault(r["estimator"], []).append(r[key])
            for name, v in sorted(vals.items()):
                tb.add_scalar(f"diagnose_{key}/{name}", float(np.mean(v)), 0)
        for key, img in pixels.items():
            tb.add_image(f"figures/{key}", img, 0, dataformats="HWC")
    finally:
        tb.close()
