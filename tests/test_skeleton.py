"""The learners' shared skeleton: one checkpoint layout and resume path for the three tasks,
random state, the time limit in the report, progress lines in log files, and the summary
line at the end of every run."""

import io
import re
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from learners.config import ConfigError
from learners.runlog import ProgressLines, RunLog
from learners.skeleton import RunSkeleton, make_device

COMMON = {"model", "opt", "gen", "step", "train_s", "global_rng", "config"}


@dataclass
class Cfg:
    out_dir: str
    name: str = "sk"
    seed: int = 5
    device: str = "cpu"


def skeleton(tmp_path, resume=False, **kw) -> RunSkeleton:
    return RunSkeleton(Cfg(str(tmp_path)), 10, resume=resume, progress=False, **kw)


def test_a_checkpoint_restores_weights_optimiser_and_every_generator(tmp_path):
    def parts():
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.Adam(net.parameters())
        return net, opt, torch.Generator().manual_seed(1), np.random.default_rng(2)

    sk = skeleton(tmp_path)
    net, opt, g, rng = parts()
    sk.track(model=net, opt=opt, gen=g, rng=rng, replay=None)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    torch.randn(3, generator=g), rng.normal(), torch.randn(2), np.random.rand()
    sk.save(7, lr_scale=0.5)
    want = (torch.randn(4, generator=g), rng.normal(4), torch.randn(4), np.random.rand(4))
    sk.close()

    sk = skeleton(tmp_path, resume=True)
    net2, opt2, g2, rng2 = parts()
    sk.track(model=net2, opt=opt2, gen=g2, rng=rng2, replay=None)
    st = sk.restore()
    assert sk.start == 7 and st["lr_scale"] == 0.5 and COMMON | {"rng", "replay"} <= st.keys()
    torch.testing.assert_close(net2.weight, net.weight, rtol=0, atol=0)
    assert opt2.state_dict()["state"][0]["step"] == 1
    got = (torch.randn(4, generator=g2), rng2.normal(4), torch.randn(4), np.random.rand(4))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a tracked part the checkpoint lacks is named, unless the learner says it may start afresh
    sk.track(average=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="no saved 'average'.*without --resume"):
        sk.restore()
    sk.restore(optional=("average",))
    sk.close()


def test_the_time_limit_stops_the_run_and_the_budget_says_so(tmp_path):
    sk = skeleton(tmp_path, time_limit_s=0.05)
    assert not sk.out_of_time() and sk.budget(0)["stopped_by"] == "steps"
    import time

    time.sleep(0.06)
    assert sk.out_of_time()
    b = sk.budget(3)
    assert b == b | {"steps": 3, "steps_planned": 10, "time_limit_s": 0.05,
                     "stopped_by": "time_limit"}
    sk.close()


def test_the_clock_stops_with_the_training_and_the_budget_keeps_both_times(tmp_path):
    import time

    sk = skeleton(tmp_path)
    time.sleep(0.05)
    sk.stop_clock()
    trained = sk.elapsed
    time.sleep(0.2)  # the final scoring: not training time, in the budget or a checkpoint
    assert sk.elapsed == trained and 0.05 <= trained < 0.2
    b = sk.budget(1)
    assert b["train_s"] == round(trained, 1) and b["wall_s"] >= 0.25
    assert sk.save(1) and torch.load(sk.log.checkpoint_path, weights_only=False)["train_s"] == trained
    sk.close()


def test_an_absent_cuda_device_is_a_clear_config_error():
    assert make_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda.*asked for.*(device: cpu|auto)"):
            make_device("cuda")


def test_progress_lines_come_at_a_steady_interval_with_rate_and_time_left():
    now = [0.0]
    out = io.StringIO()
    lines = ProgressLines(total=100, start=20, every_s=10.0, file=out, clock=lambda: now[0])
    for _ in range(80):
        now[0] += 1.0  # one step a second
        lines.update(1, {"elbo": -123.456})
    text = out.getvalue().splitlines()
    assert len(text) == 8  # every 10 s of 80, the last step among them
    assert text[0] == "step 30/100 (30%) | 1 steps/s | 1m10s left | elbo -123.5"
    assert text[-1].startswith("step 100/100 (100%) | 1 steps/s | 0m00s left")


def test_a_run_logged_to_a_file_prints_progress_lines_and_one_summary_line(
        tmp_path, capsys, monkeypatch):
    from learners.mesh_train import run
    from tests.test_mesh_train import tiny

    monkeypatch.setattr(RunLog, "line_every_s", 0.0)
    cfg = tiny(tmp_path, progress=True)
    cfg.pool.backend = "local"
    report = run(cfg)
    err = capsys.readouterr().err.splitlines()
    steps = [line for line in err if line.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("elbo" in s for s in steps)
    summary = [line for line in err if line.startswith("run tiny:")]
    assert len(summary) == 1
    m = re.fullmatch(r"run tiny: held-out iou (\S+), psnr (\S+), chamfer (\S+), rot_err_deg (\S+), "
                     r"rot_err_kind_deg (\S+), iou_unseen (\S+) \| 4 of 4 steps in \d+ s "
                     r"\(\d+ s wall\) \| report (\S+)", summary[0])
    assert m, summary[0]
    assert float(m[1]) == pytest.approx(report["scores"]["iou"], rel=1e-3)
    assert float(m[5]) == pytest.approx(report["scores"]["rot_err_kind_deg"], rel=1e-3)
    assert float(m[6]) == pytest.approx(report["scores_unseen"]["iou"], rel=1e-3)
    assert Path(m[7]) == tmp_path / "runs/tiny/report.json" and Path(m[7]).is_file()
    assert report["budget"] == report["budget"] | {"steps": 4, "steps_planned": 4,
                                                   "stopped_by": "steps"}


def test_the_three_learners_write_one_checkpoint_layout(tmp_path):
    from learners import run as run_cli
    from learners.image_train import run as image_run
    from learners.mesh_train import run as mesh_run
    from tests.test_image_train import tiny as image_tiny
    from tests.test_mesh_train import tiny as mesh_tiny
    from tests.test_volume_train import tiny_config

    cfg = mesh_tiny(tmp_path / "mesh", steps=2)
    cfg.pool.backend = "local"
    mesh_run(cfg)
    image_run(image_tiny(tmp_path / "image", "images_single.yaml", "train.steps=2",
                         "eval.iwae_samples=0"))
    (tmp_path / "volume").mkdir()
    path = tiny_config(tmp_path / "volume", "vol", train={"steps": 2},
                       eval={"completion": False, "iwae_k": 0})
    assert run_cli.main(["--config", path]) == 0
    found = sorted(tmp_path.glob("*/runs/*/checkpoint.pt"))
    assert len(found) == 3
    for p in found:
        st = torch.load(p, weights_only=False)
        assert COMMON <= st.keys(), (p, sorted(st))
        assert st["step"] == 2 and st["train_s"] > 0 and "trained_s" not in st


@pytest.fixture
def sigint_as_in_a_terminal():
    """SIGINT raising KeyboardInterrupt, as Python sets it up in a terminal (a process started
    in the background of a script starts with it ignored); put back after the test."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_asks_to_stop_even_where_it_was_ignored_and_the_ignore_is_put_back():
    """A run started in a script's background (SIGINT ignored) still stops at a step's end on
    ``kill -INT``, and leaves SIGINT as it found it."""
    import os
    import signal
    from types import SimpleNamespace

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sk = SimpleNamespace(interrupted=False)
        with RunSkeleton.stop_on_interrupt(sk):
            os.kill(os.getpid(), signal.SIGINT)
        assert sk.interrupted and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_ends_the_step_checkpoints_and_a_resume_ends_where_an_unbroken_run_does(
        tmp_path, monkeypatch, sigint_as_in_a_terminal):
    """SIGINT in the middle of step 3 of 6: the step finishes, the checkpoint says step 3, the
    run raises RunInterrupted naming it and --resume, and resuming gives the weights of a run
    that was never interrupted."""
    import os
    import signal

    from learners import mesh_train
    from learners.skeleton import RunInterrupted
    from tests.test_mesh_train import tiny

    def tiny_local(path, **kw):
        cfg = tiny(path, **kw)
        cfg.pool.backend, cfg.train.steps, cfg.train.checkpoint_every = "local", 6, 100
        cfg.eval.n_unseen = 0
        return cfg

    whole = mesh_train.run(tiny_local(tmp_path / "a"))
    real = mesh_train.train_step

    def interrupting(job):
        if job.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # lands while the step is being taken
        return real(job)

    monkeypatch.setattr(mesh_train, "train_step", interrupting)
    cfg = tiny_local(tmp_path / "b")
    with pytest.raises(RunInterrupted, match=r"stopped by Ctrl-C at step 3 of 6; checkpoint .*--resume"):
        mesh_train.run(cfg)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    ckpt = torch.load(tmp_path / "b/runs/tiny/checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3 and not (tmp_path / "b/runs/tiny/report.json").exists()
    monkeypatch.setattr(mesh_train, "train_step", real)
    resumed = mesh_train.run(cfg, resume=True)
    assert resumed["scores"]["steps"] == 6
    a = torch.load(tmp_path / "a/runs/tiny/checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b/runs/tiny/checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["scores"]["iou"] == whole["scores"]["iou"]
    assert resumed["digest"] == whole["digest"]
