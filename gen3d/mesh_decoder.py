"""The mesh model's decoder: unconstrained mesh parameters m -> the renderer's action (162 ray
lengths, pose, per-vertex colours), differentiable, with its exact inverse (``params``) and the
one place the shape's harmonics are cut (``cut``). The parameterisations are described in
``gen3d.mesh_model`` and ``MeshModelConfig``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from gen3d import geometry as geo
from gen3d.harmonics import Harmonics
from gen3d.pose_hypotheses import RotationHypotheses
from gen3d.ray_normals import RayNormals

if TYPE_CHECKING:
    from gen3d.mesh_model import MeshModelConfig


class MeshDecoder(nn.Module):
    """Unconstrained mesh parameters -> renderer actions (torch, differentiable)."""

    def __init__(self, cfg: MeshModelConfig):
        super().__init__()
        self.cfg = cfg
        rays = geo.ico_rays()
        if cfg.shape == "sh":
            basis = geo.mirror_sph_harm if cfg.shape_symmetry == "mirror" else geo.real_sph_harm
            self.register_buffer("Ys", torch.from_numpy(basis(rays, cfg.shape_degree)).float())
            n_shape = self.Ys.shape[1]
        else:
            n_shape = geo.N_RAYS
        if cfg.colour in ("sh", "palette"):
            self.register_buffer("Yc", torch.from_numpy(geo.real_sph_harm(rays, cfg.colour_degree)))
            if cfg.colour_at == "normals":
                self.register_buffer("rays", torch.tensor(rays, dtype=torch.float32), persistent=False)
                self.normals = RayNormals()
                self.harmonics = Harmonics(cfg.colour_degree)
            per = 3 if cfg.colour == "sh" else cfg.palette_size
            n_col = per * self.Yc.shape[1] + (3 * cfg.palette_size if cfg.colour == "palette" else 0)
        else:
            n_col = 3 * geo.N_RAYS if cfg.colour == "raw" else 3
        # the highest shape harmonic decoded (``set_shape_degree``): a training schedule's,
        # set every step, so not saved
        self.degree = cfg.shape_degree
        self.hypotheses = RotationHypotheses(cfg.rotation_hypotheses) if cfg.rotation_hypotheses else None
        sizes = {"shape": n_shape, "translation": 3, "rotation": 3 if cfg.rotation else 0,
                 "hypotheses": cfg.rotation_hypotheses, "colour": n_col}
        self.slices, o = {}, 0
        for k, n in sizes.items():
            self.slices[k] = slice(o, o + n)
            o += n
        self.dim = o

    def forward(self, m: Tensor) -> Tensor:
        lead = m.shape[:-1]
        m = self.cut(m.reshape(-1, self.dim))
        lengths = self.lengths(m)
        trans = geo.MAX_TRANSLATION * torch.tanh(m[:, self.slices["translation"]])
        rot = (ball_rotation(m[:, self.slices["rotation"]]) if self.cfg.rotation
               else m.new_zeros(len(m), 3))
        if self.hypotheses is not None:
            rot = self.hypotheses(m[:, self.slices["hypotheses"]], rot)
        colours = self._colours(m[:, self.slices["colour"]], self.colour_basis(lengths)).reshape(len(m), -1)
        return torch.cat([lengths, rot, trans, colours], 1).reshape(*lead, geo.ACTION_DIM)

    def lengths(self, m: Tensor) -> Tensor:
        """Ray lengths (N, 162) of parameters m (N, D) (cut to the decoder's degree)."""
        s = self.cut(m)[:, self.slices["shape"]]
        log_len = s @ self.Ys.T if self.cfg.shape == "sh" else s
        return (self.cfg.base_radius * torch.exp(log_len.clamp(-6, 1.2))).clamp(max=geo.MAX_LENGTH)

    def colour_basis(self, lengths: Tensor) -> Tensor | None:
        """The colour harmonics at each vertex: (162, k) at the rays, or (N, 162, k) at the
        normals of the meshes of these ray ``lengths`` (N, 162) (``colour_at``)."""
        if self.cfg.colour not in ("sh", "palette"):
            return None
        if self.cfg.colour_at == "rays":
            return self.Yc
        return self.harmonics(self.normals(lengths[..., None] * self.rays))

    def set_shape_degree(self, degree: int) -> None:
        """Decode the shape's harmonics of degree at most ``degree`` only (the rest read as 0);
        ``cfg.shape_degree``: all of them."""
        self.degree = self._checked(degree)

    def cut(self, m: Tensor, degree: int | None = None) -> Tensor:
        """Parameters m (..., D) with the shape's harmonics above ``degree`` (the decoder's own
        by default) set to 0, as the decoder reads them."""
        degree = self.degree if degree is None else self._checked(degree)
        if degree == self.cfg.shape_degree:
            return m
        sl = self.slices["shape"]
        stop = sl.start + (degree + 1) ** 2  # real harmonics come degree by degree
        return torch.cat([m[..., :stop], torch.zeros_like(m[..., stop:sl.stop]), m[..., sl.stop:]], -1)

    def _checked(self, degree: int) -> int:
        cfg = self.cfg
        if cfg.shape != "sh" or cfg.shape_symmetry == "mirror" or not 0 <= degree <= cfg.shape_degree:
            raise ValueError(f"shape degree: needs shape: sh with all harmonics (not "
                             f"shape_symmetry: mirror) and a degree in 0..{cfg.shape_degree}, got "
                             f"{degree} (shape {cfg.shape!r}, shape_symmetry {cfg.shape_symmetry!r})")
        return degree

    def params(self, actions: Tensor, seen: Tensor | None = None) -> Tensor:
        """Parameters m (N, D) whose decoding is closest to ``actions`` (N, A): log lengths and
        colour logits projected onto the harmonics (colours over the ``seen`` vertices (N, 162)
        only, where given), the translation inverted exactly. Exact for actions this decoder
        made; for harmonic shapes and colours without a rotation only."""
        cfg = self.cfg
        if cfg.shape != "sh" or cfg.colour != "sh" or cfg.rotation or cfg.rotation_hypotheses:
            raise ValueError("params: inverts harmonic shapes and colours without a rotation "
                             "(model.shape: sh, model.colour: sh, model.rotation: false)")
        sl = geo.ACTION_SLICES
        a = actions.double()
        log_len = torch.log(a[:, sl["lengths"]].clamp(min=1e-6) / cfg.base_radius)
        shape = torch.linalg.lstsq(self.Ys.double(), log_len.T).solution.T
        trans = torch.atanh((a[:, sl["translation"]] / geo.MAX_TRANSLATION).clamp(-1 + 1e-6, 1 - 1e-6))
        col = a[:, sl["colours"]].reshape(len(a), geo.N_RAYS, 3).clamp(1e-4, 1 - 1e-4)
        w = torch.ones(col.shape[:2], dtype=a.dtype) if seen is None else seen.to(a.dtype)
        basis = self.colour_basis(a[:, sl["lengths"]].float()).double()
        yw = basis.expand(len(a), -1, -1) * w[..., None]  # (N, 162, k): each mesh's weighted rows
        logit = torch.log(col / (1 - col)) * w[..., None]
        colour = torch.linalg.lstsq(yw, logit).solution.transpose(1, 2).reshape(len(a), -1)
        return torch.cat([shape, trans, colour], 1).to(actions.dtype)

    def colours(self, m: Tensor, shape_from: Tensor | None = None) -> Tensor:
        """Per-vertex colours (N, 162, 3) of parameters m (N, D); with ``colour_at: normals``
        read at the normals of the shape of ``shape_from`` (N, D) (m's own by default)."""
        normals_of = m if shape_from is None else shape_from
        basis = self.colour_basis(self.lengths(normals_of)) if self.cfg.colour_at == "normals" else None
        return self._colours(m[:, self.slices["colour"]], basis)

    def _colours(self, c: Tensor, basis: Tensor | None = None) -> Tensor:
        """Colour parameters (N, n) -> per-vertex colours (N, 162, 3) in (0, 1); ``basis``: the
        colour harmonics at the vertices, (162, k) or (N, 162, k) (the rays' by default)."""
        if self.cfg.colour == "raw":
            return torch.sigmoid(c.reshape(-1, geo.N_RAYS, 3))
        if self.cfg.colour == "uniform":
            return torch.sigmoid(c[:, None, :]).expand(-1, geo.N_RAYS, 3)
        y_t = (self.Yc if basis is None else basis).transpose(-1, -2)
        if self.cfg.colour == "sh":
            return torch.sigmoid((c.reshape(-1, 3, self.Yc.shape[1]) @ y_t).transpose(1, 2))
        p = self.cfg.palette_size
        palette = torch.sigmoid(c[:, :3 * p].reshape(-1, p, 3))
        logits = c[:, 3 * p:].reshape(-1, p, self.Yc.shape[1]) @ y_t  # (N, p, 162)
        weights = torch.softmax(self.cfg.palette_sharpness * logits, 1)
        return weights.transpose(1, 2) @ palette


def ball_rotation(v: Tensor) -> Tensor:
    """Unconstrained 3-vectors -> axis-angle vectors in the ball of radius pi (every rotation
    once but for the half turns), smoothly: the angle is pi * tanh(|v| / pi), about v."""
    norm = v.norm(dim=-1, keepdim=True)
    scale = torch.where(norm > 1e-6, math.pi * torch.tanh(norm / math.pi) / norm.clamp(min=1e-6),
                        torch.ones_like(norm))
    return v * scale
