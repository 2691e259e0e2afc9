"""Primitives image data for the mesh task: primitives with a distinct colour on each side,
lit by three lights, at random rotations, scales and positions, rendered at 64x64
(configurable). Generated from a seed, cached on disk, split into train and held-out parts.

The truth (primitive kind, rotation, translation, scale, side colours) is kept for scoring
only: the learner never trains on it.

gen3d must not import the GL renderer, so the caller passes a ``render`` function: given
meshes, per-side colours and poses it returns ``(rgb uint8 (N,H,W,3), mask bool (N,H,W))``
(``learners.mesh_data.render_fn`` wraps ``envs.MeshRenderer.render_meshes``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from gen3d import geometry as geo
from gen3d import primitives as prim
from gen3d.fields import AtLeast, NonEmptyStr, NonNegFloat, NonNegInt, PosFloat, PosInt

CACHE_VERSION = 1

UNSEEN_KINDS = ("octahedron", "prism", "bicone")
"""Kinds the main job never trains on, scored to see how far its inference generalises."""

# well-separated hues for the sides; each object draws its sides' colours from these
PALETTE = np.array([
    [0.90, 0.10, 0.10], [0.10, 0.75, 0.15], [0.15, 0.30, 0.95], [0.95, 0.85, 0.10],
    [0.85, 0.15, 0.85], [0.10, 0.80, 0.85], [0.95, 0.50, 0.05], [0.55, 0.25, 0.90],
    [0.95, 0.95, 0.95], [0.50, 0.90, 0.40],
], np.float32)


@dataclass
class MeshImageConfig:
    kinds: list[str] = field(default_factory=lambda: ["cube", "sphere", "cylinder", "cone", "pyramid"])
    """Primitive kinds to draw (``gen3d.primitives.PRIMITIVES``; octahedron, prism and bicone are kept
    for scoring on kinds never trained on, ``UNSEEN_KINDS``). The torus is
    left out by default: a mesh on rays from its centre cannot represent its hole."""
    n_train: PosInt = 4000
    """Training images."""
    n_test: PosInt = 500
    """Held-out images, scored at the end of a run."""
    size: Annotated[int, AtLeast(8)] = 64
    """Image width and height in pixels."""
    scale: tuple[PosFloat, PosFloat] = (1.0, 1.5)
    """Uniform scale range applied to the unit-extent primitive."""
    translation: NonNegFloat = 0.25
    """Each coordinate of the position is uniform in [-translation, translation]."""
    mesh: Literal["exact", "rays"] = "exact"
    """``exact``: each primitive as it is. ``rays``: each primitive, posed, sampled on the
    model's 162 camera-frame rays about its centre (``geometry.on_rays``): the same shapes with
    the corners cut where no ray meets them, so the mesh model can represent every image
    exactly (the ray mesh through an exact primitive's surface scores IoU 0.89 against it,
    benchmarks/RESULTS.md)."""
    second_view: NonNegFloat = 0.0
    """Degrees of a known turn about the vertical axis (the camera's y) of each object about
    its centre: each object is also rendered so turned (``MeshImages.views`` and
    ``view_masks``), a second view whose silhouette's likelihood the learner adds to the
    image's (``learners.mesh_step``). The network still infers from one image, and held-out
    scores use the first view only. 0: one view. Its rewards swing more: a ``train.rollback_nats``
    sized for one view rolls a run back again and again (raise it, or 0)."""
    seed: NonNegInt = 0
    """Seed of the whole set (the split is part of it)."""
    cache_dir: NonEmptyStr = "data_cache"
    """Where generated sets are kept, keyed by a hash of these settings."""

    def __post_init__(self):
        bad = sorted(set(self.kinds) - set(prim.PRIMITIVES))
        if bad or not self.kinds:
            raise ValueError(f"kinds: unknown {bad}; choose from {sorted(prim.PRIMITIVES)}")
        if self.n_train < 1 or self.n_test < 1 or self.size < 8:
            raise ValueError("n_train and n_test must be >= 1 and size >= 8")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale: need 0 < low <= high, got {self.scale}")
        if self.mesh not in ("exact", "rays"):
            raise ValueError(f"mesh: {self.mesh!r} is not one of 'exact', 'rays'")
        if not 0 <= self.second_view <= 180:
            raise ValueError(f"second_view: need a turn of 0 (none) to 180 degrees, got {self.second_view}")
        if not 0 <= self.translation <= geo.MAX_TRANSLATION:  # the renderer's bounds
            raise ValueError(f"translation: need 0 <= translation <= {geo.MAX_TRANSLATION:g}, got "
                             f"{self.translation}")
        reach = self.scale[1] * max(np.linalg.norm(prim.primitive(k).verts, axis=1).max() for k in self.kinds)
        if not reach <= geo.MAX_LENGTH:
            raise ValueError(f"scale: at {self.scale[1]} a primitive reaches {reach:.3g} from its "
                             f"centre, over the renderer's MAX_LENGTH={geo.MAX_LENGTH:g}; lower it")


def unseen_config(cfg: MeshImageConfig, kinds, n: int) -> MeshImageConfig:
    """The same image pipeline (scales, positions, colours, lights, size) on ``kinds`` that
    ``cfg`` never shows: ``n`` images to fit each kind's best fixed sphere on, ``n`` to score."""
    overlap = sorted(set(kinds) & set(cfg.kinds))
    if overlap:
        raise ValueError(f"unseen kinds {overlap} are also training kinds (data.kinds); "
                         f"choose kinds outside {list(cfg.kinds)}")
    if n < 1:
        raise ValueError(f"unseen images: need n >= 1, got {n}")
    return dataclasses.replace(cfg, kinds=list(kinds), n_train=n, n_test=n, seed=cfg.seed + 1,
                               second_view=0.0)  # scored on one view: no training views


@dataclass
class MeshImages:
    """One split: images and masks, with the truth kept for scoring."""

    images: np.ndarray      # (N,H,W,3) uint8
    masks: np.ndarray       # (N,H,W) bool
    kind: np.ndarray        # (N,) index into kinds
    rotation: np.ndarray    # (N,3,3)
    translation: np.ndarray  # (N,3)
    scale: np.ndarray       # (N,)
    colours: np.ndarray     # (N, max_sides, 3) per-side colours
    kinds: list[str]
    on_rays: bool = False   # objects sampled on the model's rays (``MeshImageConfig.mesh``)
    views: np.ndarray | None = None  # (N,H,W,3) uint8: each object turned by ``second_view``
    view_masks: np.ndarray | None = None  # (N,H,W) bool: the views' silhouettes

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> MeshImages:
        """The images (and truth) at ``idx``: an index array or a slice."""
        return MeshImages(**{k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()})

    def mesh(self, i: int) -> geo.Mesh:
        """Object i's true mesh in the world (camera-fixed) frame."""
        return _posed(self.kinds[self.kind[i]], self.rotation[i], float(self.scale[i]),
                      self.on_rays).transformed(translation=self.translation[i])


def _posed(kind: str, rotation: np.ndarray, scale: float, on_rays: bool) -> geo.Mesh:
    m = prim.primitive(kind).transformed(rotation, None, scale)
    return geo.on_rays(m) if on_rays else m


RenderFn = Callable[[list, list, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def sample_scenes(cfg: MeshImageConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    max_sides = max(prim.primitive(k).n_sides for k in cfg.kinds)
    colours = np.stack([PALETTE[rng.permutation(len(PALETTE))[:max_sides]] for _ in range(n)])
    return {
        "kind": rng.integers(len(cfg.kinds), size=n),
        "rotation": geo.random_rotation(rng, n).astype(np.float32),
        "translation": rng.uniform(-cfg.translation, cfg.translation, (n, 3)).astype(np.float32),
        "scale": rng.uniform(*cfg.scale, n).astype(np.float32),
        "colours": colours.astype(np.float32),
    }


def generate(cfg: MeshImageConfig, render: RenderFn) -> tuple[MeshImages, MeshImages]:
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_train + cfg.n_test
    s = sample_scenes(cfg, n, rng)
    s["images"], s["masks"] = _render_all(cfg, s, render, None)
    if cfg.second_view:
        s["views"], s["view_masks"] = _render_all(cfg, s, render, geo.vertical_turn(cfg.second_view))
    data = MeshImages(**s, kinds=list(cfg.kinds), on_rays=cfg.mesh == "rays")
    return data.subset(slice(0, cfg.n_train)), data.subset(slice(cfg.n_train, n))


def _render_all(cfg: MeshImageConfig, s: dict, render: RenderFn,
                turn: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks of the scenes ``s``, each object turned by ``turn`` about its centre
    (after its own rotation) when one is given."""
    rays = cfg.mesh == "rays"
    meshes = [prim.primitive(k) for k in cfg.kinds]
    rgb, mask = [], []
    for lo in range(0, len(s["kind"]), 256):
        hi = min(len(s["kind"]), lo + 256)
        cols = [s["colours"][i][: meshes[s["kind"][i]].n_sides] for i in range(lo, hi)]
        if rays:  # posed before sampling: the rays are fixed in the camera frame
            ms = [_posed(cfg.kinds[s["kind"][i]], s["rotation"][i], float(s["scale"][i]), True)
                  for i in range(lo, hi)]
            rot = None if turn is None else np.broadcast_to(turn, (hi - lo, 3, 3))
            a, b = render(ms, cols, rot, s["translation"][lo:hi], None)
        else:
            ms = [meshes[k] for k in s["kind"][lo:hi]]
            rot = s["rotation"][lo:hi] if turn is None else turn @ s["rotation"][lo:hi]
            a, b = render(ms, cols, rot, s["translation"][lo:hi], s["scale"][lo:hi])
        rgb.append(a)
        mask.append(b)
    return np.concatenate(rgb), np.concatenate(mask)


def cache_path(cfg: MeshImageConfig) -> Path:
    d = asdict(cfg)
    d.pop("cache_dir")
    if d["mesh"] == "exact":  # keeps the keys of sets cached before the options existed
        d.pop("mesh")
    if not d["second_view"]:
        d.pop("second_view")
    key = hashlib.sha1(json.dumps([CACHE_VERSION, d], sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir) / f"mesh_images_{key}.npz"


FIELDS = ("images", "masks", "kind", "rotation", "translation", "scale", "colours")


def _fields(cfg: MeshImageConfig) -> tuple[str, ...]:
    return FIELDS + (("views", "view_masks") if cfg.second_view else ())


def load(cfg: MeshImageConfig, render: RenderFn | None = None) -> tuple[MeshImages, MeshImages]:
    """The cached set for ``cfg``; generated (and cached atomically) when absent and a
    ``render`` function is given. A torn or stale cache file is generated again, with a
    warning, when ``render`` is given; without it, it is a ValueError naming the file."""
    path = cache_path(cfg)
    if path.is_file():
        try:
            both = _read_cache(path, cfg)
            return both.subset(slice(0, cfg.n_train)), both.subset(slice(cfg.n_train, len(both)))
        except Exception as e:  # zip, pickle and numpy errors alike: the file is torn
            problem = f"dataset cache {path} is unreadable ({type(e).__name__}: {e})"
            if render is None:
                raise ValueError(f"{problem}; delete it to regenerate") from None
            warnings.warn(f"{problem}; generating the set again and overwriting it", stacklevel=2)
    if render is None:
        raise FileNotFoundError(f"dataset cache {path} is missing; generate it by running the "
                                "config once (python -m learners.run --config ...)")
    train, test = generate(cfg, render)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(tmp, **{k: np.concatenate([getattr(train, k), getattr(test, k)])
                                    for k in _fields(cfg)})
        tmp.replace(path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        warnings.warn(f"could not write the dataset cache {path} ({e.strerror or e}); the set "
                      "is generated again on each run (set data.cache_dir to a writable folder)",
                      stacklevel=2)
    return train, test


def _read_cache(path: Path, cfg: MeshImageConfig) -> MeshImages:
    """The whole cached set, checked to hold what ``cfg`` asks for (else a ValueError)."""
    with np.load(path, allow_pickle=False) as z:
        missing = sorted(set(_fields(cfg)) - set(z.files))
        if missing:
            raise ValueError(f"no {missing} in it")
        data = {k: z[k] for k in _fields(cfg)}
    n, s = cfg.n_train + cfg.n_test, cfg.size
    want = {"images": (n, s, s, 3), "masks": (n, s, s), "kind": (n,), "scale": (n,)}
    if cfg.second_view:
        want["views"], want["view_masks"] = (n, s, s, 3), (n, s, s)
    for k, shape in want.items():
        if data[k].shape != shape:
            raise ValueError(f"{k} of shape {data[k].shape}, expected {shape}")
    if data["kind"].min() < 0 or data["kind"].max() >= len(cfg.kinds):
        raise ValueError(f"kind indices outside [0, {len(cfg.kinds)})")
    return MeshImages(**data, kinds=list(cfg.kinds), on_rays=cfg.mesh == "rays")
