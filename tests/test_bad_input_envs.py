"""Bad input to the renderer and the environments: each kind is refused at once with a
ValueError that names the argument (never a black image, NaN rewards or an error from GL),
and values at the edge of the bounds still render what geometry says they should."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import mesh_env, spaces
from envs.renderer import Lights, MeshRenderer, atlas_layout, largest_batch
from gen3d import geometry as geo
from gen3d import primitives as prim

GOOD = np.full((2, 162), 0.8, np.float32)
NAN, INF = float("nan"), float("inf")


def _with(i: int, v: float, shape=(2, 3)) -> np.ndarray:
    a = np.zeros(shape, np.float32)
    a.flat[i] = v
    return a


# ---------------------------------------------------------------- the renderer's inputs

@pytest.mark.parametrize("kwargs, field", [
    ({"lengths": np.full((2, 162), 1e6, np.float32)}, "lengths"),
    ({"lengths": GOOD + 1.3}, "lengths"),                       # 2.1, over MAX_LENGTH
    ({"lengths": np.where(np.arange(162) == 7, -INF, GOOD)}, "lengths"),
    ({"lengths": GOOD, "translation": np.full((2, 3), 1e30)}, "translation"),
    ({"lengths": GOOD, "translation": _with(4, -1.01)}, "translation"),
    ({"lengths": GOOD, "translation": _with(0, NAN)}, "translation"),
    ({"lengths": GOOD, "scale": np.full(2, 1e30, np.float32)}, "scale"),
    ({"lengths": GOOD, "scale": np.array([1.0, 3.0], np.float32)}, "scale"),  # reach 2.4
    ({"lengths": GOOD, "scale": np.array([1.0, NAN], np.float32)}, "scale"),
    ({"lengths": GOOD, "scale": np.array([1.0, -1.0], np.float32)}, "scale"),
    ({"lengths": GOOD, "rotation": _with(1, INF)}, "rotation"),
    ({"lengths": GOOD, "rotation": np.tile(2 * np.eye(3, dtype=np.float32), (2, 1, 1))}, "rotation"),
    ({"lengths": GOOD, "colours": _with(2, 1.5)}, "colours"),
    ({"lengths": GOOD, "colours": _with(5, NAN)}, "colours"),
])
def test_render_rays_refuses_each_bad_value_by_name(renderer, kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        renderer.render_rays(**kwargs)
    assert renderer.render_rays(GOOD, mask=True).mask.all(axis=0).any()  # still draws


@pytest.mark.parametrize("kwargs, field", [
    ({"translation": np.array([[0, 2.0, 0]], np.float32)}, "translation"),
    ({"scale": np.array([1e30], np.float32)}, "scale"),
    ({"scale": np.array([3.0], np.float32)}, "scale"),           # a cube's corner at 2.6
    ({"rotation": np.array([[NAN, 0, 0]], np.float32)}, "rotation"),
])
def test_render_meshes_refuses_far_off_or_non_finite_poses(renderer, kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        renderer.render_meshes([prim.cube()], **kwargs)


@pytest.mark.parametrize("meshes, words", [
    ([(np.full((3, 3), NAN), np.array([[0, 1, 2]]))], ["meshes[0] vertices", "NaN"]),
    ([(np.eye(3), np.array([[0.0, 1.0, 2.0]]))], ["meshes[0] faces", "integer"]),
    ([prim.cube(), "cube"], ["meshes[1]", "Mesh"]),
    ([(np.eye(3) * 3, np.array([[0, 1, 2]]))], ["lengths", "reaches 3"]),
])
def test_render_meshes_names_the_bad_mesh(renderer, meshes, words):
    with pytest.raises(ValueError) as e:
        renderer.render_meshes(meshes)
    for w in words:
        assert w in str(e.value)


# ---------------------------------------------------------------- construction: settings, GL limits

@pytest.mark.parametrize("kwargs, field", [
    ({"width": -3}, "width"), ({"width": 0}, "width"), ({"height": 2.5}, "height"),
    ({"width": True}, "width"), ({"height": "64"}, "height"), ({"max_batch": 0}, "max_batch"),
    ({"camera": geo.Camera(eye=(0, 0, NAN))}, "camera.eye"),
    ({"camera": geo.Camera(target=(0, INF, 0))}, "camera.target"),
    ({"camera": geo.Camera(eye=(0, 0, 0))}, "camera"),              # eye == target
    ({"camera": geo.Camera(up=(0, 0, 2))}, "camera.up"),            # along the line of sight
    ({"camera": geo.Camera(fov_y_deg=NAN)}, "camera.fov_y_deg"),
    ({"camera": geo.Camera(fov_y_deg=180.0)}, "camera.fov_y_deg"),
    ({"camera": geo.Camera(near=0.0)}, "camera.near"),
    ({"camera": geo.Camera(near=5.0, far=2.0)}, "camera.near"),
    ({"camera": geo.Camera(far=INF)}, "camera.far"),
    ({"camera": (0, 0, 4)}, "camera"),
    ({"lights": Lights(directions=((0, 0, 0),), colours=((1, 1, 1),))}, "lights.directions[0]"),
    ({"lights": Lights(directions=((NAN, 0, 1),), colours=((1, 1, 1),))}, "lights.directions[0]"),
    ({"lights": Lights(directions=((0, 0, 1),), colours=((1, -1, 1),))}, "lights.colours[0]"),
    ({"lights": Lights(ambient=(0.2, INF, 0.2))}, "lights.ambient"),
    ({"lights": Lights(directions=((0, 0, 1),) * 4, colours=((1, 1, 1),) * 4)}, "lights"),
])
def test_construction_refuses_bad_settings_by_name(renderer, kwargs, field):
    with pytest.raises(ValueError, match=f"^{field.replace('[', '.').replace(']', '.')}"):
        MeshRenderer(**{"width": 8, "height": 8, "max_batch": 1, "ctx": renderer.ctx, **kwargs})


def test_set_camera_and_set_lights_check_too(renderer):
    with pytest.raises(ValueError, match="^camera.eye"):
        renderer.set_camera(geo.Camera(eye=(INF, 0, 4)))
    with pytest.raises(ValueError, match="^lights.ambient"):
        renderer.set_lights(Lights(ambient=(NAN, 0, 0)))
    assert renderer.render_rays(GOOD, mask=True).mask.any()


def test_gl_limits_are_checked_at_construction_with_the_limit_in_the_message(renderer):
    info = renderer.ctx.info
    tex = int(info["GL_MAX_TEXTURE_SIZE"])
    side = min(int(info["GL_MAX_RENDERBUFFER_SIZE"]), tex, *info["GL_MAX_VIEWPORT_DIMS"])
    # the atlas of 64x64 tiles fits (128 x 128 tiles), the per-mesh data textures do not
    with pytest.raises(ValueError, match=f"max_batch={tex + 1} .*GL_MAX_TEXTURE_SIZE limit of {tex}"):
        MeshRenderer(64, 64, max_batch=tex + 1, ctx=renderer.ctx)
    with pytest.raises(ValueError, match=f"^width={side + 1} .*{side}"):
        MeshRenderer(side + 1, 8, max_batch=1, ctx=renderer.ctx)
    with pytest.raises(ValueError, match=f"max_batch=5 .*limit of {side}.*at most 1"):
        MeshRenderer(side // 2 + 1, side // 2 + 1, max_batch=5, ctx=renderer.ctx)


def test_largest_batch_is_the_last_layout_that_fits():
    # one column of tiles while it fits, else a square-ish grid; power-of-two framebuffers
    assert largest_batch(64, 64, 16384, 16384) == 16384          # the data textures bind
    assert largest_batch(1024, 1024, 16384, 16384) == 256        # 16 x 16 tiles
    assert largest_batch(16, 8192, 16384, 16384) == 6            # 3 columns x 2 rows
    assert largest_batch(20000, 8, 16384, 16384) == 0
    for w, h in ((64, 64), (100, 37), (1024, 1024), (16, 8192)):
        n = largest_batch(w, h, 16384, 16384)
        assert atlas_layout(n, w, h, 16384) is not None
        assert n == 16384 or atlas_layout(n + 1, w, h, 16384) is None


def test_clip_batch_lowers_max_batch_to_the_limit_and_still_draws_every_mesh(renderer):
    info = renderer.ctx.info
    side = min(int(info["GL_MAX_RENDERBUFFER_SIZE"]), int(info["GL_MAX_TEXTURE_SIZE"]))
    r = MeshRenderer(16, side // 2, max_batch=50, clip_batch=True, ctx=renderer.ctx)
    assert r.max_batch == r.batch_limit == 6  # 3 columns x 2 rows of tiles
    out = r.render_rays(np.full((7, 162), 0.5, np.float32), mask=True)  # two chunks
    assert out.mask.shape == (7, side // 2, 16) and out.mask.any(axis=(1, 2)).all()


# ---------------------------------------------------------------- the environments

@pytest.mark.parametrize("kwargs, field", [
    ({"width": -3}, "width"), ({"width": 0}, "width"), ({"width": 2.5}, "width"),
    ({"height": "64"}, "height"), ({"height": True}, "height"),
    ({"sigma": NAN}, "sigma"), ({"sigma": INF}, "sigma"), ({"sigma": 0.0}, "sigma"),
    ({"sigma": -0.1}, "sigma"), ({"sigma": "0.1"}, "sigma"), ({"sigma": None}, "sigma"),
    ({"render_mode": "human"}, "render_mode"), ({"render_mode": "ansi"}, "render_mode"),
    ({"render_mode": "rgb_array_list"}, "render_mode"),
    ({"camera": geo.Camera(eye=(NAN, 0, 4))}, "camera.eye"),
    ({"lights": Lights(ambient=(0, 0, NAN))}, "lights.ambient"),
])
def test_env_construction_refuses_bad_settings_by_name(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        gym.make(envs.ENV_ID, **kwargs)
    with pytest.raises(ValueError, match=f"^{field}"):
        gym.make_vec(envs.ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)


def test_unsupported_render_mode_lists_the_supported_ones():
    with pytest.raises(ValueError) as e:
        gym.make(envs.ENV_ID, render_mode="human")
    assert "'human'" in str(e.value) and "rgb_array" in str(e.value) and "None" in str(e.value)
    assert gym.make(envs.ENV_ID, render_mode="rgb_array").render_mode == "rgb_array"


@pytest.mark.parametrize("num_envs", [0, -5, 2.5, True])
def test_vector_env_refuses_a_bad_num_envs(num_envs):
    with pytest.raises(ValueError, match="^num_envs"):
        gym.make_vec(envs.ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point")


def _action(**parts) -> np.ndarray:
    a = spaces.pack(np.full((1, 162), 0.8, np.float32))[0]
    for field, (i, v) in parts.items():
        a[spaces.SLICES[field].start + i] = v
    return a


@pytest.mark.parametrize("parts, words", [
    ({"lengths": (3, 1e6)}, ["lengths[3]", "1e+06"]),
    ({"lengths": (0, 2.001)}, ["lengths[0]", "2.001"]),
    ({"lengths": (161, -0.01)}, ["lengths[161]"]),
    ({"rotation": (1, 3.2)}, ["rotation[1]"]),
    ({"rotation": (2, NAN)}, ["rotation[2]", "nan"]),
    ({"translation": (0, 1e30)}, ["translation[0]", "1e+30"]),
    ({"translation": (2, -1.5)}, ["translation[2]"]),
    ({"colours": (5, 1.2)}, ["colours[5]", "vertex 1, channel 2"]),
    ({"colours": (0, -INF)}, ["colours[0]"]),
])
def test_env_step_refuses_actions_outside_the_action_space_naming_the_field(parts, words):
    env = gym.make(envs.ENV_ID, target_source=mesh_env.ImageTargets(np.zeros((1, 64, 64, 3), np.uint8)))
    env.reset(seed=0)
    bad = _action(**parts)
    assert not env.action_space.contains(bad)
    with pytest.raises(ValueError) as e:
        env.step(bad)
    for w in ["action:", "of mesh 0", "outside its bounds", *words]:
        assert w in str(e.value)
    env.reset(seed=0)
    assert env.step(_action())[2]  # a good action still steps


@pytest.mark.parametrize("action, words", [
    (np.zeros(100, np.float32), ["action", "shape", str(spaces.ACTION_DIM)]),
    ("abc", ["action", "float"]),
    (np.zeros((2, spaces.ACTION_DIM), np.float32), ["action", "shape"]),
])
def test_env_step_refuses_malformed_actions(action, words):
    env = gym.make(envs.ENV_ID, target_source=mesh_env.ImageTargets(np.zeros((1, 64, 64, 3), np.uint8)))
    env.reset(seed=0)
    with pytest.raises(ValueError) as e:
        env.step(action)
    for w in words:
        assert w in str(e.value)


def test_vector_env_names_the_mesh_and_field_of_a_bad_action():
    venv = mesh_env.MeshRenderVectorEnv(num_envs=3)
    venv.reset(options={"targets": np.zeros((3, 64, 64, 3), np.uint8)})
    actions = np.stack([_action(), _action(), _action(translation=(1, 1e30))])
    with pytest.raises(ValueError, match=r"^actions: translation\[1\] of mesh 2 is 1e\+30"):
        venv.step(actions)
    actions[2] = _action()
    assert np.isfinite(venv.step(actions)[1]).all()


def test_gaussian_reward_refuses_a_nan_sigma():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="^sigma"):
        spaces.gaussian_loglik(img, img, NAN)


# ---------------------------------------------------------------- valid edge values render right

def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise in (x, y)) of 2D points: Andrew's monotone chain."""
    pts = sorted(map(tuple, points))

    def turn(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and turn(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]
    return np.array(half(pts) + half(pts[::-1]))


def _inside_hull(hull: np.ndarray, q: np.ndarray) -> np.ndarray:
    inside = np.ones(len(q), bool)
    for a, b in zip(hull, np.roll(hull, -1, 0)):
        inside &= (b[0] - a[0]) * (q[:, 1] - a[1]) - (b[1] - a[1]) * (q[:, 0] - a[0]) >= 0
    return inside


@pytest.mark.parametrize("rotation, translation", [
    ((np.pi, 0, 0), (1.0, -1.0, 1.0)),
    ((0, -np.pi, np.pi), (-1.0, 1.0, -1.0)),
    ((0, 0, 0), (1.0, 1.0, -1.0)),
])
def test_a_mesh_at_the_bounds_has_the_silhouette_of_its_projected_hull(renderer, rotation, translation):
    """Every ray at MAX_LENGTH makes a convex polyhedron: its silhouette is the convex hull of
    its projected vertices, cut by the image's border."""
    lengths = np.full((1, 162), geo.MAX_LENGTH, np.float32)
    rot, tr = np.array([rotation], np.float32), np.array([translation], np.float32)
    mask = renderer.render_rays(lengths, rot, tr, colours=np.ones((1, 3), np.float32), mask=True).mask[0]
    verts = geo.transform_points(geo.ray_mesh(lengths[0]), rot[0], tr[0])
    px, _ = renderer.camera.project(verts, 64, 64)
    rows, cols = np.mgrid[0:64, 0:64]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], 1)
    want = _inside_hull(_hull(px * [1, -1]), centres * [1, -1]).reshape(64, 64)  # y up: ccw
    assert want.sum() > 200 and (mask != want).sum() <= 0.02 * want.sum()


def test_actions_at_the_bounds_step_and_match_the_renderer(renderer):
    lo, hi = spaces.bounds()
    for a in (hi, lo, np.where(np.arange(spaces.ACTION_DIM) % 2, lo, hi)):
        a = np.where(np.arange(spaces.ACTION_DIM) < 162, geo.MAX_LENGTH, a).astype(np.float32)
        env = gym.make(envs.ENV_ID, target_source=mesh_env.ImageTargets(np.zeros((1, 64, 64, 3), np.uint8)))
        env.reset(seed=0)
        obs, reward, *_ = env.step(a)
        want = mesh_env.render_actions(renderer, a[None], mask=True)
        np.testing.assert_array_equal(obs, want.rgb[0])
        assert want.mask.any() and np.isfinite(reward)
    zero = renderer.render_rays(np.zeros((1, 162), np.float32), mask=True)  # lengths at 0: a point
    assert not zero.mask.any()


def test_a_vector_env_larger_than_one_draw_renders_in_chunks(monkeypatch, renderer):
    monkeypatch.setattr(mesh_env, "MAX_DRAW_BATCH", 4)
    monkeypatch.setattr(mesh_env, "_RENDERERS", {})
    rng = np.random.default_rng(0)
    venv = mesh_env.MeshRenderVectorEnv(num_envs=10)
    actions = np.stack([venv.target_source.action(rng) for _ in range(10)])
    want = mesh_env.render_actions(renderer, actions).rgb
    venv.reset(options={"targets": want})
    obs, rewards, *_ = venv.step(actions)
    assert venv.renderer.max_batch == 4
    diff = np.abs(obs.astype(int) - want)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.001
    np.testing.assert_allclose(rewards, spaces.gaussian_loglik(want, obs, 0.1))
    venv.close()


def test_the_likelihood_takes_batches_of_one_shape_in_its_units_and_says_so_otherwise():
    img = np.full((2, 8, 8, 3), 100, np.uint8)
    for target, render, words in [
            (img[0], img[0], r"batch of images \(B,H,W,C\).*image\[None\]"),
            (img, img[:1], "same shape"),
            (img.astype(np.float32), img, r"outside \[0,1\].*divide 0..255 floats by 255"),
            (img.astype(np.int16), img, "uint8 .* or floats"),
            (np.full((2, 8, 8, 3), np.nan, np.float32), img, r"outside \[0,1\]")]:
        with pytest.raises(ValueError, match=words):
            spaces.gaussian_loglik(target, render, 0.1)
    assert spaces.gaussian_loglik(img[:0], img[:0], 0.1).shape == (0,)
    # the same images in uint8 and in [0,1] floats: the same nats
    np.testing.assert_allclose(spaces.gaussian_loglik(img, img[::-1] // 2, 0.1),
                               spaces.gaussian_loglik(img / np.float32(255),
                                                      (img[::-1] // 2) / np.float32(255), 0.1), rtol=1e-5)


def test_a_reflection_is_not_a_rotation_and_a_scale_wants_one_per_mesh(renderer):
    lengths = np.full((1, geo.N_RAYS), 0.8, np.float32)
    with pytest.raises(ValueError, match="determinant \\+1"):
        renderer.render_rays(lengths, rotation=np.diag([1.0, 1.0, -1.0])[None])
    with pytest.raises(ValueError, match=r"scale: must have shape \(1,\), got \(\)"):
        renderer.render_rays(lengths, scale=1.0)


def test_packing_checks_each_parts_shape_against_the_lengths():
    with pytest.raises(ValueError, match=r"lengths must be \(B, 162\).*lengths\[None\]"):
        spaces.pack(np.ones(geo.N_RAYS))
    with pytest.raises(ValueError, match=r"lengths must be \(B, 162\)"):
        spaces.pack(np.ones((1, 161)))
    with pytest.raises(ValueError, match=r"translation must have shape \(2, 3\)"):
        spaces.pack(np.ones((2, geo.N_RAYS)), translation=np.zeros(3))
    a = spaces.pack(np.ones((2, geo.N_RAYS)), colours=np.array([[1.0, 0, 0], [0, 1, 0]]))
    np.testing.assert_array_equal(spaces.unpack(a)["colours"][1, 5], [0, 1, 0])
