"""Context encoders e_t = f(c, s_{t-1}) behind one interface, and the 2D views used as context.

Interface: attribute ``dim`` (width of e_t); ``prepare(c, batch) -> prep`` once per batch
(validates c, runs any per-batch encoder); ``forward(prep, s_prev) -> (B, dim)`` each step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class NoContext(nn.Module):
    """Unconditional model: e_t is empty."""

    dim = 0

    def prepare(self, c: Tensor | None, batch: int) -> None:
        if c is not None:
            raise ValueError("this model has no context (model.context: none) but got one; "
                             "pass c=None or build the model with context: class or views")
        return None

    def forward(self, prep: None, s_prev: Tensor) -> Tensor:
        return s_prev.new_zeros(s_prev.shape[0], 0)


class ClassContext(nn.Module):
    """A class label as a one-hot vector, the same at every step."""

    def __init__(self, n_classes: int):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"ClassContext: need n_classes >= 2, got {n_classes}; set "
                             "model.n_classes to the dataset's number of classes")
        self.n_classes = n_classes
        self.dim = n_classes

    def prepare(self, c: Tensor | None, batch: int) -> Tensor:
        if c is None:
            raise ValueError("class-conditional model needs c: (B,) integer labels or (B, K) one-hot")
        if c.dim() == 1:
            if c.is_floating_point():
                raise ValueError(f"class labels: need integer labels (B,), got {c.dtype}; pass "
                                 "c.long(), or (B, K) one-hot floats")
            if c.shape[0] != batch:
                raise ValueError(f"class labels: need {batch} labels, got {c.shape[0]}")
            if len(c) and (int(c.min()) < 0 or int(c.max()) >= self.n_classes):
                raise ValueError(f"class labels: must be in 0..{self.n_classes - 1} "
                                 f"(model.n_classes {self.n_classes}), got {int(c.min())}.."
                                 f"{int(c.max())}")
            return F.one_hot(c.long(), self.n_classes).float()
        if c.shape != (batch, self.n_classes):
            raise ValueError(f"class context: need ({batch},) labels or ({batch}, {self.n_classes}) "
                             f"one-hot, got shape {tuple(c.shape)}")
        return c.float()

    def forward(self, prep: Tensor, s_prev: Tensor) -> Tensor:
        return prep.to(s_prev.dtype)


class ViewContext(nn.Module):
    """One or more 2D views (B, V, H, W): a shared conv encoder once per batch, then at each step
    a 2D spatial transformer (scale and shift per view, from s_{t-1}) takes a glimpse of each
    view's feature map."""

    def __init__(self, n_views: int, view_size: int, hidden: int, dim: int = 64,
                 channels: int = 32, glimpse: int = 4):
        super().__init__()
        if n_views < 1 or view_size < 8:
            raise ValueError(f"ViewContext: need n_views >= 1 and view_size >= 8, got "
                             f"{n_views}, {view_size}")
        self.n_views, self.view_size, self.glimpse, self.dim = n_views, view_size, glimpse, dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, channels // 2, 4, 2, 1), nn.ELU(),
            nn.Conv2d(channels // 2, channels, 4, 2, 1), nn.ELU())
        self.where = nn.Linear(hidden, 4 * n_views)
        nn.init.zeros_(self.where.weight)
        with torch.no_grad():  # start by looking at the whole view
            self.where.bias.view(n_views, 4)[:, :2] = math.log(math.e - 1)
            self.where.bias.view(n_views, 4)[:, 2:] = 0
        self.out = nn.Linear(n_views * channels * glimpse * glimpse, dim)

    def prepare(self, c: Tensor | None, batch: int) -> Tensor:
        want = (batch, self.n_views, self.view_size, self.view_size)
        if c is None or tuple(c.shape) != want:
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"view context: need views of shape {want} (B, views, H, W), got {got}")
        feats = self.encoder(c.reshape(batch * self.n_views, 1, *c.shape[2:]).float())
        return feats  # (B*V, channels, H/4, W/4)

    def forward(self, prep: Tensor, s_prev: Tensor) -> Tensor:
        b = s_prev.shape[0]
        raw = self.where(s_prev).view(b * self.n_views, 4)
        scale = F.softplus(raw[:, :2]) + 0.05
        theta = torch.cat([torch.diag_embed(scale), raw[:, 2:, None]], -1)
        size = [b * self.n_views, prep.shape[1], self.glimpse, self.glimpse]
        grid = F.affine_grid(theta, size, align_corners=False)
        g = F.grid_sample(prep, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return F.elu(self.out(g.reshape(b, -1)))


def make_context(kind: str, n_classes: int = 0, n_views: int = 3, view_size: int = 32,
                 hidden: int = 300, dim: int = 64) -> nn.Module:
    """The context encoder named by ``model.context``: none, class or views."""
    if kind == "none":
        return NoContext()
    if kind == "class":
        return ClassContext(n_classes)
    if kind == "views":
        return ViewContext(n_views, view_size, hidden, dim)
    raise ValueError(f"unknown context {kind!r}; choose none, class or views")


@torch.no_grad()
def render_views(volumes: Tensor, n_views: int, elevation_deg: float = 30.0) -> Tensor:
    """Depth-shaded orthographic views (B, V, N, N) in [0, 1] of binary volumes (B, [1,] N, N, N),
    seen from azimuths spread over 180 degrees at one elevation: a pixel is 1 - 0.7 d / N for
    the first occupied voxel at depth d along the view, 0 where the ray misses."""
    v = volumes.float()
    if v.dim() == 4:
        v = v[:, None]
    if v.dim() != 5 or v.shape[1] != 1:
        raise ValueError(f"render_views: need (B, N, N, N) or (B, 1, N, N, N), got {tuple(v.shape)}")
    b, n = v.shape[0], v.shape[-1]
    el = math.radians(elevation_deg)
    out = []
    for k in range(n_views):
        az = math.pi * (k + 0.5) / n_views
        ca, sa, ce, se = math.cos(az), math.sin(az), math.cos(el), math.sin(el)
        rot_y = torch.tensor([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])
        rot_x = torch.tensor([[1, 0, 0], [0, ce, -se], [0, se, ce]])
        r = (rot_y @ rot_x).to(v)  # view coordinates -> volume coordinates (x, y, z)
        # the rotated cube's corners reach sqrt(3); zoom out so that the shape stays in view
        theta = torch.cat([r * math.sqrt(3) * 0.6, torch.zeros(3, 1).to(v)], -1)
        grid = F.affine_grid(theta.expand(b, 3, 4), [b, 1, n, n, n], align_corners=False)
        occ = F.grid_sample(v, grid, align_corners=False)[:, 0] > 0.5  # (B, D, H, W)
        first = torch.argmax(occ.to(torch.uint8), dim=1).float()  # nearest d along +z view
        img = torch.where(occ.any(1), 1 - 0.7 * first / n, torch.zeros_like(first))
        out.append(img.flip(1))  # row 0 is the top (y up)
    return torch.stack(out, 1)
