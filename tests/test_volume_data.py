"""Volume datasets against their known 3D: procedural sets (determinism, sizes, geometry, the
disk cache), MNIST3D from IDX files and ShapeNet binvox files that the tests write."""

import gzip
import struct

import numpy as np
import pytest

from gen3d.data import vol_files, vol_procedural
from gen3d.data.volumes import VolumeDataConfig, check_volumes, load_volumes


def test_primitives_are_deterministic_and_geometrically_right():
    a, la = vol_procedural.primitives(60, seed=3)
    b, lb = vol_procedural.primitives(60, seed=3)
    c, _ = vol_procedural.primitives(60, seed=4)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert a.shape == (60, 30, 30, 30) and a.dtype == np.uint8 and set(np.unique(a)) <= {0, 1}
    assert set(la) == set(range(len(vol_procedural.PRIMITIVES)))
    counts = a.reshape(60, -1).sum(1)
    names = vol_procedural.PRIMITIVES
    # volumes of the solids, in voxels (bounding half-size a = 5): sphere 4/3 pi a^3,
    # cube (1.3 a)^3; rotations and voxelisation keep them within 10%
    sph = counts[la == names.index("sphere")]
    assert np.allclose(sph, 4 / 3 * np.pi * 125, rtol=0.1)
    cube = counts[la == names.index("cube")]
    assert np.allclose(cube, 6.5**3, rtol=0.1)
    # spheres are never cut: their centres lie 5..25 voxels along each axis (shift 0..20)
    for v in a[la == names.index("sphere")]:
        z, y, x = np.nonzero(v)
        centre = np.array([x.mean(), y.mean(), z.mean()])
        assert ((centre >= 4.4) & (centre <= 24.6)).all()
    # the translations span the range: some shapes near each end
    cz = np.array([np.nonzero(v)[0].mean() for v in a])
    assert cz.min() < 9 and cz.max() > 20


def test_necker_cubes_are_wire_frames_of_a_10_cube():
    v = vol_procedural.necker_cubes(6, seed=1)
    assert v.shape == (6, 40, 40, 40)
    c = 19.5
    for vol in v:
        z, y, x = np.nonzero(vol)
        r = np.sqrt((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2)
        # edge points lie between the edge middles (5 sqrt 2) and the corners (5 sqrt 3)
        assert r.min() > 5 * 2**0.5 - 1 and r.max() < 5 * 3**0.5 + 1
        assert 100 < len(r) < 220  # 12 edges of about 10 voxels
    assert not np.array_equal(v[0], v[1])


def test_procedural_sets_are_cached_on_disk(tmp_path, monkeypatch):
    cfg = VolumeDataConfig(dataset="primitives", n_train=10, n_test=4, size=16,
                           cache_dir=str(tmp_path))
    tr, te = load_volumes(cfg)
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 2 and tr.volumes.shape == (10, 16, 16, 16) and tr.n_classes == 6

    def boom(*a, **k):
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(vol_procedural, "primitives", boom)
    tr2, te2 = load_volumes(cfg)
    assert np.array_equal(tr.volumes, tr2.volumes) and np.array_equal(te.labels, te2.labels)
    assert not np.array_equal(tr.volumes[:4], te.volumes)  # train and test differ
    monkeypatch.undo()
    files[0].write_bytes(b"torn")  # a torn cache file is made again, with a warning
    with pytest.warns(UserWarning, match="unreadable volume cache"):
        tr3, te3 = load_volumes(cfg)
    assert np.array_equal(te.volumes, te3.volumes) and np.array_equal(tr.volumes, tr3.volumes)


def write_idx(path, arr: np.ndarray, gz: bool = False) -> None:
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = head + arr.astype(np.uint8).tobytes()
    if gz:
        data = gzip.compress(data)
        path = path.with_name(path.name + ".gz")
    path.write_bytes(data)


def test_mnist3d_extrudes_digits(tmp_path):
    rng = np.random.default_rng(0)
    imgs = (rng.random((5, 28, 28)) > 0.7).astype(np.uint8) * 255
    write_idx(tmp_path / "train-images-idx3-ubyte", imgs, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(5))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs[:2])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([7, 1]))
    cfg = VolumeDataConfig(dataset="mnist3d", path=str(tmp_path), n_train=4, n_test=2)
    tr, te = load_volumes(cfg)
    assert tr.volumes.shape == (4, 30, 30, 30) and list(te.labels) == [7, 1]
    # row r, column q of the digit is voxel (y = 29 - (r + 1), x = q + 1) in z = 11..18
    for i in range(4):
        want = imgs[i] > 127
        for z in range(30):
            sl = tr.volumes[i, z, ::-1][1:29, 1:29]
            assert np.array_equal(sl, want if 11 <= z < 19 else np.zeros_like(want))


def test_mnist3d_missing_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_volumes(VolumeDataConfig(dataset="mnist3d", path=str(tmp_path / "nope")))


def binvox_bytes(occ_xyz: np.ndarray, d: int) -> bytes:
    """Encode a volume indexed [x, y, z] the binvox way: x slowest, then z, then y, as runs."""
    flat = occ_xyz.transpose(0, 2, 1).reshape(-1).astype(np.uint8)
    runs = []
    i = 0
    while i < len(flat):
        j = i
        while j < len(flat) and flat[j] == flat[i] and j - i < 255:
            j += 1
        runs += [flat[i], j - i]
        i = j
    head = f"#binvox 1\ndim {d} {d} {d}\ntranslate 0 0 0\nscale 1\ndata\n".encode()
    return head + bytes(runs)


def test_binvox_reading_and_resampling(tmp_path):
    d = 10
    occ = np.zeros((d, d, d), np.uint8)  # [x, y, z]
    occ[2, 7, 4] = occ[3, 7, 4] = occ[8, 1, 9] = 1
    (tmp_path / "m.binvox").write_bytes(binvox_bytes(occ, d))
    vol = vol_files.read_binvox(tmp_path / "m.binvox")
    assert vol.shape == (d, d, d)
    assert set(zip(*np.nonzero(vol))) == {(4, 7, 2), (4, 7, 3), (9, 1, 8)}  # (z, y, x)
    big = vol_files.resample(vol, 30)  # each voxel becomes a 3^3 block
    assert big.sum() == 3 * 27 and big[12:15, 21:24, 6:9].all()
    small = vol_files.resample(vol, 5)  # any occupied source voxel turns its 2^3 block on
    assert set(zip(*np.nonzero(small))) == {(2, 3, 1), (4, 0, 4)}


def test_shapenet_classes_from_synsets(tmp_path):
    rng = np.random.default_rng(1)
    for syn, n in (("02691156", 3), ("03001627", 2)):
        for k in range(n):
            p = tmp_path / syn / f"model{k}" / "model.binvox"
            p.parent.mkdir(parents=True)
            p.write_bytes(binvox_bytes((rng.random((8, 8, 8)) > 0.8).astype(np.uint8), 8))
    (tmp_path / "classes.txt").write_text("# synsets\n02691156 airplane\n03001627 chair\n")
    cfg = VolumeDataConfig(dataset="shapenet", path=str(tmp_path), n_train=4, n_test=1,
                           synset_file=str(tmp_path / "classes.txt"))
    tr, te = load_volumes(cfg)
    assert tr.volumes.shape == (4, 30, 30, 30) and tr.class_names == ["02691156", "03001627"]
    assert sorted(list(tr.labels) + list(te.labels)) == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="does not exist"):
        load_volumes(VolumeDataConfig(dataset="shapenet", path=str(tmp_path / "x"),
                                      synsets=["02691156"]))
    with pytest.raises(ValueError, match="no .binvox files"):
        load_volumes(VolumeDataConfig(dataset="shapenet", path=str(tmp_path),
                                      synsets=["04379243"]))
    with pytest.raises(ValueError, match="synsets"):
        load_volumes(VolumeDataConfig(dataset="shapenet", path=str(tmp_path)))


@pytest.mark.parametrize("data,match", [
    (b"PK\x03\x04 not a binvox", "not a binvox file"),
    (b"#binvox 1\ndim 4 4 4\ndata\n\x00\x40\x01", "truncated"),
    (b"#binvox 1\ndim 4 4 4\ndata\n\x00\x10\x01\x10", "cover 32 voxels"),
    (b"#binvox 1\ntranslate 0 0 0\ndata\n\x00\x40", "no 'dim"),
    (b"#binvox 1\ndim 4 4 4\n", "header ends"),
])
def test_corrupt_binvox_is_named(tmp_path, data, match):
    p = tmp_path / "bad.binvox"
    p.write_bytes(data)
    with pytest.raises(ValueError, match="bad.binvox.*" + match):
        vol_files.read_binvox(p)


def test_check_volumes_names_the_problem():
    with pytest.raises(ValueError, match=r"shape \(n, N, N, N\)"):
        check_volumes(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="30\\^3 is expected"):
        check_volumes(np.zeros((2, 8, 8, 8)), size=30)
    with pytest.raises(ValueError, match="binary"):
        check_volumes(np.full((1, 4, 4, 4), 0.5))
    assert check_volumes(np.ones((1, 4, 4, 4), np.float32)).dtype == np.uint8
