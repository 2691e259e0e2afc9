"""Bad data files: every loader names the file and what is wrong with it (a ValueError, not an
error from gzip, struct or numpy), and a torn cache is made again, with a warning, holding
exactly the set it should."""

import gzip
import warnings

import numpy as np
import pytest

from gen3d.data import mesh_images, vol_files
from gen3d.data.volumes import VolumeDataConfig, load_volumes
from tests.test_volume_data import binvox_bytes, write_idx

HEAD = b"#binvox 1\n"
GOOD_RLE = b"\x00\x40"  # 64 empty voxels: a whole 4^3 grid


def _refused_naming(read, p, data: bytes, words: list[str]) -> None:
    """``read`` of a file holding ``data`` is a ValueError that starts with the file's path
    and says each of ``words``."""
    p.write_bytes(data)
    with pytest.raises(ValueError) as e:
        read(p)
    assert str(e.value).startswith(str(p))
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("data, words", [
    (HEAD + b"dim a b c\ndata\n" + GOOD_RLE, ["dims 'a b c'", "whole numbers"]),
    (HEAD + b"dim 4.5 4.5 4.5\ndata\n" + GOOD_RLE, ["not whole numbers"]),
    (HEAD + b"dim 0 0 0\ndata\n", ["dims (0, 0, 0)", "[1, 1024]"]),
    (HEAD + b"dim -4 -4 -4\ndata\n" + GOOD_RLE, ["dims (-4, -4, -4)"]),
    (HEAD + b"dim 4096 4096 4096\ndata\n\x00\xff", ["dims (4096, 4096, 4096)"]),
    (HEAD + b"dim 4 4\ndata\n" + GOOD_RLE, ["no 'dim d d d'", "dim 4 4"]),
    (HEAD + b"dim 4 4 8\ndata\n" + GOOD_RLE, ["not cubic"]),
    (HEAD + b"dim 4 4 4\ndata\n\x00\x20\x01", ["truncated", "cut short"]),       # odd length
    (HEAD + b"dim 4 4 4\ndata\n\x00\x20", ["truncated", "32 voxels of 64"]),       # runs end early
    (HEAD + b"dim 4 4 4\ndata\n", ["truncated", "0 voxels of 64"]),
    (HEAD + b"dim 4 4 4\ndata\n\x00\x40\x01\x01", ["cover 65 voxels"]),
    (HEAD + b"dim 4 4 4\ndata\n\x07\x40", ["of 0/1"]),
    (HEAD + b"dim 4 4 4\n", ["header ends"]),
    (b"", ["not a binvox file"]),
    (b"\x89PNG\r\n", ["not a binvox file"]),
])
def test_bad_binvox_files_are_named_with_the_problem(tmp_path, data, words):
    _refused_naming(vol_files.read_binvox, tmp_path / "chair.binvox", data, words)


def test_an_unreadable_binvox_path_is_named(tmp_path):
    for p in (tmp_path / "missing.binvox", tmp_path):
        with pytest.raises(ValueError, match="cannot be read") as e:
            vol_files.read_binvox(p)
        assert str(e.value).startswith(str(p))


def test_a_good_binvox_at_the_smallest_size_reads(tmp_path):
    p = tmp_path / "one.binvox"
    p.write_bytes(binvox_bytes(np.ones((1, 1, 1), np.uint8), 1))
    assert vol_files.read_binvox(p).tolist() == [[[1]]]


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) \
        + arr.astype(np.uint8).tobytes()


IMAGES = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256


@pytest.mark.parametrize("name, data, words", [
    ("t.idx", _idx(IMAGES)[:6], ["cut in the header", "6 bytes", "needs 16"]),
    ("t.idx", _idx(IMAGES)[:3], ["bad magic number"]),
    ("t.idx", b"", ["bad magic number", "empty"]),
    ("t.idx", _idx(IMAGES)[:100], ["header says (2, 28, 28)", "holds 84"]),
    ("t.idx", bytes([0, 0, 0x0D, 3]) + _idx(IMAGES)[4:], ["not an unsigned-byte IDX"]),
    ("t.idx", bytes([0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28]), ["hold no values"]),
    ("t.idx.gz", _idx(IMAGES), ["not a readable gzip file"]),                 # named .gz, is not
    ("t.idx.gz", gzip.compress(_idx(IMAGES))[:40], ["not a readable gzip file"]),  # cut short
    ("t.idx", gzip.compress(_idx(IMAGES))[:40], ["not a readable gzip file"]),
    ("t.idx.gz", gzip.compress(_idx(IMAGES)[:10]), ["cut in the header"]),
])
def test_bad_idx_files_are_named_with_the_problem(tmp_path, name, data, words):
    _refused_naming(vol_files.read_idx, tmp_path / name, data, words)


def test_a_gzipped_idx_without_the_gz_name_is_read(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(gzip.compress(_idx(IMAGES)))
    np.testing.assert_array_equal(vol_files.read_idx(p), IMAGES)


def test_mnist3d_names_a_file_cut_in_the_header(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", IMAGES)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(2))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", IMAGES)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0])))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: corrupt IDX file: cut in the header"):
        load_volumes(VolumeDataConfig(dataset="mnist3d", path=str(tmp_path), n_train=2, n_test=2))


# ---------------------------------------------------------------- torn caches are made again

def _volume_cfg(tmp_path, dataset="primitives") -> VolumeDataConfig:
    return VolumeDataConfig(dataset=dataset, n_train=6, n_test=3, size=20, cache_dir=str(tmp_path))


def _no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


@pytest.mark.parametrize("dataset", ["primitives", "necker"])
@pytest.mark.parametrize("tear", [
    lambda b: b[: len(b) // 2],                     # cut mid-write (a zip without its directory)
    lambda b: b"",                                  # created, never written
    lambda b: b[:20] + bytes(len(b) - 20),          # zeroed blocks after a crash
])
def test_a_torn_volume_cache_is_made_again_with_a_warning(tmp_path, dataset, tear):
    cfg = _volume_cfg(tmp_path, dataset)
    train, test = load_volumes(cfg)
    for f in sorted(tmp_path.glob("*.npz")):
        f.write_bytes(tear(f.read_bytes()))
        with pytest.warns(UserWarning, match=f"{f.name}: unreadable volume cache.*making the set again"):
            again = load_volumes(cfg)
        np.testing.assert_array_equal(again[0].volumes, train.volumes)
        np.testing.assert_array_equal(again[1].volumes, test.volumes)
        if dataset == "primitives":
            np.testing.assert_array_equal(again[0].labels, train.labels)
        _no_warnings(lambda: load_volumes(cfg))  # the file was rewritten whole


@pytest.mark.parametrize("stale", [
    {"bits": np.zeros(10, np.uint8), "labels": np.zeros(6)},         # too few volumes
    {"bits": np.zeros(6 * 20**3 // 8, np.uint8), "labels": np.zeros(0)},  # primitives without labels
    {"volumes": np.zeros(3)},                                        # not the cache's keys
])
def test_a_stale_volume_cache_is_made_again(tmp_path, stale):
    cfg = _volume_cfg(tmp_path)
    train, _ = load_volumes(cfg)
    path = next(p for p in tmp_path.glob("*.npz") if "-train-" in p.name)
    np.savez(path.with_suffix(""), **stale)  # np.savez adds the .npz back
    with pytest.warns(UserWarning, match="unreadable volume cache"):
        again, _ = load_volumes(cfg)
    np.testing.assert_array_equal(again.volumes, train.volumes)
    np.testing.assert_array_equal(again.labels, train.labels)


def test_an_unwritable_volume_cache_costs_a_warning_not_the_data(tmp_path):
    (tmp_path / "a_file").write_text("")
    cfg = VolumeDataConfig(n_train=6, n_test=3, size=16, cache_dir=str(tmp_path / "a_file" / "cache"))
    with pytest.warns(UserWarning, match="could not write the volume cache.*data.cache_dir"):
        train, _ = load_volumes(cfg)
    assert train.volumes.shape == (6, 16, 16, 16) and train.volumes.any()


def _render_fn(r):
    def render(meshes, colours, rotation, translation, scale):
        out = r.render_meshes(meshes, colours, rotation, translation, scale, mask=True)
        return out.rgb, out.mask
    return render


@pytest.mark.parametrize("tear", [lambda b: b[: len(b) // 2], lambda b: b"PK\x03\x04"])
def test_a_torn_mesh_image_cache_is_made_again_when_it_can_be(tmp_path, renderer, tear):
    cfg = mesh_images.MeshImageConfig(n_train=3, n_test=2, size=64, cache_dir=str(tmp_path))
    train, test = mesh_images.load(cfg, _render_fn(renderer))
    path = mesh_images.cache_path(cfg)
    path.write_bytes(tear(path.read_bytes()))
    with pytest.raises(ValueError, match=f"{path.name} is unreadable.*delete it to regenerate"):
        mesh_images.load(cfg)  # no renderer to make it again with: named, not regenerated
    with pytest.warns(UserWarning, match=f"{path.name} is unreadable.*generating the set again"):
        again, again_test = mesh_images.load(cfg, _render_fn(renderer))
    np.testing.assert_array_equal(again.images, train.images)
    np.testing.assert_array_equal(again_test.rotation, test.rotation)
    cached, _ = _no_warnings(lambda: mesh_images.load(cfg))
    np.testing.assert_array_equal(cached.images, train.images)


def test_a_mesh_image_cache_of_the_wrong_size_is_not_used(tmp_path, renderer):
    cfg = mesh_images.MeshImageConfig(n_train=3, n_test=2, size=64, cache_dir=str(tmp_path))
    train, _ = mesh_images.load(cfg, _render_fn(renderer))
    path = mesh_images.cache_path(cfg)
    with np.load(path) as z:
        short = {k: z[k][:4] for k in z.files}  # one image fewer than the config asks for
    np.savez(path.with_suffix(""), **short)
    with pytest.raises(ValueError, match=r"images of shape \(4, 64, 64, 3\), expected \(5, 64, 64, 3\)"):
        mesh_images.load(cfg)


@pytest.mark.parametrize("kwargs, field", [
    ({"translation": 1.5}, "translation"), ({"translation": float("nan")}, "translation"),
    ({"scale": (1.0, 3.0)}, "scale"), ({"scale": (1.0, float("inf"))}, "scale"),
])
def test_mesh_image_settings_the_renderer_would_refuse_are_refused_first(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        mesh_images.MeshImageConfig(**kwargs)
