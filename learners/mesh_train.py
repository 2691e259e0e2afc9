"""The main job: infer meshes from images through the OpenGL black box.

    python -m learners.run --config configs/primitives.yaml

Each step draws B training images, samples K meshes per image from the model, gets their
rewards (log p(x | render(mesh))) from the GL render pool in Ray workers and/or the soft
rasteriser, as the estimator requires, and back-propagates the estimator's surrogate; the KL to
the prior is pathwise (``learners.mesh_step``). ``run`` reads as its phases: ``set_up``,
``train_loop``, ``score``, and the skeleton's ``finish`` (``learners.skeleton``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from envs.renderer import MeshRenderer
from gen3d import camera_mirrors as cm
from gen3d import estimators
from gen3d.data import mesh_images
from gen3d.depth_scale import depth_scale
from gen3d.image_symmetries import group
from gen3d.mesh_model import MeshModel, images_to_tensor
from learners import mesh_eval
from learners.config import ConfigError
from learners.mesh_config import MeshRunConfig
from learners.mesh_optim import (
    WeightAverage,
    clipped_step,
    lr_factor,
    make_optimiser,
    shape_degree,
    size_lazy_parameters,
    soft_factor,
    std_factor,
)
from learners.mesh_report import final_report, heldout_step
from learners.mesh_step import MeshStep, RewardSource, StepResult
from learners.pathwise import make_oracle, make_view_oracle
from learners.self_imitation import SelfImitation
from learners.skeleton import RunSkeleton, seed_everything
from learners.soft_mean import SoftMean


def local_renderer(cfg: MeshRunConfig, max_batch: int = 256) -> MeshRenderer:
    """The learner's own renderer: dataset generation and scoring (not training renders)."""
    return MeshRenderer(cfg.data.size, cfg.data.size, max_batch)


def render_fn(r: MeshRenderer):
    def render(meshes, colours, rotation, translation, scale):
        out = r.render_meshes(meshes, colours, rotation, translation, scale, mask=True)
        return out.rgb, out.mask
    return render


def run(cfg: MeshRunConfig, resume: bool = False) -> dict:
    """Train, score the held-out images, and report: returns what ``report.json`` holds."""
    tc = cfg.train
    est = make_estimator(cfg)  # a bad choice fails here, before the run directory is touched
    sk = RunSkeleton(cfg, tc.steps, resume, tc.time_limit_s, tc.progress)
    job = None
    try:
        job = set_up(cfg, sk, est)
        train_loop(job)
        report = score(job)
        sk.finish(report, job.step, headline(report))
        return report
    finally:
        if job is not None:
            job.close()
        sk.close()


# ---------------------------------------------------------------------- set up


@dataclass
class Job:
    """A mesh run's working parts, and the loop's running state."""

    cfg: MeshRunConfig
    sk: RunSkeleton
    model: MeshModel
    opt: torch.optim.Optimizer
    est: estimators.Estimator
    est_opt: torch.optim.Optimizer | None
    source: RewardSource
    step_fn: MeshStep
    replay: SelfImitation | None
    average: WeightAverage | None
    gen: torch.Generator
    rng: np.random.Generator
    local: MeshRenderer
    train: Any
    test: Any
    step: int = 0
    lr_scale: float = 1.0
    history: list[float] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)
    speed: Speed = field(default_factory=lambda: Speed())
    rollback: Rollback | None = None
    skipped: int = 0
    skipped_in_row: int = 0

    @property
    def scored_model(self) -> MeshModel:
        """The network that is scored: the weight average when there is one."""
        return self.average.model if self.average is not None else self.model

    def save(self) -> None:
        self.sk.save(self.step, lr_scale=self.lr_scale, curve=self.curve, skipped=self.skipped)

    def close(self) -> None:
        self.source.close()
        self.local.release()


def make_estimator(cfg: MeshRunConfig) -> estimators.Estimator:
    """The config's estimator, checked against ``train.samples``; its own parameters are
    initialised from the run's seed."""
    seed_everything(cfg.seed)
    try:
        est = estimators.build(cfg.estimator.name, **cfg.estimator.kwargs)
        est.check_samples(cfg.train.samples)
        for name in ("mirror_images", "colour_orders"):
            if getattr(cfg.train, name) and "soft_reward" in est.requires:
                raise ValueError(f"train.{name}: estimator {est.name!r} takes soft rewards, "
                                 f"rendered in the image's own frame; set train.{name}: false")
        if cfg.data.second_view and est.requires != {"reward"}:
            raise ValueError(f"data.second_view: its silhouettes are rendered in the GL pool, "
                             f"and estimator {est.name!r} takes soft rewards of the first view "
                             f"alone; use a black-box estimator or set data.second_view: 0")
        if cfg.train.self_imitation_search and "reward" not in est.requires:
            raise ValueError(f"train.self_imitation_search: its steps are rendered in the GL "
                             f"pool, which estimator {est.name!r} does not use; set it to 0")
    except ValueError as e:  # a bad option or too few samples: a config error, in one line
        raise ConfigError(str(e)) from e
    return est


def make_replay(cfg: MeshRunConfig, model: MeshModel, est: estimators.Estimator, n: int,
                dev, view_masks: np.ndarray | None = None) -> SelfImitation | None:
    """Self-imitation of ``cfg`` for ``n`` training images, with its search (None when off);
    ``view_masks`` (n, H, W) are their second views' silhouettes (``data.second_view``)."""
    tc = cfg.train
    if tc.self_imitation <= 0:
        return None
    oracle = view = None
    if tc.self_imitation_search_soft:
        oracle = make_oracle(cfg, model, est=est)
        if view_masks is not None and tc.self_imitation_search_views:
            view = make_view_oracle(cfg, model, view_masks, est=est)
    jumps = []
    if tc.self_imitation_search_flip:
        flip = cm.depth_flip(model.decoder)
        jumps.append((flip, torch.zeros(len(flip))))
    if f := tc.self_imitation_search_depth:
        jumps += [depth_scale(model.decoder, f), depth_scale(model.decoder, 1 / f)]
    prior = model.mirror_log_prior if tc.mirror_reward else None
    return SelfImitation(n, model.decoder.dim, dev, tc.self_imitation_std,
                         tc.self_imitation_search, tc.self_imitation_search_std, oracle, view,
                         jumps, prior)


def set_up(cfg: MeshRunConfig, sk: RunSkeleton, est: estimators.Estimator) -> Job:
    """Data, model, optimisers and generators (restored on a resume), then the reward
    sources the estimator requires."""
    tc, dev = cfg.train, sk.device
    torch.set_num_threads(tc.torch_threads)
    est = est.to(dev)
    if cfg.eval.n_unseen > 0:  # a wrong kind fails now, not after the training
        mesh_images.unseen_config(cfg.data, cfg.eval.unseen_kinds, cfg.eval.n_unseen)
    local = local_renderer(cfg)
    try:
        # data: generated once from the seed and cached (the truth is kept for scoring only)
        train, test = mesh_images.load(cfg.data, render_fn(local))
        model = MeshModel(cfg.model, cfg.data.size).to(dev)
        opt = make_optimiser(model, tc)
        size_lazy_parameters(est, model, tc.samples, dev)
        est_params = list(est.parameters())
        est_opt = torch.optim.Adam(est_params, lr=cfg.estimator.lr) if est_params else None
        replay = make_replay(cfg, model, est, len(train), dev, train.view_masks)
        average = WeightAverage(model, tc.ema) if tc.ema > 0 else None
        # feedback passes render through the learner's own renderer
        for m in [model] + ([average.model] if average else []):
            mesh_eval.attach_renderer(m, local, dev)
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        rollback = Rollback(tc.rollback_nats, tc.checkpoint_every) if tc.rollback_nats > 0 else None
        sk.track(model=model, opt=opt, estimator=est, est_opt=est_opt, gen=gen, rng=rng,
                 replay=replay, average=average, rollback=rollback)
        st = sk.restore(optional=("replay", "average", "rollback"))
        source = RewardSource.for_run(cfg, est, model, train.images, train.view_masks)
    except BaseException:
        local.release()
        raise
    soft = SoftMean(make_oracle(cfg, model, est=est), tc.soft_mean) if tc.soft_mean > 0 else None
    sym = group(model.decoder, tc.mirror_images, tc.colour_orders)
    step_fn = MeshStep(model, est, source, tc.microbatches, replay, tc.self_imitation,
                       sk.log.checkpoint_path, soft, sym, tc.mirror_reward)
    return Job(cfg, sk, model, opt, est, est_opt, source, step_fn, replay, average, gen, rng,
               local, train, test, step=sk.start, lr_scale=st.get("lr_scale", 1.0),
               rollback=rollback, curve=list(st.get("curve", [])), skipped=st.get("skipped", 0))


# ---------------------------------------------------------------------- loop


def train_loop(job: Job) -> None:
    """Steps until ``train.steps``, the time limit or Ctrl-C; logs, rolls back and
    checkpoints. Ctrl-C ends the step it falls in, checkpoints, and raises
    ``learners.skeleton.RunInterrupted`` (no scoring)."""
    job.sk.start_clock()
    with job.sk.stop_on_interrupt():
        _steps(job)
    job.sk.stop_clock()
    if job.cfg.train.coarse_to_fine:  # a run stopped early is still scored at full degree
        set_degree(job, job.cfg.model.shape_degree)
    if job.sk.interrupted:
        job.save()
        raise job.sk.interrupted_error(job.step, job.sk.log.checkpoint_path)


def _steps(job: Job) -> None:
    tc = job.cfg.train
    while job.step < tc.steps and not job.sk.out_of_time():
        job.step += 1
        t0 = time.perf_counter()
        res, kl_weight = train_step(job)
        dt = time.perf_counter() - t0
        job.speed.add(job.step - job.sk.start, dt, res.wait_s)
        elbo = res.elbo
        job.history.append(elbo)
        job.sk.log.progress(1, elbo=elbo)
        if job.rollback is not None and job.rollback.update(job, elbo):
            job.sk.log.scalars(job.step, {"train/rollback_lr_scale": job.lr_scale})
        if job.step % tc.log_every == 0:
            job.sk.log.scalars(job.step, step_scalars(job, res, kl_weight, dt))
        if job.step % tc.image_every == 0:
            heldout_step(job)
        if job.step % tc.checkpoint_every == 0:
            job.save()


def train_step(job: Job) -> tuple[StepResult, float]:
    """One optimiser step at ``job.step`` on a batch drawn from ``job.rng``: the schedules,
    the micro-batched forward and backward, clipping, and the optimisers' steps."""
    tc, step, dev = job.cfg.train, job.step, job.sk.device
    elapsed = job.sk.elapsed
    for g in job.opt.param_groups:
        g["lr"] = tc.lr * job.lr_scale * lr_factor(tc, step, elapsed)
    job.model.std_scale.fill_(std_factor(tc, step, elapsed))
    if tc.coarse_to_fine:
        set_degree(job, shape_degree(tc, job.cfg.model.shape_degree, step, elapsed))
    if job.step_fn.soft is not None:
        job.step_fn.soft.weight = tc.soft_mean * soft_factor(tc, step, elapsed)
    kl_weight = min(1.0, step / tc.kl_warmup_steps) if tc.kl_warmup_steps > 0 else 1.0
    idx = job.rng.integers(len(job.train), size=tc.batch)
    x = images_to_tensor(job.train.images[idx], dev)
    job.opt.zero_grad(set_to_none=True)
    if job.est_opt is not None:
        job.est_opt.zero_grad(set_to_none=True)
    keep = step % tc.log_every == 0 and min(tc.microbatches, tc.batch) > 1
    res = job.step_fn(x, idx, tc.samples, job.gen, step, kl_weight, keep_grads=keep)
    if clipped_step(job.opt, job.model, tc):
        job.skipped_in_row = 0
    else:
        skip_step(job)
    if job.est_opt is not None:
        job.est_opt.step()
    if job.average is not None:
        job.average.update(job.model)
    return res, kl_weight


def set_degree(job: Job, degree: int) -> None:
    """Let the shape's harmonics up to ``degree`` in (``train.coarse_to_fine``). The bests'
    harmonics that were out are set to 0 first: the search's steps moved them, unread, and
    they would change the bests' meshes now that they are read."""
    dec = job.model.decoder
    if degree == dec.degree:
        return
    if job.replay is not None:
        job.replay.m.copy_(dec.cut(job.replay.m))
    dec.set_shape_degree(degree)


MAX_SKIPPED_IN_ROW = 20
"""Steps with a NaN gradient a run skips in a row before it stops: a few are a rare numerical
accident; a row of them is a model that no longer computes."""


def skip_step(job: Job) -> None:
    """Count a step whose gradient held a NaN (``clipped_step`` did not step); stop the run,
    with its last checkpoint intact, when too many come in a row."""
    job.skipped += 1
    job.skipped_in_row += 1
    if job.skipped_in_row >= MAX_SKIPPED_IN_ROW:
        raise FloatingPointError(
            f"step {job.step}: {job.skipped_in_row} steps in a row had NaN gradients; the last "
            f"checkpoint ({job.sk.log.checkpoint_path}) is intact; lower train.lr")


def step_scalars(job: Job, res: StepResult, kl_weight: float, dt: float) -> dict[str, Any]:
    """TensorBoard scalars of a logged step: training, speed, gradient spread, the
    estimator's and the replay's statistics, and every counter of the render pool."""
    r, kl = res.reward, res.kl
    vals = {"train/elbo_nats": res.elbo, "train/kl_weight": kl_weight,
            "train/lr": job.opt.param_groups[0]["lr"], "train/reward_mean": float(r.mean()),
            "train/reward_var": float(r.var(1).mean()), "train/kl_nats": float(kl.mean()),
            "train/model_std": float(job.model.std().detach().mean()),
            "train/skipped_steps": job.skipped,
            "speed/renders_per_s": job.cfg.renders_per_step / dt, "speed/step_s": dt,
            "speed/wait_s": res.wait_s, "speed/wait_frac": res.wait_s / dt}
    if res.grads:  # per-micro-batch gradients, differences taken in sequence
        g = res.grads
        diffs = torch.stack([g[0]] + [g[i] - g[i - 1] for i in range(1, len(g))])
        diffs = diffs * len(g)  # each a full-batch-scale estimate
        vals["grad/var_mean"] = float(diffs.var(0).mean())
        vals["grad/norm"] = float(g[-1].norm())
    vals.update({f"estimator/{k}": v for k, v in job.est.stats().items()})
    vals.update({f"pool/{k}": v for k, v in job.source.stats.items()})
    if job.step_fn.soft is not None:
        vals["train/soft_mean_weight"] = job.step_fn.soft.weight
    if job.cfg.train.coarse_to_fine:
        vals["train/shape_degree"] = job.model.decoder.degree
    if job.replay is not None:
        seen = torch.isfinite(job.replay.r)
        best = float(job.replay.r[seen].mean()) if seen.any() else None
        vals.update({"replay/best_reward_mean": best,
                     "replay/seen_frac": float(seen.float().mean())})
    return vals


class Rollback:
    """Back to the last good snapshot, at half the learning rate, when the smoothed training
    ELBO falls ``nats`` below its best (``train.rollback_nats``): a score-function step now
    and then throws the model where every sample renders badly and no signal leads back.
    Snapshots are taken every ``every`` steps while the ELBO is near its best."""

    def __init__(self, nats: float, every: int):
        self.nats, self.every = nats, every
        self.ema: float | None = None
        self.best = -float("inf")
        self.snapshot: dict | None = None

    def update(self, job: Job, elbo: float) -> bool:
        """Take in a step's ELBO; True when it rolled ``job`` back."""
        self.ema = elbo if self.ema is None else 0.95 * self.ema + 0.05 * elbo
        self.best = max(self.best, self.ema)
        if self.snapshot is not None and self.ema < self.best - self.nats:
            job.model.load_state_dict(self.snapshot["model"])
            job.opt.load_state_dict(self.snapshot["opt"])
            if job.average is not None:  # the average holds the collapse too
                job.average.reset(job.model)
            job.lr_scale *= 0.5
            self.ema = self.best = self.snapshot["ema"]
            return True
        if job.step % self.every == 0 and self.ema >= self.best - self.nats / 4:
            self.snapshot = {"model": copy.deepcopy(job.model.state_dict()),
                             "opt": copy.deepcopy(job.opt.state_dict()), "ema": self.ema}
        return False

    def state_dict(self) -> dict:
        return {"ema": self.ema, "best": self.best, "snapshot": self.snapshot}

    def load_state_dict(self, st: dict) -> None:
        self.ema, self.best, self.snapshot = st["ema"], st["best"], st["snapshot"]


class Speed:
    """Learner step times and render waits, after a warm-up of 3 steps."""

    def __init__(self) -> None:
        self.steps, self.step_s, self.wait_s = 0, 0.0, 0.0

    def add(self, done: int, dt: float, wait: float) -> None:
        if done > 3:
            self.steps += 1
            self.step_s += dt
            self.wait_s += wait

    def summary(self, renders_per_step: int, pool: dict[str, float]) -> dict[str, Any]:
        n, t = max(self.steps, 1), max(self.step_s, 1e-9)
        return {"pool": pool or None, "steps_per_s": n / t,
                "renders_per_s": n * renders_per_step / t, "wait_frac": self.wait_s / t,
                "learner_step_s": self.step_s / n}


# ---------------------------------------------------------------------- score


def score(job: Job) -> dict:
    """Checkpoint the last step, then score the held-out images: the report."""
    job.save()
    report = final_report(job.cfg, job.sk.log, job.scored_model, job.local, job.train, job.test,
                          job.sk.device, job.step, job.sk.elapsed, job.source.pool,
                          raw=job.model if job.average is not None else None)
    report["speed"] = job.speed.summary(job.cfg.renders_per_step, job.source.stats)
    report["elbo_history"] = job.history
    report["iou_vs_time"] = job.curve
    report["skipped_steps"] = job.skipped
    return report


def headline(report: dict) -> dict[str, float]:
    """The scores the end-of-run summary line shows."""
    s = report["scores"]
    out = {"iou": s["iou"], "psnr": s["psnr"], "chamfer": s["chamfer"],
           "rot_err_deg": s["rot_err_deg"]}
    if s.get("rot_err_kind_deg") is not None:
        out["rot_err_kind_deg"] = s["rot_err_kind_deg"]
    if "scores_unseen" in report:
        out["iou_unseen"] = report["scores_unseen"]["iou"]
    if "scores_refined" in report:
        out["iou_refined"] = report["scores_refined"]["iou"]
    return out


__all__ = ["MeshRunConfig", "run"]
