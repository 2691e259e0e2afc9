"""Shared bits of the benchmark scripts: a machine description and JSON output."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
from pathlib import Path

from learners import provenance


def machine(gl: dict | None = None) -> dict:
    """The machine (``learners.provenance.machine``), with the GL renderer where one was made."""
    info = provenance.machine()
    if gl:
        info["gl"] = gl
    return info


def checkpoint(run: str) -> dict:
    """A run's ``checkpoint.pt``, read once however many of its parts a script asks for (again
    when the file has changed since)."""
    path = Path(run) / "checkpoint.pt"
    return _read_checkpoint(path.resolve(), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _read_checkpoint(path: Path, mtime_ns: int) -> dict:
    from learners import checkpoint as ckpt

    try:
        return ckpt.load(path, other="give another --run")
    except ckpt.CheckpointError as e:  # torn, foreign: one line, as learners.run says it
        raise SystemExit(f"error: {e}") from None


def iou_row(renderer, actions, data, **labels) -> dict:
    """``labels`` with the mean silhouette IoU of ``actions`` (N, A) against ``data`` (a
    ``MeshImages``, rendered by ``renderer``), overall and per kind present."""
    from envs import spaces
    from learners import mesh_eval

    v = mesh_eval.iou(renderer.render_rays(**spaces.unpack(actions), mask=True).mask, data.masks)
    return {**labels, "iou": float(v.mean()),
            **{k: float(v[data.kind == i].mean()) for i, k in enumerate(data.kinds)
               if (data.kind == i).any()}}


def image_loglik(renderer, actions, images, sigma: float):
    """(N,) log-likelihood in nats of each image (N, H, W, 3) under the render of its mesh
    ``actions`` (N, A): the reward a run trains on."""
    from envs import spaces

    return spaces.gaussian_loglik(images, renderer.render_rays(**spaces.unpack(actions)).rgb, sigma)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"need a whole number >= 1, got {value}")
    return value


def number_list(kind=float):
    """An argparse type: comma-separated numbers of ``kind``, e.g. ``15,30,45`` -> (15.0, 30.0, 45.0)."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"need comma-separated {kind.__name__} numbers such as 1,2,3, got {text!r}") from None
    return parse


def run_parser(doc: str, n: int, n_help: str,
               run_help: str = "a finished run's directory (runs/<name>)") -> argparse.ArgumentParser:
    """The arguments of a benchmark that reads a finished run: ``--run``, ``--n`` (default
    ``n``) and ``--json``; the script adds its own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help=run_help)
    ap.add_argument("--n", type=positive_int, default=n, help=n_help)
    ap.add_argument("--json", help="write the results here")
    return ap


def load_run(run: str, trained: bool = True, attach: bool = True):
    """A finished mesh run's config and the network its report scored (the weight average when
    it kept one; ``trained=False``: freshly initialised), on CPU with one torch thread. A
    network with feedback passes gets a renderer of its own unless ``attach`` is False (the
    caller then attaches the one it makes: ``learners.mesh_eval.attach_renderer``)."""
    import torch

    from gen3d.mesh_model import MeshModel
    from learners import config as config_io

    needed = ["config.json"] + (["checkpoint.pt"] if trained else [])
    missing = [f for f in needed if not (Path(run) / f).is_file()]
    if missing:
        raise SystemExit(f"{run}: not a finished run's directory (no {' or '.join(missing)}); pass "
                         "--run runs/<name>, the directory a run of learners.run wrote")
    os.environ.setdefault("LP_NUM_THREADS", "0")
    torch.set_num_threads(1)
    _, cfg = config_io.load(Path(run) / "config.json")
    if not hasattr(cfg.model, "shape"):
        raise SystemExit(f"{run}: a {type(cfg).__name__} run; this benchmark reads mesh runs "
                         "(task: mesh)")
    model = MeshModel(cfg.model, cfg.data.size)
    if trained:
        st = checkpoint(run)
        model.load_state_dict((st.get("average") or st)["model"])
    if cfg.model.feedback and attach:  # its passes look through the renderer that made the data
        from learners.mesh_eval import attach_renderer
        from learners.mesh_train import local_renderer

        attach_renderer(model, local_renderer(cfg))
    return cfg, model


@contextlib.contextmanager
def run_images(run: str, n: int):
    """A finished mesh run's config, scored network, a renderer of its images (the network's
    feedback passes look through it too) and the first ``n`` of its training and held-out
    images: (cfg, model, renderer, train, test); the renderer is released on exit."""
    from gen3d.data import mesh_images
    from learners.mesh_eval import attach_renderer
    from learners.mesh_train import local_renderer, render_fn

    cfg, model = load_run(run, attach=False)
    r = local_renderer(cfg)
    try:
        attach_renderer(model, r)
        train, test = mesh_images.load(cfg.data, render_fn(r))
        yield cfg, model, r, train.subset(slice(0, n)), test.subset(slice(0, n))
    finally:
        r.release()


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2))
        print(f"wrote {path}")


def table(rows: list[dict], cols: list[str]) -> str:
    w = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(w[c]) for c in cols), "  ".join("-" * w[c] for c in cols)]
    lines += ["  ".join(_fmt(r.get(c)).rjust(w[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def seed_spread(runs: list[dict], keys: list[str]) -> dict[str, dict[str, float]]:
    """Over runs that differ only in their seed: mean, std (n-1), min and max of every numeric
    key in ``keys``, as {stat: {key: value}} (one row of a table per statistic)."""
    import numpy as np

    num = [k for k in keys if all(isinstance(r.get(k), (int, float)) and not isinstance(
        r.get(k), bool) for r in runs) and k != "seed"]
    vals = {k: np.array([float(r[k]) for r in runs]) for k in num}
    return {"mean": {k: float(v.mean()) for k, v in vals.items()},
            "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in vals.items()},
            "min": {k: float(v.min()) for k, v in vals.items()},
            "max": {k: float(v.max()) for k, v in vals.items()}}
