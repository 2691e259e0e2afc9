"""Scores of inferred meshes against the truth the learner never saw: silhouette IoU and PSNR
between each held-out image and the render of its inferred mesh, and the Chamfer distance
between the inferred and the true mesh in the camera frame. Also the floor that the best
single fixed sphere reaches, and the run's report files (JSON, PNG grid, .obj meshes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from envs import spaces
from envs.renderer import MeshRenderer
from gen3d import geometry as geo
from gen3d.data.mesh_images import MeshImages
from gen3d.mesh_model import MeshModel, images_to_tensor


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image IoU of boolean masks (N,H,W); 1 where both are empty."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (N,H,W,3)."""
    d = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    mse = (d**2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))


def chamfer(p: np.ndarray, q: np.ndarray) -> float:
    """Symmetric Chamfer distance: mean nearest-neighbour distance (not squared), averaged
    over both directions."""
    d = torch.cdist(torch.from_numpy(p).double(), torch.from_numpy(q).double())
    return float(0.5 * (d.min(1).values.mean() + d.min(0).values.mean()))


def action_mesh(action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-frame vertices, faces and per-vertex colours of one action."""
    a = spaces.unpack(action[None])
    v = geo.transform_points(geo.ray_mesh(a["lengths"][0]), a["rotation"][0], a["translation"][0])
    return v, geo.ico_faces(), a["colours"][0]


def infer_params(model: MeshModel, images: np.ndarray, device="cpu", batch: int = 256) -> torch.Tensor:
    """Mesh parameters m (N, D) at the posterior mean of each image (uint8 (N,H,W,3))."""
    model.eval()
    with torch.no_grad():
        out = [model.mean_params(images_to_tensor(images[i:i + batch], device))
               for i in range(0, len(images), batch)]
    model.train()
    return torch.cat(out)


def infer_actions(model: MeshModel, images: np.ndarray, device="cpu", batch: int = 256) -> np.ndarray:
    """The most likely mesh of each image as renderer actions (N, A)."""
    with torch.no_grad():
        return model.decoder(infer_params(model, images, device, batch)).cpu().numpy().astype(np.float32)


def sphere_floor(renderer: MeshRenderer, train: MeshImages, test: MeshImages) -> tuple[float, float]:
    """The best single centred sphere (radius fitted on the training masks): (radius, held-out IoU)."""
    radii = np.arange(0.2, 1.6, 0.01, dtype=np.float32)
    masks = renderer.render_rays(np.repeat(radii[:, None], geo.N_RAYS, 1), mask=True).mask
    fit = [iou(np.broadcast_to(m, train.masks.shape), train.masks).mean() for m in masks]
    best = int(np.argmax(fit))
    return float(radii[best]), float(iou(np.broadcast_to(masks[best], test.masks.shape), test.masks).mean())


def score(renderer: MeshRenderer, actions: np.ndarray, data: MeshImages, camera: geo.Camera,
          n_points: int = 2000, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Scores of ``actions`` against ``data``, and the renders (N,H,W,3) they were taken on."""
    out = renderer.render_rays(**spaces.unpack(actions), mask=True)
    rng = np.random.default_rng(seed)
    view = camera.view()
    ch = []
    for i in range(len(actions)):
        v, f, _ = action_mesh(actions[i])
        t = data.mesh(i)
        def to_cam(p):
            return p @ view[:3, :3].T + view[:3, 3]
        ch.append(chamfer(to_cam(geo.sample_surface(v, f, n_points, rng)),
                          to_cam(geo.sample_surface(t.verts, t.faces, n_points, rng))))
    ious, psnrs = iou(out.mask, data.masks), psnr(out.rgb, data.images)
    return {"iou": float(ious.mean()), "psnr": float(psnrs.mean()), "chamfer": float(np.mean(ch)),
            "per_kind_iou": {k: float(ious[data.kind == j].mean())
                             for j, k in enumerate(data.kinds) if (data.kind == j).any()},
            "n": len(actions)}, out.rgb


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray, colours: np.ndarray | None = None) -> None:
    lines = []
    for i, v in enumerate(verts):
        c = "" if colours is None else " {:.4f} {:.4f} {:.4f}".format(*colours[i])
        lines.append("v {:.5f} {:.5f} {:.5f}".format(*v) + c)
    lines += ["f {} {} {}".format(*(f + 1)) for f in faces]
    path.write_text("\n".join(lines) + "\n")
