"""Scores of inferred meshes against the truth the learner never saw: silhouette IoU and PSNR
between each held-out image and the render of its inferred mesh, and the Chamfer distance
between the inferred and the true mesh in the camera frame. Also the floor that the best
single fixed sphere reaches, and the run's report files (JSON, PNG grid, .obj meshes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from envs import spaces
from envs.renderer import MeshRenderer, Render
from gen3d import geometry as geo
from gen3d import mesh_pose, symmetry
from gen3d.data.mesh_images import MeshImages
from gen3d.image_colours import ImageColours
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


def attach_renderer(model: MeshModel, renderer: MeshRenderer, device="cpu") -> None:
    """Give a model with ``feedback`` passes the renderer they look through (the learner's
    own, which made the data); nothing for other models."""
    if not model.cfg.feedback:
        return

    def render(actions: torch.Tensor) -> torch.Tensor:
        out = renderer.render_rays(**spaces.unpack(actions.cpu().numpy().astype(np.float32)))
        return images_to_tensor(out.rgb, device)

    model.attach_renderer(render)


def infer_params(model: MeshModel, images: np.ndarray, device="cpu", batch: int = 256) -> torch.Tensor:
    """The inferred mesh parameters m (N, D) of each image (uint8 (N,H,W,3)): ``MeshModel.answer``."""
    model.eval()
    with torch.no_grad():
        out = [model.answer(images_to_tensor(images[i:i + batch], device))
               for i in range(0, len(images), batch)]
    model.train()
    return torch.cat(out)


def infer_actions(model: MeshModel, images: np.ndarray, device="cpu", batch: int = 256) -> np.ndarray:
    """The most likely mesh of each image as renderer actions (N, A) (``MeshModel.infer``)."""
    model.eval()
    out = [model.infer(images_to_tensor(images[i:i + batch], device)).cpu()
           for i in range(0, len(images), batch)]
    model.train()
    return torch.cat(out).numpy().astype(np.float32)


def sphere_floor(renderer: MeshRenderer, train: MeshImages, test: MeshImages) -> tuple[float, float]:
    """The best single centred sphere (radius fitted on the training masks): (radius, held-out IoU)."""
    radii = np.arange(0.2, 1.6, 0.01, dtype=np.float32)
    masks = renderer.render_rays(np.repeat(radii[:, None], geo.N_RAYS, 1), mask=True).mask
    fit = [iou(np.broadcast_to(m, train.masks.shape), train.masks).mean() for m in masks]
    best = int(np.argmax(fit))
    return float(radii[best]), float(iou(np.broadcast_to(masks[best], test.masks.shape), test.masks).mean())


def chamfers(actions: np.ndarray, data: MeshImages, camera: geo.Camera, n_points: int,
             rng: np.random.Generator) -> np.ndarray:
    """Per-image Chamfer distance between each inferred and true mesh, in the camera frame."""
    view = camera.view()

    def to_cam(p):
        return p @ view[:3, :3].T + view[:3, 3]

    out = []
    for i in range(len(actions)):
        v, f, _ = action_mesh(actions[i])
        t = data.mesh(i)
        out.append(chamfer(to_cam(geo.sample_surface(v, f, n_points, rng)),
                           to_cam(geo.sample_surface(t.verts, t.faces, n_points, rng))))
    return np.array(out)


def truth_turned(renderer: MeshRenderer, data: MeshImages, n: int | None = None,
                 degrees: float = 90.0, mask: bool = False) -> Render:
    """Renders of the first ``n`` (all) true objects turned by ``degrees`` about the vertical
    axis through their centres."""
    r = geo.vertical_turn(degrees)
    meshes, colours = [], []
    for i in range(len(data) if n is None else n):
        m, t = data.mesh(i), data.translation[i]
        meshes.append(m.transformed(translation=-t).transformed(r, t))
        colours.append(data.colours[i][:m.n_sides])
    return renderer.render_meshes(meshes, colours, mask=mask)


def turned_iou(renderer: MeshRenderer, actions: np.ndarray, data: MeshImages,
               degrees: float = 90.0) -> np.ndarray:
    """Per-image silhouette IoU of the inferred meshes and the true objects, both turned by
    ``degrees`` about the vertical axis through their centres: the side that one view does
    not show."""
    turned = geo.turn_actions(actions, geo.vertical_turn(degrees))
    seen = renderer.render_rays(**spaces.unpack(turned), mask=True).mask
    return iou(seen, truth_turned(renderer, data, degrees=degrees, mask=True).mask)


def rotation_errors(actions: np.ndarray, data: MeshImages) -> tuple[np.ndarray, np.ndarray]:
    """Per-image geodesic angle (degrees) between the inferred and the true rotation, modulo
    the true shape's symmetry (``gen3d.symmetry``), as inferred and after the one change of
    frame per kind that fits best; NaN where it is not defined."""
    r_pred = geo.axis_angle_to_matrix(actions[:, geo.ACTION_SLICES["rotation"]])
    raw, aligned = np.full(len(actions), np.nan), np.full(len(actions), np.nan)
    for j, k in enumerate(data.kinds):
        sel = data.kind == j
        if sel.any():
            raw[sel] = symmetry.rotation_error_deg(data.rotation[sel], r_pred[sel], k)
            aligned[sel] = symmetry.aligned_rotation_error_deg(data.rotation[sel], r_pred[sel], k)
    return raw, aligned


def mesh_pose_errors(actions: np.ndarray, data: MeshImages, kinds: list[str],
                     n: int) -> dict[str, np.ndarray]:
    """Per image, read off the inferred mesh's shape (``gen3d.mesh_pose``, ``n`` rotations):
    ``rot_err_mesh_deg``, the rotation error in degrees (modulo the true kind's symmetry) of
    the turn of the closest template of ``kinds``; ``kind_read``, 1.0 where that template's
    kind is the true one; ``rot_err_kind_deg``, the error of the turn of the true kind's own
    template, about the model's origin for the kind (``model_origin``), that is closest (NaN
    for a round kind)."""
    lengths = camera_lengths(actions)
    kind, rot = mesh_pose.read_poses(lengths, kinds, n)
    err, given = np.full(len(actions), np.nan), np.full(len(actions), np.nan)
    for j, k in enumerate(data.kinds):
        sel = data.kind == j
        if sel.any():
            err[sel] = symmetry.rotation_error_deg(data.rotation[sel], rot[sel], k)
            turns = mesh_pose.read_turns(lengths[sel], k, n, model_origin(actions, data, sel))
            if turns is not None:
                given[sel] = symmetry.rotation_error_deg(data.rotation[sel], turns, k)
    right = np.array(kinds)[kind] == np.array(data.kinds)[data.kind]
    return {"rot_err_mesh_deg": err, "kind_read": right.astype(float), "rot_err_kind_deg": given}


def model_origin(actions: np.ndarray, data: MeshImages, sel: np.ndarray) -> tuple[float, float, float]:
    """Where the model puts the centre of the objects ``sel`` (all of one kind), in their kind's
    template frame: the median of each true object's frame coordinates of the inferred centre
    (rounded to 0.01). It is the template's origin that ``rot_err_kind_deg`` reads about."""
    t = spaces.unpack(actions)["translation"][sel].astype(np.float64)
    local = np.einsum("nji,nj->ni", data.rotation[sel], t - data.translation[sel])
    return tuple(float(x) + 0.0 for x in np.round(np.median(local / data.scale[sel, None], 0), 2))


def true_rays(data: MeshImages, origin=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Ray lengths (N, 162) of each true mesh about a centre, and the centres (N, 3): the point
    ``origin`` in its kind's template frame (the template's own origin by default; a model's
    origin for the kind, ``model_origin``, to hold it as that model would)."""
    centre = data.translation + data.scale[:, None] * np.einsum(
        "nij,j->ni", data.rotation, np.asarray(origin, np.float64))
    lengths = np.stack([geo.ray_lengths_of_mesh(m.verts - c, m.faces)
                        for m, c in ((data.mesh(i), centre[i]) for i in range(len(data)))])
    return lengths, centre.astype(np.float32)


def camera_lengths(actions: np.ndarray, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(N, 162) each mesh's lengths along the camera's rays about its centre (its own turned
    back where it has one), the mesh first scaled by ``scale`` along the camera's x, y, z (the
    ray mesh closest to the scaled one)."""
    a = spaces.unpack(actions)
    lengths = a["lengths"].copy()
    scale = np.asarray(scale, np.float64)
    recast = np.ones(len(lengths), bool) if (scale != 1).any() else np.abs(a["rotation"]).max(1) > 0
    for i in np.flatnonzero(recast):
        v = geo.transform_points(geo.ray_mesh(a["lengths"][i]), a["rotation"][i]) * scale
        lengths[i] = geo.ray_lengths_of_mesh(v, geo.ico_faces())
    return lengths


def seen_colours(actions: np.ndarray, camera: geo.Camera | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each mesh's vertex colours (N, 162, 3) and which vertices face ``camera`` (N, 162): the
    ones whose colours ``model.read_colours`` reads from the image."""
    a = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in spaces.unpack(actions).items()}
    with torch.no_grad():
        seen = ImageColours(1, camera).seen(a["lengths"], a["rotation"], a["translation"])
    return a["colours"].numpy(), seen.numpy()


def _summary(per_image: dict[str, np.ndarray], sel: np.ndarray) -> dict:
    """Means of the per-image scores at ``sel`` and medians of the rotation errors (None
    where no image there has one)."""
    out = {}
    for k, v in per_image.items():
        if k.startswith("rot_err"):
            finite = v[sel][np.isfinite(v[sel])]
            out[k] = float(np.median(finite)) if len(finite) else None
        else:
            out[k] = float(v[sel].mean())
    return out


def score(renderer: MeshRenderer, actions: np.ndarray, data: MeshImages, camera: geo.Camera,
          n_points: int = 2000, seed: int = 0, pose_kinds: list[str] | None = None,
          pose_rotations: int = 3000) -> tuple[dict, Render]:
    """Scores of ``actions`` against ``data``, overall and per kind, and the renders (colour
    and mask) they were taken on. ``rot_err_deg`` (and ``rot_err_aligned_deg``, in the
    model's best-fitting fixed frame per kind) is a median over the images whose kind has a
    known symmetry group; the other scores are means. With ``pose_kinds`` (the training
    kinds), also the turn and kind read off each inferred mesh's shape: ``rot_err_mesh_deg``
    (median) and ``kind_read`` (the fraction read right), and ``rot_err_kind_deg`` (median),
    the turn read given the true kind."""
    out = renderer.render_rays(**spaces.unpack(actions), mask=True)
    rot, rot_aligned = rotation_errors(actions, data)
    per_image = {"iou": iou(out.mask, data.masks), "iou_turned": turned_iou(renderer, actions, data),
                 "psnr": psnr(out.rgb, data.images),
                 "chamfer": chamfers(actions, data, camera, n_points, np.random.default_rng(seed)),
                 "rot_err_deg": rot, "rot_err_aligned_deg": rot_aligned}
    if pose_kinds:
        per_image.update(mesh_pose_errors(actions, data, pose_kinds, pose_rotations))
    kinds = {k: data.kind == j for j, k in enumerate(data.kinds) if (data.kind == j).any()}
    per_kind = {k: _summary(per_image, sel) | {"n": int(sel.sum())} for k, sel in kinds.items()}
    scores = _summary(per_image, np.ones(len(actions), bool))
    scores.update({"per_kind": per_kind, "per_kind_iou": {k: v["iou"] for k, v in per_kind.items()},
                   "n": len(actions)})
    return scores, out


def area_matched_mean(values: np.ndarray, areas: np.ndarray, target_areas: np.ndarray,
                      k: int = 10) -> float:
    """Mean of ``values`` at the areas of ``target_areas``: for each target image, the mean
    value of the ``k`` images nearest to it in area, averaged over the targets (a comparison
    at equal image area)."""
    k = max(1, min(k, len(values)))
    gap = np.abs(np.asarray(target_areas, np.float64)[:, None] - np.asarray(areas, np.float64)[None])
    nearest = np.argsort(gap, axis=1, kind="stable")[:, :k]
    return float(np.asarray(values)[nearest].mean())


def score_unseen(renderer: MeshRenderer, model: MeshModel, train: MeshImages, test: MeshImages,
                 seen: tuple[np.ndarray, np.ndarray], dev="cpu", n_points: int = 2000) -> dict:
    """Scores of ``model`` on ``test``, kinds it never trained on, with the best fixed sphere's
    IoU overall and per kind (each fitted on that kind's ``train`` masks), and the seen kinds'
    mean IoU at the unseen images' areas: ``seen`` is (per-image IoU, mask area) of the seen
    held-out images."""
    s, _ = score(renderer, infer_actions(model, test.images, dev), test, geo.Camera(), n_points)
    s["iou_sphere_floor"] = sphere_floor(renderer, train, test)[1]
    for j, k in enumerate(test.kinds):
        if k in s["per_kind"]:  # None where no image of the kind was drawn to fit it on
            fit = train.subset(train.kind == j)
            s["per_kind"][k]["iou_sphere_floor"] = (
                sphere_floor(renderer, fit, test.subset(test.kind == j))[1] if len(fit) else None)
    s["iou_seen_area_matched"] = area_matched_mean(*seen, test.masks.sum((1, 2)))
    s["iou_gap_at_equal_area"] = s["iou_seen_area_matched"] - s["iou"]
    return s


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray, colours: np.ndarray | None = None) -> None:
    lines = []
    for i, v in enumerate(verts):
        c = "" if colours is None else " {:.4f} {:.4f} {:.4f}".format(*colours[i])
        lines.append("v {:.5f} {:.5f} {:.5f}".format(*v) + c)
    lines += ["f {} {} {}".format(*(f + 1)) for f in faces]
    path.write_text("\n".join(lines) + "\n")
