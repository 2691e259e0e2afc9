"""Task ``image_volume``: learn 3D volumes from 2D images alone.

Two experiments, as configs: ``single`` (each example is one image from a random known camera)
and ``multiview`` (3 fixed context views -> infer 3D -> predict 10 random target views). The
model never reads a volume; the held-out volumes are used only to score the inferred canvas in
3D (IoU, in the object frame). Logs to TensorBoard, checkpoints atomically, resumes, and
writes ``report.json`` and ``views.png`` (target | predicted) under ``runs/<name>/``; the run
directory, resume, random state, time limit and report are ``learners.skeleton``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import torch

from gen3d.data.views import MultiViewData, ViewBatch
from gen3d.data.volumes import VolumeDataConfig, load_volumes
from gen3d.fields import (AtLeast, AtMost, DeviceStr, FiniteFloat, NonEmptyStr, NonNegFloat, NonNegInt,
                          PosFloat, PosInt, UnitFloat)
from gen3d.volumes.image_model import ImageModelConfig, ImageVolumeModel, iou3d
from gen3d.volumes.model import VolumeModelConfig
from gen3d.volumes.projection import ProjectionConfig
from learners.runlog import image_grid, save_png
from learners.skeleton import RunSkeleton


@dataclass
class ViewsConfig:
    """How the training images are made from the volumes (see gen3d.data.views)."""

    experiment: Literal["single", "multiview"] = "multiview"
    """single: one image per example, no context; multiview: context views -> target views."""
    image: Literal["depth", "silhouette"] = "depth"
    """What a pixel holds: normalised depth (Gaussian likelihood) or occupancy (Bernoulli)."""
    image_size: Annotated[int, AtLeast(4)] = 32
    """Pixels per side (must equal model.projection.image_size)."""
    depth_samples: PosInt = 64
    """Samples along each ray when rendering the data."""
    extent: PosFloat = 1.25
    """Half-width of the box each camera sees (volumes span [-1, 1]); above 1 so that shapes
    near a corner stay in view (must equal model.projection.extent)."""
    context_views: list[list[FiniteFloat]] = field(
        default_factory=lambda: [[0.0, 20.0], [120.0, 20.0], [240.0, 20.0]])
    """Fixed context cameras as [azimuth, elevation] in degrees (multiview only)."""
    n_targets: PosInt = 10
    """Random target views per example (single: always 1)."""
    max_elevation: Annotated[float, AtLeast(0), AtMost(90)] = 60.0
    """Target cameras have |elevation| up to this many degrees."""


@dataclass
class ImageTrainConfig:
    """The optimisation budget."""

    steps: PosInt = 20000
    """Optimiser steps."""
    max_minutes: NonNegFloat = 0.0
    """Stop early after this much wall-clock training (0: no limit); the report states both."""
    batch: PosInt = 32
    """Volumes per step (each with its views)."""
    lr: PosFloat = 3e-4
    """Adam learning rate."""
    grad_clip: NonNegFloat = 10.0
    """Clip the gradient norm to this (0: off)."""
    log_every: PosInt = 50
    """Steps between TensorBoard scalars."""
    image_every: PosInt = 1000
    """Steps between TensorBoard image grids."""
    checkpoint_every: PosInt = 500
    """Steps between atomic checkpoints."""


TrainConfig = ImageTrainConfig  # the shorter name, for existing imports


@dataclass
class ImageEvalConfig:
    """The held-out evaluation at the end of a run."""

    batch: PosInt = 32
    """Held-out volumes per evaluation batch."""
    iwae_samples: NonNegInt = 10
    """k of the importance-weighted bound (0: skip it)."""
    threshold: UnitFloat = 0.5
    """Occupancy above this counts as inside for the 3D IoU."""
    grid_items: PosInt = 4
    """Held-out items drawn in views.png."""
    seed: NonNegInt = 1234
    """Seed of the held-out target cameras (the same views for every run)."""


EvalConfig = ImageEvalConfig  # the shorter name, for existing imports


@dataclass
class ImageRunConfig:
    """A run of the image_volume task."""

    name: NonEmptyStr = "images"
    """Run directory name under out_dir."""
    out_dir: NonEmptyStr = "runs"
    """Where runs/<name>/ goes."""
    seed: NonNegInt = 0
    """Seed of the model, the batches and the random target cameras."""
    device: DeviceStr = "auto"
    """torch device: auto (the GPU when torch can use one), cpu, cuda or cuda:N."""
    data: VolumeDataConfig = field(default_factory=VolumeDataConfig)
    """The volumes the images are made from (held-out ones score the 3D)."""
    views: ViewsConfig = field(default_factory=ViewsConfig)
    """The images and cameras."""
    model: ImageModelConfig = field(default_factory=lambda: ImageModelConfig(
        VolumeModelConfig(canvas_size=30, canvas_channels=2), ProjectionConfig(extent=1.25)))
    """The sequential model and the learned projection."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation."""

    def __post_init__(self) -> None:
        v, m = self.views, self.model
        if v.image_size % 4:
            raise ValueError(f"views.image_size must be a multiple of 4 (the image encoder "
                             f"halves it twice), got {v.image_size}")
        if m.volume.canvas_size != self.data.volume_size:
            raise ValueError(f"model.volume.canvas_size ({m.volume.canvas_size}) must equal the "
                             f"volumes' size ({self.data.volume_size}); set them equal")
        if m.projection.image_size != v.image_size or m.projection.extent != v.extent:
            raise ValueError("model.projection.image_size/extent must equal views.image_size/"
                             "extent: the operator has to see what the data camera sees")
        want = "gaussian" if v.image == "depth" else "bernoulli"
        if m.projection.likelihood != want:
            raise ValueError(f"views.image: {v.image} needs model.projection.likelihood: {want}")
        ctx = "views" if v.experiment == "multiview" else "none"
        if m.volume.context != ctx:
            raise ValueError(f"views.experiment: {v.experiment} needs model.volume.context: {ctx}")
        if ctx == "views" and m.volume.n_views != len(v.context_views):
            raise ValueError(f"model.volume.n_views ({m.volume.n_views}) must equal the number "
                             f"of views.context_views ({len(v.context_views)})")


# ------------------------------------------------------------------ data and model plumbing


def make_data(cfg: ImageRunConfig, device: torch.device | str = "cpu"
              ) -> tuple[MultiViewData, MultiViewData]:
    v = cfg.views
    train, test = load_volumes(cfg.data)
    multi = v.experiment == "multiview"
    out = []
    for s in (train, test):
        vols = torch.from_numpy(np.ascontiguousarray(s.volumes)).float()[:, None]
        out.append(MultiViewData(vols, [tuple(c) for c in v.context_views] if multi else [],
                                 v.n_targets if multi else 1, v.image, v.image_size,
                                 v.depth_samples, v.extent, v.max_elevation, device))
    return out[0], out[1]


def model_inputs(cfg: ImageRunConfig, b: ViewBatch) -> tuple:
    """(x, c, camera) of the model for a batch: single-view data drops the view axis."""
    if cfg.views.experiment == "single":
        return b.target[:, 0], None, b.target_cameras[:, 0]
    return b.target, b.context[:, :, 0], b.target_cameras


def build_model(cfg: ImageRunConfig) -> ImageVolumeModel:
    n_views = cfg.views.n_targets if cfg.views.experiment == "multiview" else None
    return ImageVolumeModel(cfg.model, n_views=n_views)


def to_picture(img: torch.Tensor, image: str) -> np.ndarray:
    """Images (..., H, W) as [0, 1] pictures: near surfaces bright for depth."""
    a = img.detach().float().cpu().clamp(0, 1)
    return (1 - a if image == "depth" else a).numpy()


def views_grid(cfg: ImageRunConfig, b: ViewBatch, params: torch.Tensor,
               model: ImageVolumeModel, items: int) -> np.ndarray:
    """One row per item: its context views, then each target view beside its prediction."""
    pred = model.projection.likelihood.mean(params).reshape(b.target.shape)
    rows = []
    for i in range(min(items, len(b.volumes))):
        row = [to_picture(c[0], cfg.views.image) for c in b.context[i]]
        for t, p in zip(b.target[i], pred[i]):
            row += [to_picture(t[0], cfg.views.image), to_picture(p[0], cfg.views.image)]
        rows.append(row)
    return image_grid(np.stack([im for r in rows for im in r]), len(rows[0]))


# ------------------------------------------------------------------ evaluation

# thresholds of the reported IoU sweep: an oracle view of calibration, never the headline
SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@torch.no_grad()
def evaluate(cfg: ImageRunConfig, model: ImageVolumeModel, test: MultiViewData,
             device: torch.device) -> tuple[dict, np.ndarray]:
    """Held-out bounds (nats per example), 3D IoU of the inferred canvas, and the baselines
    of an empty and a full volume; plus the views.png grid of the first items."""
    model.eval()
    g = torch.Generator().manual_seed(cfg.eval.seed)
    sums: dict[str, float] = {}
    grid = None
    n = len(test)
    for lo in range(0, n, cfg.eval.batch):
        b = test.batch(torch.arange(lo, min(n, lo + cfg.eval.batch)), g).to(device)
        x, c, cam = model_inputs(cfg, b)
        occ, out = model.infer_occupancy(x, c, cam)
        vals = {"elbo": out.elbo, "log_lik": out.log_lik, "kl": out.kl,
                "iou3d": iou3d(occ, b.volumes, cfg.eval.threshold),
                **{f"iou3d@{t}": iou3d(occ, b.volumes, t) for t in SWEEP},
                "iou3d_full": iou3d(torch.ones_like(b.volumes), b.volumes),
                "occupied_fraction": b.volumes.flatten(1).mean(1)}
        if cfg.views.experiment == "multiview":  # 3D from the context views alone
            vals["iou3d_context_only"] = iou3d(model.prior_occupancy(len(x), c, cam), b.volumes,
                                               cfg.eval.threshold)
        if cfg.eval.iwae_samples > 0:
            vals["iwae"] = model.iwae(x, c, cam, cfg.eval.iwae_samples)
        for k, v in vals.items():
            sums[k] = sums.get(k, 0.0) + float(v.double().sum())
        if grid is None:
            grid = views_grid(cfg, b, out.params, model, cfg.eval.grid_items)
    res = {k: v / n for k, v in sums.items()}
    res["iou3d_empty"] = 0.0
    res["iou3d_by_threshold"] = {t: res.pop(f"iou3d@{t}") for t in SWEEP}
    model.train()
    return res, grid


# ------------------------------------------------------------------ the run


def run(cfg: ImageRunConfig, resume: bool = False) -> dict:
    """Train from images, evaluate on held-out shapes, write runs/<name>/report.json."""
    tc = cfg.train
    sk = RunSkeleton(cfg, tc.steps, resume, time_limit_s=60 * tc.max_minutes)
    try:
        if sk.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        train, test = make_data(cfg, sk.device)
        model = build_model(cfg).to(sk.device)
        opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        sk.track(model=model, opt=opt, gen=gen)
        sk.restore()
        step = train_loop(cfg, sk, model, opt, train, gen)
        sk.save(step)
        report = score(cfg, sk, model, train, test, step)
        sk.finish(report, step, {"iou3d": report["iou3d"], "bound_nats": report["bound_nats"]})
        return report
    finally:
        sk.close()


def train_loop(cfg: ImageRunConfig, sk: RunSkeleton, model: ImageVolumeModel,
               opt: torch.optim.Optimizer, train: MultiViewData, gen: torch.Generator) -> int:
    """From the (resumed) start to ``train.steps`` or the time limit; returns the last step."""
    t_cfg, log, step = cfg.train, sk.log, sk.start
    sk.start_clock()
    while step < t_cfg.steps and not sk.out_of_time():
        idx = torch.randint(len(train), (t_cfg.batch,), generator=gen)
        b = train.batch(idx, gen).to(sk.device)
        x, c, cam = model_inputs(cfg, b)
        out = model(x, c, cam)
        loss = -out.elbo.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: the bound became {loss.item()}; lower "
                                     "train.lr or raise model.projection.min_sigma")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t_cfg.grad_clip)
        opt.step()
        step += 1
        if step % t_cfg.log_every == 0 or step == t_cfg.steps:
            vals = {"train/bound_nats": -loss.item(), "train/kl": out.kl.mean().item(),
                    "train/log_lik": out.log_lik.mean().item()}
            if cfg.model.projection.likelihood == "gaussian":
                vals["train/sigma"] = model.projection.likelihood.sigma.item()
            log.scalars(step, vals)
        if step % t_cfg.image_every == 0:
            log.image("train/views", views_grid(cfg, b, out.params, model, 2), step)
        if step % t_cfg.checkpoint_every == 0:
            sk.save(step)
        log.progress(1, bound=-loss.item())
    sk.stop_clock()
    return step


def score(cfg: ImageRunConfig, sk: RunSkeleton, model: ImageVolumeModel,
          train: MultiViewData, test: MultiViewData, step: int) -> dict:
    """Held-out evaluation, pictures and the report (``finish`` writes it)."""
    res, grid = evaluate(cfg, model, test, sk.device)
    report = {
        "experiment": cfg.views.experiment, "image": cfg.views.image,
        "bound_nats": res.pop("elbo"), "iwae_nats": res.pop("iwae", None),
        "iou3d": res.pop("iou3d"), **res,
        "budget": {"steps": step, "train_seconds": round(sk.elapsed, 1),
                   "batch": cfg.train.batch, "n_train": len(train), "n_test": len(test),
                   "T": cfg.model.volume.steps},
    }
    sk.log.scalars(step, {f"eval/{k}": v for k, v in report.items()
                          if isinstance(v, float) and math.isfinite(v)})
    sk.log.image("eval/views", grid, step)
    save_png(sk.log.dir / "views.png", grid)
    return report
