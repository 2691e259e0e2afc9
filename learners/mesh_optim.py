"""The mesh learner's optimiser pieces: schedules on the run's clock, weight averaging,
weight decay groups, gradient clipping and sizing of lazy estimator parameters."""


from __future__ import annotations

from typing import TYPE_CHECKING

import copy

import torch

from gen3d import estimators
from gen3d.mesh_model import MeshModel



if TYPE_CHECKING:
    from learners.mesh_config import MeshTrainConfig


CLOCK_SLACK = 0.05
"""The share of the time limit a run may fall behind its pace before the clock, not the step
count, drives its schedules."""


def run_fraction(tc: MeshTrainConfig, step: int, elapsed_s: float) -> float:
    """How far the run is at ``step``, in [0, 1]: of its steps, or of its time limit when the
    clock is further on by more than ``CLOCK_SLACK`` of the limit (then scaled to reach 1 at
    the limit). The slack keeps the clock out of a run that keeps the pace its limit needs:
    its first steps' warm-up and set-up stalls would otherwise move its schedule by a load-
    dependent amount, and the same seed would not give the same weights. A run the clock
    would stop still ends on its smallest steps."""
    done = step / tc.steps
    if tc.time_limit_s:
        clock = elapsed_s / tc.time_limit_s
        done = max(done, (clock - CLOCK_SLACK) / (1 - CLOCK_SLACK))
    return min(1.0, done)


def lr_factor(tc: MeshTrainConfig, step: int, elapsed_s: float) -> float:
    """The learning rate's fraction at ``step``: linear from 1 to ``lr_final``."""
    return 1 - (1 - tc.lr_final) * run_fraction(tc, step, elapsed_s)


def std_factor(tc: MeshTrainConfig, step: int, elapsed_s: float) -> float:
    """The sampling std's factor at ``step``: linear from 1 to ``std_final``."""
    return 1 - (1 - tc.std_final) * run_fraction(tc, step, elapsed_s)


def shape_degree(tc: MeshTrainConfig, full: int, step: int, elapsed_s: float) -> int:
    """The shape's highest harmonic degree at ``step`` (``coarse_to_fine``): from
    ``coarse_degree``, one more in each of ``full - coarse_degree + 1`` equal parts of the
    first ``coarse_to_fine`` of the run; ``full`` when off."""
    if not tc.coarse_to_fine:
        return full
    parts = full - tc.coarse_degree + 1
    done = run_fraction(tc, step, elapsed_s) / tc.coarse_to_fine
    return min(full, tc.coarse_degree + int(done * parts))


def soft_factor(tc: MeshTrainConfig, step: int, elapsed_s: float) -> float:
    """The soft-mean term's fraction at ``step``: linear from 1 to 0 at ``soft_mean_until``
    of the run, then 0."""
    return max(0.0, 1 - run_fraction(tc, step, elapsed_s) / tc.soft_mean_until)


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
    """Weight decay on the layers' weights only (their matrices and kernels, torch's
    ``weight*`` parameters): decay pulls a parameter towards 0, which for a bias or a log-std
    (the sampling std of p(m | z) starts at log 0.1) is a push towards a wider distribution,
    and for a model's own shapes (``MeshModel.templates``) a push towards the base sphere, not
    a smaller weight."""
    groups = {True: [], False: []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[name.rsplit(".", 1)[-1].startswith("weight")].append(p)
    return [{"params": groups[True], "weight_decay": weight_decay},
            {"params": groups[False], "weight_decay": 0.0}]


def make_optimiser(model: torch.nn.Module, tc: MeshTrainConfig) -> torch.optim.AdamW:
    """AdamW over ``decay_groups`` at ``train.lr``; foreach: one pass a stage over all tensors
    (CUDA's default already; on CPU the same values, a little faster)."""
    return torch.optim.AdamW(decay_groups(model, tc.weight_decay), lr=tc.lr, foreach=True)


def clipped_step(opt: torch.optim.Optimizer, model: torch.nn.Module, tc: MeshTrainConfig) -> bool:
    """The optimiser's step after the config's clipping: the gradient norm (``grad_clip``),
    then each element against Adam's running RMS (``adam_clip``). A gradient with a NaN
    anywhere is not stepped on (returns False; the caller counts it): through Adam's moments
    one NaN element would make every weight NaN. Infinite elements are left to the clips."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if grads and bool(torch.stack(torch._foreach_norm(grads)).isnan().any()):
        return False
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    if tc.adam_clip > 0:
        clip_to_adam_rms(opt, tc.adam_clip)
    opt.step()
    return True


@torch.no_grad()
def clip_to_adam_rms(opt: torch.optim.Optimizer, k: float) -> None:
    """Clamp each gradient element to k times the bias-corrected RMS Adam keeps for it."""
    for group in opt.param_groups:
        beta2 = group["betas"][1]
        grads, sq, bias = [], [], []
        for p in group["params"]:
            st = opt.state.get(p)
            if p.grad is None or not st or "exp_avg_sq" not in st:
                continue
            grads.append(p.grad)
            sq.append(st["exp_avg_sq"])
            bias.append(1 - beta2 ** float(st["step"]))
        if not grads:
            continue
        # one in-place pass over all of a group's tensors a stage: 7x faster on the VM than a
        # tensor at a time, which took a sixth of the main job's step; the same values
        rms = torch._foreach_div(sq, bias)
        torch._foreach_sqrt_(rms)
        torch._foreach_mul_(rms, k)
        torch._foreach_add_(rms, group["eps"])
        torch._foreach_minimum_(grads, rms)
        torch._foreach_neg_(rms)
        torch._foreach_maximum_(grads, rms)


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
                             noise=torch.zeros(1, k, d, device=dev),
                             soft_reward=torch.zeros(1, k, device=dev, requires_grad=True))
    est.eval()
    est.loss(dummy)
    est.train()
