"""Colours read from the input image for the vertices of an inferred mesh that the camera
sees: a point estimate of q(c | x, m).

Each vertex of a ray mesh that faces the camera is projected into the image, the image is
sampled there (bilinearly) and divided by the flat shading the renderer gives a surface of that
normal under the scene's lights: an estimate of the albedo. Vertices facing away keep the
decoder's colours: the image says nothing about them. This is how
texture is inferred from one image in Kanazawa et al., "Learning Category-Specific Mesh
Reconstruction from Image Collections" (ECCV 2018), there by a learned flow, here by the
known camera: a 10-dimensional z cannot carry six free side colours, the image carries them
exactly where the mesh meets it.

Occlusion is not tested: a ray mesh is star-shaped about its centre, and only a vertex in a
concave dent could face the camera yet be hidden.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen3d import geometry as geo
from gen3d.ray_normals import RayNormals
from gen3d.softras import axis_angle_to_matrix


OBJECT_LEVEL = 0.03
"""A pixel brighter than this in some channel is on the object: the background is black, and
the darkest side (a palette colour's largest channel 0.75, under the ambient light) is far
brighter."""


class ImageColours(nn.Module):
    """Albedo of each vertex from the image it is inferred from, for one camera, lights and
    image size."""

    def __init__(self, size: int, camera: geo.Camera | None = None, lights: geo.Lights | None = None):
        super().__init__()
        camera = camera or geo.Camera()
        d, c, amb = (lights or geo.Lights()).arrays()
        self.size = size
        for name, value in (("view_proj", camera.view_projection(1.0)), ("eye", camera.eye),
                            ("light_dir", d), ("light_rgb", c), ("ambient", amb),
                            ("rays", geo.ico_rays())):
            self.register_buffer(name, torch.tensor(np.array(value, np.float32)), persistent=False)
        self.normals = RayNormals()

    def vertices(self, lengths: Tensor, rotation: Tensor, translation: Tensor) -> Tensor:
        """World vertices (N, 162, 3) of ray meshes: ``R (l_i ray_i) + t`` (as the renderer)."""
        local = lengths[..., None] * self.rays
        return local @ axis_angle_to_matrix(rotation).transpose(-1, -2) + translation[:, None]

    def shading(self, normals: Tensor) -> Tensor:
        """The renderer's flat shading (..., 3) of a surface with these normals (facing the
        camera): ambient plus each light's colour times max(n . l, 0)."""
        return self.ambient + (normals @ self.light_dir.T).clamp(min=0) @ self.light_rgb

    def facing(self, verts: Tensor, normals: Tensor) -> Tensor:
        """(N, V) bool: the vertices that face the camera, whose colours the image holds."""
        return ((self.eye - verts) * normals).sum(-1) > 0

    def seen(self, lengths: Tensor, rotation: Tensor, translation: Tensor) -> Tensor:
        """(N, 162) bool: the vertices of ray meshes that face the camera (``facing``)."""
        verts = self.vertices(lengths, rotation, translation)
        return self.facing(verts, self.normals(verts))

    def pixels(self, verts: Tensor) -> Tensor:
        """Continuous (col, row) pixel positions (N, V, 2), the renderer's convention."""
        clip = torch.cat([verts, torch.ones_like(verts[..., :1])], -1) @ self.view_proj.T
        ndc = clip[..., :2] / clip[..., 3:4].clamp(min=1e-6)
        return torch.stack([(ndc[..., 0] + 1) / 2, (1 - ndc[..., 1]) / 2], -1) * self.size

    def forward(self, images: Tensor, lengths: Tensor, rotation: Tensor,
                translation: Tensor, on_object: bool = False) -> tuple[Tensor, Tensor]:
        """images (B, 3, H, W) in [0, 1] and ray meshes of them, one (B, ...) or K (B, K, ...)
        per image -> (albedo (..., 162, 3) in [0, 1], seen (..., 162) bool: the vertex faces the
        camera, and with ``on_object`` also lands on the object, where the image is brighter
        than the background's black)."""
        if images.shape[-1] != self.size or images.shape[-2] != self.size:
            raise ValueError(f"images: expected {self.size}x{self.size}, got "
                             f"{tuple(images.shape[-2:])}")
        lead = lengths.shape[:-1]
        verts = self.vertices(lengths.reshape(-1, lengths.shape[-1]), rotation.reshape(-1, 3),
                              translation.reshape(-1, 3))
        normals = self.normals(verts)
        seen = self.facing(verts, normals)
        grid = self.pixels(verts) / self.size * 2 - 1  # grid_sample's [-1, 1], pixel edges
        # each image's meshes sampled together: no copy of the image per mesh
        sampled = F.grid_sample(images, grid.reshape(len(images), -1, 1, 2), mode="bilinear",
                                padding_mode="zeros", align_corners=False)[..., 0].transpose(1, 2)
        sampled = sampled.reshape(verts.shape)
        albedo = (sampled / self.shading(normals).clamp(min=1e-3)).clamp(0, 1)
        if on_object:
            seen = seen & (sampled.amax(-1) > OBJECT_LEVEL)
        return albedo.reshape(*lead, -1, 3), seen.reshape(*lead, -1)


def fit_albedo(albedo: Tensor, seen: Tensor, basis: Tensor, ridge: float = 1e-3) -> Tensor:
    """Colours (N, 162, 3) in [0, 1]: the least-squares fit of ``albedo`` (N, 162, 3) over the
    ``seen`` vertices (N, 162) by the colour harmonics ``basis`` at the vertices ((162, k) or
    (N, 162, k)), with a small ``ridge`` so that a mesh seen at few vertices is still solved;
    every vertex, seen or not, takes the fit's value."""
    y = basis.expand(len(albedo), -1, -1)
    yw = y * seen[..., None].to(y.dtype)
    gram = yw.transpose(1, 2) @ y + ridge * torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
    coef = torch.linalg.solve(gram, yw.transpose(1, 2) @ albedo.to(y.dtype))
    return (y @ coef).clamp(0, 1)


def colour_fit(albedo: Tensor, seen: Tensor, decoded: Tensor, scale: float) -> Tensor:
    """Squared error (...,) of ``decoded`` colours against the ``albedo`` read, over the seen
    vertices and channels, divided by 2 scale^2 (a Gaussian's negative log-likelihood less its
    constant)."""
    gap = ((albedo - decoded) ** 2).sum(-1) * seen
    return gap.sum(-1) / (2 * scale * scale)
