"""Unit vertex normals of ray meshes (the model's 162 vertices on fixed rays, 320 faces), in
torch: the area-weighted sum of the normals of the faces at each vertex, outward for a mesh
that is star-shaped about its centre (the faces wind counter-clockwise seen from outside)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from gen3d import geometry as geo


class RayNormals(nn.Module):
    """Vertices (N, 162, 3) -> unit vertex normals (N, 162, 3)."""

    def __init__(self):
        super().__init__()
        faces = np.array(geo.ico_faces(), np.int64)
        touches = np.zeros((geo.N_RAYS, len(faces)), np.float32)  # vertex i is a corner of face j
        touches[faces, np.arange(len(faces))[:, None]] = 1
        self.register_buffer("faces", torch.tensor(faces), persistent=False)
        self.register_buffer("touches", torch.tensor(touches), persistent=False)

    def forward(self, verts: Tensor) -> Tensor:
        a, b, c = verts[:, self.faces].unbind(2)
        face_n = torch.cross(b - a, c - a, dim=-1)  # (N, F, 3), length twice the area
        n = self.touches.to(verts.dtype) @ face_n.transpose(0, 1).reshape(len(self.faces), -1)
        n = n.reshape(-1, len(verts), 3).transpose(0, 1)
        return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
