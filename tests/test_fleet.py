"""The render fleet over several nodes: Ray's own simulated cluster on this machine (each node
a raylet of its own, with a custom resource standing for a machine) and the stand-in
environment, whose reward is known without rendering."""

import dataclasses
import os
import time

import numpy as np
import pytest

from workers.standin import ACTION_DIM, STANDIN_ID, expected_rewards


@pytest.fixture(scope="module")
def nodes():
    """A head with no CPU (the driver's node) and two 2-CPU nodes, a and b."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    a = c.add_node(num_cpus=2, resources={"machine_a": 1})
    b = c.add_node(num_cpus=2, resources={"machine_b": 1})
    c.wait_for_nodes()
    c.connect()
    yield c, {a.node_id: "a", b.node_id: "b"}
    ray.shutdown()
    c.shutdown()


def _pool(workers, cpus=0.5, delay=0.02, **kw):
    from workers.pool import PoolConfig, RenderPool
    from workers.worker import EnvSpec

    extra = {k: kw.pop(k) for k in ("slow_s", "slow_flag") if k in kw}
    return RenderPool(EnvSpec(STANDIN_ID, {"delay_s": delay} | extra),
                      PoolConfig(workers=workers, chunk=4, worker_cpus=cpus, **kw))


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, ACTION_DIM)).astype(np.float32),
            rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8))


def _where(pool, names):
    return sorted(names.get(s.info["node_id"], "head") for s in pool.slots if s.state == "up")


def _until(done, seconds: float, act=lambda: time.sleep(0.1)) -> None:
    """Call ``act`` until ``done()`` holds or ``seconds`` have passed: a bounded wait."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        act()


def _wait_for_cpus(n, timeout=10):
    import ray

    _until(lambda: ray.available_resources().get("CPU", 0) >= n, timeout)


def test_workers_spread_across_nodes_by_default_and_pack_when_asked(nodes, caplog):
    import logging

    _, names = nodes
    with caplog.at_level(logging.INFO, logger="gen3d.pool"):
        spread = _pool(4)
    try:
        assert _where(spread, names) == ["a", "a", "b", "b"]
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pool: node")]
        assert len(lines) == 2 and all(": 2 workers" in ln for ln in lines)  # one line per node
        a, t = _batch(32)
        np.testing.assert_allclose(spread.evaluate(a, targets=t).rewards, expected_rewards(a, t))
    finally:
        spread.close()
    _wait_for_cpus(4)  # the spread pool's CPUs are free again
    packed = _pool(4, placement="pack")
    try:
        assert _where(packed, names) in (["a"] * 4, ["b"] * 4)  # 4 x 0.5 CPU: one node's 2
    finally:
        packed.close()


def test_auto_sizes_the_fleet_from_the_cluster(nodes):
    pool = _pool("auto", cpus=1)
    try:
        assert len(pool.slots) == 4 and pool.stats["workers_alive"] == 4  # 2 nodes x 2 CPUs
    finally:
        pool.close()


def test_a_pool_larger_than_the_cluster_fails_at_once_naming_what_it_has(nodes):
    from workers.contract import WorkerError

    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"asked for 5 render workers of \{CPU: 1\}.*can host 4"):
        _pool(5, cpus=1)
    with pytest.raises(WorkerError, match=r"machine_z: 1.*can host 0"):
        _pool(1, worker_resources={"machine_z": 1})
    assert time.monotonic() - t0 < 10


def test_a_straggler_is_sent_again_and_every_render_counts_once(nodes, tmp_path):
    flag = tmp_path / "slow"
    pool = _pool(4, slow_s=6.0, slow_flag=str(flag))
    try:
        a, t = _batch(64, seed=1)
        pool.evaluate(a, targets=t)  # the median request time is known from here on
        before = dict(pool.stats)
        flag.touch()  # the next request to start, on some worker, sleeps 6 s
        t0 = time.monotonic()
        res = pool.evaluate(a, targets=t)
        took = time.monotonic() - t0
        assert not flag.exists()  # a request really was slow
        np.testing.assert_allclose(res.rewards, expected_rewards(a, t))
        assert took < 3.0  # 16 requests of 20 ms over 4 workers: ~0.1 s, not the 6 s straggler
        d = {k: pool.stats[k] - before[k] for k in before}
        assert d["completed"] == d["requested"] == 64
        assert d["straggler_resends"] >= 4  # at least the slow request went again
        assert d["sent"] == d["requested"] + d["straggler_resends"] + d["resent"]
        time.sleep(6.5)  # the slow reply and those queued behind it arrive now: dropped
        pool.evaluate(a[:4], targets=t[:4])
        d = {k: pool.stats[k] - before[k] for k in before}
        assert d["duplicates_dropped"] == d["straggler_resends"]
        assert d["completed"] == d["requested"] == 68
    finally:
        pool.close()


def _kill_mid_step(cluster, pool, node, n=192):
    """Submit a step, remove ``node`` while it runs, and collect it."""
    a, t = _batch(n, seed=2)
    before = dict(pool.stats)
    ticket = pool.submit(a, targets=t)
    cluster.remove_node(node, allow_graceful=False)
    res = pool.collect(ticket)
    np.testing.assert_allclose(res.rewards, expected_rewards(a, t))  # every render, in its place
    return {k: pool.stats[k] - before[k] for k in before}


def test_a_node_lost_with_room_elsewhere_restarts_its_worker_and_loses_nothing(nodes):
    import ray

    cluster, names = nodes
    c = cluster.add_node(num_cpus=1, resources={"machine_c": 1})
    cluster.wait_for_nodes()
    # the scheduler spreads over the nodes whose resources it already sees: under load a new
    # node's can lag its registration, and SPREAD is best effort
    _until(lambda: ray.available_resources().get("machine_c", 0) >= 1, 30)
    pool = _pool(3, cpus=1, delay=0.1, start_timeout_s=20)
    try:
        assert c.node_id in {s.info["node_id"] for s in pool.slots}  # spread: one on each
        d = _kill_mid_step(cluster, pool, c)
        assert d["completed"] == d["requested"] == 192
        assert d["resent"] + d["straggler_resends"] > 0  # c's requests went elsewhere
        _until(lambda: pool.stats["restarts"] >= 1 and pool.stats["workers_alive"] >= 3, 30,
               lambda: pool.poll(0.2))
        assert pool.stats["workers_lost"] == 1 and pool.stats["restarts"] == 1
        assert pool.stats["workers_alive"] == 3  # the replacement runs on a or b
        assert {names.get(s.info["node_id"]) for s in pool.slots} <= {"a", "b"}
    finally:
        pool.close()


def test_a_node_lost_without_room_leaves_the_pool_running_smaller_then_it_grows_back(nodes):
    cluster, names = nodes
    c = cluster.add_node(num_cpus=2, resources={"machine_c": 1})
    cluster.wait_for_nodes()
    pool = _pool(3, cpus=2, delay=0.1)  # a whole node each: no room left
    pool.cfg = dataclasses.replace(pool.cfg, start_timeout_s=2)  # for the replacement
    try:
        d = _kill_mid_step(cluster, pool, c)
        assert d["completed"] == d["requested"] == 192
        a, t = _batch(32, seed=3)  # the run goes on, on two workers
        np.testing.assert_allclose(pool.evaluate(a, targets=t).rewards, expected_rewards(a, t))
        # the replacement counts as lost once it has waited start_timeout_s for room (the step
        # may well end before that): a bounded wait, not a hang
        _until(lambda: pool.poll(0.2)["workers_lost"] >= 1, 15, lambda: None)
        assert pool.stats["workers_lost"] == 1 and pool.stats["workers_alive"] == 2
        assert pool.stats["completed"] == pool.stats["requested"]
        cluster.add_node(num_cpus=2, resources={"machine_d": 1})  # capacity returns
        _until(lambda: pool.refresh_stats()["workers_alive"] >= 3, 30, lambda: pool.evaluate(a, targets=t))
        assert pool.stats["workers_alive"] == 3
    finally:
        pool.close()


def test_the_pool_fails_when_no_worker_is_left_naming_what_it_asked_for(nodes):
    from workers.contract import WorkerError

    cluster, _ = nodes
    e = cluster.add_node(num_cpus=1, resources={"machine_e": 1})
    cluster.wait_for_nodes()
    pool = _pool(1, cpus=1, delay=0.1, worker_resources={"machine_e": 1})  # only e can host it
    pool.cfg = dataclasses.replace(pool.cfg, start_timeout_s=2)
    try:
        a, t = _batch(64, seed=4)
        ticket = pool.submit(a, targets=t)
        cluster.remove_node(e, allow_graceful=False)
        t0 = time.monotonic()
        # (what the cluster has is Ray's view then: node e may not be marked dead yet)
        with pytest.raises(WorkerError, match=r"no render worker is left; asked for 1 render "
                                              r"workers of \{CPU: 1, machine_e: 1\}.*machine_e"):
            pool.collect(ticket)
        assert time.monotonic() - t0 < 30  # Ray's notice of the loss, then start_timeout_s
    finally:
        pool.close()


def test_render_settings_travel_with_the_workers(nodes):
    pool = _pool(2, worker_env={"LP_NUM_THREADS": "3"})
    try:
        assert [p["lp_num_threads"] for p in pool.ping()] == ["3", "3"]
        assert os.environ.get("LP_NUM_THREADS") != "3"  # not from the driver
    finally:
        pool.close()
