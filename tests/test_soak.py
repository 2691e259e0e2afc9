"""The soak's parts that need no training run: it finds and kills only render workers that
descend from its own process, and measures memory growth after warm-up."""

import os
import signal
import subprocess
import time

import pytest

from benchmarks import soak

TITLED = "exec -a ray::RenderWorker sleep 30 >/dev/null 2>&1 </dev/null"  # as Ray titles a worker


def test_it_finds_and_kills_only_the_render_workers_under_its_root():
    parent = subprocess.Popen(["bash", "-c", f"({TITLED}) & wait"])  # the titled one is its child
    # one that descends from no test process: its parent exits and it is re-parented
    out = subprocess.run(["bash", "-c", f"({TITLED}) & echo $!"], capture_output=True, text=True,
                         timeout=10)
    orphan = int(out.stdout)
    try:
        for _ in range(100):  # until the subshell has exec'd into the titled process
            if soak.worker_pids(parent.pid):
                break
            time.sleep(0.05)
        (child,) = soak.worker_pids(parent.pid)
        assert orphan not in soak.worker_pids() and soak.rss_mb(orphan) > 0
        assert soak.rss_mb(child) > 0
        mon = soak.Monitor({"pool": object()}, sample_s=60, kill_every_s=1, seed=0, root=parent.pid)
        mon._kill(1.0)
        parent.wait(timeout=10)  # its wait returned: the child is gone
        assert mon.kills == [{"t_s": 1.0, "pid": child}] and soak.rss_mb(child) is None
        mon._kill(2.0)  # nothing under its root is left; the other process lives on
        assert len(mon.kills) == 1 and soak.rss_mb(orphan) > 0
    finally:
        parent.kill()
        parent.wait()
        os.kill(orphan, signal.SIGKILL)


@pytest.mark.parametrize("rise", [0.0, 0.1, -0.2])
def test_growth_is_measured_from_the_end_of_warm_up_to_the_end(rise):
    """Memory that spikes in warm-up, then changes linearly by ``rise`` over the run: from the
    median of 20-30% of the run (1 + 0.25 rise) to that of its last tenth (1 + 0.95 rise);
    the spike and the sample taken after the pool closed do not count."""
    samples = [{"t_s": float(t), "requested": t, "mem": (3.0 if t < 10 else 1.0) + rise * t / 100}
               for t in range(101)]
    samples.append({"t_s": 101.0, "requested": 101, "mem": 0.1, "after": True})
    got = soak.growth(samples, "mem", warmup_frac=0.2)
    assert got == pytest.approx((1 + 0.95 * rise) / (1 + 0.25 * rise) - 1, abs=1e-9)
