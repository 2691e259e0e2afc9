"""Reproducibility: the same config, seed and step count give bit-identical weights, with the
local pool and with Ray workers whose replies arrive in a random order.

The local pool and the Ray pool are not compared with each other: the GL renderer draws a
request's meshes side by side in one atlas, and a mesh drawn in another slot of it can differ
in an edge pixel, so requests split differently (``pool.chunk``) give slightly different
rewards."""

import random
import sys
import time

import torch

from learners.provenance import digest
from tests.test_mesh_train import tiny
from workers.worker import RenderWorker


class SleepyWorker(RenderWorker):
    """A render worker that answers each request after a random pause (up to 60 ms), so that
    the replies of a step's requests arrive in a different order every run."""

    def evaluate(self, *args, **kwargs) -> dict:
        time.sleep(random.Random(time.perf_counter_ns()).uniform(0.0, 0.06))
        return super().evaluate(*args, **kwargs)


def busy_config(tmp_path, backend: str):
    """Long enough to replay and search bests (images shown in random mirrors and colour
    orders), roll back once, warm the KL up and decay both schedules."""
    cfg = tiny(tmp_path, steps=10, microbatches=2, self_imitation=0.25, self_imitation_search=3,
               self_imitation_search_soft=True, mirror_images=True, colour_orders=True, ema=0.9,
               lr_final=0.3,
               std_final=0.5, kl_warmup_steps=4, rollback_nats=1e-3, checkpoint_every=2,
               weight_decay=0.01, adam_clip=3.0, log_every=5, image_every=100)
    cfg.pool.backend, cfg.pool.chunk = backend, 3
    return cfg


def final_state(tmp_path) -> dict:
    return torch.load(tmp_path / "runs/tiny/checkpoint.pt", weights_only=False)


def assert_identical(a, b, where: str) -> None:
    """Nested dicts, lists and tensors equal bit for bit."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def assert_same_run(tmp_path, a: str, b: str, reports: dict) -> None:
    want, got = final_state(tmp_path / a), final_state(tmp_path / b)
    assert want["step"] == 10 and want["lr_scale"] < 1  # it rolled back at least once
    assert torch.isfinite(want["replay"]["r"]).sum() > 10  # and replayed many images' bests
    for part in ("model", "opt", "estimator", "average", "replay", "gen", "rng", "lr_scale"):
        assert_identical(got[part], want[part], f"{b}: {part}")
    assert reports[b]["elbo_history"] == reports[a]["elbo_history"]
    for key in ("iou", "psnr", "chamfer"):
        assert reports[b]["scores"][key] == reports[a]["scores"][key]
    # the reports' digests say so too, and are the digests of what the checkpoint holds
    assert reports[b]["digest"] == reports[a]["digest"]
    assert reports[a]["digest"]["model"] == digest(want["model"])
    tracked = {k: want[k] for k in ("model", "opt", "estimator", "est_opt", "gen", "rng",
                                    "replay", "average", "rollback")}
    assert reports[a]["digest"]["state"] == digest(tracked)


def test_runs_are_bit_identical_with_the_local_pool_and_with_ray_replies_in_any_order(
        tmp_path, monkeypatch):
    import ray

    from learners.mesh_train import run
    from workers import pool

    reports = {name: run(busy_config(tmp_path / name, "local")) for name in ("local_a", "local_b")}
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need no tests/
    monkeypatch.setattr(pool, "RenderWorker", SleepyWorker)
    try:
        for name in ("ray_a", "ray_b"):
            reports[name] = run(busy_config(tmp_path / name, "ray"))
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert reports["ray_a"]["speed"]["pool"]["completed"] == 10 * 4 * (4 + 3)  # samples, search
    assert_same_run(tmp_path, "local_a", "local_b", reports)
    assert_same_run(tmp_path, "ray_a", "ray_b", reports)
