"""Rewards reduced on the GL side against the exact integer sums and the numpy reference."""

import numpy as np
import pytest

from envs import spaces
from envs.mesh_env import MeshRenderVectorEnv
from envs.renderer import MeshRenderer
from gen3d import geometry as geo


def exact_loglik(targets: np.ndarray, imgs: np.ndarray, sigma: float) -> np.ndarray:
    """The Gaussian log-likelihood from integer squared differences: exact up to float64."""
    d = (targets.astype(np.int64) - imgs.astype(np.int64)).reshape(len(imgs), -1)
    return (-0.5 * (d * d).sum(1) / (255.0 * sigma) ** 2
            - d.shape[1] * (np.log(sigma) + 0.5 * np.log(2 * np.pi)))


def assert_close_to_float32(got: np.ndarray, ref: np.ndarray, n_values: int, sigma: float) -> None:
    """Within float32 rounding of the larger of the sum's two terms: the rewards themselves
    can be near 0 where the squared error and the normalising constant cancel."""
    const = abs(n_values * (np.log(sigma) + 0.5 * np.log(2 * np.pi)))
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * (np.abs(got - const).max() + const))


def meshes(rng: np.random.Generator, b: int) -> dict:
    y = geo.real_sph_harm(geo.ico_rays(), 2)
    lengths = np.clip(0.7 + rng.normal(0, 0.15, (b, y.shape[1])) @ y.T, 0.2, 1.5)
    return {"lengths": lengths.astype(np.float32),
            "rotation": rng.uniform(-np.pi, np.pi, (b, 3)).astype(np.float32),
            "translation": rng.uniform(-0.4, 0.4, (b, 3)).astype(np.float32),
            "colours": rng.uniform(0, 1, (b, geo.N_RAYS, 3)).astype(np.float32)}


@pytest.mark.parametrize("res, batch, max_batch, sigma", [
    (16, 7, 8, 0.05),      # a tile count that fills no power of two
    (32, 63, 64, 0.1),
    (64, 1, 1, 1.0),
    (64, 256, 256, 0.3),   # the learner's request size
    (64, 150, 64, 0.1),    # three draws of up to 64: each scored against its own targets
    (64, 19, 300, 0.2),    # an atlas of several columns of tiles (300 x 64 rows is over the limit)
    (13, 5, 5, 2.0),       # widths that are no multiple of 4 (targets are packed 4 pixels a texel)
    (14, 3, 4, 0.5),
    (15, 2, 2, 0.7),
])
def test_gl_rewards_equal_the_exact_sums_and_the_numpy_reference(res, batch, max_batch, sigma):
    rng = np.random.default_rng(res + batch)
    r = MeshRenderer(res, res, max_batch=max_batch)
    try:
        m = meshes(rng, batch)
        # targets: half noise, half renders of other meshes (small differences)
        targets = np.concatenate([rng.integers(0, 256, (6, res, res, 3), dtype=np.uint8),
                                  r.render_rays(**meshes(rng, 6)).rgb])
        idx = rng.integers(0, len(targets), batch)
        r.set_targets(targets)
        imgs = r.render_rays(**m).rgb
        got, out = r.rewards_rays(idx, sigma, **m)
        assert out.rgb is None  # nothing read back but the rewards
        np.testing.assert_allclose(got, exact_loglik(targets[idx], imgs, sigma), rtol=1e-12, atol=1e-6)
        np.testing.assert_array_equal(got, spaces.gaussian_loglik(targets[idx], imgs, sigma))
        # the float path of the numpy reference (images in [0,1]) agrees to its float32 rounding
        as_float = spaces.gaussian_loglik(targets[idx] / np.float32(255), imgs / np.float32(255), sigma)
        assert_close_to_float32(got, as_float, res * res * 3, sigma)
    finally:
        r.release()


def test_a_render_scored_against_itself_gives_the_normalising_constant(renderer):
    m = meshes(np.random.default_rng(1), 9)
    renderer.set_targets(renderer.render_rays(**m).rgb)
    got, out = renderer.rewards_rays(np.arange(9), 0.1, images=True, **m)
    n = 64 * 64 * 3
    np.testing.assert_allclose(got, -n * (np.log(0.1) + 0.5 * np.log(2 * np.pi)), rtol=1e-12)
    np.testing.assert_array_equal(out.rgb, renderer.targets)  # images come when asked


def test_targets_over_several_texture_layers_are_found_by_index():
    r = MeshRenderer(16, 16, max_batch=32)
    try:
        rng = np.random.default_rng(3)
        per_layer = int(r.ctx.info["GL_MAX_TEXTURE_SIZE"]) // 16
        targets = rng.integers(0, 256, (2 * per_layer + 37, 16, 16, 3), dtype=np.uint8)
        r.set_targets(targets)
        m = meshes(rng, 32)
        imgs = r.render_rays(**m).rgb
        # the first and last image of each layer, and the partial last layer
        idx = np.array([0, per_layer - 1, per_layer, 2 * per_layer - 1, 2 * per_layer,
                        len(targets) - 1] * 5 + [17, 2 * per_layer + 5])
        got, _ = r.rewards_rays(idx, 0.1, **m)
        np.testing.assert_allclose(got, exact_loglik(targets[idx], imgs, 0.1), rtol=1e-12, atol=1e-6)
    finally:
        r.release()


def test_bad_reward_requests_get_errors_that_name_the_problem(renderer):
    m = meshes(np.random.default_rng(4), 3)
    renderer.set_targets(np.zeros((4, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"target_idx.*\[0, 4\)"):
        renderer.rewards_rays(np.array([0, 1, 4]), 0.1, **m)
    with pytest.raises(ValueError, match="target_idx: need 3"):
        renderer.rewards_rays(np.array([0, 1]), 0.1, **m)
    with pytest.raises(ValueError, match="target_idx: need 3 integer"):
        renderer.rewards_rays(np.array([0.0, 1.0, 2.0]), 0.1, **m)
    for sigma in (0.0, -1.0, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="sigma: the pixel noise must be a finite number > 0"):
            renderer.rewards_rays(np.arange(3), sigma, **m)
    with pytest.raises(ValueError, match=r"targets: need uint8 images of shape \(N, 64, 64, 3\)"):
        renderer.set_targets(np.zeros((4, 32, 32, 3), np.uint8))
    # the renderer still serves a good request
    assert renderer.rewards_rays(np.arange(3), 0.1, **m)[0].shape == (3,)
    r = MeshRenderer(16, 16, max_batch=2, float_colour=True)
    try:
        with pytest.raises(ValueError, match="float_colour=False"):
            r.set_targets(np.zeros((1, 16, 16, 3), np.uint8))
    finally:
        r.release()


def test_vector_env_scores_on_the_gl_side_as_numpy_does():
    rng = np.random.default_rng(6)
    n = 5
    gl_env = MeshRenderVectorEnv(num_envs=n, width=32, height=32, sigma=0.1)
    np_env = MeshRenderVectorEnv(num_envs=n, width=32, height=32, sigma=0.1, reward="numpy")
    a = np.stack([gl_env.target_source.action(rng) for _ in range(n)])
    target_set = rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    idx = np.array([8, 0, 3, 3, 5])
    obs, _ = gl_env.reset(options={"target_set": target_set, "target_idx": idx, "images": False})
    assert obs is None  # rewards only: the targets are not even gathered
    obs, r_idx, *_ = gl_env.step(a)
    assert obs is None
    np_env.reset(options={"targets": target_set[idx]})
    imgs, r_np, *_ = np_env.step(a)
    gl_env.reset(options={"targets": target_set[idx]})
    obs, r_gl, *_ = gl_env.step(a)
    np.testing.assert_array_equal(obs, imgs)
    np.testing.assert_array_equal(r_idx, r_gl)
    np.testing.assert_allclose(r_gl, exact_loglik(target_set[idx], imgs, 0.1), rtol=1e-12, atol=1e-6)
    np.testing.assert_array_equal(r_np, r_gl)
    with pytest.raises(ValueError, match="reward"):
        MeshRenderVectorEnv(num_envs=2, reward="torch")
    with pytest.raises(ValueError, match="target_set"):
        gl_env.reset(options={"target_idx": idx})
    with pytest.raises(ValueError, match="target_idx"):
        gl_env.reset(options={"target_set": target_set, "target_idx": idx + 5})


def test_worker_scores_on_the_gl_side_by_default_and_in_numpy_on_request():
    from workers.worker import EnvSpec, RenderWorker

    rng = np.random.default_rng(7)
    targets = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    a = spaces.pack(np.full((4, geo.N_RAYS), 0.8, np.float32), colours=rng.uniform(0, 1, (4, 3)))
    idx = np.array([1, 5, 0, 2])
    default = RenderWorker(EnvSpec(kwargs={"width": 32, "height": 32}), targets)
    assert "error" not in default.evaluate(0, a, target_idx=idx)
    assert default._env(4).renderer.targets is default.targets  # GL-side rewards by default
    replies = []
    for reward in ("gl", "numpy"):
        w = RenderWorker(EnvSpec(kwargs={"width": 32, "height": 32, "reward": reward}), targets)
        replies.append(w.evaluate(1, a, target_idx=idx, return_images=True))
    gl, numpy_ = replies
    np.testing.assert_array_equal(gl["images"], numpy_["images"])
    np.testing.assert_allclose(gl["rewards"], exact_loglik(targets[idx], gl["images"], 0.1),
                               rtol=1e-12, atol=1e-6)
    np.testing.assert_array_equal(numpy_["rewards"], gl["rewards"])


def test_a_target_set_goes_to_the_gl_side_once(monkeypatch):
    rng = np.random.default_rng(8)
    env = MeshRenderVectorEnv(num_envs=3, width=16, height=16, sigma=0.1)
    uploads = []
    real = type(env.renderer).set_targets
    monkeypatch.setattr(type(env.renderer), "set_targets",
                        lambda self, images: (uploads.append(len(images)), real(self, images)))
    a = np.stack([env.target_source.action(rng) for _ in range(3)])
    first, second = (rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8) for _ in range(2))
    for target_set in (first, first, first, second, second):
        env.reset(options={"target_set": target_set, "target_idx": rng.integers(0, 10, 3),
                           "images": False})
        env.step(a)
    assert uploads == [10, 10]  # once per set, not per request
    env.reset(options={"targets": second[:3]})  # images given with the request: uploaded then
    _, rewards, *_ = env.step(a)
    assert uploads == [10, 10, 3]
    env.reset(options={"target_set": second, "target_idx": np.arange(3)})
    np.testing.assert_array_equal(env.step(a)[1], rewards)
    assert uploads == [10, 10, 3, 10]  # the set again, after the request's own targets
