"""The mesh learner's scores and pictures: held-out IoU during the run, the final report,
unseen kinds and per-image refinement."""


from __future__ import annotations

from typing import TYPE_CHECKING

import copy
import dataclasses
import time

import numpy as np
import torch

from envs.renderer import MeshRenderer
from gen3d import geometry as geo
from gen3d.data import mesh_images
from gen3d.mesh_model import MeshModel, images_to_tensor
from envs import spaces
from learners import mesh_eval, mesh_pictures
from learners.mesh_refine import refine
from learners.mesh_step import env_spec
from learners.runlog import RunLog, save_png
from workers import cluster
from workers.pool import PoolConfig, make_pool



if TYPE_CHECKING:
    from learners.mesh_train import Job, MeshRunConfig


def heldout_step(job: Job) -> None:
    """During the run: the grid of the first 8 held-out images and the held-out IoU of the
    scored network on the first ``eval.curve_images`` of them, against the training's wall
    time (TensorBoard and the report's ``iou_vs_time``), so time to quality is visible."""
    data, dev, log = job.test, job.sk.device, job.sk.log
    n = min(max(job.cfg.eval.curve_images, 8), len(data))
    actions = mesh_eval.infer_actions(job.scored_model, data.images[:n], dev)
    log.image("input|reconstruction|turned 90|truth turned 90",
              mesh_pictures.grid(job.local, actions, data, 8), job.step)
    if job.cfg.eval.curve_images > 0:
        mask = job.local.render_rays(**spaces.unpack(actions), mask=True).mask
        value = float(mesh_eval.iou(mask, data.masks[:n]).mean())
        log.scalars(job.step, {"heldout/iou": value})
        job.curve.append({"step": job.step, "train_s": job.sk.elapsed, "iou": value})


def eval_scalars(prefix: str, scores: dict) -> dict[str, float | None]:
    """TensorBoard scalars of a score dict: overall and per kind."""
    keys = [k for k in ("iou", "iou_turned", "psnr", "chamfer", "rot_err_deg", "rot_err_aligned_deg",
                        "rot_err_mesh_deg", "rot_err_kind_deg", "kind_read") if k in scores]
    out = {f"{prefix}/{k}": scores.get(k) for k in keys}
    for kind, s in scores.get("per_kind", {}).items():
        out.update({f"{prefix}_per_kind/{k}_{kind}": s.get(k) for k in keys})
    return out


def unseen_scores(cfg: MeshRunConfig, r: MeshRenderer, model: MeshModel, dev,
                  seen: tuple[np.ndarray, np.ndarray]) -> dict:
    """``scores_unseen``: the network on ``eval.unseen_kinds``, made by the same image pipeline
    (generated once and cached like the training set)."""
    ucfg = mesh_images.unseen_config(cfg.data, cfg.eval.unseen_kinds, cfg.eval.n_unseen)
    from learners.mesh_train import render_fn  # the run's own data path

    train, test = mesh_images.load(ucfg, render_fn(r))
    return mesh_eval.score_unseen(r, model, train, test, seen, dev, cfg.eval.chamfer_points)


def write_pictures(cfg: MeshRunConfig, log: RunLog, r: MeshRenderer, data, actions: np.ndarray,
                   step: int) -> None:
    """The held-out grid (PNG and TensorBoard), the first meshes to TensorBoard's mesh view
    and as .obj files."""
    grid = mesh_pictures.grid(r, actions, data, 16)
    save_png(log.dir / "heldout_grid.png", grid)
    log.image("eval/input|reconstruction|turned 90|truth turned 90", grid, step)
    k = min(cfg.eval.n_obj, len(actions))
    if k:
        mesh_pictures.log_meshes(log, "eval/meshes", actions[:k], step)
    for i in range(k):
        v, f, c = mesh_eval.action_mesh(actions[i])
        mesh_eval.write_obj(log.dir / f"mesh_{i:02d}_{data.kinds[data.kind[i]]}.obj", v, f, c)


def final_report(cfg: MeshRunConfig, log: RunLog, model, r: MeshRenderer, train, test, dev,
                 step: int, train_s: float, pool=None, raw=None) -> dict:
    """Scores of the inference network's meshes (``scores``, and ``scores_unseen`` on kinds it
    never trained on) and, with ``eval.refine.steps``, of the same meshes refined on their
    images (``scores_refined``); pictures and .obj files show the refined meshes when there
    are any. ``model`` is the averaged network when there is one, and ``raw`` the trained
    weights, scored as ``scores_raw``; ``train_s`` is the training's wall time."""
    t_start = time.time() - train_s
    n = cfg.eval.n_test or len(test)
    sub = test.subset(slice(0, n))
    extra = {}
    if raw is not None:
        actions = mesh_eval.infer_actions(raw, sub.images, dev)
        extra["scores_raw"], _ = mesh_eval.score(r, actions, sub, geo.Camera(), cfg.eval.chamfer_points)
        log.scalars(step, {"eval/iou_raw": extra["scores_raw"]["iou"]})
    actions = mesh_eval.infer_actions(model, sub.images, dev)
    pose = {"pose_kinds": cfg.data.kinds if cfg.eval.pose_rotations else None,
            "pose_rotations": cfg.eval.pose_rotations}
    scores, render = mesh_eval.score(r, actions, sub, geo.Camera(), cfg.eval.chamfer_points, **pose)
    radius, floor = mesh_eval.sphere_floor(r, train, sub)
    scores.update({"iou_sphere_floor": floor, "sphere_radius": radius, "steps": step,
                   "train_wall_s": time.time() - t_start})
    log.scalars(step, eval_scalars("eval", scores) | {"eval/iou_sphere_floor": floor})
    out = {"name": cfg.name, "checkpoint": str(log.checkpoint_path), "scores": scores, **extra}
    if cfg.eval.n_unseen > 0:
        seen = (mesh_eval.iou(render.mask, sub.masks), sub.masks.sum((1, 2)))
        out["scores_unseen"] = unseen_scores(cfg, r, model, dev, seen)
        log.scalars(step, eval_scalars("eval_unseen", out["scores_unseen"]))
    if cfg.eval.refine.steps > 0:
        t0 = time.time()
        actions, out["refine"] = refine_actions(cfg, model, sub, dev, pool)
        out["refine"]["wall_s"] = time.time() - t0
        refined, _ = mesh_eval.score(r, actions, sub, geo.Camera(), cfg.eval.chamfer_points, **pose)
        out["scores_refined"] = refined
        log.scalars(step, {"eval/iou_refined": refined["iou"], "eval/psnr_refined": refined["psnr"],
                           "eval/chamfer_refined": refined["chamfer"]})
    write_pictures(cfg, log, r, sub, actions, step)
    scores["wall_s"] = time.time() - t_start
    return out


def refine_actions(cfg: MeshRunConfig, model: MeshModel, data, dev, pool=None,
                   workers: int = 0) -> tuple[np.ndarray, dict]:
    """Refine the inferred meshes of ``data`` through ``pool`` or, without one, a pool of its
    own (``workers`` Ray workers; 0: one in-process worker): actions (N, A) and the log."""
    own = pool is None
    if own:
        if workers:
            cluster.start(cfg.ray)
        pool = make_pool(env_spec(cfg), dataclasses.replace(cfg.pool, workers=workers)
                         if workers else PoolConfig(backend="local"))
    pool.set_targets(data.images)
    try:
        with torch.no_grad():
            m0 = mesh_eval.infer_params(model, data.images, dev).cpu()
            cpu_model = copy.deepcopy(model).cpu()
            images = images_to_tensor(data.images)

            def decode(m):  # refine sends each image's candidates together, in image order
                return cpu_model.to_actions(m, images.repeat_interleave(len(m) // len(images), 0))

            best, rlog = refine(m0, decode, lambda a, i: pool.evaluate(a, target_idx=i).rewards,
                                cfg.eval.refine, generator=torch.Generator().manual_seed(cfg.seed))
        return decode(best).numpy().astype(np.float32), rlog
    finally:
        if own:
            pool.close()
