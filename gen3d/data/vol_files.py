"""Volume datasets read from files the user gives: MNIST3D (extruded MNIST digits from the
standard IDX files) and ShapeNet binvox volumes resampled to 30^3.

A file that cannot be read, or is not what it should be, is a ValueError that names the file
and what is wrong with it (never an error from deep inside gzip or numpy)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


MAX_BINVOX_DIM = 1024  # ShapeNet's are 128 or 256; run-length data can claim any size cheaply
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a ValueError naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None


def _open(path: Path) -> bytes:
    """The bytes of a file, gunzipped when it is gzip (by its magic number or a .gz name)."""
    raw = read_bytes(path)
    if not (raw.startswith(GZIP_MAGIC) or path.suffix == ".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: not a readable gzip file ({e}); download it again, or give "
                         "the uncompressed file without .gz") from None


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) as a uint8 array."""
    path = Path(path)
    data = _open(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (bad magic number "
                         f"{data[:4].hex() or 'none: the file is empty'}, expected 00000803 or 00000801)")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: corrupt IDX file: cut in the header ({len(data)} bytes, a "
                         f"{ndim}-dimensional header needs {4 + 4 * ndim})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    if 0 in dims:
        raise ValueError(f"{path}: corrupt IDX file: the header's dimensions {dims} hold no values")
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: corrupt IDX file: header says {dims} = {int(np.prod(dims))} "
                         f"values but it holds {body.size}")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


def mnist3d(root: str | Path, split: str, n: int, size: int = 30, depth: int = 8
            ) -> tuple[np.ndarray, np.ndarray]:
    """The first n digits of a split, binarised (> 127), padded to size x size and extruded
    ``depth`` voxels along z through the middle of the volume. Returns (volumes, labels)."""
    root = Path(root)
    if split not in MNIST_FILES:
        raise ValueError(f"MNIST3D: split {split!r} is not one of {sorted(MNIST_FILES)}")
    stems = MNIST_FILES[split]
    paths = [_find(root, s) for s in stems]
    if not root.is_dir() or any(p is None for p in paths):
        want = ", ".join(f"{s}[.gz]" for pair in MNIST_FILES.values() for s in pair)
        raise ValueError(f"MNIST3D: expected the MNIST IDX files {want} in {str(root)!r}; "
                         "download them and set data.path to their folder")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST3D: {paths[0]} and {paths[1]} do not hold matching images and labels")
    if n > len(images):
        raise ValueError(f"MNIST3D: asked for {n} {split} digits but {paths[0]} has {len(images)}")
    h, w = images.shape[1:]
    if h > size or w > size:
        raise ValueError(f"MNIST3D: {h}x{w} digits do not fit a {size}^3 volume")
    out = np.zeros((n, size, size, size), np.uint8)
    top, left, front = (size - h) // 2, (size - w) // 2, (size - depth) // 2
    # image row 0 is the top; the volume's y axis points up, so rows fill y from the top down
    digits = (images[:n, ::-1, :] > 127).astype(np.uint8)
    out[:, front:front + depth, top:top + h, left:left + w] = digits[:, None]
    return out, labels[:n].astype(np.int64)


def read_binvox(path: str | Path) -> np.ndarray:
    """A binvox file as a uint8 volume (d, d, d) with axes (z, y, x), y up (binvox stores x
    slowest, then z, then y, run-length encoded)."""
    path = Path(path)
    raw = read_bytes(path)
    if not raw.startswith(b"#binvox"):
        first = raw[:40].split(b"\n")[0]
        raise ValueError(f"{path}: not a binvox file (first line {first!r}, expected '#binvox 1')")
    pos = raw.index(b"\n") + 1 if b"\n" in raw else len(raw)
    header: dict[str, list[str]] = {}
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise ValueError(f"{path}: corrupt binvox file: header ends before its 'data' line")
        line = raw[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if line == "data":
            break
        if line:
            key, *vals = line.split()
            header[key] = vals
    dims = _binvox_dims(path, header)
    rle = np.frombuffer(raw, np.uint8, offset=pos)
    values, counts = rle[0::2], rle[1::2].astype(np.int64)
    total = int(counts.sum())
    if rle.size % 2 or total < dims[0] ** 3:
        raise ValueError(f"{path}: corrupt binvox file: truncated run-length data ({rle.size} "
                         f"bytes cover {total} voxels of {dims[0] ** 3}); the file was cut short")
    if total != dims[0] ** 3 or (values > 1).any():
        raise ValueError(f"{path}: corrupt binvox file: run-length data cover {total} voxels "
                         f"(values {sorted(set(values.tolist()))[:4]}), expected {dims[0] ** 3} "
                         "of 0/1")
    vol = np.repeat(values, counts).reshape(dims)  # [x][z][y]
    return np.ascontiguousarray(vol.transpose(1, 2, 0))  # -> [z][y][x]


def _binvox_dims(path: Path, header: dict[str, list[str]]) -> tuple[int, int, int]:
    """The header's 'dim d d d': three equal whole numbers in [1, MAX_BINVOX_DIM]."""
    vals = header.get("dim")
    if vals is None or len(vals) != 3:
        raise ValueError(f"{path}: corrupt binvox file: no 'dim d d d' line in the header "
                         f"(got {'dim ' + ' '.join(vals) if vals else 'none'})")
    try:
        dims = tuple(int(v) for v in vals)
    except ValueError:
        raise ValueError(f"{path}: corrupt binvox file: dims {' '.join(vals)!r} are not whole "
                         "numbers") from None
    if len(set(dims)) != 1:
        raise ValueError(f"{path}: binvox dims {dims} are not cubic; only cubic grids are supported")
    if not 1 <= dims[0] <= MAX_BINVOX_DIM:
        raise ValueError(f"{path}: corrupt binvox file: dims {dims} must lie in [1, {MAX_BINVOX_DIM}]")
    return dims  # type: ignore[return-value]


def resample(vol: np.ndarray, size: int) -> np.ndarray:
    """Resample a binary cubic volume to size^3: a voxel is on when any source voxel it covers
    is on (keeps thin parts); nearest neighbour when enlarging."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
    if vol.shape[0] >= size:
        t = F.adaptive_max_pool3d(t, size)
    else:
        t = F.interpolate(t, size=(size,) * 3, mode="nearest")
    return (t[0, 0] > 0.5).numpy().astype(np.uint8)


def read_synsets(synsets: list[str], synset_file: str = "") -> list[str]:
    """The class list: ``synsets`` as given, else the first word of each line of synset_file."""
    if synsets:
        return list(synsets)
    if not synset_file:
        raise ValueError("ShapeNet: give the classes as data.synsets (a list of synset ids such "
                         "as 02691156) or data.synset_file (one id per line)")
    p = Path(synset_file)
    if not p.is_file():
        raise ValueError(f"ShapeNet: synset file {str(p)!r} does not exist")
    ids = [ln.split()[0].split(",")[0] for ln in p.read_text().splitlines()
           if ln.strip() and not ln.startswith("#")]
    if not ids:
        raise ValueError(f"ShapeNet: synset file {str(p)!r} lists no synsets")
    return ids


def shapenet(root: str | Path, synsets: list[str]) -> tuple[list[Path], np.ndarray]:
    """Every ``*.binvox`` under root/<synset>/ for each listed synset, sorted, with its class
    index. Volumes are read later by ``read_binvox`` + ``resample``."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"ShapeNet: directory {str(root)!r} does not exist; set data.path to "
                         "the folder that holds one sub-folder per synset")
    files: list[Path] = []
    labels: list[int] = []
    for k, syn in enumerate(synsets):
        found = sorted((root / syn).rglob("*.binvox")) if (root / syn).is_dir() else []
        if not found:
            raise ValueError(f"ShapeNet: no .binvox files under {str(root / syn)!r} for synset "
                             f"{syn}; check data.path and the synset list")
        files += found
        labels += [k] * len(found)
    return files, np.asarray(labels, np.int64)
