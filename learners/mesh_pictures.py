"""Pictures of what the main job inferred: the grid of input | reconstruction | the
reconstruction turned about the vertical axis | the truth turned the same way (a 3D check that
a fit to the input's 2D view alone cannot pass), and the inferred meshes with their colours for
TensorBoard's mesh view."""

from __future__ import annotations

import numpy as np
import torch

from envs import spaces
from envs.renderer import MeshRenderer
from gen3d import geometry as geo
from gen3d.data.mesh_images import MeshImages
from learners.mesh_eval import truth_turned
from learners.runlog import RunLog, image_grid


def turned(actions: np.ndarray, degrees: float = 90.0) -> np.ndarray:
    """The same meshes turned by ``degrees`` about the vertical axis through their centres."""
    return geo.turn_actions(actions, geo.vertical_turn(degrees))


def grid(renderer: MeshRenderer, actions: np.ndarray, data: MeshImages, n: int,
         degrees: float = 90.0) -> np.ndarray:
    """Rows: the first n inputs, their reconstructions, the reconstructions turned by
    ``degrees`` about the vertical axis, and the true objects turned the same way."""
    n = min(n, len(actions))
    a = actions[:n]
    rows = [data.images[:n], renderer.render_rays(**spaces.unpack(a)).rgb,
            renderer.render_rays(**spaces.unpack(turned(a, degrees))).rgb,
            truth_turned(renderer, data, n, degrees).rgb]
    return image_grid(np.concatenate(rows), n)


def log_meshes(log: RunLog, tag: str, actions: np.ndarray, step: int) -> None:
    """The meshes of ``actions`` (N,A), posed, with their per-vertex colours, to TensorBoard's
    mesh view."""
    a = spaces.unpack(actions)
    verts = np.stack([geo.transform_points(geo.ray_mesh(a["lengths"][i]), a["rotation"][i],
                                           a["translation"][i]) for i in range(len(actions))])
    colours = np.round(255 * np.clip(a["colours"], 0, 1)).astype(np.uint8)
    faces = np.broadcast_to(geo.ico_faces(), (len(actions), geo.N_FACES, 3))
    log.tb.add_mesh(tag, vertices=torch.from_numpy(verts), colors=torch.from_numpy(colours),
                    faces=torch.from_numpy(np.ascontiguousarray(faces)), global_step=step)
