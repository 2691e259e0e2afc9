"""The sequential 3D generative model (Rezende et al. 2016, section 2) with pluggable parts.

Public API (stable; issue 5 builds on it)
-----------------------------------------
Shapes. Observations ``x`` are (B, *data_shape) floats; for volumes data_shape = (1, N, N, N)
with values in {0, 1} and axes (z, y, x) = torch's (D, H, W). The canvas h is (B, F, N, N, N)
with F = ``cfg.canvas_channels`` (1 for the identity projection). The decoder state s_t is
(B, cfg.hidden). Bounds are in nats per example.

Generative model, for t = 1..T (T = ``cfg.steps``):
    z_t ~ N(0, I)   (cfg.z_dim latents per step)
    e_t = context(prep, s_{t-1})            context encoder, prep = context.prepare(c) once
    s_t = LSTM([z_t, e_t], s_{t-1})          (cfg.hidden units)
    h_t = h_{t-1} + write(s_t)               VST write, see ``gen3d.volumes.vst``
    params = projection(h_T, s_T, camera)    data-space logits (Bernoulli) or means (Gaussian)
    x ~ likelihood(params)
Inference, q(z_t | x, c, s_{t-1}):
    r_t = reader(x, x_hat_{t-1}, s_{t-1})   VST read of x and of the error x - x_hat_{t-1},
                                             x_hat_{t-1} = likelihood.mean(projection(h_{t-1}))
    g_t = encoder LSTM([r_t, s_{t-1}, e_t], g_{t-1});  (mu, log sigma) = Linear(g_t)

Pluggable parts (all ``nn.Module``):
- ``Projection``: ``forward(canvas, state, camera=None) -> params`` of shape (B, *data_shape).
  ``IdentityProjection`` returns ``canvas[:, :1]``.
- ``Likelihood``: ``log_prob(params, x) -> (B,)`` summed over data dims, ``mean(params)``,
  ``sample(params)``. ``BernoulliLikelihood`` (params are logits) checks that x is binary.
- ``Reader``: attributes ``out_dim: int``, ``uses_error: bool``; ``forward(x, x_hat, s_prev)
  -> (B, out_dim)``. When ``uses_error`` is False the model passes ``x_hat=None`` and skips the
  per-step projection. ``VolumeReader`` is the VST read of x and its error volume.
- Context encoders (``gen3d.volumes.contexts``): attribute ``dim``; ``prepare(c) -> prep`` once
  per batch, ``forward(prep, s_prev) -> (B, dim)`` each step. ``NoContext`` (c=None),
  ``ClassContext`` (c = (B,) int labels or (B, K) one-hot), ``ViewContext`` (c = (B, V, H, W)
  views; conv encoder + 2D spatial transformer attended by s_{t-1}). ``make_context(cfg)``.

``VolumeModel(cfg, projection=None, likelihood=None, reader=None, context=None)``; None picks
the volume defaults from ``cfg``. Methods:
- ``forward(x, c=None, camera=None) -> ModelOutput`` with fields ``elbo`` (B,), ``log_lik``
  (B,), ``kl`` (B,) (analytic, summed over steps), ``log_w`` (B,) = log p(x|z) + log p(z) -
  log q(z|x) for the sampled z (for importance weighting), ``params`` (B, *data_shape),
  ``canvas`` (B, F, N, N, N).
- ``loss(x, c=None, camera=None) -> scalar`` mean negative ELBO (nats per example).
- ``generate(n, c=None, camera=None) -> GenerateOutput`` (``canvas``, ``params``, ``mean``):
  ancestral samples from the prior.
- ``infer_canvas(x, c=None, camera=None) -> canvas``: one pass of inference (z ~ q) and write.
- ``compile_steps(**torch_compile_kwargs)``: compile the per-step function (GPU speed-up).
Bounds over several samples live in ``gen3d.volumes.bounds`` (``elbo``, ``iwae_bound``).
``VolumeModelConfig`` is a plain dataclass (one docstring per field) that configs nest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gen3d.fields import Above, AtMost, FiniteFloat, NonNegInt, PosInt
from gen3d.volumes import vst
from gen3d.volumes.contexts import make_context

Tensor = torch.Tensor
LOG_2PI = math.log(2 * math.pi)


@dataclass
class VolumeModelConfig:
    """Sizes of the sequential model; the defaults are the paper's volume model at 32^3."""

    steps: PosInt = 12
    """T, the number of generation steps (1 to 24 or more)"""
    z_dim: PosInt = 10
    """latents per step"""
    hidden: PosInt = 300
    """units of the generative LSTM (state s_t)"""
    enc_hidden: PosInt = 300
    """units of the inference LSTM"""
    canvas_size: PosInt = 32
    """N: the canvas is N^3 (for volume data, the data's size)"""
    canvas_channels: PosInt = 1
    """F: channels of the canvas (1 for the identity projection)"""
    write_patch: PosInt = 8
    """P: the content patch written at each step is P^3"""
    read_patch: PosInt = 8
    """the glimpse that the inference network reads at each step is read_patch^3"""
    read_dim: PosInt = 256
    """width of the layer that embeds the glimpse of x and of the error volume"""
    rotate: bool = True
    """whether the write transform includes a rotation (axis-angle) besides scale and shift"""
    write_mode: Literal["separable", "dense"] = "separable"
    """separable: three small matrix products (fast); dense: grid_sample over the whole canvas
    at every step (the naive reference, kept for benchmarks)"""
    write_scale: Annotated[float, Above(0.05), AtMost(2)] = 0.5
    """initial half-extent of a written patch, as a fraction of the canvas half-extent (above
    0.05: every patch's half-extent is 0.05 plus a softplus)"""
    canvas_bias: FiniteFloat = -3.0
    """initial value of the empty canvas (Bernoulli logit: mostly empty space)"""
    context: Literal["none", "class", "views"] = "none"
    """what the model is conditioned on: nothing, a class label, or 2D views"""
    n_classes: NonNegInt = 0
    """number of classes (context: class)"""
    n_views: PosInt = 3
    """number of 2D views (context: views)"""
    context_dim: PosInt = 64
    """width of the view encoding e_t (context: views)"""

    def __post_init__(self):
        for name in ("steps", "z_dim", "hidden", "enc_hidden", "canvas_size", "canvas_channels",
                     "write_patch", "read_patch", "read_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.05 < self.write_scale <= 2:
            raise ValueError(f"write_scale must be in (0.05, 2] (a patch's half-extent is 0.05 "
                             f"plus a softplus), got {self.write_scale}")
        if self.context == "class" and self.n_classes < 2:
            raise ValueError("context: class needs n_classes >= 2 (the dataset's class count)")


# ------------------------------------------------------------------ pluggable parts


class IdentityProjection(nn.Module):
    """Volume data: the first canvas channel is the data-space logit volume."""

    def forward(self, canvas: Tensor, state: Tensor, camera: Tensor | None = None) -> Tensor:
        return canvas[:, :1]


class BernoulliLikelihood(nn.Module):
    """Bernoulli voxels with logits ``params``; x must be binary (checked unless ``validate`` is
    False, and skipped inside CUDA-graph capture, where a check would synchronise)."""

    def __init__(self, validate: bool = True):
        super().__init__()
        self.validate = validate

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        if params.shape != x.shape:
            raise ValueError(f"likelihood: data shape {tuple(x.shape)} does not match the "
                             f"projection's output {tuple(params.shape)}")
        if self.validate and not (x.is_cuda and torch.cuda.is_current_stream_capturing()):
            if bool(((x != 0) & (x != 1)).any()):
                raise ValueError("Bernoulli likelihood: data must be binary (0 or 1); threshold "
                                 "the volumes (e.g. x > 0.5) before training")
        nll = F.binary_cross_entropy_with_logits(params, x, reduction="none")
        return -nll.flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params))


class VolumeReader(nn.Module):
    """VST read of the volume and its error volume: an axis-aligned glimpse whose box comes from
    s_{t-1} (initially the whole volume, anti-aliased), then one ELU layer of ``out_dim``."""

    uses_error = True

    def __init__(self, data_channels: int, patch: int, hidden: int, out_dim: int = 256):
        super().__init__()
        self.patch = patch
        self.out_dim = out_dim
        self.embed = nn.Linear(2 * data_channels * patch**3, out_dim)
        self.where = nn.Linear(hidden, 6)
        nn.init.zeros_(self.where.weight)
        with torch.no_grad():
            self.where.bias.zero_()
            self.where.bias[3:] = math.log(math.expm1(1.0 - 0.05))  # scale 1: whole volume

    def forward(self, x: Tensor, x_hat: Tensor | None, s_prev: Tensor) -> Tensor:
        raw = self.where(s_prev)
        shift, scale = raw[:, :3], 0.05 + F.softplus(raw[:, 3:])
        # the read is linear, so read(x - x_hat) = read(x) - read(x_hat): no full-size error
        # volume or concatenation is made
        gx = vst.read(x, scale, shift, self.patch, antialias=True).flatten(1)
        gh = vst.read(x_hat, scale, shift, self.patch, antialias=True).flatten(1)
        return F.elu(self.embed(torch.cat([gx, gx - gh], 1)))


# ------------------------------------------------------------------ the model


@dataclass
class ModelOutput:
    elbo: Tensor
    log_lik: Tensor
    kl: Tensor
    log_w: Tensor
    params: Tensor
    canvas: Tensor


@dataclass
class GenerateOutput:
    canvas: Tensor
    params: Tensor
    mean: Tensor


class VolumeModel(nn.Module):
    """The sequential generative model and its inference network; see the module docstring."""

    def __init__(self, cfg: VolumeModelConfig, projection: nn.Module | None = None,
                 likelihood: nn.Module | None = None, reader: nn.Module | None = None,
                 context: nn.Module | None = None, data_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.cfg = cfg
        n, f, p = cfg.canvas_size, cfg.canvas_channels, cfg.write_patch
        self.data_shape = tuple(data_shape) if data_shape is not None else (1, n, n, n)
        self.projection = projection if projection is not None else IdentityProjection()
        self.likelihood = likelihood if likelihood is not None else BernoulliLikelihood()
        self.reader = reader if reader is not None else VolumeReader(
            self.data_shape[0], cfg.read_patch, cfg.hidden, cfg.read_dim)
        self.context = context if context is not None else make_context(
            cfg.context, cfg.n_classes, cfg.n_views, n, cfg.hidden, cfg.context_dim)
        e = self.context.dim
        self.decoder = nn.LSTMCell(cfg.z_dim + e, cfg.hidden)
        self.encoder = nn.LSTMCell(self.reader.out_dim + cfg.hidden + e, cfg.enc_hidden)
        self.q_head = nn.Linear(cfg.enc_hidden, 2 * cfg.z_dim)
        self.where = nn.Linear(cfg.hidden, 9)  # the write transform (see vst.transform_from_raw)
        self.what = nn.Linear(cfg.hidden, f * p**3)  # the content patch
        self.canvas_bias = nn.Parameter(torch.full((f,), float(cfg.canvas_bias)))
        with torch.no_grad():
            self.q_head.weight.mul_(0.1)
            self.q_head.bias.zero_()
            self.where.weight.mul_(0.1)
            self.where.bias.zero_()
            self.what.weight.mul_(0.1)
            self.what.bias.zero_()
        self._scale_bias = math.log(math.expm1(cfg.write_scale - 0.05))
        self._step_fn = self._infer_step

    # -- pieces
    def _write(self, s: Tensor) -> Tensor:
        cfg = self.cfg
        scale, shift, rot = vst.transform_from_raw(self.where(s), cfg.rotate, 0.05, self._scale_bias)
        patch = self.what(s).view(-1, cfg.canvas_channels, *(cfg.write_patch,) * 3)
        write = vst.write if cfg.write_mode == "separable" else vst.write_dense
        return write(patch, scale, shift, cfg.canvas_size, rot)

    def _infer_step(self, x: Tensor, canvas: Tensor, s: Tensor, cell: Tensor, g: Tensor,
                    gcell: Tensor, e: Tensor, camera: Tensor | None) -> tuple[Tensor, ...]:
        """One step of inference and generation: read, z_t ~ q, LSTM, write; also returns the
        step's KL and log p(z_t) - log q(z_t | .) (the log 2 pi terms cancel)."""
        x_hat = None
        if self.reader.uses_error:
            x_hat = self.likelihood.mean(self.projection(canvas, s, camera))
        r = self.reader(x, x_hat, s)
        g, gcell = self.encoder(torch.cat([r, s, e], 1), (g, gcell))
        mu, log_sig = self.q_head(g).chunk(2, -1)
        sig = torch.exp(log_sig)
        eps = torch.randn_like(mu)
        z = mu + sig * eps
        kl = 0.5 * (mu * mu + sig * sig - 1 - 2 * log_sig).sum(-1)
        log_pq = (0.5 * eps * eps + log_sig - 0.5 * z * z).sum(-1)
        s, cell = self.decoder(torch.cat([z, e], 1), (s, cell))
        return s, cell, g, gcell, canvas + self._write(s), kl, log_pq

    def compile_steps(self, **kwargs) -> None:
        """Compile the per-step function with ``torch.compile`` (compiled once, reused for all
        T steps): fuses the many small kernels of a step; worth it on GPUs."""
        self._step_fn = torch.compile(self._infer_step, **kwargs)

    def _empty_canvas(self, b: int, like: Tensor) -> Tensor:
        n = self.cfg.canvas_size
        bias = self.canvas_bias.to(like.dtype).view(1, -1, 1, 1, 1)
        return bias.expand(b, -1, n, n, n).contiguous()

    def _check_x(self, x: Tensor) -> None:
        if not len(x):
            raise ValueError("model input: the batch is empty (B=0); pass at least one volume")
        if x.dtype != self.canvas_bias.dtype:
            raise ValueError(f"model input: {x.dtype}, the model is {self.canvas_bias.dtype}; "
                             f"pass x.to({self.canvas_bias.dtype}) (or move the model with .to())")
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"model input: need (B, {', '.join(map(str, self.data_shape))}), got "
                             f"{tuple(x.shape)}; volumes need a channel axis (x[:, None]) and the "
                             "canvas size must equal the data size (model.canvas_size)")

    # -- public API
    def forward(self, x: Tensor, c: Tensor | None = None, camera: Tensor | None = None) -> ModelOutput:
        self._check_x(x)
        cfg = self.cfg
        b = x.shape[0]
        prep = self.context.prepare(c, b)
        s = x.new_zeros(b, cfg.hidden)
        cell = torch.zeros_like(s)
        g = x.new_zeros(b, cfg.enc_hidden)
        gcell = torch.zeros_like(g)
        canvas = self._empty_canvas(b, x)
        kl = x.new_zeros(b)
        log_pq = x.new_zeros(b)
        for _ in range(cfg.steps):
            e = self.context(prep, s)
            s, cell, g, gcell, canvas, kl_t, log_pq_t = self._step_fn(
                x, canvas, s, cell, g, gcell, e, camera)
            kl = kl + kl_t
            log_pq = log_pq + log_pq_t
        params = self.projection(canvas, s, camera)
        log_lik = self.likelihood.log_prob(params, x)
        return ModelOutput(elbo=log_lik - kl, log_lik=log_lik, kl=kl, log_w=log_lik + log_pq,
                           params=params, canvas=canvas)

    def loss(self, x: Tensor, c: Tensor | None = None, camera: Tensor | None = None) -> Tensor:
        """Mean negative ELBO in nats per example."""
        return -self.forward(x, c, camera).elbo.mean()

    @torch.no_grad()
    def infer_canvas(self, x: Tensor, c: Tensor | None = None,
                     camera: Tensor | None = None) -> Tensor:
        return self.forward(x, c, camera).canvas

    @torch.no_grad()
    def generate(self, n: int, c: Tensor | None = None, camera: Tensor | None = None) -> GenerateOutput:
        """Ancestral samples: z_t from the prior, then the write chain and the projection."""
        if int(n) != n or n < 1:
            raise ValueError(f"generate: n (samples) must be a whole number >= 1, got {n}")
        cfg = self.cfg
        ref = self.canvas_bias
        prep = self.context.prepare(c, n)
        s = ref.new_zeros(n, cfg.hidden)
        cell = torch.zeros_like(s)
        canvas = self._empty_canvas(n, s)
        for _ in range(cfg.steps):
            e = self.context(prep, s)
            z = torch.randn(n, cfg.z_dim, device=ref.device, dtype=ref.dtype)
            s, cell = self.decoder(torch.cat([z, e], 1), (s, cell))
            canvas = canvas + self._write(s)
        params = self.projection(canvas, s, camera)
        return GenerateOutput(canvas=canvas, params=params, mean=self.likelihood.mean(params))
