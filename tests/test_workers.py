"""Render workers and their pool, on a local Ray."""

import numpy as np
import pytest

from envs import spaces
from gen3d import geometry as geo


@pytest.fixture(scope="module")
def pool():
    from workers import cluster
    from workers.pool import PoolConfig, RenderPool
    from workers.worker import EnvSpec

    cluster.start(cluster.RayConfig(num_cpus=2))
    p = RenderPool(EnvSpec(kwargs={"width": 32, "height": 32, "sigma": 0.1}),
                   PoolConfig(workers=2, chunk=8, worker_cpus=0.5))
    yield p
    p.close()


def _actions(n, seed=0):
    rng = np.random.default_rng(seed)
    y = geo.real_sph_harm(geo.ico_rays(), 2)
    lengths = np.clip(0.7 + rng.normal(0, 0.1, (n, 9)) @ y.T, 0.3, 1.2)
    return spaces.pack(lengths, translation=rng.uniform(-0.3, 0.3, (n, 3)),
                       colours=rng.uniform(0.2, 1, (n, 3)))


def test_rewards_match_a_local_render(pool, renderer):
    from envs.mesh_env import render_actions
    from envs.renderer import MeshRenderer

    a = _actions(20)
    local = MeshRenderer(32, 32, max_batch=32)
    imgs = render_actions(local, a).rgb
    local.release()
    targets = np.roll(imgs, 1, axis=0)
    res = pool.evaluate(a, targets=targets, return_images=True)
    np.testing.assert_array_equal(res.images, imgs)
    np.testing.assert_allclose(res.rewards, spaces.gaussian_loglik(targets, imgs, 0.1), rtol=1e-9)


def test_a_worker_killed_mid_step_loses_nothing_and_counts_nothing_twice(pool, caplog):
    import logging

    import ray

    n = 320  # 40 requests over 2 workers: many are still queued when one worker dies
    a = _actions(n, seed=1)
    targets = np.zeros((n, 32, 32, 3), np.uint8)
    clean = pool.evaluate(a, targets=targets, return_images=True)
    before = dict(pool.stats)
    ticket = pool.submit(a, targets=targets, return_images=True)
    ray.kill(pool.actors[0], no_restart=True)
    with caplog.at_level(logging.INFO, logger="gen3d.pool"):
        res = pool.collect(ticket)
    d = {k: pool.stats[k] - before[k] for k in before}
    assert res.images.shape == (n, 32, 32, 3)
    np.testing.assert_array_equal(res.images, clean.images)  # every image, in its place
    np.testing.assert_array_equal(res.rewards, clean.rewards)
    assert d["restarts"] >= 1 and d["resent"] > 0
    assert d["sent"] == d["requested"] + d["resent"] + d["straggler_resends"]
    assert d["completed"] == n  # each render used exactly once
    said = caplog.text  # on the console as it happens, not only in report.json
    assert "worker w0 on node" in said and "lost" in said and "restarting worker w0" in said
    # the restarted worker serves the next step
    np.testing.assert_array_equal(pool.evaluate(a, targets=targets).rewards, clean.rewards)


def test_a_bad_request_gets_an_error_and_the_worker_lives(pool):
    a = _actions(4)
    with pytest.raises(ValueError, match="rejected the request.*actions"):
        pool.evaluate(a[:, :100], targets=np.zeros((4, 32, 32, 3), np.uint8))
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pool.evaluate(bad, targets=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="target_idx"):
        pool.evaluate(a, target_idx=np.arange(4))  # no targets were set
    before = pool.stats["restarts"]
    assert pool.evaluate(a, targets=np.zeros((4, 32, 32, 3), np.uint8)).rewards.shape == (4,)
    assert pool.stats["restarts"] == before


def test_targets_by_index_are_sent_once(pool):
    a = _actions(12, seed=3)
    targets = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    pool.set_targets(targets)
    idx = np.arange(12) % 5
    np.testing.assert_allclose(pool.evaluate(a, target_idx=idx).rewards,
                               pool.evaluate(a, targets=targets[idx]).rewards)


def test_worker_class_works_without_ray():
    from workers.worker import EnvSpec, RenderWorker

    w = RenderWorker(EnvSpec(kwargs={"width": 32, "height": 32}))
    reply = w.evaluate(7, _actions(3), targets=np.zeros((3, 32, 32, 3), np.uint8))
    assert reply["request_id"] == 7 and reply["renders"] == 3 and reply["rewards"].shape == (3,)
    assert "error" in w.evaluate(8, np.zeros((0, 654)), targets=np.zeros((0, 32, 32, 3), np.uint8))


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_closed_pool_refuses_every_use_and_starts_no_worker(pool, backend):
    """Closed with a request still in flight: collecting it, submitting, or sending targets
    is one clear error, and no worker is started again (the cluster's CPUs come back)."""
    import ray

    from workers.contract import WorkerError
    from workers.pool import PoolConfig, make_pool
    from workers.worker import EnvSpec

    spec = EnvSpec(kwargs={"width": 32, "height": 32, "sigma": 0.1})
    free = ray.available_resources().get("CPU", 0)
    p = make_pool(spec, PoolConfig(backend=backend, workers=1, chunk=8, worker_cpus=0.5))
    targets = np.zeros((4, 32, 32, 3), np.uint8)
    ticket = p.submit(_actions(4), targets=targets)
    p.close()
    for use in (lambda: p.collect(ticket), lambda: p.submit(_actions(2), targets=targets[:2]),
                lambda: p.set_targets(targets)):
        with pytest.raises(WorkerError, match="after close\\(\\).*make a new pool"):
            use()
    p.close()  # twice is fine
    if backend == "local":
        assert not p.worker._envs  # its environments (and GL contexts) are closed
    else:
        import time

        deadline = time.monotonic() + 20
        while ray.available_resources().get("CPU", 0) < free and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) >= free


def test_a_pool_config_built_in_code_gets_the_checks_a_config_file_gets():
    from workers.pool import PoolConfig

    for kw, words in [({"worker_queue": float("nan")}, "worker_queue: must be an integer"),
                      ({"chunk": 2.5}, "chunk: must be an integer"), ({"workers": True}, "workers"),
                      ({"max_restarts": float("nan")}, "max_restarts"),
                      ({"worker_cpus": float("inf")}, "worker_cpus: must be a finite number"),
                      ({"request_timeout_s": float("inf")}, "request_timeout_s: must be a finite"),
                      ({"worker_env": None}, "worker_env: must be a mapping"),
                      ({"worker_resources": {"render": float("nan")}}, "worker_resources")]:
        with pytest.raises(ValueError, match=words):
            PoolConfig(**kw)
    assert PoolConfig(request_timeout_s=10, worker_cpus=1).request_timeout_s == 10
