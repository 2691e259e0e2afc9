"""Run directories are owned: a second live run with the same name refuses and overwrites
nothing, a stale lock is taken over, and ``--resume`` names a checkpoint that cannot resume
the run (another model, torn, foreign, missing) in one line before anything is written."""

import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from learners import checkpoint
from learners import run as run_cli
from learners.checkpoint import CheckpointError
from learners.rundir import RunDirBusy, RunLock, _start_ticks

ROOT = Path(__file__).resolve().parents[1]


def tiny_volume(tmp_path, name: str = "vol") -> str:
    cfg = {
        "task": "volume", "name": name, "out_dir": str(tmp_path / "runs"),
        "data": {"dataset": "primitives", "size": 12, "n_train": 16, "n_test": 8,
                 "cache_dir": str(tmp_path / "cache")},
        "model": {"steps": 2, "z_dim": 3, "hidden": 24, "enc_hidden": 24, "canvas_size": 12,
                  "write_patch": 4, "read_patch": 4},
        "train": {"steps": 2, "batch": 4, "log_every": 1, "eval_every": 2, "ckpt_every": 2},
        "eval": {"n_eval": 4, "iwae_k": 0, "n_pictures": 2},
    }
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def snapshot(run_dir: Path) -> dict:
    """Every file under ``run_dir`` with its bytes, to show that nothing was touched."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def write_lock(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = {"host": socket.gethostname(), "since": "earlier"} | fields
    (run_dir / "run.lock").write_text(json.dumps(rec))


def test_a_second_run_refuses_while_the_first_trains_and_overwrites_nothing(tmp_path, capsys):
    path = tiny_volume(tmp_path)
    run_dir = tmp_path / "runs" / "vol"
    holder = subprocess.Popen(  # the first run, holding its directory as a training run does
        [sys.executable, "-c", "import sys, time; from learners.runlog import RunLog; "
         f"log = RunLog({str(tmp_path / 'runs')!r}, 'vol', 10, config={{'first': True}}, progress=False); "
         "log.tb.flush(); print('ready', flush=True); time.sleep(120)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = snapshot(run_dir)
        assert json.loads(before["config.json"]) == {"first": True}
        assert run_cli.main(["--config", path]) == 2
        err = capsys.readouterr().err.strip()
        assert f"pid {holder.pid}" in err and "--set name=" in err and "\n" not in err
        assert snapshot(run_dir) == before  # config.json, TensorBoard: all the first run's
        # the first run is killed: its lock is stale and the next run takes the directory
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert run_cli.main(["--config", path]) == 0
        assert f"pid {holder.pid}" in capsys.readouterr().err  # the note on the stale lock
        assert json.loads((run_dir / "config.json").read_text())["task"] == "volume"
        assert (run_dir / "report.json").is_file() and not (run_dir / "run.lock").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_stale_and_live_locks(tmp_path):
    d = tmp_path / "run"
    live = sleeper()
    try:
        write_lock(d, pid=live.pid, start=_start_ticks(live.pid))
        with pytest.raises(RunDirBusy, match=rf"in use by a run still training there \(pid {live.pid}"):
            RunLock(d).acquire()
        # the same pid, but a process started at another time: the pid was reused, the lock is stale
        write_lock(d, pid=live.pid, start=_start_ticks(live.pid) - 1)
        lock = RunLock(d)
        lock.acquire()
        assert lock.read()["pid"] == os.getpid()
        lock.release()
        assert not (d / "run.lock").exists()
        live.kill()
        for _ in range(100):  # killed, not reaped yet: a zombie holds nothing
            if open(f"/proc/{live.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.02)
        write_lock(d, pid=live.pid, start=_start_ticks(live.pid))
        RunLock(d).acquire()
    finally:
        live.kill()
        live.wait()
    write_lock(d, pid=live.pid, start=None)  # that process has exited now
    RunLock(d).acquire()
    write_lock(d, pid=live.pid, host="elsewhere.example")
    with pytest.raises(RunDirBusy, match="another machine.*elsewhere.example.*delete .*run.lock"):
        RunLock(d).acquire()
    (d / "run.lock").write_text("{torn")  # half-written long ago: stale
    os.utime(d / "run.lock", (0, 0))
    RunLock(d).acquire()


def test_resume_with_another_model_names_the_keys_before_writing(tmp_path, capsys):
    path = tiny_volume(tmp_path)
    assert run_cli.main(["--config", path]) == 0
    run_dir = tmp_path / "runs" / "vol"
    before = snapshot(run_dir)
    capsys.readouterr()  # the first run's own lines
    assert run_cli.main(["--config", path, "--resume", "--set", "model.hidden=20",
                         "--set", "model.z_dim=4", "--set", "train.steps=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.hidden: checkpoint 24, config 20" in err and "model.z_dim: checkpoint 3, config 4" in err
    assert "\n" not in err and "model.steps" not in err
    assert snapshot(run_dir) == before
    # settings that do not shape the weights may change on resume
    assert run_cli.main(["--config", path, "--resume", "--set", "train.steps=3",
                         "--set", "train.lr=0.0005"]) == 0
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 3


@pytest.mark.parametrize("damage,expect", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "cannot be read"),
    (lambda p: p.write_bytes(b""), "cannot be read"),
    (lambda p: p.write_bytes(b"\x00not a checkpoint" * 10), "cannot be read"),
    (lambda p: torch.save([1, 2, 3], p), "not a training checkpoint"),
    (lambda p: p.unlink(), "does not exist"),
], ids=["torn", "empty", "garbage", "foreign", "missing"])
def test_a_bad_checkpoint_is_named_in_one_line_before_anything_is_written(tmp_path, capsys, damage, expect):
    path = tiny_volume(tmp_path)
    assert run_cli.main(["--config", path]) == 0
    run_dir = tmp_path / "runs" / "vol"
    damage(run_dir / "checkpoint.pt")
    before = snapshot(run_dir)
    capsys.readouterr()  # the first run's own lines
    assert run_cli.main(["--config", path, "--resume", "--set", "train.steps=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: checkpoint '{run_dir / 'checkpoint.pt'}'") and expect in err
    assert "\n" not in err
    assert snapshot(run_dir) == before and not (run_dir / "run.lock").exists()


def test_mesh_resume_names_the_model_and_image_size_it_was_made_with(tmp_path):
    from learners.mesh_train import run
    from tests.test_mesh_train import tiny

    cfg = tiny(tmp_path, steps=2)
    cfg.pool.backend = "local"
    run(cfg)
    cfg.model.hidden = 48
    with pytest.raises(CheckpointError, match=r"model\.hidden: checkpoint 32, config 48\)"):
        run(cfg, resume=True)


def test_a_finished_run_resumed_with_mirrored_answers_is_scored_again_untrained(tmp_path):
    """``model.infer_mirrors`` reads the answer, not the weights: a resume may change it, and
    a run resumed at its last step trains nothing and scores the four looks' mean; with
    ``model.infer_colour_orders`` too, the 24 looks' mean."""
    from benchmarks.mirror_looks import look_rows
    from learners.mesh_train import run
    from tests.test_mesh_train import tiny

    cfg = tiny(tmp_path, steps=2)
    cfg.pool.backend = "local"
    run(cfg)
    ck = tmp_path / "runs/tiny/checkpoint.pt"
    before = torch.load(ck, weights_only=False)["model"]
    cfg.model.infer_mirrors = True
    report = run(cfg, resume=True)
    after = torch.load(ck, weights_only=False)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    want = look_rows(str(tmp_path / "runs/tiny"), cfg.data.n_test)[-2]["iou"]  # the mean of the looks
    assert report["scores"]["iou"] == pytest.approx(want, rel=1e-6)
    cfg.model.infer_colour_orders = True
    report = run(cfg, resume=True)
    rows = look_rows(str(tmp_path / "runs/tiny"), cfg.data.n_test)
    assert rows[-2]["look"] == "mean of the 24"
    assert len(rows) == 26 and report["scores"]["iou"] == pytest.approx(rows[-2]["iou"], rel=1e-6)
    cfg.model.z_dim = 4  # what the weights are made of still may not differ
    with pytest.raises(CheckpointError, match=r"model\.z_dim"):
        run(cfg, resume=True)


def test_check_matches_compares_nested_keys_and_skips_old_checkpoints():
    saved = {"model": {"hidden": 300, "projection": {"conv2d": [32, 32]}}, "data": {"size": 64}}
    now = {"model": {"hidden": 300, "projection": {"conv2d": (32, 16)}}, "data": {"size": 32}}
    with pytest.raises(CheckpointError) as e:
        checkpoint.check_matches({"config": saved}, now, ("model", "data.size"), "ck.pt")
    msg = str(e.value)
    assert "model.projection.conv2d: checkpoint [32, 32], config [32, 16]" in msg
    assert "data.size: checkpoint 64, config 32" in msg and "model.hidden" not in msg
    checkpoint.check_matches({"config": saved}, saved | {"train": {}}, ("model",), "ck.pt")
    checkpoint.check_matches({}, now, ("model",), "ck.pt")  # made before configs were saved
    checkpoint.check_matches({"config": saved}, {**saved, "model": {**saved["model"], "new": 1}},
                             ("model",), "ck.pt", free=("model.new",))


def test_the_command_line_refuses_before_loading_data_or_starting_ray(tmp_path, capsys, monkeypatch):
    """The main job's refusals come first: no data set generated, no Ray started."""
    from workers import cluster

    def no_ray(*a, **kw):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(cluster, "start", no_ray)
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    args = ["--config", str(ROOT / "configs/primitives.yaml"), "--set", f"out_dir={runs}",
            "--set", f"data.cache_dir={cache}"]
    (runs / "primitives").mkdir(parents=True)
    (runs / "primitives" / "checkpoint.pt").write_bytes(b"torn")
    assert run_cli.main(args + ["--resume"]) == 2
    assert "checkpoint.pt' cannot be read" in capsys.readouterr().err
    live = sleeper()
    try:
        write_lock(runs / "primitives", pid=live.pid, start=_start_ticks(live.pid))
        assert run_cli.main(args) == 2
        assert f"still training there (pid {live.pid}" in capsys.readouterr().err
    finally:
        live.kill()
        live.wait()
    assert not cache.exists()


def test_a_finished_run_is_not_started_afresh_over_and_nothing_is_written(tmp_path, capsys):
    """A run directory that holds a checkpoint is another run's: a fresh run of the same name
    refuses (pointing at --resume, another name, or deleting it) and leaves its files as they
    were; so do an out_dir it cannot write, a name that is not a folder name, and configs
    or --set values that cannot be read."""
    runs = tmp_path / "runs"
    done = runs / "primitives"
    done.mkdir(parents=True)
    for f in ("checkpoint.pt", "report.json", "config.json"):
        (done / f).write_text(f)
    base = ["--config", str(ROOT / "configs/primitives.yaml"), "--set", f"out_dir={runs}"]
    assert run_cli.main(base) == 2
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "--resume continues it" in err and "--set name=" in err
    assert sorted(p.name for p in done.iterdir()) == ["checkpoint.pt", "config.json", "report.json"]
    assert all((done / f).read_text() == f for f in ("checkpoint.pt", "report.json", "config.json"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [(["--set", f"out_dir={a_file}/runs"], "out_dir .* cannot be made"),
             (["--set", "name=../elsewhere"], "is not a folder name"),
             (["--set", "train.steps=[1"], "not valid YAML.*quote it")]
    for extra, words in cases:
        assert run_cli.main(base + extra) == 2
        assert re.search(words, capsys.readouterr().err.splitlines()[-1])
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe task: mesh")
    for config, words in [(tmp_path / "bad.yaml", "UTF-8"), (tmp_path, "is a folder")]:
        assert run_cli.main(["--config", str(config)]) == 2
        assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "bad.yaml", "runs"]


def test_a_cluster_that_does_not_answer_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    args = ["--config", str(ROOT / "configs/primitives.yaml"), "--set", f"out_dir={tmp_path}/runs",
            "--set", f"data.cache_dir={tmp_path}/cache", "--set", "data.n_train=8",
            "--set", "data.n_test=4", "--set", "eval.n_unseen=0", "--set", "train.steps=2",
            "--set", "train.time_limit_s=30", "--set", "ray.address=127.0.0.1:1"]
    assert run_cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ray.address=127.0.0.1:1: nothing answers there")


def test_a_resume_asked_for_fewer_steps_than_its_checkpoint_says_it_trains_nothing(tmp_path, capsys):
    path = tiny_volume(tmp_path)
    assert run_cli.main(["--config", path]) == 0
    done = torch.load(tmp_path / "runs/vol/checkpoint.pt", weights_only=False)["step"]
    capsys.readouterr()
    assert run_cli.main(["--config", path, "--resume", "--set", "train.steps=1"]) == 0
    err = capsys.readouterr().err
    assert f"note: the checkpoint is at step {done}, past the 1 steps asked for" in err
    assert torch.load(tmp_path / "runs/vol/checkpoint.pt", weights_only=False)["step"] == done
