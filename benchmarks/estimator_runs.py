"""The runs behind ``benchmarks/estimators.py``: one training run per estimator and seed, the
held-out IoU along each run, the ELBO of the initial model, the diagnoses at each seed's
checkpoint, and the soft rasteriser against GL."""

from __future__ import annotations

import copy
import hashlib
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch


def digest(*arrays: np.ndarray) -> str:
    """A short content hash: equal for equal arrays (how pairing is checked)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@contextmanager
def saved_weights() -> Iterator[list[tuple[int, dict]]]:
    """Every checkpoint a run saves, as (step, weights it scores): a run keeps only its latest
    checkpoint on disk, and the held-out IoU along the run needs the earlier ones."""
    from learners.runlog import RunLog

    kept: list[tuple[int, dict]] = []
    save = RunLog.save

    def keep(self, state):
        kept.append((int(state["step"]), copy.deepcopy((state.get("average") or state)["model"])))
        return save(self, state)

    RunLog.save = keep
    try:
        yield kept
    finally:
        RunLog.save = save


def heldout_iou(cfg, weights: list[tuple[int, dict]], points: int) -> list[tuple[int, float]]:
    """(step, held-out silhouette IoU) at up to ``points`` of the saved weights, evenly spread
    and always the last."""
    from envs import spaces
    from envs.renderer import MeshRenderer
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel
    from learners.mesh_eval import infer_actions, iou

    weights = list(dict(weights).items())  # the last save may repeat a step: keep one
    _, test = mesh_images.load(cfg.data)
    n = cfg.eval.n_test or len(test)
    test = test.subset(slice(0, n))
    pick = sorted({int(round(i)) for i in np.linspace(0, len(weights) - 1, min(points, len(weights)))})
    model = MeshModel(cfg.model, cfg.data.size)
    r = MeshRenderer(cfg.data.size, cfg.data.size, 256)
    out = []
    try:
        for i in pick:
            step, w = weights[i]
            model.load_state_dict(w)
            mask = r.render_rays(**spaces.unpack(infer_actions(model, test.images)), mask=True).mask
            out.append((step, float(iou(mask, test.masks).mean())))
    finally:
        r.release()
    return out


def gl_elbo(cfg, model, images: np.ndarray, k: int, seed: int) -> float:
    """ELBO (nats per image) of held-out images through the GL renderer, K samples each."""
    from envs import spaces
    from envs.renderer import MeshRenderer
    from gen3d.mesh_model import images_to_tensor

    r = MeshRenderer(cfg.data.size, cfg.data.size, 256)
    g = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            s = model.sample(images_to_tensor(images), k, generator=g)
        rgb = r.render_rays(**spaces.unpack(s.actions.reshape(-1, s.actions.shape[-1]).numpy())).rgb
    finally:
        r.release()
    ll = spaces.gaussian_loglik(np.repeat(images, k, 0), rgb, cfg.train.sigma)
    return float(ll.mean() - s.kl.mean())


def train_one(cfg0, name: str, options: dict, seed: int, points: int) -> dict:
    """One run of ``name`` with ``options`` at ``seed``: its ELBO per step, held-out scores and
    IoU along the run, and digests of its data and batches (equal across a seed's runs)."""
    from gen3d import estimators
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel
    from learners.mesh_train import run

    cfg = copy.deepcopy(cfg0)
    cfg.seed, cfg.name = seed, f"s{seed}_{name}"
    cfg.estimator.name, cfg.estimator.kwargs = name, dict(options)
    t0 = time.time()
    with saved_weights() as weights:
        report = run(cfg)
    wall = time.time() - t0
    train, test = mesh_images.load(cfg.data)
    model = MeshModel(cfg.model, cfg.data.size)
    model.load_state_dict(weights[-1][1])
    rng = np.random.default_rng(seed)
    batches = np.stack([rng.integers(len(train), size=cfg.train.batch)
                        for _ in range(len(report["elbo_history"]))])
    pathwise = estimators.build(name, **options).pathwise
    return {"report": report, "elbo": report["elbo_history"], "wall_s": wall,
            "render_kind": "soft" if pathwise else "gl", "checkpoint": report["checkpoint"],
            "elbo_gl_test": gl_elbo(cfg, model, test.images, cfg.train.samples, seed),
            "iou_points": heldout_iou(cfg, weights, points),
            "digests": {"data": digest(train.images, test.images), "batches": digest(batches)}}


def train_all(cfg0, options: dict[str, dict], seeds: list[int], points: int,
              log: Callable[[str], None]) -> dict:
    """{(seed, estimator): run or {"error": ...}}: every estimator at every seed; one that
    fails (an option it does not take, too few samples) does not stop the others."""
    from workers import cluster

    out = {}
    try:
        for seed in seeds:
            for name, opts in options.items():
                try:
                    r = train_one(cfg0, name, opts, seed, points)
                except Exception as e:  # noqa: BLE001  (any failure is this row's, not the table's)
                    out[(seed, name)] = {"error": f"{type(e).__name__}: {e}"}
                    log(f"seed {seed} {name}: FAILED: {type(e).__name__}: {e}\n"
                        + "".join(traceback.format_tb(e.__traceback__, limit=-3)))
                    continue
                out[(seed, name)] = r
                log(f"seed {seed} {name}: {len(r['elbo'])} steps in {r['wall_s']:.0f} s, "
                    f"held-out GL ELBO {r['elbo_gl_test']:.0f}, IoU "
                    f"{r['report']['scores']['iou']:.3f}")
    finally:
        cluster.stop()
    return out


def initial_loglik(cfg) -> np.ndarray:
    """log p(x | initial model's mesh) of every training image: the model starts at one
    sphere (its last layer is zero), the same for every input and seed."""
    from envs import spaces
    from envs.renderer import MeshRenderer
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel

    train, _ = mesh_images.load(cfg.data)
    dec = MeshModel(cfg.model, cfg.data.size).decoder
    with torch.no_grad():
        action = dec(torch.zeros(1, dec.dim)).numpy()
    r = MeshRenderer(cfg.data.size, cfg.data.size, 1)
    try:
        rgb = r.render_rays(**spaces.unpack(action)).rgb
    finally:
        r.release()
    return spaces.gaussian_loglik(train.images, np.repeat(rgb, len(train), 0), cfg.train.sigma)


def batch_baselines(cfg, seeds: list[int]) -> dict[int, np.ndarray]:
    """{seed: mean initial log-likelihood of each step's batch}, replaying the learner's draws."""
    ll0 = initial_loglik(cfg)
    b, steps = cfg.train.batch, cfg.train.steps
    out = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        out[seed] = np.array([ll0[rng.integers(len(ll0), size=b)].mean() for _ in range(steps)])
    return out


def diagnose_seeds(cfg0, runs: dict, main: str, names: list[str], extra: dict[str, dict],
                   n: int) -> dict[int, dict]:
    """``learners.diagnose`` of every estimator (with its options) at each seed's final
    checkpoint of ``main`` (else of the seed's first run that finished)."""
    from envs.renderer import MeshRenderer
    from gen3d.data import mesh_images
    from gen3d.mesh_model import MeshModel
    from learners.diagnose import Settings, diagnose

    train, _ = mesh_images.load(cfg0.data)
    out = {}
    for seed in sorted({s for s, _ in runs}):
        done = [nm for nm in [main, *names] if "checkpoint" in runs.get((seed, nm), {})]
        if not done:
            continue
        ckpt = runs[(seed, done[0])]["checkpoint"]
        model = MeshModel(cfg0.model, cfg0.data.size)
        st = torch.load(ckpt, weights_only=False)
        model.load_state_dict((st.get("average") or st)["model"])
        idx = np.random.default_rng(seed).choice(len(train), cfg0.train.batch, replace=False)
        r = MeshRenderer(cfg0.data.size, cfg0.data.size, 256)
        try:
            out[seed] = diagnose(cfg0, model, train.images[idx], r,
                                 Settings(names, estimates=n, ref_estimates=n, seed=seed,
                                          options=extra), progress=False)
        finally:
            r.release()
        out[seed]["checkpoint"] = {"estimator": done[0], "path": str(ckpt)}
    return out


def curves_json(runs: dict, cfg0, keep: int = 100) -> dict:
    """{estimator: {seed: {"renders", "elbo_gain", "iou_renders", "iou"}}}, about ``keep``
    points of each ELBO curve."""
    bk = cfg0.train.batch * cfg0.train.samples
    out: dict = {}
    for (seed, n), r in runs.items():
        if "gain" not in r:
            continue
        g = r["gain"]
        i = np.unique(np.r_[np.arange(0, len(g), max(1, len(g) // keep)), len(g) - 1])
        out.setdefault(n, {})[str(seed)] = {
            "renders": ((i + 1) * bk).tolist(), "elbo_gain": g[i].tolist(),
            "iou_renders": [s * bk for s, _ in r["iou_points"]],
            "iou": [v for _, v in r["iou_points"]]}
    return out


def softras_rows(size: int = 64, n: int = 64, seed: int = 0) -> list[dict]:
    """The oracle against GL on n random meshes (half smooth, half bumpy): silhouette IoU
    (soft alpha > 0.5), mean |colour error| where both cover, and ms per mesh forward +
    backward, per mode and softness."""
    from envs.renderer import Lights, MeshRenderer
    from gen3d import geometry as geo
    from gen3d.softras import SoftRasteriser

    parts = geo.random_ray_meshes(np.random.default_rng(seed), n)
    r = MeshRenderer(size, size, n)
    try:
        gl = r.render_rays(*parts, mask=True, as_float=True)
    finally:
        r.release()
    rows = []
    for mode in ("edges", "faces"):
        for sigma in (0.02, 0.1, 0.5, 1.0):
            t = [torch.from_numpy(p).requires_grad_(True) for p in parts]
            sr = SoftRasteriser(size, size, Lights().arrays(), sigma=sigma, mode=mode)
            t0 = time.perf_counter()
            out = sr.render_rays(*t)
            (out.rgb.sum() + out.alpha.sum()).backward()
            ms = (time.perf_counter() - t0) * 1e3 / n
            m = out.alpha.detach().numpy() > 0.5
            iou = (m & gl.mask).sum((1, 2)) / np.maximum((m | gl.mask).sum((1, 2)), 1)
            err = np.abs(out.rgb.detach().numpy() - gl.rgb)
            rows.append({"mode": mode, "sigma_px": sigma, "iou_mean": float(iou.mean()),
                         "iou_min": float(iou.min()),
                         "colour_mae_both": float(err[m & gl.mask].mean()),
                         "colour_mae_all": float(err.mean()), "ms_per_mesh_fwd_bwd": ms})
    return rows

