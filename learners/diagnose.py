"""Gradient-estimator diagnostics at a fixed checkpoint.

    python -m learners.diagnose --config configs/primitives.yaml \
        --checkpoint runs/primitives/checkpoint.pt [--estimators reinforce,rloo] [--estimates 100] \
        [--opt rloo.normalize=false]

Holds the model's parameters fixed and draws many gradient estimates per estimator on one
fixed batch of training images, rewards from the GL renderer (in this process), exactly as
the learner forms its step (estimator loss, plus the pathwise KL for ELBO estimators). For
each estimator it reports the per-coordinate variance (mean, max), SNR, directional SNR,
cosine similarity to the oracle (the pathwise gradient through the soft rasteriser), bias
against a large-sample mean (RLOO with many samples) and renders per estimate. Writes
``diagnose.json``, ``diagnose.png`` and TensorBoard events to ``<run dir>/diagnose/``.
Each estimator runs with its own options: the run's estimator with the config's
``estimator.kwargs``, the others at their defaults, and ``--opt NAME.KEY=VALUE`` on top; an
estimator that cannot run with its options reports why in its row and the others go on.
Estimators with state (moving averages, neural baselines, LAX) first train that state for
``--warmup`` steps at the same fixed parameters, then are frozen (``eval()``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from envs import spaces
from envs.renderer import MeshRenderer
from gen3d import estimators
from gen3d.data import mesh_images
from gen3d.mesh_model import MeshModel, images_to_tensor
from learners import checkpoint, plots
from learners.config import IMPORT_HELP, ConfigError, import_modules, load
from learners.device import resolve_device
from learners.mesh_train import MeshRunConfig, render_fn, size_lazy_parameters
from learners.mesh_step import surrogate
from learners.pathwise import Oracle, make_oracle
from learners.provenance import machine


@dataclass
class Settings:
    estimators: list[str] = field(default_factory=list)
    """Estimator names (default: every one ``gen3d.estimators.available()`` lists)."""
    estimates: int = 100
    """Gradient estimates per estimator."""
    batch: int = 0
    """Images in the fixed batch (0: the config's train.batch)."""
    samples: int = 0
    """Samples per image K (0: the config's train.samples)."""
    warmup: int = 20
    """Steps that train an estimator's own state before it is frozen."""
    ref_estimates: int = 50
    """RLOO estimates averaged into the large-sample reference."""
    ref_samples: int = 0
    """K of the reference estimates (0: 4 x samples)."""
    oracle_estimates: int = 20
    """Pathwise estimates averaged into the oracle gradient."""
    oracle_sigma: float = 0.5
    """Edge softness (pixels) of the oracle's soft rasteriser."""
    std_scale: float = 1.0
    """Multiplies the sampling std of p(m | z), as ``train.std_final`` does late in a run:
    how gradient quality depends on the width of the search."""
    seed: int = 0
    options: dict[str, dict] = field(default_factory=dict)
    """Per-estimator constructor options given on the command line (``--opt``), on top of the
    config's ``estimator.kwargs`` for the config's estimator."""


def parse_options(items: list[str], names: list[str] | None = None) -> dict[str, dict]:
    """``["rloo.normalize=true", ...]`` as ``{"rloo": {"normalize": True}}`` (values read as
    YAML); with ``names``, every option must name one of them."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, opt = key.strip().partition(".")
        if not sep or not dot or not name or not opt:
            raise ConfigError(f"--opt {item!r}: write it as ESTIMATOR.OPTION=VALUE, "
                              f"e.g. rloo.normalize=true")
        if names is not None and name not in names:
            raise ConfigError(f"--opt {item!r}: {name!r} is not one of the estimators run "
                              f"({', '.join(names)}); add it to --estimators or drop the option")
        out.setdefault(name, {})[opt] = yaml.safe_load(raw)
    return out


def options_for(name: str, cfg: MeshRunConfig, extra: dict[str, dict]) -> dict:
    """An estimator's options: the config's ``estimator.kwargs`` when it is the config's
    estimator (the others do not share them: they may not accept them), then ``extra``."""
    base = dict(cfg.estimator.kwargs) if name == cfg.estimator.name else {}
    return base | extra.get(name, {})


class Probe:
    """A model at fixed parameters, a fixed batch of images, and GL rewards for its samples."""

    def __init__(self, cfg: MeshRunConfig, model: MeshModel, images: np.ndarray,
                 renderer: MeshRenderer, seed: int):
        self.cfg, self.model, self.renderer = cfg, model, renderer
        self.targets = images
        self.dev = next(model.parameters()).device
        self.x = images_to_tensor(images, self.dev)
        self.gen = torch.Generator(device=self.dev).manual_seed(seed)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.renders = 0

    def rewards(self, actions: Tensor) -> Tensor:
        b, k, _ = actions.shape
        flat = actions.reshape(b * k, -1).cpu().numpy()
        rgb = self.renderer.render_rays(**spaces.unpack(flat)).rgb
        self.renders += b * k
        r = spaces.gaussian_loglik(np.repeat(self.targets, k, 0), rgb, self.cfg.train.sigma)
        return torch.as_tensor(r, dtype=torch.float32, device=self.dev).reshape(b, k)

    def flat_grad(self) -> Tensor:
        g = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        return torch.cat([t.reshape(-1) for t in g]).detach().double()

    def estimate(self, est: estimators.Estimator, k: int, oracle: Oracle | None = None) -> Tensor:
        """One estimate: the gradient of the learner's loss for this batch, formed by the
        run's own ``learners.mesh_step.surrogate`` (GL rewards when the estimator requires
        them, soft ones from ``oracle`` when it requires those)."""
        self.model.zero_grad(set_to_none=True)
        est.zero_grad(set_to_none=True)
        shape = (len(self.x), k, self.model.decoder.dim)
        noise = est.noise(shape, generator=self.gen, device=self.dev)
        s = self.model.sample(self.x, k, noise=noise, generator=self.gen)
        r = self.rewards(s.actions) if "reward" in est.requires else None
        loss, _ = surrogate(est, s, self.x, r, oracle)
        loss.backward()
        return self.flat_grad()


class Moments:
    """Running per-coordinate mean and variance (Welford), plus what the scalar summaries need
    of each estimate: its projection on a direction, its squared norm, its cosine to the
    oracle."""

    def __init__(self, direction: Tensor, oracle: Tensor):
        self.u = direction / direction.norm().clamp_min(1e-300)
        self.o = oracle / oracle.norm().clamp_min(1e-300)
        self.n, self.mean, self.m2 = 0, torch.zeros_like(direction), torch.zeros_like(direction)
        self.proj, self.sq, self.cos = [], [], []

    def add(self, g: Tensor) -> None:
        self.n += 1
        d = g - self.mean
        self.mean += d / self.n
        self.m2 += d * (g - self.mean)
        self.proj.append(float(g @ self.u))
        self.sq.append(float(g @ g))
        self.cos.append(float(g @ self.o / g.norm().clamp_min(1e-300)))

    @property
    def var(self) -> Tensor:
        return self.m2 / max(self.n - 1, 1)


def summarise(m: Moments, ref: Tensor, ref_var: Tensor, n_ref: int) -> dict:
    var = m.var
    sd = var.sqrt()
    ok = sd > 0
    snr = m.mean.abs()[ok] / sd[ok]
    p = np.asarray(m.proj)
    # directional SNR: the mean along the reference direction u over the RMS distance of the
    # estimates from that mean vector (E[g.u] u), so noise orthogonal to u counts too
    spread = max(float(np.mean(m.sq)) - float(p.mean()) ** 2, 1e-300)
    diff = (m.mean - ref).norm()
    floor = (var.sum() / m.n + ref_var.sum() / n_ref).sqrt()
    ref_norm = ref.norm().clamp_min(1e-300)
    cos_mean = float(m.mean @ m.o / m.mean.norm().clamp_min(1e-300))
    return {"var_mean": float(var.mean()), "var_max": float(var.max()),
            "snr_mean": float(snr.mean()) if snr.numel() else 0.0,
            "snr_median": float(snr.median()) if snr.numel() else 0.0,
            "dsnr": float(p.mean()) / math.sqrt(spread),
            "cos_oracle": float(np.mean(m.cos)), "cos_oracle_of_mean": cos_mean,
            "cos_reference": float(m.mean @ m.u / m.mean.norm().clamp_min(1e-300)),
            "bias_rel": float(diff / ref_norm), "bias_noise_floor_rel": float(floor / ref_norm),
            "grad_norm_mean": float(np.mean(np.sqrt(m.sq))), "estimates": m.n}


def collect(draw, n: int, ref: Tensor | None = None, oracle: Tensor | None = None,
            what: str = "", progress: bool = True) -> tuple[Moments, float]:
    """``n`` estimates from ``draw()`` summarised against ``ref`` and ``oracle`` directions
    (the first estimate's where not given); also the seconds per estimate."""
    from tqdm import tqdm

    m = None
    t0 = time.perf_counter()
    for _ in tqdm(range(n), desc=what, file=sys.stderr, disable=not progress, leave=False):
        g = draw()
        if m is None:
            m = Moments(g if ref is None else ref, g if oracle is None else oracle)
        m.add(g)
    return m, (time.perf_counter() - t0) / max(n, 1)


def diagnose(cfg: MeshRunConfig, model: MeshModel, images: np.ndarray, renderer: MeshRenderer,
             s: Settings, est_state: tuple[str, dict] | None = None, progress: bool = True) -> dict:
    """The diagnostics of ``s.estimators`` at the model's current parameters (JSON-ready)."""
    k = s.samples or cfg.train.samples
    model.std_scale.fill_(s.std_scale)
    probe = Probe(cfg, model, images, renderer, s.seed)
    names = s.estimators or estimators.available()
    rloo = estimators.build("rloo")
    k_ref = s.ref_samples or 4 * k
    ref, _ = collect(lambda: probe.estimate(rloo, k_ref), s.ref_estimates, what="reference",
                     progress=progress)
    soft = estimators.build("pathwise", sigma=s.oracle_sigma, mode="edges")
    oracle = make_oracle(cfg, model, est=soft)
    orc, _ = collect(lambda: probe.estimate(soft, k, oracle), s.oracle_estimates, what="oracle",
                     progress=progress)
    cos_ref_oracle = ref.mean @ orc.mean / (ref.mean.norm() * orc.mean.norm()).clamp_min(1e-300)
    out = {"settings": asdict(s) | {"batch": len(images), "samples": k, "ref_samples": k_ref,
                                    "model_std_mean": float(model.std().detach().mean())},
           "reference": {"estimator": "rloo", "samples": k_ref, "estimates": ref.n,
                         "renders": ref.n * len(images) * k_ref, "norm": float(ref.mean.norm()),
                         "cos_oracle": float(cos_ref_oracle)},
           "oracle": {"softras_sigma": s.oracle_sigma, "estimates": orc.n,
                      "norm": float(orc.mean.norm())},
           "rows": [], "var_per_coordinate": {}}
    for name in names:
        opts = options_for(name, cfg, s.options)
        row: dict = {"estimator": name, "options": opts}
        try:
            m = diagnose_one(probe, name, opts, k, s, row, est_state, cfg.estimator.lr, progress,
                             (ref, orc))
            out["var_per_coordinate"][name] = m.var.float()
        except (ValueError, TypeError, RuntimeError) as e:  # this estimator, these options
            row["error"] = f"{type(e).__name__}: {e}"
        out["rows"].append(row)
    done = {r["estimator"]: r for r in out["rows"] if "var_mean" in r}
    if "reinforce" in done:
        for r in done.values():
            r["var_ratio_vs_reinforce"] = done["reinforce"]["var_mean"] / max(r["var_mean"], 1e-300)
    return out


def diagnose_one(probe: Probe, name: str, opts: dict, k: int, s: Settings, row: dict,
                 est_state: tuple[str, dict] | None, lr: float, progress: bool,
                 against: tuple[Moments, Moments]) -> Moments:
    """``s.estimates`` estimates of estimator ``name`` with options ``opts`` (its own state
    warmed up first), summarised into ``row`` against the reference and the oracle."""
    ref, orc = against
    est = estimators.build(name, **opts).to(probe.dev)
    est.check_samples(k)
    oracle = make_oracle(probe.cfg, probe.model, est=est) if "soft_reward" in est.requires else None
    size_lazy_parameters(est, probe.model, k, probe.dev)
    if est_state and est_state[0] == name:
        est.load_state_dict(est_state[1])
    row["warmup_renders"] = warmup(probe, est, k, s.warmup, lr, oracle)
    est.eval()
    before = probe.renders
    m, sec = collect(lambda: probe.estimate(est, k, oracle), s.estimates, ref.mean, orc.mean, name,
                     progress)
    row.update(summarise(m, ref.mean, ref.var, ref.n))
    kind = "soft" if est.pathwise else ("gl+soft" if oracle is not None else "gl")
    row.update({"objective": est.objective, "renders_per_estimate": probe.x.shape[0] * k,
                "render_kind": kind, "gl_renders": probe.renders - before,
                "seconds_per_estimate": sec})
    return m


def warmup(probe: Probe, est: estimators.Estimator, k: int, steps: int, lr: float,
           oracle: Oracle | None = None) -> int:
    """Train an estimator's own state (running means, baseline networks) at fixed model
    parameters; returns the renders it took."""
    params = list(est.parameters())
    opt = torch.optim.Adam(params, lr=lr) if params else None
    stateful = bool(params) or any(b.numel() for b in est.buffers())
    if not stateful:
        return 0
    before = probe.renders
    est.train()
    for _ in range(steps):
        probe.estimate(est, k, oracle)
        if opt:
            opt.step()
    return probe.renders - before


PANELS = [("var_mean", "gradient variance (mean per coordinate)", True),
          ("dsnr", "directional SNR", False),
          ("cos_oracle", "cosine to the pathwise oracle, per estimate", False)]


def figure(outs: list[dict], colours: dict[str, str] | None = None):
    """Bar charts of variance, directional SNR and cosine to the oracle per estimator, with
    the spread over several diagnoses (one per seed) when given more than one."""
    panels = []
    for key, label, log in PANELS:
        vals: dict[str, list[float]] = {}
        for out in outs:
            for r in out["rows"]:
                if key in r:
                    vals.setdefault(r["estimator"], []).append(r[key])
        panels.append((label, vals, log))
    spread = f"; {len(outs)} seeds: mean, min-max" if len(outs) > 1 else ""
    return plots.bars(panels, "gradient estimates at a fixed checkpoint" + spread, colours)


def write(out: dict, out_dir: Path) -> Path:
    """diagnose.json, diagnose.png (bar charts) and TensorBoard events in ``out_dir``."""
    import json

    from torch.utils.tensorboard import SummaryWriter

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in out["rows"] if "var_mean" in r]
    png = plots.save(figure([out]), out_dir / "diagnose.png")
    tb = SummaryWriter(str(out_dir / "tb"))
    try:
        for i, r in enumerate(rows):
            for key in ("var_mean", "var_max", "snr_mean", "dsnr", "cos_oracle", "bias_rel"):
                tb.add_scalar(f"{r['estimator']}/{key}", r[key], 0)
            tb.add_scalar("var_mean_log10_by_estimator", math.log10(max(r["var_mean"], 1e-300)), i)
            v = out["var_per_coordinate"][r["estimator"]]
            tb.add_histogram(f"{r['estimator']}/log10_var_per_coordinate",
                             v.clamp_min(1e-30).log10(), 0)
        tb.add_image("diagnose", png, 0, dataformats="HWC")
        tb.add_text("rows", "\n".join(json.dumps(r) for r in out["rows"]), 0)
    finally:
        tb.close()
    data = {k: v for k, v in out.items() if k != "var_per_coordinate"} | {"machine": machine()}
    path = out_dir / "diagnose.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m learners.diagnose", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the run's YAML config (task: mesh)")
    ap.add_argument("--checkpoint", required=True, help="runs/<name>/checkpoint.pt")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--estimators", default="", help="comma-separated names (default: all)")
    ap.add_argument("--out", default="", help="output directory (default: <run dir>/diagnose)")
    for f in ("estimates", "batch", "samples", "warmup", "ref_estimates", "ref_samples",
              "oracle_estimates", "seed"):
        ap.add_argument("--" + f.replace("_", "-"), type=int, default=getattr(Settings(), f))
    ap.add_argument("--oracle-sigma", type=float, default=Settings().oracle_sigma)
    ap.add_argument("--std-scale", type=float, default=Settings().std_scale)
    ap.add_argument("--opt", action="append", default=[], metavar="ESTIMATOR.KEY=VALUE",
                    help="an option of one estimator, e.g. rloo.normalize=false (repeatable)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                    help=IMPORT_HELP)
    return ap


def _settings(a: argparse.Namespace) -> tuple[MeshRunConfig, Settings]:
    """The run's config and the diagnostics' settings, or a ``ConfigError`` naming what is
    wrong, before anything is loaded."""
    import_modules(a.imports)
    _, cfg = load(a.config, a.overrides)
    if not isinstance(cfg, MeshRunConfig):
        raise ConfigError(f"{a.config}: diagnostics need a mesh config (task: mesh)")
    if cfg.data.second_view:
        raise ConfigError("data.second_view: diagnostics measure gradients of the image's "
                          "likelihood alone; set data.second_view: 0")
    names = [n.strip() for n in a.estimators.split(",") if n.strip()]
    unknown = sorted(set(names) - set(estimators.available()))
    if unknown:
        raise ConfigError(f"--estimators: unknown {unknown}; choose from {estimators.available()}")
    options = parse_options(a.opt, names or estimators.available())
    if not a.std_scale > 0:
        raise ConfigError(f"--std-scale must be > 0, got {a.std_scale}")
    if a.estimates < 2 or a.ref_estimates < 2:
        raise ConfigError("--estimates and --ref-estimates must be >= 2 (variances need two)")
    if not Path(a.checkpoint).is_file():
        raise ConfigError(f"--checkpoint {a.checkpoint}: no such file; give a trained run's "
                          "runs/<name>/checkpoint.pt")
    fields = ("estimates", "batch", "samples", "warmup", "ref_estimates", "ref_samples",
              "oracle_estimates", "oracle_sigma", "std_scale", "seed")
    return cfg, Settings(names, **{f: getattr(a, f) for f in fields}, options=options)


def _trained_model(a: argparse.Namespace, cfg: MeshRunConfig, dev) -> tuple[MeshModel, dict]:
    """The checkpoint's network and state; a ``ConfigError`` when it is torn or does not fit."""
    state = checkpoint.load(a.checkpoint, map_location=dev, other="give another --checkpoint")
    model = MeshModel(cfg.model, cfg.data.size).to(dev)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ConfigError(f"{a.checkpoint} does not fit the model of {a.config} ({e})") from None
    return model, state


def _print_rows(out: dict, path: Path) -> None:
    cols = ["estimator", "var_mean", "var_max", "var_ratio_vs_reinforce", "snr_mean", "dsnr",
            "cos_oracle", "bias_rel", "bias_noise_floor_rel", "renders_per_estimate"]
    print("  ".join(f"{c:>14}" for c in cols))
    for r in out["rows"]:
        print("  ".join(f"{_fmt(r.get(c, r.get('error', '')[:14] if c == 'var_mean' else '')):>14}"
                        for c in cols))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        cfg, s = _settings(a)
        torch.set_num_threads(cfg.train.torch_threads)
        dev = resolve_device(cfg.device)
        model, state = _trained_model(a, cfg, dev)
    except ConfigError as e:  # a checkpoint's own error is one too
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_cfg = state.get("config", {}).get("estimator", {})
    renderer = MeshRenderer(cfg.data.size, cfg.data.size, 256)
    try:
        train, _ = mesh_images.load(cfg.data, render_fn(renderer))
        rng = np.random.default_rng(s.seed)
        idx = rng.choice(len(train), size=min(s.batch or cfg.train.batch, len(train)), replace=False)
        out = diagnose(cfg, model, train.images[idx], renderer, s,
                       (run_cfg.get("name"), state.get("estimator") or {}),
                       progress=not a.no_progress)
    finally:
        renderer.release()
    _print_rows(out, write(out, Path(a.out) if a.out else Path(a.checkpoint).parent / "diagnose"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
