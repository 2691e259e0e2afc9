"""Training loop of the volume experiments (task ``volume``): unconditional generation,
class-conditional generation, generation from views, and 3D completion of the left half.

``python -m learners.run --config configs/volumes_generation.yaml [--set train.steps=100]``
logs bounds and pictures (max-projections and middle slices) to TensorBoard under
``runs/<name>/tb``, checkpoints atomically to ``runs/<name>/checkpoint.pt`` (``--resume``
continues), and ends with ``runs/<name>/report.json`` and PNG pictures beside it. The run
directory, resume, random state and report are ``learners.skeleton``'s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gen3d.data.volumes import VolumeDataConfig, VolumeSet, load_volumes
from gen3d.fields import DeviceStr, NonEmptyStr, NonNegFloat, NonNegInt, PosFloat, PosInt
from gen3d.volumes import bounds, completion
from gen3d.volumes.contexts import render_views
from gen3d.volumes.model import VolumeModel, VolumeModelConfig
from learners.config import ConfigError
from learners.device import resolve_device
from learners.runlog import RunLog, image_grid, save_png
from learners.skeleton import RunSkeleton


@dataclass
class VolumeTrainConfig:
    """Optimisation of the ELBO."""

    steps: PosInt = 2000
    """optimiser steps"""
    batch: PosInt = 64
    """volumes per step"""
    lr: PosFloat = 1e-3
    """Adam learning rate"""
    grad_clip: NonNegFloat = 100.0
    """clip the gradient norm to this (0: no clipping)"""
    log_every: PosInt = 25
    """steps between scalar logs"""
    eval_every: PosInt = 500
    """steps between held-out bounds and pictures"""
    ckpt_every: PosInt = 500
    """steps between checkpoints"""
    cuda_graph: bool = False
    """on CUDA, capture the whole step (forward, backward, clip, Adam) once and replay it:
    the model's many small kernels are otherwise launch-bound"""
    compile: bool = False
    """torch.compile the model's per-step function (fuses its small kernels; ~1 min to build)"""


TrainConfig = VolumeTrainConfig  # the shorter name, for existing imports


@dataclass
class VolumeEvalConfig:
    """What the report measures."""

    n_eval: PosInt = 200
    """held-out volumes for the bounds (at most data.n_test)"""
    iwae_k: NonNegInt = 10
    """samples of the importance-weighted bound in the final report (0: skip it)"""
    n_pictures: PosInt = 16
    """samples drawn for pictures"""
    completion: bool = False
    """complete the left half of held-out volumes and report IoU on that half"""
    completion_steps: PosInt = 50
    """rounds of the clamped inference-generation chain"""
    n_completion: PosInt = 64
    """held-out volumes to complete"""


EvalConfig = VolumeEvalConfig  # the shorter name, for existing imports


@dataclass
class VolumeRunConfig:
    """One volume experiment."""

    name: NonEmptyStr = "volumes"
    """run name: everything goes to <out_dir>/<name>/"""
    out_dir: NonEmptyStr = "runs"
    """parent folder of runs"""
    seed: NonNegInt = 0
    """seed of the model, batches and samples"""
    device: DeviceStr = "auto"
    """torch device: auto (the GPU when torch can use one), cpu, cuda or cuda:N"""
    data: VolumeDataConfig = field(default_factory=VolumeDataConfig)
    """the dataset"""
    model: VolumeModelConfig = field(default_factory=VolumeModelConfig)
    """the sequential model"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """optimisation"""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """evaluation and report"""


def check_config(cfg: VolumeRunConfig, train: VolumeSet) -> None:
    """The model must fit the data: canvas size, number of classes."""
    n = train.volumes.shape[1]
    if cfg.model.canvas_size != n:
        raise ConfigError(f"model.canvas_size is {cfg.model.canvas_size} but {cfg.data.dataset} "
                          f"volumes are {n}^3; set model.canvas_size: {n}")
    if cfg.model.context == "class":
        if train.labels is None:
            raise ConfigError(f"model.context: class needs labels; {cfg.data.dataset} has none")
        if cfg.model.n_classes != train.n_classes:
            raise ConfigError(f"model.n_classes is {cfg.model.n_classes} but {cfg.data.dataset} "
                              f"has {train.n_classes} classes; set model.n_classes: {train.n_classes}")


def volume_pictures(vols: np.ndarray) -> np.ndarray:
    """(n, N, N, N) occupancies in [0,1] -> one picture: a row of front max-projections over a
    row of middle z-slices (y up)."""
    v = np.asarray(vols, np.float32)
    front = v.max(1)[:, ::-1]
    mid = v[:, v.shape[1] // 2][:, ::-1]
    return image_grid(np.concatenate([front, mid]), cols=len(v))


class Batches:
    """The dataset on the device, with the context each experiment needs."""

    def __init__(self, s: VolumeSet, cfg: VolumeRunConfig, device: torch.device):
        self.x = torch.from_numpy(s.volumes).to(device)
        self.labels = None if s.labels is None else torch.from_numpy(s.labels).to(device)
        self.views = None
        if cfg.model.context == "views":
            chunks = [render_views(self.x[i:i + 256], cfg.model.n_views)
                      for i in range(0, len(self.x), 256)]
            self.views = torch.cat(chunks)
        self.kind = cfg.model.context

    def __len__(self) -> int:
        return len(self.x)

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.x[idx].float()[:, None]
        if self.kind == "class":
            return x, self.labels[idx]
        if self.kind == "views":
            return x, self.views[idx]
        return x, None


class TrainStep:
    """One optimiser step; returns (loss, kl, log_lik) means as device tensors (no sync). With
    ``graph`` (CUDA only) the first call trains 3 warm-up steps on a side stream, captures the
    step into a CUDA graph, and every later call copies its batch in and replays it."""

    def __init__(self, model: VolumeModel, opt: torch.optim.Optimizer, clip: float,
                 graph: bool = False):
        self.model, self.opt, self.clip, self.graph = model, opt, clip, graph
        self._g: torch.cuda.CUDAGraph | None = None

    def _step(self, x: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        out = self.model(x, c)
        loss = -out.elbo.mean()
        self.opt.zero_grad(set_to_none=not self.graph)
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        return loss.detach(), out.kl.mean().detach(), out.log_lik.mean().detach()

    def __call__(self, x: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if not self.graph:
            return self._step(x, c)
        if self._g is None:
            self._sx, self._sc = x.clone(), None if c is None else c.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._step(self._sx, self._sc)
            torch.cuda.current_stream().wait_stream(side)
            self._g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._g):
                self._out = self._step(self._sx, self._sc)
        self._sx.copy_(x)
        if c is not None:
            self._sc.copy_(c)
        self._g.replay()
        return self._out


def make_optimizer(model: VolumeModel, cfg: VolumeRunConfig) -> torch.optim.Optimizer:
    graph = cfg.train.cuda_graph and resolve_device(cfg.device, announce=False).type == "cuda"
    return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, capturable=graph)


def evaluate(model: VolumeModel, data: Batches, n: int, iwae_k: int = 0, batch: int = 128) -> dict:
    """Mean held-out ELBO (and IWAE bound) in nats per volume over the first n examples."""
    model.eval()
    el, iw = [], []
    for i in range(0, min(n, len(data)), batch):
        idx = torch.arange(i, min(i + batch, n, len(data)), device=data.x.device)
        x, c = data.get(idx)
        el.append(bounds.elbo(model, x, c))
        if iwae_k:
            iw.append(bounds.iwae_bound(model, x, c, k=iwae_k))
    model.train()
    out = {"elbo_nats": float(torch.cat(el).mean())}
    out["neg_elbo_nats"] = -out["elbo_nats"]
    if iwae_k:
        out["iwae_nats"] = float(torch.cat(iw).mean())
        out["neg_iwae_nats"] = -out["iwae_nats"]
    return out


def nearest_mean_accuracy(samples: torch.Tensor, labels: torch.Tensor, train: Batches,
                          n_classes: int) -> float:
    """Fraction of samples whose nearest training class mean (in voxel space) is their class."""
    x = train.x.float().flatten(1)
    means = torch.stack([x[train.labels == k].mean(0) for k in range(n_classes)])
    pred = torch.cdist(samples.flatten(1).float(), means).argmin(1)
    return float((pred == labels).float().mean())


def sample_conditions(cfg: VolumeRunConfig, test: Batches, n: int, gen: torch.Generator
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Contexts for n samples: labels cycling through the classes, or held-out views."""
    dev = test.x.device
    if cfg.model.context == "class":
        return torch.arange(n, device=dev) % cfg.model.n_classes, None
    if cfg.model.context == "views":
        idx = torch.arange(n, device=dev) % len(test)
        return test.views[idx], idx
    return None, None


def pictures(model: VolumeModel, cfg: VolumeRunConfig, test: Batches, log: RunLog, step: int,
             gen: torch.Generator) -> np.ndarray:
    c, idx = sample_conditions(cfg, test, cfg.eval.n_pictures, gen)
    model.eval()
    probs = model.generate(cfg.eval.n_pictures, c).mean[:, 0]
    model.train()
    rows = [volume_pictures(probs.cpu().numpy())]
    if idx is not None:  # views: the truth each sample should resemble
        rows.append(volume_pictures(test.x[idx].float().cpu().numpy()))
    img = np.concatenate(rows, 0)
    log.image("samples", img, step)
    return img


def run(cfg: VolumeRunConfig, resume: bool = False) -> dict:
    """Train, evaluate and report; returns the report dict."""
    sk = RunSkeleton(cfg, cfg.train.steps, resume)
    try:
        train_set, test_set = load_volumes(cfg.data)
        check_config(cfg, train_set)
        train, test = Batches(train_set, cfg, sk.device), Batches(test_set, cfg, sk.device)
        model = VolumeModel(cfg.model).to(sk.device)
        if cfg.train.compile:
            model.compile_steps(dynamic=False)
        opt = make_optimizer(model, cfg)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        sk.track(model=model, opt=opt, gen=gen)
        sk.restore()
        train_loop(cfg, sk, model, opt, train, test, gen)
        report = final_report(model, cfg, train, test, sk.log, gen)
        headline = {k: report[k] for k in ("elbo_nats", "iwae_nats", "nearest_mean_accuracy",
                                           "completion_iou") if k in report}
        sk.finish(report, cfg.train.steps, headline)
        return report
    finally:
        sk.close()


def train_loop(cfg: VolumeRunConfig, sk: RunSkeleton, model: VolumeModel,
               opt: torch.optim.Optimizer, train: Batches, test: Batches,
               gen: torch.Generator) -> None:
    """From the (resumed) start step to ``train.steps``: log, evaluate, checkpoint."""
    tc, log = cfg.train, sk.log
    graph = tc.cuda_graph and sk.device.type == "cuda"
    train_step = TrainStep(model, opt, tc.grad_clip, graph)
    sk.start_clock()
    t0, done, last = time.time(), 0, sk.start
    for step in range(sk.start + 1, tc.steps + 1):
        idx = torch.randint(len(train), (tc.batch,), generator=gen).to(sk.device)
        x, c = train.get(idx)
        loss, kl, log_lik = train_step(x, c)
        done += 1
        if step % tc.log_every == 0 or step == tc.steps:
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step}: the bound is {loss.item()}; lower "
                                         "train.lr or train.grad_clip, or --resume from the "
                                         "last checkpoint")
            rate = done * tc.batch / max(time.time() - t0, 1e-9)
            log.scalars(step, {"train/neg_elbo_nats": loss.item(), "train/kl_nats": kl.item(),
                               "train/neg_log_lik_nats": -log_lik.item(),
                               "train/volumes_per_s": rate})
            log.progress(step - last, nelbo=loss.item())
            last = step
        if step % tc.eval_every == 0 and step != tc.steps:
            ev = evaluate(model, test, cfg.eval.n_eval)
            log.scalars(step, {"test/neg_elbo_nats": ev["neg_elbo_nats"]})
            pictures(model, cfg, test, log, step, gen)
        if step % tc.ckpt_every == 0:
            sk.save(step)
    sk.stop_clock()
    if sk.start < tc.steps:
        sk.save(tc.steps)


def final_report(model: VolumeModel, cfg: VolumeRunConfig, train: Batches, test: Batches,
                 log: RunLog, gen: torch.Generator) -> dict:
    step = cfg.train.steps
    torch.manual_seed(cfg.seed + 1)
    ev = evaluate(model, test, cfg.eval.n_eval, cfg.eval.iwae_k)
    report: dict = {"name": cfg.name, "dataset": cfg.data.dataset, "T": cfg.model.steps,
                    "context": cfg.model.context, "steps": step, **ev}
    log.scalars(step, {"test/neg_elbo_nats": ev["neg_elbo_nats"],
                       "test/neg_iwae_nats": ev.get("neg_iwae_nats", math.nan)})
    img = pictures(model, cfg, test, log, step, gen)
    save_png(log.dir / "samples.png", img)
    if cfg.model.context == "class":
        n = cfg.model.n_classes * 20
        labels = torch.arange(n, device=train.x.device) % cfg.model.n_classes
        model.eval()
        samples = (model.generate(n, labels).mean > 0.5).float()
        report["nearest_mean_accuracy"] = nearest_mean_accuracy(samples, labels, train,
                                                                cfg.model.n_classes)
        report["chance"] = 1 / cfg.model.n_classes
    if cfg.eval.completion:
        # shapes that reach into both halves: the missing half holds something to complete
        half = test.x.shape[-1] // 2
        both = (test.x[..., :half].flatten(1).any(1) & test.x[..., half:].flatten(1).any(1))
        idx = torch.nonzero(both).flatten()[: cfg.eval.n_completion]
        if len(idx) == 0:
            raise ValueError("completion: no held-out volume reaches into both halves")
        n = len(idx)
        x, c = test.get(idx)
        observed = completion.left_half_mask(x)
        model.eval()
        res = completion.complete(model, x, observed, c, cfg.eval.completion_steps, seed=cfg.seed)
        pred = res.probs > 0.5
        ious = completion.iou(pred, x, ~observed)
        report["completion_iou"] = float(ious.mean())
        report["completion_volumes"] = n
        report["completion_steps"] = cfg.eval.completion_steps
        # baseline: leave the missing half empty
        report["completion_iou_empty"] = float(completion.iou(torch.zeros_like(pred), x,
                                                              ~observed).mean())
        k = min(8, n)
        pic = np.concatenate([volume_pictures(x[:k, 0].cpu().numpy()),
                              volume_pictures((x * observed)[:k, 0].cpu().numpy()),
                              volume_pictures(res.probs[:k, 0].cpu().numpy())], 0)
        log.image("completion", pic, step)
        save_png(log.dir / "completion.png", pic)
        log.scalars(step, {"test/completion_iou": report["completion_iou"]})
    return report
