"""The main job: infer meshes from images through the OpenGL black box.

    python -m learners.run --config configs/primitives.yaml

Each step draws B training images, samples K meshes per image from the model, renders them in
Ray workers (rewards = log p(x | render(mesh))), and turns rewards and log-probabilities into a
gradient with the configured estimator; the KL to the prior is pathwise. The step's renders go
out in micro-batches: micro-batch i renders while the learner samples i+1 and back-propagates
i-1, and all samples of a step come from that step's parameters (exactly on-policy).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
import torch

from envs.renderer import MeshRenderer
from gen3d import estimators
from gen3d import geometry as geo
from gen3d.data import mesh_images
from gen3d.data.mesh_images import MeshImageConfig
from gen3d.fields import AtLeast, Below, DeviceStr, NonEmptyStr, NonNegFloat, NonNegInt, PosFloat, PosInt
from gen3d.mesh_model import MeshModel, MeshModelConfig, images_to_tensor
from learners import mesh_eval
from learners.config import ConfigError, as_config_file, to_dict, validate
from learners.device import resolve_device
from learners.mesh_refine import RefineConfig, refine
from learners.runlog import RunLog, image_grid, save_png
from learners.self_imitation import SelfImitation
from workers import cluster
from workers.cluster import RayConfig
from workers.pool import PoolConfig, make_pool
from workers.worker import EnvSpec


@dataclass
class EstimatorConfig:
    name: str = "rloo"
    """Gradient estimator by name (``gen3d.estimators.available()``; yours once registered)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Its constructor's keyword arguments."""
    lr: PosFloat = 1e-3
    """Learning rate of the estimator's own parameters (neural baselines, control variates)."""

    def __post_init__(self):
        if self.name not in estimators.available():
            raise ValueError(f"name: unknown estimator {self.name!r}; choose one of "
                             f"{estimators.available()} or register your own (gen3d.estimators)")


@dataclass
class TrainConfig:
    steps: PosInt = 6000
    """Optimiser steps."""
    batch: PosInt = 32
    """Images per step (B)."""
    samples: PosInt = 8
    """Meshes sampled per image (K): B*K renders a step."""
    microbatches: PosInt = 2
    """A step's images go to the workers in this many parts, so rendering overlaps learning."""
    lr: PosFloat = 1e-3
    """Adam learning rate of the model."""
    weight_decay: NonNegFloat = 0.0
    """AdamW's decoupled weight decay: holds back the random walk that score-function noise
    drives in the weights, which otherwise saturates the posterior and the LSTM. Weight
    matrices and kernels only (see ``decay_groups``)."""
    grad_clip: NonNegFloat = 0.0
    """Clip the model's gradient norm to this (0: off)."""
    lr_final: NonNegFloat = 1.0
    """The learning rate falls linearly to this fraction of ``lr`` over ``steps`` or, with
    ``time_limit_s``, over whichever of the two runs out first: a run stopped by the clock
    still ends on its smallest steps."""
    rollback_nats: NonNegFloat = 0.0
    """If the smoothed training ELBO falls this far below its best, go back to the last good
    snapshot (taken every ``checkpoint_every`` steps) and halve the learning rate (0: off).
    A score-function step now and then throws the model into a region where every sample
    renders badly and no signal leads back."""
    adam_clip: NonNegFloat = 0.0
    """Clip each gradient element to this many of Adam's running RMS for it (0: off). A rare
    score-function spike otherwise moves a weight up to ~30 learning rates in one step, which
    is what saturated the posterior and froze every image onto one mesh."""
    sigma: PosFloat = 0.1
    """Std of the Gaussian pixel likelihood (images in [0,1])."""
    kl_warmup_steps: NonNegInt = 0
    """The KL's weight in the loss rises linearly from 0 to 1 over these steps (0: always 1):
    its exact gradient otherwise collapses q(z|x) onto the prior before the noisy
    score-function signal teaches the decoder to use z. Logged ELBOs always weigh it 1."""
    self_imitation: NonNegFloat = 0.0
    """Weight of self-imitation (Oh et al., ICML 2018; 0: off): each training image keeps the
    most likely mesh parameters sampled for it so far, and that sample is replayed as an
    off-policy score-function term whose advantage is how far its reward lies above the mean of
    the image's current samples (clipped at 0). Renders nothing extra; biased towards the best
    meshes seen, as per-image refinement is."""
    self_imitation_std: bool = True
    """Whether the replay term trains the sampling std of p(m | z) too. It pulls that std
    towards the distance of the replayed bests from the current mean, which grows as the
    network moves on from where they were sampled; off, the on-policy estimator alone sets it."""
    std_final: PosFloat = 1.0
    """The sampling std of p(m | z) is multiplied by a factor that falls linearly from 1 to
    this over the run (the learning rate's clock; 1: off). Late in a run each image's mean is
    near its optimum, where a narrower search estimates the local gradient more reliably."""
    ema: Annotated[float, AtLeast(0), Below(1)] = 0.0
    """Decay of an exponential moving average of the model's weights (Polyak averaging; 0:
    off), kept beside the trained weights and used for scoring: it averages away the
    score-function noise of the last steps. The report keeps the raw weights' scores too."""
    time_limit_s: NonNegFloat = 0.0
    """Stop training after this many seconds of it (0: no limit; a resumed run counts the
    time before it), then score as usual."""
    torch_threads: PosInt = 1
    """Threads torch may use in the learner (the rest of the CPUs render)."""
    log_every: PosInt = 25
    """Scalars to TensorBoard every this many steps."""
    image_every: PosInt = 500
    """Input | reconstruction grids every this many steps."""
    checkpoint_every: PosInt = 250
    """Atomic checkpoint every this many steps (and at the end)."""
    progress: bool = True
    """Show a progress bar."""



@dataclass
class EvalConfig:
    n_test: NonNegInt = 0
    """Held-out images to score at the end (0: all)."""
    chamfer_points: PosInt = 2000
    """Surface points per mesh for the Chamfer distance."""
    n_obj: NonNegInt = 6
    """Inferred meshes written as .obj files."""
    refine: RefineConfig = field(default_factory=RefineConfig)
    """Per-image refinement of the inferred meshes through the renderer before scoring
    (``learners.mesh_refine``); the report keeps the inference network's own scores too."""


@dataclass
class MeshRunConfig:
    name: NonEmptyStr = "primitives"
    """Run name: everything goes to ``<out_dir>/<name>/``."""
    out_dir: NonEmptyStr = "runs"
    """Parent directory of runs."""
    seed: NonNegInt = 0
    """Seed of the model's initialisation, batches and samples."""
    device: DeviceStr = "auto"
    """Torch device of the learner: "auto" (the GPU when torch can use one), "cpu", "cuda", "cuda:N"."""
    data: MeshImageConfig = field(default_factory=MeshImageConfig)
    model: MeshModelConfig = field(default_factory=MeshModelConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    resume_keys: ClassVar[tuple[str, ...]] = ("model", "data.size")
    """What a checkpoint must share with the config to resume: the encoder's size is the image's."""


def local_renderer(cfg: MeshRunConfig, max_batch: int = 256) -> MeshRenderer:
    """The learner's own renderer: dataset generation and scoring (not training renders)."""
    return MeshRenderer(cfg.data.size, cfg.data.size, max_batch)


def render_fn(r: MeshRenderer):
    def render(meshes, colours, rotation, translation, scale):
        out = r.render_meshes(meshes, colours, rotation, translation, scale, mask=True)
        return out.rgb, out.mask
    return render


def run(cfg: MeshRunConfig, resume: bool = False) -> dict:
    validate(cfg)  # a config built or changed in code gets the checks a config file gets
    tc = cfg.train
    torch.set_num_threads(tc.torch_threads)
    torch.manual_seed(cfg.seed)
    dev = resolve_device(cfg.device)
    est = estimators.build(cfg.estimator.name, **cfg.estimator.kwargs).to(dev)
    if tc.samples < getattr(est, "min_samples", 1):
        raise ConfigError(f"estimator {cfg.estimator.name!r} needs train.samples >= {est.min_samples}")

    # data: generated once from the seed and cached (the truth is kept for scoring only)
    local = local_renderer(cfg)
    train, test = mesh_images.load(cfg.data, render_fn(local))

    model = MeshModel(cfg.model, cfg.data.size).to(dev)
    opt = torch.optim.AdamW(decay_groups(model, tc.weight_decay), lr=tc.lr)
    size_lazy_parameters(est, model, tc.samples, dev)
    est_params = list(est.parameters())
    est_opt = torch.optim.Adam(est_params, lr=cfg.estimator.lr) if est_params else None
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    start = 0
    lr_scale = 1.0
    train_s = 0.0  # seconds of training before this process: the clock goes on after a resume
    log = RunLog(cfg.out_dir, cfg.name, tc.steps, config=as_config_file(cfg), progress=tc.progress,
                 resume=resume, match=cfg.resume_keys)
    if resume:
        st = log.load()
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        for g in opt.param_groups:  # a learning rate changed for the resumed run applies
            g["lr"] = tc.lr
        est.load_state_dict(st["estimator"])
        if est_opt is not None:
            est_opt.load_state_dict(st["est_opt"])
        gen.set_state(st["gen"])
        rng.bit_generator.state = st["rng"]
        start = st["step"]
        lr_scale = st.get("lr_scale", 1.0)
        train_s = st.get("train_s", 0.0)
        log.close()
        log = RunLog(cfg.out_dir, cfg.name, tc.steps, start, config=as_config_file(cfg), progress=tc.progress)

    def save(step: int) -> None:
        log.save({"model": model.state_dict(), "opt": opt.state_dict(),
                  "estimator": est.state_dict(),
                  "est_opt": est_opt.state_dict() if est_opt else None,
                  "gen": gen.get_state(), "rng": rng.bit_generator.state, "step": step,
                  "lr_scale": lr_scale, "replay": replay.state_dict() if replay else None,
                  "average": average.state_dict() if average else None,
                  "train_s": time.time() - t_start,
                  "config": to_dict(cfg)})

    oracle = None
    if getattr(est, "pathwise", False):  # trains through the soft rasteriser, not the GL pool
        from learners import pathwise

        oracle = pathwise.make_oracle(cfg, model, dev)
    pool = None  # the pathwise oracle renders in the learner: no workers then
    if oracle is None:
        if cfg.pool.backend == "ray":
            cluster.start(cfg.ray)
        pool = make_pool(EnvSpec(kwargs={"width": cfg.data.size, "height": cfg.data.size,
                                          "sigma": tc.sigma}), cfg.pool, targets=train.images)
    k, b = tc.samples, tc.batch
    replay = (SelfImitation(len(train), model.decoder.dim, dev, tc.self_imitation_std)
              if tc.self_imitation > 0 else None)
    if replay is not None and resume and st.get("replay") is not None:
        replay.load_state_dict(st["replay"])
    average = WeightAverage(model, tc.ema) if tc.ema > 0 else None
    if average is not None and resume and st.get("average") is not None:
        average.load_state_dict(st["average"])
    parts = np.array_split(np.arange(b), min(tc.microbatches, b))
    t_start = time.time() - train_s
    history = []
    timing = {"steps": 0, "step_s": 0.0, "wait_s": 0.0}  # after a warm-up of 3 steps
    ema, best_ema, snapshot = None, -float("inf"), None  # for rollback_nats
    step = start
    try:
        while step < tc.steps:
            if tc.time_limit_s and time.time() - t_start > tc.time_limit_s:
                break
            step += 1
            t0 = time.perf_counter()
            elapsed = time.time() - t_start
            for g in opt.param_groups:
                g["lr"] = tc.lr * lr_scale * lr_factor(tc, step, elapsed)
            model.std_scale.fill_(std_factor(tc, step, elapsed))
            beta = min(1.0, step / tc.kl_warmup_steps) if tc.kl_warmup_steps > 0 else 1.0
            idx = rng.integers(len(train), size=b)
            x = images_to_tensor(train.images[idx], dev)
            opt.zero_grad(set_to_none=True)
            if est_opt:
                est_opt.zero_grad(set_to_none=True)
            # 1. sample every micro-batch and send it out: micro-batch i renders while i+1 samples
            sent = []
            if oracle is not None:  # differentiable oracle: pathwise rewards, no workers
                for p in parts:
                    s = model.sample(x[p], k, generator=gen)
                    r = oracle.loglik(s.m_rsample, x[p])
                    loss = -r.mean() + beta * s.kl.mean()
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"step {step}: the loss is {loss.item()} (NaN/inf)")
                    (loss * len(p) / b).backward()
                    sent.append((p, s, r.detach()))
            for p in ([] if oracle is not None else parts):
                noise = est.noise((len(p), k, model.decoder.dim), generator=gen, device=dev)
                s = model.sample(x[p], k, noise=noise, generator=gen)
                if not torch.isfinite(s.actions).all():
                    raise FloatingPointError(
                        f"step {step}: the model produced NaN/inf mesh parameters; the last "
                        f"checkpoint ({log.checkpoint_path}) is intact; lower train.lr")
                ticket = pool.submit(s.actions.reshape(-1, s.actions.shape[-1]).cpu().numpy(),
                                     target_idx=np.repeat(idx[p], k))
                sent.append((p, s, ticket))
            # 2. as rewards come back, form each micro-batch's surrogate and back-propagate
            rewards, kls, wait, grads = [], [], 0.0, []
            want_var = step % tc.log_every == 0 and len(parts) > 1
            for p, s, ticket in sent:
                if oracle is not None:
                    rewards.append(ticket)
                    kls.append(s.kl.detach())
                    continue
                res = pool.collect(ticket)
                wait += res.wait_s
                r = torch.as_tensor(res.rewards, dtype=torch.float32, device=dev).reshape(len(p), k)
                batch = estimators.Batch(s.logp, r, sample=s.m_rsample, features=s.features,
                                         log_prior=s.log_pz - s.log_qz, noise=s.noise)
                loss = est.loss(batch)
                if replay is not None:
                    loss = loss + tc.self_imitation * replay.loss(model, s, r, idx[p])
                if est.objective == "elbo":
                    loss = loss + beta * s.kl.mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"step {step}: the loss is {loss.item()} (NaN/inf from the model); the "
                        f"last checkpoint ({log.checkpoint_path}) is intact; lower train.lr or "
                        "raise model.min_std")
                (loss * len(p) / b).backward()
                if want_var:
                    grads.append(torch.cat([q.grad.flatten() for q in model.parameters()
                                            if q.grad is not None]).clone())
                rewards.append(r)
                kls.append(s.kl.detach())
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            if tc.adam_clip > 0:
                clip_to_adam_rms(opt, tc.adam_clip)
            opt.step()
            if est_opt:
                est_opt.step()
            if average is not None:
                average.update(model)
            dt = time.perf_counter() - t0
            if step - start > 3:
                timing["steps"] += 1
                timing["step_s"] += dt
                timing["wait_s"] += wait
            r_all, kl_all = torch.cat(rewards), torch.cat(kls)
            elbo = float((r_all - kl_all).mean())
            history.append(elbo)
            log.progress(1, elbo=elbo)
            ema = elbo if ema is None else 0.95 * ema + 0.05 * elbo
            if tc.rollback_nats > 0:
                if ema > best_ema:
                    best_ema = ema
                if snapshot is not None and ema < best_ema - tc.rollback_nats:
                    model.load_state_dict(snapshot["model"])
                    opt.load_state_dict(snapshot["opt"])
                    if average is not None:  # the average holds the collapse too
                        average.reset(model)
                    lr_scale *= 0.5
                    ema, best_ema = snapshot["ema"], snapshot["ema"]
                    log.scalars(step, {"train/rollback_lr_scale": lr_scale})
                elif step % tc.checkpoint_every == 0 and ema >= best_ema - tc.rollback_nats / 4:
                    snapshot = {"model": copy.deepcopy(model.state_dict()),
                                "opt": copy.deepcopy(opt.state_dict()), "ema": ema}
            if step % tc.log_every == 0:
                vals = {"train/elbo_nats": elbo, "train/kl_weight": beta,
                        "train/lr": opt.param_groups[0]["lr"],
                        "train/reward_mean": float(r_all.mean()),
                        "train/reward_var": float(r_all.var(1).mean()),
                        "train/kl_nats": float(kl_all.mean()),
                        "train/model_std": float(model.std().detach().mean()),
                        "speed/renders_per_s": b * k / dt, "speed/step_s": dt,
                        "speed/wait_s": wait, "speed/wait_frac": wait / dt}
                if grads:  # per-micro-batch gradients, differences taken in sequence
                    g = torch.stack([grads[0]] + [grads[i] - grads[i - 1] for i in range(1, len(grads))])
                    g = g * len(parts)  # each a full-batch-scale estimate
                    vals["grad/var_mean"] = float(g.var(0).mean())
                    vals["grad/norm"] = float(grads[-1].norm())
                vals.update({f"estimator/{kk}": v for kk, v in est.stats().items()})
                if replay is not None:
                    seen = torch.isfinite(replay.r)
                    best = float(replay.r[seen].mean()) if seen.any() else None
                    vals.update({"replay/best_reward_mean": best,
                                 "replay/seen_frac": float(seen.float().mean())})
                log.scalars(step, vals)
            if step % tc.image_every == 0:
                grid_step(log, average.model if average else model, local, test, step, dev)
            if step % tc.checkpoint_every == 0:
                save(step)
        save(step)
        report = final_report(cfg, log, average.model if average else model, local, train, test,
                              dev, step, t_start, pool, raw=model if average else None)
        n_t = max(timing["steps"], 1)
        report["speed"] = {"pool": dict(pool.stats) if pool else None,
                           "steps_per_s": n_t / max(timing["step_s"], 1e-9),
                           "renders_per_s": n_t * b * k / max(timing["step_s"], 1e-9),
                           "wait_frac": timing["wait_s"] / max(timing["step_s"], 1e-9),
                           "learner_step_s": timing["step_s"] / n_t}
        report["elbo_history"] = history
        log.write_json("report.json", report)
        return report
    finally:
        if pool is not None:
            pool.close()
        log.close()
        local.release()


def run_fraction(tc: TrainConfig, step: int, elapsed_s: float) -> float:
    """How far the run is at ``step``, in [0, 1]: of its steps or of its time limit, whichever
    is further on."""
    done = step / tc.steps
    if tc.time_limit_s:
        done = max(done, elapsed_s / tc.time_limit_s)
    return min(1.0, done)


def lr_factor(tc: TrainConfig, step: int, elapsed_s: float) -> float:
    """The learning rate's fraction at ``step``: linear from 1 to ``lr_final``."""
    return 1 - (1 - tc.lr_final) * run_fraction(tc, step, elapsed_s)


def std_factor(tc: TrainConfig, step: int, elapsed_s: float) -> float:
    """The sampling std's factor at ``step``: linear from 1 to ``std_final``."""
    return 1 - (1 - tc.std_final) * run_fraction(tc, step, elapsed_s)


class WeightAverage:
    """An exponential moving average of a model's weights; its decay ramps up from 0.1 as
    (1 + n) / (10 + n) so that the first updates do not keep the initial weights."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.n = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for a, p in zip(self.model.parameters(), model.parameters()):
            a.lerp_(p.detach(), 1 - d)
        self.n += 1

    @torch.no_grad()
    def reset(self, model: torch.nn.Module) -> None:
        self.model.load_state_dict(model.state_dict())

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "n": self.n}

    def load_state_dict(self, st: dict) -> None:
        self.model.load_state_dict(st["model"])
        self.n = st["n"]


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only: decay pulls a parameter towards 0,
    which for a bias or a log-std (the sampling std of p(m | z) starts at log 0.1) is a push
    towards a wider distribution, not a smaller weight."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


@torch.no_grad()
def clip_to_adam_rms(opt: torch.optim.Optimizer, k: float) -> None:
    """Clamp each gradient element to k times the bias-corrected RMS Adam keeps for it."""
    for group in opt.param_groups:
        beta2 = group["betas"][1]
        for p in group["params"]:
            st = opt.state.get(p)
            if p.grad is None or not st or "exp_avg_sq" not in st:
                continue
            t = float(st["step"])
            rms = (st["exp_avg_sq"] / (1 - beta2**t)).sqrt_().mul_(k).add_(group["eps"])
            p.grad.copy_(torch.maximum(torch.minimum(p.grad, rms), -rms))


def size_lazy_parameters(est, model: MeshModel, k: int, dev) -> None:
    """Estimators whose networks size themselves on first use (neural baselines, LAX) get a
    dry run on a dummy batch, frozen, so their optimiser sees real parameters from the start."""
    if not any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in est.parameters()):
        return
    d = model.decoder.dim
    dummy = estimators.Batch(torch.zeros(1, k, device=dev, requires_grad=True),
                             torch.zeros(1, k, device=dev),
                             sample=torch.zeros(1, k, d, device=dev, requires_grad=True),
                             features=torch.zeros(1, model.feature_dim, device=dev),
                             log_prior=torch.zeros(1, k, device=dev),
                             noise=torch.zeros(1, k, d, device=dev))
    est.eval()
    est.loss(dummy)
    est.train()


def grid_step(log: RunLog, model: MeshModel, r: MeshRenderer, data, step: int, dev) -> None:
    from envs import spaces

    imgs = data.images[:8]
    recon = r.render_rays(**spaces.unpack(mesh_eval.infer_actions(model, imgs, dev))).rgb
    log.image("input|reconstruction", image_grid(np.concatenate([imgs, recon]), 8), step)


def final_report(cfg: MeshRunConfig, log: RunLog, model, r: MeshRenderer, train, test, dev,
                 step: int, t_start: float, pool=None, raw=None) -> dict:
    """Scores of the inference network's meshes (``scores``) and, with ``eval.refine.steps``,
    of the same meshes refined on their images (``scores_refined``); pictures and .obj files
    show the refined meshes when there are any. ``model`` is the averaged network when there
    is one, and ``raw`` the trained weights, scored as ``scores_raw``."""
    n = cfg.eval.n_test or len(test)
    sub = test.subset(slice(0, n))
    extra = {}
    if raw is not None:
        actions = mesh_eval.infer_actions(raw, sub.images, dev)
        extra["scores_raw"], _ = mesh_eval.score(r, actions, sub, geo.Camera(), cfg.eval.chamfer_points)
        log.scalars(step, {"eval/iou_raw": extra["scores_raw"]["iou"]})
    actions = mesh_eval.infer_actions(model, sub.images, dev)
    scores, renders = mesh_eval.score(r, actions, sub, geo.Camera(), cfg.eval.chamfer_points)
    radius, floor = mesh_eval.sphere_floor(r, train, sub)
    scores.update({"iou_sphere_floor": floor, "sphere_radius": radius, "steps": step,
                   "train_wall_s": time.time() - t_start})
    log.scalars(step, {"eval/iou": scores["iou"], "eval/psnr": scores["psnr"],
                       "eval/chamfer": scores["chamfer"], "eval/iou_sphere_floor": floor})
    out = {"name": cfg.name, "checkpoint": str(log.checkpoint_path), "scores": scores, **extra}
    if cfg.eval.refine.steps > 0:
        t0 = time.time()
        actions, out["refine"] = refine_actions(cfg, model, sub, dev, pool)
        out["refine"]["wall_s"] = time.time() - t0
        refined, renders = mesh_eval.score(r, actions, sub, geo.Camera(), cfg.eval.chamfer_points)
        out["scores_refined"] = refined
        log.scalars(step, {"eval/iou_refined": refined["iou"], "eval/psnr_refined": refined["psnr"],
                           "eval/chamfer_refined": refined["chamfer"]})
    grid = image_grid(np.concatenate([sub.images[:16], renders[:16]]), 16)
    save_png(log.dir / "heldout_grid.png", grid)
    log.image("eval/input|reconstruction", grid, step)
    for i in range(min(cfg.eval.n_obj, n)):
        v, f, c = mesh_eval.action_mesh(actions[i])
        mesh_eval.write_obj(log.dir / f"mesh_{i:02d}_{sub.kinds[sub.kind[i]]}.obj", v, f, c)
    scores["wall_s"] = time.time() - t_start
    return out


def refine_actions(cfg: MeshRunConfig, model: MeshModel, data, dev, pool=None,
                   workers: int = 0) -> tuple[np.ndarray, dict]:
    """Refine the inferred meshes of ``data`` through ``pool`` or, without one, a pool of its
    own (``workers`` Ray workers; 0: one in-process worker): actions (N, A) and the log."""
    own = pool is None
    if own:
        if workers:
            cluster.start(cfg.ray)
        pool = make_pool(EnvSpec(kwargs={"width": cfg.data.size, "height": cfg.data.size,
                                         "sigma": cfg.train.sigma}),
                         dataclasses.replace(cfg.pool, workers=workers) if workers
                         else PoolConfig(backend="local"))
    pool.set_targets(data.images)
    try:
        with torch.no_grad():
            m0 = mesh_eval.infer_params(model, data.images, dev).cpu()
            decoder = copy.deepcopy(model.decoder).cpu()
            best, rlog = refine(m0, decoder, lambda a, i: pool.evaluate(a, target_idx=i).rewards,
                                cfg.eval.refine, generator=torch.Generator().manual_seed(cfg.seed))
        return decoder(best).numpy().astype(np.float32), rlog
    finally:
        if own:
            pool.close()


__all__ = ["MeshRunConfig", "run"]
