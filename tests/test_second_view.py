"""A second view of each training object (``data.second_view``): the data's views against a
camera that orbits the object, turned actions against rotated meshes, and the pool's reward
against both views' likelihoods computed here."""

import dataclasses

import numpy as np
import pytest
import torch

from envs import spaces
from envs.renderer import MeshRenderer
from gen3d import geometry as geo
from gen3d.data import mesh_images


def orbit_camera(turn: np.ndarray, centre: np.ndarray) -> tuple[geo.Camera, geo.Lights]:
    """The camera and lights that see an object at ``centre`` as the default ones see it
    turned by ``turn`` about its centre: both carried round the centre by turn^T."""
    cam, lights = geo.Camera(), geo.Lights()
    eye = centre + turn.T @ (np.asarray(cam.eye) - centre)
    target = centre + turn.T @ (np.asarray(cam.target) - centre)
    dirs = tuple(tuple(turn.T @ np.asarray(d)) for d in lights.directions)
    return (dataclasses.replace(cam, eye=tuple(eye), target=tuple(target)),
            dataclasses.replace(lights, directions=dirs))


@pytest.mark.parametrize("degrees,mesh", [(90.0, "exact"), (35.0, "exact"), (90.0, "rays")])
def test_each_view_is_the_object_seen_by_a_camera_and_lights_orbiting_its_centre(tmp_path, degrees, mesh):
    from learners.mesh_train import render_fn

    cfg = mesh_images.MeshImageConfig(kinds=["cube", "pyramid", "cone"], n_train=3, n_test=1,
                                      size=40, second_view=degrees, mesh=mesh, cache_dir=str(tmp_path))
    train, test = mesh_images.generate(cfg, render_fn(MeshRenderer(40, 40, 8)))
    assert train.views.shape == train.images.shape and test.views.shape == test.images.shape
    turn = geo.vertical_turn(degrees)
    for i in range(len(train)):
        cam, lights = orbit_camera(turn, train.translation[i].astype(np.float64))
        world = train.mesh(i)  # posed and placed: the orbit moves the camera, not the object
        seen = MeshRenderer(40, 40, 1, camera=cam, lights=lights).render_meshes(
            [world], [train.colours[i][:world.n_sides]], mask=True)
        diff = np.abs(seen.rgb[0].astype(int) - train.views[i].astype(int)).max(-1)
        assert (diff > 2).mean() < 0.003, f"object {i}: the view is not the orbit's image"
        assert (seen.mask[0] != train.view_masks[i]).mean() < 0.003
        assert (train.views[i] != train.images[i]).any(-1).mean() > 0.02  # a view, not a copy


def test_a_turned_action_renders_the_mesh_turned_about_its_own_centre():
    rng = np.random.default_rng(0)
    b = 6
    lengths = np.clip(0.6 + 0.15 * rng.standard_normal((b, geo.N_RAYS)), 0.2, 1.2)
    rot = geo.random_rotation(rng, b)
    a = spaces.pack(lengths, geo.matrix_to_axis_angle(rot), rng.uniform(-0.3, 0.3, (b, 3)),
                    rng.uniform(0.1, 0.9, (b, geo.N_RAYS, 3)))
    turn = geo.vertical_turn(90.0)
    r = MeshRenderer(48, 48, b)
    got = r.render_rays(**spaces.unpack(geo.turn_actions(a, turn))).rgb
    parts = spaces.unpack(a)
    parts["rotation"] = (turn @ rot).astype(np.float32)  # the turn after the mesh's own rotation
    want = r.render_rays(**parts).rgb
    assert (np.abs(got.astype(int) - want.astype(int)).max(-1) > 2).mean() < 0.002
    before = r.render_rays(**spaces.unpack(a)).rgb
    assert (np.abs(got.astype(int) - before.astype(int)).max(-1) > 2).mean() > 0.05


def test_the_pools_reward_is_the_images_likelihood_plus_the_turned_silhouettes_weighted():
    from learners.mesh_step import RewardSource, silhouette_images
    from workers.pool import PoolConfig, make_pool
    from workers.worker import EnvSpec

    rng = np.random.default_rng(1)
    n, size, sigma = 5, 32, 0.1
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    view_masks = rng.random((n, size, size)) < 0.3
    view_masks[:, 8:24, 10:22] = True
    turn = geo.vertical_turn(90.0)
    cfg = PoolConfig(backend="local", workers=1, chunk=8)
    spec = EnvSpec(kwargs={"width": size, "height": size, "sigma": sigma})
    unlit = EnvSpec(kwargs={**spec.kwargs, "lights": geo.Lights((), (), (1.0, 1.0, 1.0))})
    source = RewardSource(make_pool(spec, cfg, targets=images), None,
                          make_pool(unlit, cfg, targets=silhouette_images(view_masks)), turn, 0.5)
    idx, k = np.array([3, 0, 3]), 4
    b = len(idx) * k
    lengths = np.clip(0.7 + 0.1 * rng.standard_normal((b, geo.N_RAYS)), 0.2, 1.2)
    rot = geo.random_rotation(rng, b)
    a = spaces.pack(lengths, geo.matrix_to_axis_angle(rot), rng.uniform(-0.3, 0.3, (b, 3)),
                    rng.uniform(0.1, 0.9, (b, 3)))
    try:
        got, _ = source.collect(source.submit_actions(torch.as_tensor(a).reshape(len(idx), k, -1), idx),
                                torch.zeros(len(idx), k))
    finally:
        source.close()
    r = MeshRenderer(size, size, b)
    parts = spaces.unpack(a)
    first = r.render_rays(**parts).rgb
    parts["rotation"] = (turn @ rot).astype(np.float32)
    second = r.render_rays(**parts, mask=True).mask  # lit and coloured: only its mask is used
    target = np.repeat(idx, k)
    want = (spaces.gaussian_loglik(images[target], first, sigma)
            + 0.5 * spaces.gaussian_loglik(silhouette_images(view_masks[target]), silhouette_images(second),
                                           sigma))
    np.testing.assert_allclose(got.numpy().ravel(), want, rtol=1e-5, atol=0.5)


def test_a_run_with_a_second_view_renders_each_sample_twice(tmp_path):
    from learners.mesh_train import run
    from tests.test_mesh_train import tiny

    cfg = tiny(tmp_path)
    cfg.data.second_view = 90.0
    report = run(cfg)
    pool = report["speed"]["pool"]
    assert pool["completed"] == pool["requested"] == 4 * 4 * 4  # steps * B * K
    assert pool["view/completed"] == pool["view/requested"] == 4 * 4 * 4
    assert 0 <= report["scores"]["iou"] <= 1


@pytest.mark.parametrize("bad", [-10.0, 181.0])
def test_a_turn_outside_0_to_180_degrees_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="second_view"):
        mesh_images.MeshImageConfig(second_view=bad)


@pytest.mark.parametrize("estimator", ["pathwise", "soft_cv"])
def test_a_second_view_with_soft_rewards_is_a_config_error(tmp_path, estimator):
    from learners.config import ConfigError
    from learners.mesh_train import make_estimator
    from tests.test_estimators import documented_hybrid
    from tests.test_mesh_train import tiny

    documented_hybrid()  # registers "soft_cv": black-box and soft rewards both

    cfg = tiny(tmp_path)
    cfg.data.second_view = 90.0
    cfg.estimator.name = estimator
    with pytest.raises(ConfigError, match="data.second_view: its silhouettes"):
        make_estimator(cfg)


def test_two_pools_share_the_cluster_or_say_at_once_that_it_is_too_small():
    from workers.placement import CapacityError, Node, shared_size

    nodes = [Node("a" * 16, "10.0.0.1", {"CPU": 2.0}), Node("b" * 16, "10.0.0.2", {"CPU": 3.0})]
    half = {"CPU": 0.5}
    assert shared_size("auto", 2, half, nodes) == 5  # 4 + 6 workers of half a CPU, in two
    assert shared_size(5, 2, half, nodes) == 5
    assert shared_size("auto", 2, {"CPU": 1.0}, nodes) == 2  # 2 + 3: one is left over
    assert shared_size(7, 2, {}, nodes) == 7  # asking for nothing: any number fits
    with pytest.raises(CapacityError, match=r"data.second_view adds one.*asked for 12 render workers"):
        shared_size(6, 2, half, nodes)
    with pytest.raises(CapacityError, match="can host 1"):
        shared_size("auto", 2, {"CPU": 2.0}, nodes[1:])


def test_a_run_whose_two_pools_do_not_fit_stops_at_once_naming_the_second_view(tmp_path):
    import time

    from learners.mesh_train import run
    from tests.test_mesh_train import tiny
    from workers.pool import WorkerError

    cfg = tiny(tmp_path)
    cfg.data.second_view = 90.0
    cfg.pool.worker_cpus = 1.0  # 2 workers of 1 CPU fill the 2-CPU Ray: no room for 2 more
    t0 = time.time()
    with pytest.raises(WorkerError, match="data.second_view adds one"):
        run(cfg)
    assert time.time() - t0 < 30
