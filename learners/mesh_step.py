"""The mesh model's training step, and the surrogate loss that every caller shares.

A step draws K samples per image from the model, gets their rewards from a ``RewardSource``
(the GL render pool, the soft rasteriser, or both: whatever the estimator ``requires``), and
back-propagates ``surrogate``. The run (``learners.mesh_train``), ``learners.diagnose`` and the
benchmarks all form the loss through ``surrogate``, so they measure the gradient the run
follows. A step's images go out in micro-batches: micro-batch i renders in the workers while
the learner samples i+1 and back-propagates i-1, and all samples of a step come from that
step's parameters (exactly on-policy).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gen3d import geometry as geo
from gen3d.estimators import Batch, Estimator
from gen3d.image_symmetries import ImageSymmetries
from gen3d.mesh_model import MeshModel, Samples
from learners.pathwise import Oracle, make_oracle
from learners.self_imitation import SelfImitation
from learners.soft_mean import SoftMean
from workers import cluster
from workers import placement
from workers.pool import PoolConfig, WorkerError, make_pool
from workers.worker import EnvSpec


def surrogate(est: Estimator, s: Samples, images: Tensor, reward: Tensor | None = None,
              oracle: Oracle | None = None, kl_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """The loss of ``est`` for the samples ``s`` of ``images`` (B,3,H,W) in [0,1], and the
    (B,K) rewards it was formed from. ``reward`` (B,K) holds the black-box (GL) rewards when
    the estimator requires them; ``oracle`` makes the soft ones when it requires those. The
    pathwise KL enters with weight ``kl_weight`` (objective "elbo"); with colours read from
    the image (``model.read_colours``), so does the decoder's fit to them (``s.colour_fit``),
    with ``model.shape_templates`` or ``model.mirror_std`` the shapes' prior
    (``s.shape_prior``), and with ``model.feedback_std`` the feedback correction's
    (``s.correction_prior``)."""
    soft = None
    if "soft_reward" in est.requires:
        if oracle is None:
            raise ValueError(f"estimator {est.name!r} requires soft rewards: pass "
                             "oracle=learners.pathwise.make_oracle(cfg, model, est=est)")
        soft = oracle.loglik(s.m_rsample, images)
    if "reward" in est.requires:
        if reward is None:
            raise ValueError(f"estimator {est.name!r} requires black-box rewards (B, K): render "
                             "the samples' actions and pass reward=")
    else:
        reward = soft.detach()
    batch = Batch(s.logp, reward, sample=s.m_rsample, features=s.features,
                  log_prior=s.log_pz - s.log_qz, noise=s.noise, soft_reward=soft)
    loss = est.surrogate(batch, s.kl, kl_weight)
    for extra in (s.colour_fit, s.shape_prior, s.correction_prior):
        if extra is not None:
            loss = loss + extra.mean()
    return loss, batch.reward


def env_spec(cfg: Any) -> EnvSpec:
    """The render workers' environment for a ``MeshRunConfig``."""
    return EnvSpec(kwargs={"width": cfg.data.size, "height": cfg.data.size,
                           "sigma": cfg.train.sigma})


UNLIT = geo.Lights(directions=(), colours=(), ambient=(1.0, 1.0, 1.0))
"""Ambient light alone, at full strength: a white mesh renders white wherever it covers."""


def shared_pool_config(pc: PoolConfig, pools: int) -> PoolConfig:
    """``pc`` for each of ``pools`` Ray pools that share the cluster (``placement.shared_size``;
    a local pool is returned as it is); a cluster too small is a ``WorkerError``, at once."""
    if pc.backend != "ray":
        return pc
    need = placement.worker_resources(pc.worker_cpus, pc.worker_gpus, pc.worker_resources)
    try:
        return dataclasses.replace(pc, workers=placement.shared_size(pc.workers, pools, need,
                                                                      placement.alive_nodes()))
    except placement.CapacityError as e:
        raise WorkerError(str(e)) from None


def silhouette_spec(cfg: Any) -> EnvSpec:
    """The second view's workers: the run's environment, unlit, so that white meshes render
    as silhouettes."""
    spec = env_spec(cfg)
    return EnvSpec(kwargs={**spec.kwargs, "lights": UNLIT})


def silhouette_images(masks: np.ndarray) -> np.ndarray:
    """Masks (N,H,W) as white-on-black images (N,H,W,3) uint8: the silhouette targets."""
    return np.repeat(np.asarray(masks, bool)[..., None], 3, -1).astype(np.uint8) * 255


def silhouette_actions(actions: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Actions (B, A) turned by ``turn`` about each mesh's centre and coloured white."""
    out = geo.turn_actions(actions, turn)
    out[:, geo.ACTION_SLICES["colours"]] = 1.0
    return out


class RewardSource:
    """Where a step's rewards come from: ``pool`` renders black-box rewards (None when the
    estimator requires none: no workers then), ``oracle`` soft-rasterises (None when it
    requires no soft rewards). With a ``view_pool`` each black-box reward also counts a second
    view (``data.second_view``): the mesh turned by ``turn`` (3, 3) about its centre, drawn as
    a white silhouette, against the view's silhouette; the reward is the image's
    log-likelihood plus ``view_weight`` times the silhouette's."""

    def __init__(self, pool: Any = None, oracle: Oracle | None = None, view_pool: Any = None,
                 turn: np.ndarray | None = None, view_weight: float = 1.0):
        self.pool, self.oracle = pool, oracle
        self.view_pool, self.turn, self.view_weight = view_pool, turn, view_weight

    @classmethod
    def for_run(cls, cfg: Any, est: Estimator, model: MeshModel, images: np.ndarray,
                view_masks: np.ndarray | None = None) -> RewardSource:
        """The sources ``est`` requires for run config ``cfg`` (Ray started when it renders
        in Ray workers); ``images`` are the training images the pool scores against, and
        ``view_masks`` their second views' silhouettes (``data.second_view``), if any."""
        oracle = make_oracle(cfg, model, est=est) if "soft_reward" in est.requires else None
        pool = view_pool = turn = None
        if "reward" in est.requires:
            if cfg.pool.backend == "ray":
                cluster.start(cfg.ray)
            pc = cfg.pool if view_masks is None else shared_pool_config(cfg.pool, 2)
            pool = make_pool(env_spec(cfg), pc, targets=images)
            if view_masks is not None:
                view_pool = make_pool(silhouette_spec(cfg), pc, targets=silhouette_images(view_masks))
                turn = geo.vertical_turn(cfg.data.second_view)
        return cls(pool, oracle, view_pool, turn, cfg.train.second_view_weight)

    def submit(self, s: Samples, idx: np.ndarray) -> Any:
        """Send the samples of images ``idx`` (b,) to render; returns the ticket."""
        return self.submit_actions(s.actions, idx)

    def submit_actions(self, actions: Tensor, idx: np.ndarray) -> Any:
        """Send actions (b, N, A) of images ``idx`` (b,) to render; returns the ticket."""
        if self.pool is None:
            return None
        flat = actions.reshape(-1, actions.shape[-1]).cpu().numpy()
        target = np.repeat(idx, actions.shape[1])
        ticket = self.pool.submit(flat, target_idx=target)
        if self.view_pool is None:
            return ticket
        return ticket, self.view_pool.submit(silhouette_actions(flat, self.turn), target_idx=target)

    def collect(self, ticket: Any, like: Tensor) -> tuple[Tensor | None, float]:
        """The (b, K) black-box rewards of ``ticket`` (shaped and placed like ``like``) and the
        seconds spent waiting for them; (None, 0) without a pool."""
        if ticket is None:
            return None, 0.0
        tickets = ticket if self.view_pool is not None else (ticket,)
        results = [p.collect(t) for p, t in zip((self.pool, self.view_pool), tickets)]
        rewards = sum(w * np.asarray(res.rewards, np.float64)
                      for w, res in zip((1.0, self.view_weight), results))
        r = torch.as_tensor(rewards, dtype=torch.float32, device=like.device)
        return r.reshape(like.shape), sum(res.wait_s for res in results)

    @property
    def stats(self) -> dict[str, float]:
        """The pool's counters (a flat dict of numbers); empty without a pool."""
        out = dict(self.pool.stats) if self.pool is not None else {}
        if self.view_pool is not None:
            out.update({f"view/{k}": v for k, v in self.view_pool.stats.items()})
        return out

    def close(self) -> None:
        for p in (self.pool, self.view_pool):
            if p is not None:
                p.close()


@dataclass
class StepResult:
    """What a step saw: rewards and KLs (B, K), the seconds it waited for renders, and (when
    asked) the flat model gradient after each micro-batch's backward."""

    reward: Tensor
    kl: Tensor
    wait_s: float
    grads: list[Tensor] = field(default_factory=list)

    @property
    def elbo(self) -> float:
        return float((self.reward - self.kl).mean())


@dataclass
class _Sent:
    part: np.ndarray
    samples: Samples
    ticket: Any
    element: Tensor | None = None  # (b,) the symmetry each image was shown under
    proposals: Tensor | None = None  # self-imitation's search steps (b, J, D), when it searches
    proposal_ticket: Any = None


class MeshStep:
    """Forward and backward of one step over ``microbatches`` parts (the optimiser is the
    caller's). ``replay`` adds self-imitation with weight ``replay_weight``, ``soft`` the
    soft-mean term at its current ``weight`` (none at 0); ``checkpoint`` is named in the error
    a non-finite loss raises. With ``symmetries`` each image is shown under a random element
    (a camera mirror, a colour order) and the samples are mapped back before they are rendered
    and offered to the replay. With ``mirror_reward`` the model's mirror prior is taken off
    the rewards of the samples and of the bests' proposals."""

    def __init__(self, model: MeshModel, est: Estimator, source: RewardSource,
                 microbatches: int = 1, replay: SelfImitation | None = None,
                 replay_weight: float = 0.0, checkpoint: Any = None, soft: SoftMean | None = None,
                 symmetries: ImageSymmetries | None = None, mirror_reward: bool = False):
        self.model, self.est, self.source = model, est, source
        self.mirror_reward = mirror_reward
        self.soft, self.symmetries = soft, symmetries
        self.microbatches, self.replay, self.replay_weight = microbatches, replay, replay_weight
        self.checkpoint = checkpoint

    def __call__(self, x: Tensor, idx: np.ndarray, k: int, gen: torch.Generator, step: int,
                 kl_weight: float = 1.0, keep_grads: bool = False) -> StepResult:
        parts = np.array_split(np.arange(len(idx)), min(self.microbatches, len(idx)))
        sent = [self._send(x[p], idx[p], p, k, gen, step) for p in parts]
        rewards, kls, wait, grads = [], [], 0.0, []
        for m in sent:
            r, w = self._backward(m, x[m.part], idx[m.part], len(idx), step, kl_weight)
            rewards.append(r)
            kls.append(m.samples.kl.detach())
            wait += w
            if keep_grads:
                grads.append(torch.cat([q.grad.flatten() for q in self.model.parameters()
                                        if q.grad is not None]).clone())
        return StepResult(torch.cat(rewards), torch.cat(kls), wait, grads)

    def _send(self, x: Tensor, idx: np.ndarray, part: np.ndarray, k: int, gen: torch.Generator,
              step: int) -> _Sent:
        noise = self.est.noise((len(part), k, self.model.decoder.dim), generator=gen,
                               device=x.device)
        sym = self.symmetries
        g = sym.draw(len(part), gen, x.device) if sym is not None else None
        s = self.model.sample(x if g is None else sym.images(x, g), k, noise=noise,
                              generator=gen, paint=g is None)
        if not torch.isfinite(s.actions).all():
            raise FloatingPointError(
                f"step {step}: the model produced NaN/inf mesh parameters; the last checkpoint "
                f"({self.checkpoint}) is intact; lower train.lr")
        if g is None:
            sent = _Sent(part, s, self.source.submit(s, idx))
        else:  # rendered against the image itself: its own frame's actions
            actions = self.model.train_actions(sym.back(s.m, g), x)
            sent = _Sent(part, s, self.source.submit_actions(actions, idx), g)
        if self.replay is not None and self.replay.searches:
            sent.proposals = self.replay.proposals(idx, gen, x)
            actions = self.model.train_actions(sent.proposals, x)
            sent.proposal_ticket = self.source.submit_actions(actions, idx)
        return sent

    def _backward(self, m: _Sent, x: Tensor, idx: np.ndarray, b: int, step: int,
                  kl_weight: float) -> tuple[Tensor, float]:
        gl, wait = self.source.collect(m.ticket, m.samples.logp)
        if self.mirror_reward:
            gl = gl - self.model.mirror_penalty(m.samples.m, m.samples.mean[:, 0])
        loss, r = surrogate(self.est, m.samples, x, gl, self.source.oracle, kl_weight)
        if self.replay is not None:
            if m.proposals is not None:
                pr, w = self.source.collect(m.proposal_ticket, m.proposals[..., 0])
                wait += w
                if self.mirror_reward:
                    best = self.replay.m[torch.as_tensor(idx, device=pr.device)]
                    pr = pr - self.model.mirror_penalty(m.proposals, best)
                self.replay.offer(idx, m.proposals, pr)
            frame = None if m.element is None else (self.symmetries, m.element)
            loss = loss + self.replay_weight * self.replay.loss(self.model, m.samples, r, idx,
                                                                frame)
        if self.soft is not None and self.soft.weight > 0:
            loss = loss + self.soft.loss(m.samples, x, r)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"step {step}: the loss is {loss.item()} (NaN/inf from the model); the last "
                f"checkpoint ({self.checkpoint}) is intact; lower train.lr or raise "
                "model.min_std")
        (loss * len(m.part) / b).backward()
        return r, wait
