import gc
import os
import subprocess
import sys

import numpy as np
import pytest

from envs.renderer import Lights, MeshRenderer
from gen3d import geometry as geo
from gen3d import primitives as prim

SIDE_COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], np.float32)


def test_sphere_silhouette_matches_the_projected_disc():
    cam = geo.Camera()
    r = MeshRenderer(128, 128, max_batch=1, camera=cam)
    try:
        for radius in (0.5, 0.9):
            mask = r.render_meshes([prim.sphere(radius, 4)], mask=True).mask[0]
            d = np.linalg.norm(cam.eye)
            rho = np.tan(np.arcsin(radius / d)) / np.tan(np.radians(cam.fov_y_deg / 2)) * 64
            assert mask.sum() == pytest.approx(np.pi * rho**2, rel=0.02)
    finally:
        r.release()


@pytest.mark.parametrize("aa, side", [
    ((0, 0, 0), 4),               # +z faces the camera
    ((0, np.pi / 2, 0), 1),       # a quarter turn about y brings -x to the front
    ((np.pi / 2, 0, 0), 2),       # a quarter turn about x brings +y to the front
    ((0, -np.pi / 2, 0), 0),
    ((0, np.pi, 0), 5),
])
def test_cube_shows_the_expected_side_and_depth(aa, side):
    r = MeshRenderer(65, 65, max_batch=1)  # odd size: pixel (32, 32) is the optical axis
    try:
        out = r.render_meshes([prim.cube()], [SIDE_COLOURS], rotation=np.array([aa], np.float32),
                              depth=True, mask=True, as_float=True)
        px = out.rgb[0, 32, 32]
        # white lights: the pixel is the side's albedo times a grey shade
        np.testing.assert_allclose(px / px.max(), SIDE_COLOURS[side], atol=0.02)
        assert out.depth[0, 32, 32] == pytest.approx(4.0 - 0.5, abs=1e-4)
        assert out.mask[0, 32, 32] and not out.mask[0, 0, 0] and out.depth[0, 0, 0] == 0
    finally:
        r.release()


def test_depth_at_centre_is_distance_to_nearest_point_of_a_turned_cube():
    r = MeshRenderer(65, 65, max_batch=1)
    try:
        out = r.render_meshes([prim.cube()], rotation=np.array([[0, np.pi / 4, 0]], np.float32), depth=True)
        assert out.depth[0, 32, 32] == pytest.approx(4.0 - 0.5 * np.sqrt(2), abs=2e-3)
    finally:
        r.release()


def test_projected_vertices_land_on_the_mask(renderer):
    lengths = np.random.default_rng(2).uniform(0.5, 1.0, (1, 162)).astype(np.float32)
    out = renderer.render_rays(lengths, mask=True)
    px, _ = renderer.camera.project(geo.ray_mesh(lengths[0]) * 0.97, 64, 64)  # just inside
    cols, rows = np.floor(px).astype(int).T
    inside = (rows >= 0) & (rows < 64) & (cols >= 0) & (cols < 64)
    assert out.mask[0, rows[inside], cols[inside]].mean() > 0.97


def _random_batch(rng, b):
    return geo.random_ray_meshes(rng, b)


def test_atlas_equals_one_by_one_and_is_deterministic(renderer):
    rng = np.random.default_rng(3)
    L, R, T, C = _random_batch(rng, 40)
    batch = renderer.render_rays(L, R, T, C, depth=True, mask=True)
    again = renderer.render_rays(L, R, T, C, depth=True, mask=True)
    assert batch.rgb.tobytes() == again.rgb.tobytes() and batch.depth.tobytes() == again.depth.tobytes()
    singles = [renderer.render_rays(L[i:i + 1], R[i:i + 1], T[i:i + 1], C[i:i + 1], mask=True)
               for i in range(len(L))]
    one = np.concatenate([s.rgb for s in singles]).astype(int)
    diff = np.abs(batch.rgb.astype(int) - one)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.001
    assert (batch.mask == np.concatenate([s.mask for s in singles])).mean() >= 0.999
    assert batch.mask.any(axis=(1, 2)).all(), "every mesh is visible"


def test_a_multi_column_atlas_gives_the_same_images(renderer):
    limit = int(renderer.ctx.info["GL_MAX_TEXTURE_SIZE"])
    wide = MeshRenderer(64, 64, max_batch=limit // 64 + 8, ctx=renderer.ctx)  # too tall for one column
    assert wide.atlas.cols > 1
    L, R, T, C = _random_batch(np.random.default_rng(6), 40)
    diff = np.abs(wide.render_rays(L, R, T, C).rgb.astype(int) - renderer.render_rays(L, R, T, C).rgb)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.001


def test_batches_larger_than_the_atlas_are_chunked(renderer):
    L, R, T, C = _random_batch(np.random.default_rng(4), 70)  # max_batch is 64
    big = renderer.render_rays(L, R, T, C)
    np.testing.assert_array_equal(big.rgb[64:], renderer.render_rays(L[64:], R[64:], T[64:], C[64:]).rgb)



def test_reused_read_back_gives_the_same_images_and_is_overwritten_by_the_next_call(renderer):
    L, R, T, C = _random_batch(np.random.default_rng(8), 70)
    fresh = renderer.render_rays(L[:30], R[:30], T[:30], C[:30], depth=True)
    kept = renderer.render_rays(L[:30], R[:30], T[:30], C[:30], depth=True, reuse=True)
    np.testing.assert_array_equal(kept.rgb, fresh.rgb)
    np.testing.assert_array_equal(kept.depth, fresh.depth)
    first = kept.rgb.copy()
    later = renderer.render_rays(L[30:60], R[30:60], T[30:60], C[30:60], reuse=True)
    assert np.shares_memory(kept.rgb, later.rgb) and not np.array_equal(kept.rgb, first)
    # a batch larger than the atlas is drawn in chunks, so it comes back in fresh memory
    big = renderer.render_rays(L, R, T, C, reuse=True)
    assert not np.shares_memory(big.rgb, later.rgb)
    diff = np.abs(big.rgb[:30].astype(int) - fresh.rgb)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.001

def test_per_face_colours_follow_the_face(renderer):
    lengths = np.full((1, 162), 0.8, np.float32)
    faces = np.zeros((1, 320, 3), np.float32)
    centres = geo.ico_rays()[geo.ico_faces()].mean(1)
    faces[0, centres[:, 0] > 0] = (1, 0, 0)  # right half red, left half green
    faces[0, centres[:, 0] <= 0] = (0, 1, 0)
    img = renderer.render_rays(lengths, colours=faces, as_float=True).rgb[0]
    assert img[32, 40, 0] > 0.3 and img[32, 40, 1] == 0
    assert img[32, 24, 1] > 0.3 and img[32, 24, 0] == 0


def test_float_colour_attachment_is_not_quantised():
    r = MeshRenderer(32, 32, max_batch=1, float_colour=True, lights=Lights((), (), (0.5, 0.5, 0.5)))
    try:
        c = np.array([[0.3001, 0.5, 0.7]], np.float32)
        img = r.render_rays(np.full((1, 162), 0.8, np.float32), colours=c, as_float=True).rgb[0]
        np.testing.assert_allclose(img[16, 16], c[0] * 0.5, atol=1e-6)
    finally:
        r.release()


def test_memory_does_not_grow_with_calls(renderer):
    import resource
    L, R, T, C = _random_batch(np.random.default_rng(5), 64)
    for _ in range(30):
        renderer.render_rays(L, R, T, C, depth=True, mask=True)
        renderer.render_meshes([prim.cube()] * 8)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(300):
        renderer.render_rays(L, R, T, C, depth=True, mask=True)
        renderer.render_meshes([prim.cube()] * 8)
    gc.collect()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 8, f"resident memory grew by {grown_mb:.1f} MB over 300 calls"


# ---------------------------------------------------------------- bad input

GOOD = np.full((2, 162), 0.8, np.float32)


@pytest.mark.parametrize("kwargs, words", [
    ({"lengths": np.where(np.arange(162) == 5, np.nan, GOOD)}, ["lengths", "NaN"]),
    ({"lengths": np.where(np.arange(162) == 5, np.inf, GOOD)}, ["lengths", "inf"]),
    ({"lengths": GOOD[:, :100]}, ["lengths", "shape", "162"]),
    ({"lengths": GOOD.astype(np.complex64)}, ["lengths", "dtype"]),
    ({"lengths": np.array([["a"] * 162] * 2)}, ["lengths", "dtype"]),
    ({"lengths": -GOOD}, ["lengths", ">= 0"]),
    ({"lengths": np.zeros((0, 162), np.float32)}, ["lengths", "empty"]),
    ({"lengths": GOOD, "rotation": np.zeros((3, 3))}, ["rotation", "shape"]),
    ({"lengths": GOOD, "translation": np.full((2, 3), np.nan)}, ["translation", "NaN"]),
    ({"lengths": GOOD, "colours": np.full((2, 162, 3), 2.0, np.float32)}, ["colours", "[0, 1]"]),
    ({"lengths": GOOD, "colours": np.ones((2, 7, 3), np.float32)}, ["colours", "shape"]),
    ({"lengths": GOOD, "scale": np.zeros(2, np.float32)}, ["scale", "> 0"]),
])
def test_bad_input_raises_a_value_error_naming_the_argument(renderer, kwargs, words):
    with pytest.raises(ValueError) as e:
        renderer.render_rays(**kwargs)
    for w in words:
        assert w in str(e.value)
    # the renderer still works after a bad request
    assert renderer.render_rays(GOOD, mask=True).mask.any()


def test_bad_meshes_and_atlas_sizes_raise(renderer):
    with pytest.raises(ValueError, match="empty"):
        renderer.render_meshes([])
    with pytest.raises(ValueError, match="face"):
        renderer.render_meshes([(np.zeros((3, 3)), np.array([[0, 1, 5]]))])
    limit = int(renderer.ctx.info["GL_MAX_TEXTURE_SIZE"])
    with pytest.raises(ValueError, match="GL's limit.*lower max_batch"):
        MeshRenderer(limit // 2, limit // 2, max_batch=64, ctx=renderer.ctx)
    with pytest.raises(ValueError, match="width"):
        MeshRenderer(0, 64, ctx=renderer.ctx)


def test_missing_gl_names_the_packages_and_the_setup_command():
    code = "from envs.renderer import MeshRenderer\nMeshRenderer(8, 8)"
    env = dict(os.environ, GLCONTEXT_LINUX_LIBEGL="/nonexistent/libEGL.so.1")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "GLUnavailableError" in p.stderr and "libegl1" in p.stderr and "make setup" in p.stderr
