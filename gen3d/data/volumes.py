"""The paper's volume datasets behind one call: ``load_volumes(cfg) -> (train, test)``.

- ``necker``: 40^3 wire frames of a 10^3 cube at a random orientation (no labels);
- ``primitives``: 30^3 sphere, cube, cylinder, cone, pyramid, torus, translated 0-20 voxels and
  rotated in [-pi, pi] (6 classes);
- ``mnist3d``: 30^3 extruded MNIST digits from the IDX files in ``path`` (10 classes);
- ``shapenet``: binvox volumes under ``path/<synset>/``, resampled to 30^3, one class per synset.

Procedural sets are deterministic from the seed and cached on disk as packed bits under
``cache_dir``, so a second run (or a resumed one) reads them instead of making them again; a
torn cache file is made again (with a warning), since the set is a function of its key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from gen3d.data import vol_files, vol_procedural
from gen3d.fields import NonEmptyStr, NonNegInt, PosInt

CACHE_VERSION = 1
DEFAULT_SIZE = {"necker": 40, "primitives": 30, "mnist3d": 30, "shapenet": 30}


@dataclass
class VolumeDataConfig:
    """Which volumes to train and evaluate on."""

    dataset: Literal["primitives", "necker", "mnist3d", "shapenet"] = "primitives"
    """the dataset: primitives, necker, mnist3d or shapenet"""
    path: str = ""
    """mnist3d: folder of the MNIST IDX files; shapenet: folder with one sub-folder per synset"""
    synsets: list[str] = field(default_factory=list)
    """shapenet: the synset ids that make the classes (e.g. the 40-class subset)"""
    synset_file: str = ""
    """shapenet: a text file with one synset id per line, used when synsets is empty"""
    size: NonNegInt = 0
    """volume size N (0: the dataset's own, 30 or 40 for necker)"""
    n_train: PosInt = 2000
    """number of training volumes"""
    n_test: PosInt = 200
    """number of held-out volumes"""
    seed: NonNegInt = 0
    """seed of the procedural sets and of the shapenet split"""
    cache_dir: NonEmptyStr = "data_cache/volumes"
    """where procedural sets are cached"""

    def __post_init__(self):
        if self.n_train < 1 or self.n_test < 1:
            raise ValueError(f"n_train and n_test must be >= 1, got {self.n_train}, {self.n_test}")
        if self.size < 0:
            raise ValueError(f"size must be >= 0 (0: the dataset's default), got {self.size}")

    @property
    def volume_size(self) -> int:
        return self.size or DEFAULT_SIZE[self.dataset]


@dataclass
class VolumeSet:
    """Binary volumes (n, N, N, N) uint8 with axes (z, y, x), optional labels (n,) int64."""

    volumes: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.volumes)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def check_volumes(vols: np.ndarray, size: int | None = None, name: str = "volumes") -> np.ndarray:
    """Check that ``vols`` are binary cubic volumes (n, N, N, N) [of size N]; return as uint8."""
    a = np.asarray(vols)
    if a.ndim != 4 or not (a.shape[1] == a.shape[2] == a.shape[3]):
        raise ValueError(f"{name}: need volumes of shape (n, N, N, N), got {a.shape}")
    if size is not None and a.shape[1] != size:
        raise ValueError(f"{name}: volumes are {a.shape[1]}^3 but {size}^3 is expected; set "
                         f"data.size / model.canvas_size to {a.shape[1]} or resample them")
    if a.dtype != np.uint8 or a.max(initial=0) > 1:
        if not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name}: volumes must be binary (0/1); got values such as "
                             f"{np.unique(a)[:5].tolist()}; threshold them first")
    return a.astype(np.uint8, copy=False)


def _cache_path(cfg: VolumeDataConfig, split: str, n: int) -> Path:
    key = json.dumps([CACHE_VERSION, cfg.dataset, cfg.volume_size, split, n, cfg.seed])
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return Path(cfg.cache_dir) / f"{cfg.dataset}-{cfg.volume_size}-{split}-{n}-s{cfg.seed}-{digest}.npz"


def _cached(cfg: VolumeDataConfig, split: str, n: int, make, labelled: bool
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """The set from its cache file, else made by ``make()`` and cached. A torn or stale cache
    file is made again, with a warning; a cache that cannot be written costs a warning only."""
    path = _cache_path(cfg, split, n)
    if path.is_file():
        try:
            return _read_cache(path, n, cfg.volume_size, labelled)
        except Exception as e:  # zip, pickle and numpy errors alike: the file is torn
            warnings.warn(f"{path}: unreadable volume cache ({type(e).__name__}: {e}); "
                          "making the set again and overwriting it", stacklevel=3)
    vols, labels = make()
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, bits=np.packbits(vols), labels=labels if labels is not None else np.zeros(0))
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        warnings.warn(f"could not write the volume cache {path} ({e.strerror or e}); the set is "
                      "made again on each run (set data.cache_dir to a writable folder)", stacklevel=3)
    return vols, labels


def _read_cache(path: Path, n: int, size: int, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as z:
        bits, labels = z["bits"], z["labels"]
    if bits.dtype != np.uint8 or bits.size * 8 < n * size**3:
        raise ValueError(f"{bits.size} bytes of volume bits, {n} volumes of {size}^3 need "
                         f"{-(-n * size**3 // 8)}")
    if labelled and labels.shape != (n,):
        raise ValueError(f"labels of shape {labels.shape}, expected ({n},)")
    vols = np.unpackbits(bits)[: n * size**3].reshape(n, size, size, size)
    return vols, (labels.astype(np.int64) if labelled else None)


def _procedural(cfg: VolumeDataConfig, split: str, n: int) -> VolumeSet:
    seed = [cfg.seed, 0 if split == "train" else 1]
    size = cfg.volume_size
    seed_int = int(np.random.SeedSequence(seed).generate_state(1)[0])
    if cfg.dataset == "necker":
        vols, _ = _cached(cfg, split, n, lambda: (vol_procedural.necker_cubes(n, seed_int, size), None),
                          labelled=False)
        return VolumeSet(vols, None, ["necker"])
    vols, labels = _cached(cfg, split, n, lambda: vol_procedural.primitives(n, seed_int, size),
                           labelled=True)
    return VolumeSet(vols, labels, list(vol_procedural.PRIMITIVES))


def _shapenet(cfg: VolumeDataConfig) -> tuple[VolumeSet, VolumeSet]:
    synsets = vol_files.read_synsets(cfg.synsets, cfg.synset_file)
    files, labels = vol_files.shapenet(cfg.path, synsets)
    order = np.random.default_rng(cfg.seed).permutation(len(files))
    if cfg.n_train + cfg.n_test > len(files):
        raise ValueError(f"ShapeNet: asked for {cfg.n_train} + {cfg.n_test} volumes but "
                         f"{cfg.path!r} has {len(files)} for these synsets")
    out = []
    for idx in (order[cfg.n_test:cfg.n_test + cfg.n_train], order[:cfg.n_test]):
        vols = np.stack([vol_files.resample(vol_files.read_binvox(files[i]), cfg.volume_size)
                         for i in idx])
        out.append(VolumeSet(vols, labels[idx], synsets))
    return out[0], out[1]


def load_volumes(cfg: VolumeDataConfig) -> tuple[VolumeSet, VolumeSet]:
    """The (train, test) sets named by ``cfg``, checked to be binary and of the expected size."""
    if cfg.dataset in ("necker", "primitives"):
        train, test = _procedural(cfg, "train", cfg.n_train), _procedural(cfg, "test", cfg.n_test)
    elif cfg.dataset == "mnist3d":
        sets = []
        for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
            vols, labels = vol_files.mnist3d(cfg.path, split, n, cfg.volume_size)
            sets.append(VolumeSet(vols, labels, [str(d) for d in range(10)]))
        train, test = sets
    elif cfg.dataset == "shapenet":
        train, test = _shapenet(cfg)
    else:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose primitives, necker, mnist3d "
                         "or shapenet")
    for name, s in (("train", train), ("test", test)):
        s.volumes = check_volumes(s.volumes, cfg.volume_size, f"{cfg.dataset} {name}")
    return train, test
