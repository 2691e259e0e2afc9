"""Joining a real head started by ``ray start --head`` with Ray's token authentication on, as
README's "Across machines" says: the token travels, the project's code travels, and a missing
token is a clear error within seconds. The head runs without this checkout on its path, so a
worker that renders proves the code was shipped."""

import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "0123456789abcdef0123456789abcdef"

DRIVER = """
import json, sys, time
import numpy as np
from workers import cluster
from workers.pool import PoolConfig, RenderPool
from workers.standin import ACTION_DIM, STANDIN_ID, expected_rewards
from workers.worker import EnvSpec
t0 = time.monotonic()
try:
    cluster.start(cluster.RayConfig(address=sys.argv[1], connect_timeout_s=5))
except ConnectionError as e:
    print(json.dumps({"error": str(e), "s": time.monotonic() - t0}))
    sys.exit(3)
pool = RenderPool(EnvSpec(STANDIN_ID, {"delay_s": 0.0}), PoolConfig(workers=1, worker_cpus=0.5))
a = np.ones((6, ACTION_DIM), np.float32)
t = np.full((6, 4, 4, 3), 10, np.uint8)
ok = bool(np.allclose(pool.evaluate(a, targets=t).rewards, expected_rewards(a, t)))
import ray
@ray.remote(num_cpus=0)
def shipped():  # the packages Ray unpacked on the node from the driver's runtime environment
    import os, sys
    return [p for p in sys.path if "runtime_resources" in p and os.path.isdir(p)]
print(json.dumps({"ok": ok, "worker": pool.ping()[0], "shipped": ray.get(shipped.remote())}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    return env | {"HOME": str(home)} | extra


def _kill_processes_under(marker: str) -> None:
    """End the head's processes (found by their temp dir), one by one, by pid."""
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            try:
                os.kill(int(d), signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    """A token-protected head: its address and its Ray temp dir (for its logs)."""
    home = tmp_path_factory.mktemp("head_home")
    tmp = tempfile.mkdtemp(prefix="g3tok-", dir="/tmp")  # Ray's socket paths are length-limited
    port = _free_port()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    env = _env(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1",
                    f"--temp-dir={tmp}", "--include-dashboard=false", "--disable-usage-stats"],
                   env=env, cwd=tmp, check=True, capture_output=True, timeout=120)
    address = subprocess.run([sys.executable, "-c", "import ray._private.services as s; "
                              "print(s.get_node_ip_address())"], env=env, capture_output=True,
                             text=True, timeout=60).stdout.strip()
    yield f"{address or '127.0.0.1'}:{port}", Path(tmp)
    _kill_processes_under(tmp)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def head(head_node):
    return head_node[0]


def _monitor_logs(tmp: Path) -> str:
    """The tails of the head's autoscaler monitor logs: it publishes what `ray status` reads."""
    out = []
    for f in sorted(tmp.glob("session_*/logs/monitor*")):
        out.append(f"--- {f.name}: " + f.read_text(errors="replace")[-1500:])
    return "\n".join(out) or f"no monitor logs under {tmp}"


def _drive(address: str, env: dict) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", DRIVER, address], env=env | {"PYTHONPATH": str(ROOT)},
                       cwd=str(ROOT), capture_output=True, text=True, timeout=180)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, p.stdout[-2000:] + p.stderr[-3000:]
    return p.returncode, json.loads(lines[-1]), time.monotonic() - t0


def test_rays_status_tool_works_from_the_projects_environment(head_node, tmp_path):
    """First in the module, before any driver joins: the head's autoscaler monitor, which
    publishes what `ray status` reads, once stopped publishing for good after a driver's
    worker was killed (1 head in about 30, seen in its log), a Ray fault and not this one."""
    head, tmp = head_node
    ray_cli = str(Path(sys.executable).with_name("ray"))
    deadline = time.monotonic() + 45  # the monitor publishes every 5 s
    while True:
        p = subprocess.run([ray_cli, "status", f"--address={head}"], capture_output=True,
                           text=True, timeout=120,
                           env=_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN))
        if (p.returncode == 0 and "Resources" in p.stdout) or time.monotonic() > deadline:
            break
        time.sleep(2)
    why = f"rc {p.returncode}\nstdout: {p.stdout[-1500:]}\nstderr: {p.stderr[-2500:]}\n{_monitor_logs(tmp)}"
    assert p.returncode == 0, why  # connected with the token and read the head's status
    published = any("Autoscaler status" in f.read_text(errors="replace")
                    for f in tmp.glob("session_*/logs/monitor.log"))
    if "Resources" not in p.stdout and not published:
        pytest.xfail("the head's autoscaler monitor published no status in 45 s (Ray's): " + why)
    assert "Resources" in p.stdout and "CPU" in p.stdout, why


def test_joining_with_the_heads_token_file_works_and_ships_the_code(head, tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(TOKEN)  # the head's token, copied over
    rc, out, _ = _drive(head, _env(tmp_path))  # RAY_AUTH_MODE unset: the file turns token mode on
    assert rc == 0 and out["ok"], out
    # the packages the head's workers run came from the driver, as they are in this checkout
    shipped = {p.parent.name: p for d in out["shipped"] for p in Path(d).glob("*/__init__.py")}
    assert {"gen3d", "envs", "workers"} <= set(shipped), out["shipped"]
    assert (shipped["workers"].parent / "pool.py").read_text() == (ROOT / "workers/pool.py").read_text()
    assert out["worker"]["lp_num_threads"] == "0"  # and its render settings from the pool


def test_joining_without_the_token_is_a_clear_error_within_seconds(head, tmp_path):
    rc, out, took = _drive(head, _env(tmp_path))  # no token anywhere
    assert rc == 3
    assert "refused this process's auth token" in out["error"]
    assert "RAY_AUTH_TOKEN" in out["error"] and "auth_token" in out["error"]
    assert out["s"] < 10 and took < 60
