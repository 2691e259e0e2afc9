"""The estimator interface (a ``Batch`` of samples and rewards in, a surrogate loss out) and the
registry that builds estimators by name, including ones from other packages."""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ClassVar

import torch
from torch import Tensor

ENTRY_POINT_GROUP = "gen3d.estimators"
REWARDS = frozenset({"reward", "soft_reward"})  # what an estimator may require of the learner


def _shape_error(field: str, want: str, got: Tensor) -> ValueError:
    return ValueError(f"Batch.{field} must have shape {want}, got {tuple(got.shape)}")


@dataclass
class Batch:
    """K samples for each of B inputs: what an estimator needs to form a gradient estimate.

    logp: (B, K) log q(sample) WITH grad to the model's parameters (samples detached inside).
    reward: (B, K) black-box f(sample), e.g. log p(x | render); any grad it carries is dropped.
    sample: (B, K, D) the same samples WITH pathwise grad (for LAX's control variate).
    features: (B, F) per-input features (neural baseline input); detached here.
    log_prior: (B, K) log p(sample), for the multi-sample bound (VIMCO).
    noise: (B, K, D) the standard-normal noise the samples were drawn from.
    soft_reward: (B, K) a differentiable reward of ``sample`` WITH pathwise grad (the soft
        rasteriser's log-likelihood), given when the estimator ``requires`` it.
    """

    logp: Tensor
    reward: Tensor
    sample: Tensor | None = None
    features: Tensor | None = None
    log_prior: Tensor | None = None
    noise: Tensor | None = None
    soft_reward: Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("logp", "reward"):
            if not isinstance(getattr(self, name), Tensor):
                raise TypeError(f"Batch.{name} must be a torch tensor (B, K), got "
                                f"{type(getattr(self, name)).__name__}; use torch.as_tensor")
        if self.logp.dim() != 2:
            raise _shape_error("logp", "(B, K)", self.logp)
        B, K = self.logp.shape
        if not B * K:
            raise ValueError(f"Batch: the batch is empty (B, K) = {(B, K)}; an estimate needs "
                             "at least one input and one sample")
        if self.reward.shape != self.logp.shape:
            raise _shape_error("reward", f"(B, K) = {(B, K)} like logp", self.reward)
        self.reward = self.reward.detach().to(self.logp)
        if not bool(torch.isfinite(self.reward).all()):
            raise ValueError("Batch.reward has NaN or inf entries: check the likelihood (e.g. a "
                             "zero pixel sigma) or the render that produced them")
        if not bool(torch.isfinite(self.logp.detach()).all()):
            raise ValueError("Batch.logp has NaN or inf entries: the model's distribution "
                             "parameters have diverged (lower the learning rate or clip scales)")
        for name in ("sample", "noise"):
            t = getattr(self, name)
            if t is not None and (t.dim() != 3 or tuple(t.shape[:2]) != (B, K)):
                raise _shape_error(name, f"(B, K, D) with (B, K) = {(B, K)}", t)
        for name in ("log_prior", "soft_reward"):
            t = getattr(self, name)
            if t is not None and t.shape != self.logp.shape:
                raise _shape_error(name, f"(B, K) = {(B, K)}", t)
        if self.features is not None:
            if self.features.dim() != 2 or self.features.shape[0] != B:
                raise _shape_error("features", f"(B, F) with B = {B}", self.features)
            self.features = self.features.detach()

    @property
    def num_samples(self) -> int:
        return self.logp.shape[1]


class Estimator(torch.nn.Module):
    """A gradient estimator: ``loss(batch).backward()`` puts MINUS the estimate of
    grad (1/B) sum_b E_k[reward] on the model's parameters (the multi-sample bound for
    objective "iwae"), plus gradients of the estimator's own auxiliary losses on its own
    parameters. State lives in buffers (checkpointed by ``state_dict``); in ``eval()`` mode the
    state is frozen, so repeated estimates at fixed parameters (diagnostics) stay comparable.

    The learner asks an estimator only through this interface: ``requires`` (which rewards to
    produce), ``check_samples`` (before the run), ``noise`` (to draw the samples),
    ``soft_options`` (the soft rasteriser's settings) and ``surrogate`` (the step's whole loss).
    """

    name: ClassVar[str] = ""
    objective: ClassVar[str] = "elbo"
    """"elbo": ``surrogate`` adds the KL pathwise; "iwae": the loss is the whole bound."""
    min_samples: ClassVar[int] = 1
    """Smallest K the estimator works with."""
    requires: ClassVar[frozenset[str]] = frozenset({"reward"})
    """The rewards the learner must fill in: "reward" (black-box: every sample rendered by the
    GL render pool) and/or "soft_reward" (the soft rasteriser's differentiable log-likelihood of
    ``Batch.sample``). Without "reward", ``Batch.reward`` holds the soft reward, detached."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, Tensor] = {}

    @property
    def pathwise(self) -> bool:
        """True when the estimator needs no black-box rewards (nothing goes to the GL pool)."""
        return "reward" not in self.requires

    def check_samples(self, k: int) -> None:
        """A clear error, before anything runs, when K samples per input are too few."""
        if k < self.min_samples:
            raise ValueError(f"estimator {self.name!r} needs at least {self.min_samples} samples "
                             f"per input, got K={k}: raise train.samples")

    def noise(self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
        """Standard-normal noise (B, K, D) from which the learner draws its K samples."""
        return torch.randn(tuple(shape), generator=generator, device=device)

    def soft_options(self) -> dict[str, Any]:
        """Keyword arguments of the soft rasteriser that makes ``Batch.soft_reward`` (sigma,
        mode, cutoff: see ``gen3d.softras``); empty: its own defaults."""
        return {}

    def loss(self, batch: Batch) -> Tensor:
        raise NotImplementedError

    def surrogate(self, batch: Batch, kl: Tensor | None = None, kl_weight: float = 1.0) -> Tensor:
        """The learner's whole loss for ``batch``: ``loss(batch)``, plus ``kl_weight`` times the
        mean pathwise ``kl`` (B, K) for objective "elbo" (the "iwae" bound holds the prior)."""
        out = self.loss(batch)
        if self.objective == "elbo" and kl is not None:
            out = out + kl_weight * kl.mean()
        return out

    def forward(self, batch: Batch) -> Tensor:
        return self.loss(batch)

    def stats(self) -> dict[str, float]:
        """The last ``loss`` call's diagnostics (floats; converted here, not in the hot path)."""
        return {k: float(v) for k, v in self._last.items()}

    # helpers for subclasses -------------------------------------------------------------
    def _check(self, batch: Batch) -> None:
        self.check_samples(batch.num_samples)

    def _record(self, **values: Tensor | float) -> None:
        self._last = {k: v.detach().float().mean() if isinstance(v, Tensor) else torch.tensor(v)
                      for k, v in values.items()}

    def _score_loss(self, batch: Batch, baseline: Tensor) -> Tensor:
        """-(mean (reward - baseline) grad log q); its value is -mean(reward) (the score part
        adds zero), so the learner's total loss reads as minus the ELBO estimate."""
        r = batch.reward
        adv = (r - baseline).detach()
        score = (adv * (batch.logp - batch.logp.detach())).mean()
        self._record(reward_mean=r.mean(), reward_std=_within_std(r),
                     baseline_mean=torch.as_tensor(baseline, dtype=r.dtype).mean(),
                     advantage_std=adv.std() if adv.numel() > 1 else 0.0)
        return -(score + r.mean())


def _within_std(r: Tensor) -> Tensor:
    """Std of rewards across the K samples of one input, averaged over inputs."""
    return r.std(dim=1).mean() if r.shape[1] > 1 else r.new_zeros(())


def leave_one_out_mean(r: Tensor) -> Tensor:
    """(B, K) -> mean over the other K-1 samples of the same input."""
    K = r.shape[1]
    return (r.sum(dim=1, keepdim=True) - r) / (K - 1)


class EMA(torch.nn.Module):
    """Bias-corrected exponential moving average (as in Adam) of a batch mean and mean square."""

    def __init__(self, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("mean_acc", torch.zeros(()))
        self.register_buffer("sq_acc", torch.zeros(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def update(self, x: Tensor) -> None:
        with torch.no_grad():
            d = self.decay
            self.mean_acc.mul_(d).add_((1 - d) * x.mean().to(self.mean_acc))
            self.sq_acc.mul_(d).add_((1 - d) * x.pow(2).mean().to(self.sq_acc))
            self.count.add_(1)

    def _correction(self) -> Tensor:
        # a tensor expression, so reading the average never syncs a GPU
        c = 1.0 - torch.pow(torch.full_like(self.mean_acc, self.decay), self.count)
        return torch.where(self.count > 0, c, torch.ones_like(c))

    @property
    def mean(self) -> Tensor:
        return self.mean_acc / self._correction()

    @property
    def std(self) -> Tensor:
        var = (self.sq_acc / self._correction() - self.mean.pow(2)).clamp_min(0.0)
        return var.sqrt() + 1e-6 * (1.0 + self.mean.abs())


def model_leaves(*tensors: Tensor | None, exclude: Any = ()) -> list[Tensor]:
    """The leaf tensors requiring grad (the model's parameters) that ``tensors`` depend on,
    found by walking the autograd graph; for estimators that need per-parameter gradients."""
    skip = {id(p) for p in exclude}
    found: dict[int, Tensor] = {}
    stack = []
    for t in tensors:
        if t is None:
            continue
        if t.grad_fn is None and t.requires_grad and id(t) not in skip:
            found[id(t)] = t
        stack.append(t.grad_fn)
    seen: set = set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        v = getattr(fn, "variable", None)
        if v is not None and id(v) not in skip:
            found.setdefault(id(v), v)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return list(found.values())


def mlp(in_features: int | None, hidden: int, out: int = 1) -> torch.nn.Sequential:
    """Small MLP; lazy input size when ``in_features`` is None; last layer zero so it starts
    as the constant its caller adds (a running mean)."""
    if int(hidden) != hidden or hidden < 1:
        raise ValueError(f"hidden (the baseline network's width) must be a whole number >= 1, "
                         f"got {hidden}")
    first = torch.nn.Linear(in_features, hidden) if in_features else torch.nn.LazyLinear(hidden)
    last = torch.nn.Linear(hidden, out)
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return torch.nn.Sequential(first, torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                               torch.nn.Tanh(), last)


def check_width(net: torch.nn.Sequential, x: Tensor, who: str) -> None:
    """A clear error when an MLP sized on an earlier step gets inputs of another width."""
    first = net[0]
    sized = isinstance(first, torch.nn.Linear) and not isinstance(first, torch.nn.LazyLinear)
    if sized and x.shape[-1] != first.in_features:
        raise ValueError(f"estimator {who!r}: its network takes inputs of width "
                         f"{first.in_features}, got {x.shape[-1]}; pass the same Batch "
                         f"features (and sample) layout every step, or set in_features")


def log_mean_exp(x: Tensor, dim: int) -> Tensor:
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


# registry -------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[..., Estimator]] = {}


def register(name: str) -> Callable[[Callable[..., Estimator]], Callable[..., Estimator]]:
    """Decorator: make ``build(name, **kwargs)`` (and ``estimator: name`` in a config) construct
    this Estimator subclass (or factory returning one)."""

    def deco(obj: Callable[..., Estimator]) -> Callable[..., Estimator]:
        old = _REGISTRY.get(name)
        same = old is obj or (old is not None and _qualname(old) == _qualname(obj))  # reload
        if old is not None and not same:
            raise ValueError(f"estimator name {name!r} is already taken by {_qualname(old)}; "
                             f"register {_qualname(obj)} under another name")
        if isinstance(obj, type) and "name" not in vars(obj):
            obj.name = name
        _REGISTRY[name] = obj
        return obj

    return deco


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names ``build`` accepts: registered ones and those advertised by installed packages."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def build(name: str, **kwargs: Any) -> Estimator:
    """Construct the estimator registered as ``name`` with ``kwargs`` (from the config)."""
    if name not in _REGISTRY:
        ep = _entry_points().get(name)
        if ep is None:
            raise ValueError(f"unknown estimator {name!r}; choose one of {available()} "
                             f"(or register your own: see gen3d.estimators, and --import its module)")
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin: say which package and entry point
            raise ImportError(f"estimator {name!r} from entry point {ep.value!r} (group "
                              f"{ENTRY_POINT_GROUP!r}) failed to import: {e}") from e
        register(name)(obj)
    factory = _REGISTRY[name]
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        _check_option_types(name, factory, kwargs)
        try:
            sig.bind(**kwargs)
        except TypeError as e:
            accepted = [p for p in sig.parameters if p not in ("self", "args", "kwargs")]
            raise ValueError(f"estimator {name!r}: {e}; it accepts {accepted}: set "
                             f"estimator.kwargs to those (--set 'estimator.kwargs={{}}' for "
                             f"none; a config's options are its own estimator's)") from None
    est = factory(**kwargs)
    if not isinstance(est, Estimator):
        raise TypeError(f"estimator {name!r} built a {type(est).__name__}, not a "
                        f"gen3d.estimators.Estimator")
    wrong = set(est.requires) - REWARDS
    if wrong or not est.requires:
        raise ValueError(f"estimator {name!r}: requires = {sorted(est.requires)}; it must name "
                         f"one or both of {sorted(REWARDS)}")
    return est


_SIMPLE = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check_option_types(name: str, factory: Callable[..., Any], kwargs: dict) -> None:
    """Options whose parameter is annotated bool, int, float or str must be one (an int is a
    float), so that a quoted number in a config is named here, not deep in a loss."""
    try:
        hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    except Exception:  # annotations that do not resolve: the constructor's own checks stand
        return
    for key, value in kwargs.items():
        tp = hints.get(key)
        if tp not in _SIMPLE:
            continue
        ok = isinstance(value, tp) and (tp is bool or not isinstance(value, bool))
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ValueError(f"estimator {name!r}: option {key} must be {_SIMPLE[tp]}, got "
                             f"{value!r} ({type(value).__name__})")
