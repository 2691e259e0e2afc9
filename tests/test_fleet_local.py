"""The fleet on one machine: faults that must fail fast and say why, what a local Ray
listens on, the pool contract, config checks, and the EGL device mapping on a faked list."""

import time

import numpy as np
import pytest

from workers.standin import ACTION_DIM, STANDIN_ID, expected_rewards


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray as a run starts it: 1 CPU, no GPU."""
    import ray

    from workers import cluster

    ray.shutdown()
    cluster.start(cluster.RayConfig(num_cpus=1))
    yield
    ray.shutdown()


def _standin_pool(**kw):
    from workers.pool import PoolConfig, RenderPool
    from workers.worker import EnvSpec

    return RenderPool(EnvSpec(STANDIN_ID, {"delay_s": 0.0}), PoolConfig(**kw))


@pytest.mark.parametrize("kw, asked, have", [
    ({"workers": 1, "worker_cpus": 2}, r"\{CPU: 2\}", r"CPU 1, GPU 0"),
    ({"workers": 1, "worker_gpus": 1, "worker_cpus": 0}, r"\{GPU: 1\}", r"GPU 0"),
])
def test_a_worker_the_machine_cannot_host_fails_at_once_naming_both_sides(local_ray, kw, asked, have):
    from workers.contract import WorkerError

    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=f"asked for 1 render workers of {asked}.*can host 0.*{have}"):
        _standin_pool(**kw)
    assert time.monotonic() - t0 < 5


def _listening_sockets_of(pids: set[int]) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the TCP sockets ``pids`` listen on."""
    import os

    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:  # a process that just ended
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    out.append(cols[1].split(":")[0])
    return out


def _ray_pids() -> set[int]:
    """This process and every process under it (GCS, raylet, Ray workers)."""
    import os

    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    mine, grew = {os.getpid()}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in mine} - mine
        mine |= more
        grew = bool(more)
    return mine


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def test_a_local_run_listens_on_loopback_only(local_ray):
    pool = _standin_pool(workers=1, worker_cpus=0.5)  # a worker process listens too
    try:
        addrs = _listening_sockets_of(_ray_pids())
        assert len(addrs) >= 3  # at least the GCS, the raylet and a worker
        assert set(addrs) <= LOOPBACK, addrs
    finally:
        pool.close()


def test_a_local_ray_with_no_cpu_fails_within_seconds(local_ray):
    import ray

    from workers import cluster
    from workers.contract import WorkerError

    ray.shutdown()
    cluster.start(cluster.RayConfig(num_cpus=0))
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=r"asked for 2 render workers of \{CPU: 0.5\}.*CPU 0"):
            _standin_pool(workers=2, worker_cpus=0.5)
        assert time.monotonic() - t0 < 5
    finally:
        ray.shutdown()
        cluster.start(cluster.RayConfig(num_cpus=1))


def test_a_worker_whose_gl_cannot_draw_fails_the_start_with_the_reason(local_ray):
    from workers.contract import WorkerError
    from workers.pool import PoolConfig, RenderPool
    from workers.worker import EnvSpec

    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"render worker w0 could not start:.*OpenGL"):
        RenderPool(EnvSpec(kwargs={"width": 16, "height": 16}),  # the real renderer
                   PoolConfig(workers=1, worker_cpus=0.5, worker_env={"GEN3D_EGL_DEVICE": "99"}))
    assert time.monotonic() - t0 < 30


def test_a_hung_worker_costs_a_bounded_stall(local_ray, tmp_path):
    from workers.pool import PoolConfig, RenderPool
    from workers.worker import EnvSpec

    flag = tmp_path / "hang"
    spec = EnvSpec(STANDIN_ID, {"delay_s": 0.01, "slow_s": 60.0, "slow_flag": str(flag)})
    pool = RenderPool(spec, PoolConfig(workers=2, chunk=2, worker_cpus=0.25, request_timeout_s=1.5,
                                       straggler_factor=0))  # no straggler resends: the timeout acts
    try:
        rng = np.random.default_rng(0)
        a = rng.normal(size=(8, ACTION_DIM)).astype(np.float32)
        t = rng.integers(0, 255, (8, 4, 4, 3), dtype=np.uint8)
        flag.touch()
        t0 = time.monotonic()
        res = pool.evaluate(a, targets=t)
        assert time.monotonic() - t0 < 15  # the timeout, a restart and a resend; not 60 s
        np.testing.assert_allclose(res.rewards, expected_rewards(a, t))
        assert pool.stats["workers_lost"] == 1 and pool.stats["restarts"] == 1
        assert pool.stats["completed"] == pool.stats["requested"] == 8
    finally:
        pool.close()


def test_joining_an_address_where_nothing_listens_fails_within_seconds():
    from workers import cluster

    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=r"ray.address=127.0.0.1:1: nothing answers.*ray start --head"):
        cluster.join(cluster.RayConfig(address="127.0.0.1:1", connect_timeout_s=2))
    assert time.monotonic() - t0 < 5


def test_both_pools_follow_one_contract(local_ray):
    from workers.contract import Pool, Result, Ticket
    from workers.local import LocalPool
    from workers.worker import EnvSpec

    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, ACTION_DIM)).astype(np.float32)
    t = rng.integers(0, 255, (10, 4, 4, 3), dtype=np.uint8)
    ray_pool = _standin_pool(workers=1, worker_cpus=0.5, chunk=3)
    pools = [ray_pool, LocalPool(EnvSpec(STANDIN_ID, {"delay_s": 0.0}))]
    try:
        for pool in pools:
            assert isinstance(pool, Pool)
            ticket = pool.submit(a, targets=t)
            assert isinstance(ticket, Ticket) and ticket.n == 10
            res = pool.collect(ticket)
            assert isinstance(res, Result) and res.rewards.dtype == np.float64
            np.testing.assert_allclose(res.rewards, expected_rewards(a, t))
            pool.set_targets(t)
            np.testing.assert_allclose(pool.evaluate(a[:4], target_idx=np.arange(4)).rewards,
                                       expected_rewards(a[:4], t[:4]))
            assert pool.stats["completed"] == pool.stats["requested"] == 14
            assert all(isinstance(v, (int, float)) for v in pool.stats.values())
            with pytest.raises(ValueError, match="exactly one of target_idx"):
                pool.submit(a)  # refused before it is requested
            with pytest.raises(ValueError, match="rejected the request.*actions"):
                pool.evaluate(a[:, :-1], targets=t)  # refused by the worker: requested, rejected
            s = pool.stats
            assert (s["requested"], s["completed"], s["rejected"]) == (24, 14, 10)
    finally:
        for pool in pools:
            pool.close()


@pytest.mark.parametrize("key, value", [
    ("workers", 0), ("workers", "many"), ("chunk", 0), ("worker_cpus", -1), ("worker_gpus", -0.5),
    ("request_timeout_s", 0), ("start_timeout_s", -1), ("straggler_factor", -1),
    ("max_restarts", -1), ("placement", "anywhere"), ("worker_resources", {"x": -1}),
])
def test_pool_config_names_the_bad_key(key, value):
    from workers.pool import PoolConfig

    with pytest.raises(ValueError, match=f"^{key}: "):
        PoolConfig(**{key: value})


@pytest.mark.parametrize("key, value", [("num_cpus", -1), ("num_gpus", -1),
                                        ("connect_timeout_s", 0), ("address", " ")])
def test_ray_config_names_the_bad_key(key, value):
    from workers.cluster import RayConfig

    with pytest.raises(ValueError, match=f"^{key}: "):
        RayConfig(**{key: value})


def test_the_config_file_loader_names_section_and_file(tmp_path):
    from learners.config import ConfigError, load

    with pytest.raises(ConfigError, match=r"primitives.yaml: pool.chunk: must be an integer >= 1"):
        load("configs/primitives.yaml", ["pool.chunk=0"])
    _, cfg = load("configs/primitives.yaml", ["pool.workers=auto"])
    assert cfg.pool.workers == "auto"


# ---------------------------------------------------------------- GPU -> EGL device mapping

SMI = """0, GPU-aaaa, 00000000:3B:00.0
1, GPU-bbbb, 00000000:86:00.0
"""
SMI_L = """GPU 0: NVIDIA A100 (UUID: GPU-aaaa)
  MIG 3g.20gb     Device  0: (UUID: MIG-a1)
  MIG 3g.20gb     Device  1: (UUID: MIG-a2)
GPU 1: NVIDIA A100 (UUID: GPU-bbbb)
"""
# EGL's own order: Mesa's software device first, then the GPUs in the opposite order to CUDA
EGL = [
    {"index": 0, "software": True, "cuda_device": None, "pci_bus_id": None},
    {"index": 1, "software": False, "cuda_device": 1, "pci_bus_id": "0000:86:00.0"},
    {"index": 2, "software": False, "cuda_device": 0, "pci_bus_id": "0000:3b:00.0"},
]


@pytest.mark.parametrize("assigned, egl_index", [
    ("0", 2), ("1", 1), ("GPU-aaaa", 2), ("GPU-bbbb", 1), ("MIG-a2", 2),
])
def test_rays_gpu_id_maps_to_the_egl_device_of_the_same_gpu(assigned, egl_index):
    from workers import devices

    gpus = devices.parse_nvidia_smi(SMI, SMI_L)
    assert devices.egl_index(assigned, gpus, EGL) == egl_index
    # without PCI ids (no DRM node), the CUDA id that EGL reports decides
    no_pci = [dict(d, pci_bus_id=None) for d in EGL]
    assert devices.egl_index(assigned, gpus, no_pci) == egl_index
    # ... renumbered when Ray shows the process only its own GPU (CUDA_VISIBLE_DEVICES)
    alone = [dict(d, cuda_device=0 if d["index"] == egl_index else None) for d in no_pci]
    assert devices.egl_index(assigned, gpus, alone, visible=assigned) == egl_index


def test_an_unknown_gpu_or_only_software_egl_is_a_clear_error():
    from workers import devices

    gpus = devices.parse_nvidia_smi(SMI, SMI_L)
    with pytest.raises(devices.GpuMappingError, match="GPU '7'.*does not list.*GPU-aaaa"):
        devices.egl_index("7", gpus, EGL)
    with pytest.raises(devices.GpuMappingError,
                       match="no EGL device is GPU '0'.*0: software.*allow_software_gl"):
        devices.egl_index("0", gpus, EGL[:1])
    assert devices.is_software("llvmpipe (LLVM 15.0.7, 256 bits)")
    assert not devices.is_software("NVIDIA H100 80GB HBM3/PCIe/SSE2")


def test_the_egl_devices_of_this_machine_are_listed():
    from envs.gl import egl_devices

    devs = egl_devices()  # a CPU machine: Mesa's software device at least
    assert devs and [d["index"] for d in devs] == list(range(len(devs)))
    assert any(d["software"] for d in devs)


TEMP_DIR_SCRIPT = """
import os, sys
from workers import cluster
cluster.start(cluster.RayConfig(num_cpus=1))
first = list(cluster._OWNED_TEMP_DIRS)
alive = all(os.path.isdir(d) for d in first)
cluster.stop()
print("stopped", alive, *first, *(os.path.isdir(d) for d in first), flush=True)
cluster.start(cluster.RayConfig(num_cpus=1))
print("exiting", *cluster._OWNED_TEMP_DIRS, flush=True)
"""


def _run_script(env: dict) -> dict[str, list[str]]:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", TEMP_DIR_SCRIPT], cwd=root, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return {ln.split()[0]: ln.split()[1:] for ln in p.stdout.splitlines()
            if ln.split()[:1] in (["stopped"], ["exiting"])}


def test_a_local_ray_removes_its_temp_dir_on_stop_and_at_exit():
    import os

    env = {k: v for k, v in os.environ.items() if k != "RAY_TMPDIR"}
    out = _run_script(env)
    alive, first, still_there = out["stopped"]
    assert alive == "True" and first.startswith("/tmp/gen3d-ray-") and still_there == "False"
    (second,) = out["exiting"]
    assert second != first and not os.path.exists(second)


def test_a_temp_dir_the_user_names_in_ray_tmpdir_is_used_and_kept():
    import os
    import shutil
    import tempfile

    mine = tempfile.mkdtemp(prefix="g3mine-", dir="/tmp")  # Ray's socket paths are length-limited
    try:
        out = _run_script({**os.environ, "RAY_TMPDIR": mine})
        assert out["stopped"] == ["True"] and out["exiting"] == []  # nothing of ours to remove
        assert any(n.startswith("session_") for n in os.listdir(mine))
    finally:
        shutil.rmtree(mine, ignore_errors=True)
