"""End-to-end runs of the main job on a tiny config (CPU, llvmpipe, local Ray)."""

import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from learners.config import ConfigError, from_dict, load


def tiny(tmp_path, **train):
    from learners.mesh_train import MeshRunConfig

    d = {
        "name": "tiny", "out_dir": str(tmp_path / "runs"), "seed": 3,
        "data": {"n_train": 48, "n_test": 12, "size": 32, "cache_dir": str(tmp_path / "cache")},
        "model": {"hidden": 32, "channels": 8, "shape_degree": 2, "colour": "uniform"},
        "estimator": {"name": "rloo"},
        "train": {"steps": 4, "batch": 4, "samples": 4, "log_every": 2, "image_every": 2,
                  "checkpoint_every": 2, "progress": False, **train},
        "pool": {"workers": 2, "chunk": 8, "worker_cpus": 0.5},
        "ray": {"num_cpus": 2},
        "eval": {"chamfer_points": 200, "n_obj": 2},
    }
    return from_dict(MeshRunConfig, d, "tiny")


def two_steps_then_edit(tmp_path, edit):
    """A tiny run of 2 steps whose checkpoint ``edit(state)`` then changes: (config, path)."""
    from learners.mesh_train import run

    cfg = tiny(tmp_path)
    cfg.train.steps = 2
    run(cfg)
    ck = tmp_path / "runs/tiny/checkpoint.pt"
    state = torch.load(ck, weights_only=False)
    edit(state)
    torch.save(state, ck)
    return cfg, ck


def test_end_to_end_writes_checkpoint_events_and_a_report_in_range(tmp_path):
    from learners.mesh_train import run

    report = run(tiny(tmp_path))
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "checkpoint.pt").is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "heldout_grid.png").is_file() and len(list(run_dir.glob("*.obj"))) == 2
    s = json.loads((run_dir / "report.json").read_text())["scores"]
    assert s == report["scores"] | {}  # the file holds what run returned
    assert 0 <= s["iou"] <= 1 and 0 <= s["iou_sphere_floor"] <= 1
    assert 0 < s["psnr"] < 100 and 0 < s["chamfer"] < 3 and s["steps"] == 4
    pool = report["speed"]["pool"]
    assert pool["completed"] == pool["requested"] == 4 * 4 * 4 + 0  # steps * B * K
    # per kind, and the rotation (off in this model: identity) scored modulo symmetry
    assert sum(v["n"] for v in s["per_kind"].values()) == 12 and 0 <= s["rot_err_deg"] <= 180
    # kinds never trained on, each with its own sphere floor
    u = report["scores_unseen"]
    assert set(u["per_kind"]) == {"octahedron", "prism", "bicone"} and u["n"] == 150
    assert all(0 < v["iou_sphere_floor"] < 1 for v in u["per_kind"].values())
    assert u["iou_gap_at_equal_area"] == pytest.approx(u["iou_seen_area_matched"] - u["iou"])
    # held-out IoU against training time, at every image step
    curve = report["iou_vs_time"]
    assert [c["step"] for c in curve] == [2, 4] and curve[0]["train_s"] < curve[1]["train_s"]
    obj = next(run_dir.glob("*.obj")).read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == 162
    assert sum(line.startswith("f ") for line in obj) == 320


def test_a_finished_run_is_rescored_with_refinement_from_its_own_config_file(tmp_path):
    from learners import run as run_cli
    from learners.mesh_train import run

    first = run(tiny(tmp_path))
    run_dir = tmp_path / "runs" / "tiny"
    assert run_cli.main(["--config", str(run_dir / "config.json"), "--resume",
                         "--set", "eval.refine.steps=3", "--set", "eval.refine.samples=4"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    a, s, log = report["scores"], report["scores_refined"], report["refine"]
    # the same checkpoint and images: the network's own scores are those of the first run
    assert a["iou"] == first["scores"]["iou"] and a["steps"] == 4 and "scores_refined" not in first
    # the IoU-against-time curve comes back from the checkpoint
    assert report["iou_vs_time"] == first["iou_vs_time"] and len(first["iou_vs_time"]) == 2
    assert 0 <= s["iou"] <= 1
    # every image keeps its most likely mesh: never less likely than the network's own
    assert log["best_reward_mean"] >= log["reward_mean"][0]
    pool = report["speed"]["pool"]  # the resumed run rendered only the refinement
    assert pool["completed"] == pool["requested"] == 12 * (4 + 1) * (3 + 1)


@pytest.mark.parametrize("opts", [
    {},
    {"self_imitation": 0.25, "ema": 0.9, "rollback_nats": 1e-3},
    {"self_imitation": 0.25, "self_imitation_search": 3, "self_imitation_search_soft": True,
     "mirror_images": True, "colour_orders": True},
])
def test_resume_continues_exactly_where_the_run_stopped(tmp_path, opts):
    from learners.mesh_train import run

    self_imitation, ema = opts.get("self_imitation", 0.0), opts.get("ema", 0.0)
    rollback = opts.get("rollback_nats", 0.0)
    a = tiny(tmp_path / "a", **opts)
    report = run(a)
    b = tiny(tmp_path / "b", **opts)
    b.train.steps = 2
    run(b)
    b.train.steps = 4
    run(b, resume=True)
    wa = torch.load(tmp_path / "a/runs/tiny/checkpoint.pt", weights_only=False)
    wb = torch.load(tmp_path / "b/runs/tiny/checkpoint.pt", weights_only=False)
    assert wa["step"] == wb["step"] == 4
    for k, v in wa["model"].items():
        torch.testing.assert_close(wb["model"][k], v, rtol=0, atol=0, msg=k)
    if self_imitation:  # the replayed bests travel with the checkpoint
        assert torch.isfinite(wa["replay"]["r"]).any()
        torch.testing.assert_close(wb["replay"]["r"], wa["replay"]["r"], rtol=0, atol=0)
        torch.testing.assert_close(wb["replay"]["m"], wa["replay"]["m"], rtol=0, atol=0)
    assert wb["lr_scale"] == wa["lr_scale"]
    if rollback:  # the rollback's snapshot and smoothed ELBO travel too
        ra, rb = wa["rollback"], wb["rollback"]
        assert ra["snapshot"] is not None and (rb["ema"], rb["best"]) == (ra["ema"], ra["best"])
        for k, v in ra["snapshot"]["model"].items():
            torch.testing.assert_close(rb["snapshot"]["model"][k], v, rtol=0, atol=0, msg=k)
    if ema:  # so do the averaged weights, and the report scores them beside the raw ones
        assert wa["average"]["n"] == wb["average"]["n"] == 4
        for k, v in wa["average"]["model"].items():
            torch.testing.assert_close(wb["average"]["model"][k], v, rtol=0, atol=0, msg=k)
        assert 0 <= report["scores"]["iou"] <= 1 and 0 <= report["scores_raw"]["iou"] <= 1
    else:
        assert wa["average"] is None and "scores_raw" not in report


def test_the_time_limit_counts_the_training_before_a_resume(tmp_path):
    from learners.mesh_train import run

    def slow(state):
        assert 0 < state["train_s"] < 600
        state["train_s"] = 100.0  # as if the first two steps had taken 100 s

    cfg, ck = two_steps_then_edit(tmp_path, slow)
    cfg.train.steps, cfg.train.time_limit_s = 4, 50.0
    report = run(cfg, resume=True)  # past its limit already: scores without another step
    assert report["scores"]["steps"] == 2 and report["speed"]["pool"]["requested"] == 0
    # the report says the clock, not the step count, ended it
    assert report["budget"] == report["budget"] | {"steps": 2, "steps_planned": 4,
                                                   "time_limit_s": 50.0,
                                                   "stopped_by": "time_limit"}
    assert report["budget"]["train_s"] >= 100.0
    assert torch.load(ck, weights_only=False)["train_s"] >= 100.0


def test_the_learning_rate_decays_over_the_steps_or_the_clock_whichever_ends_first():
    from learners.mesh_config import TrainConfig
    from learners.mesh_train import lr_factor, std_factor

    tc = TrainConfig(steps=1000, lr_final=0.2)
    assert std_factor(tc, 500, 0.0) == 1.0  # std_final 1: no schedule
    tc.std_final = 0.5  # the sampling std follows the same clock to its own end
    assert std_factor(tc, 500, 0.0) == pytest.approx(0.75) and std_factor(tc, 2000, 0.0) == 0.5
    assert lr_factor(tc, 0, 1e6) == 1.0 and lr_factor(tc, 1000, 0.0) == pytest.approx(0.2)
    assert lr_factor(tc, 500, 1e6) == pytest.approx(0.6)  # no limit: the clock does not count
    tc.time_limit_s = 100.0
    # the clock counts past a slack of 5 s (5%), scaled to reach the end at the limit
    assert lr_factor(tc, 250, 52.5) == pytest.approx(0.6)  # the clock is further on
    assert lr_factor(tc, 750, 52.5) == pytest.approx(0.4)  # the steps are
    assert lr_factor(tc, 10, 400.0) == pytest.approx(0.2)  # never below lr_final
    assert lr_factor(tc, 999, 100.0) == pytest.approx(0.2)  # stopped by the clock: annealed


def test_a_run_that_keeps_its_pace_is_scheduled_by_its_steps_alone():
    from learners.mesh_config import TrainConfig
    from learners.mesh_train import lr_factor

    tc = TrainConfig(steps=14000, lr_final=0.1, time_limit_s=1050.0)
    # 20 steps/s (the limit needs 13.3) after set-up stalls of up to 50 s: the clock never
    # counts, so the schedule is the steps-bounded run's, whatever the stalls were
    for stall in (0.0, 3.0, 50.0):
        for step in (1, 10, 500, 7000, 14000):
            elapsed = stall + step / 20
            assert lr_factor(tc, step, elapsed) == lr_factor(TrainConfig(steps=14000, lr_final=0.1),
                                                              step, elapsed)
    # 10 steps/s: the clock takes over, and the limit ends the run annealed
    assert lr_factor(tc, 4000, 600.0) < lr_factor(tc, 4000, 0.0)
    assert lr_factor(tc, 10500, 1050.0) == pytest.approx(0.1)


def test_the_weight_average_is_the_exponential_average_of_the_weights_it_saw():
    from learners.mesh_train import WeightAverage

    net = torch.nn.Linear(3, 2)
    avg = WeightAverage(net, 0.3)
    expect = net.weight.detach().clone()
    for t, v in enumerate([1.0, -2.0, 4.0, 0.5, 3.0]):
        with torch.no_grad():
            net.weight.fill_(v)
        avg.update(net)
        d = [0.1, 2 / 11, 0.25, 0.3, 0.3][t]  # (1 + t) / (10 + t) until the decay caps it
        expect = d * expect + (1 - d) * v
    torch.testing.assert_close(avg.model.weight, expect)
    assert not avg.model.weight.requires_grad and avg.n == 5
    avg.reset(net)
    torch.testing.assert_close(avg.model.weight, net.weight.detach())


def test_nan_from_the_model_is_a_clear_error_and_the_checkpoint_stays_intact(tmp_path):
    from learners.mesh_train import run

    def poison(state):
        state["model"]["write.weight"][0, 0] = float("nan")  # the model now writes NaN meshes

    cfg, ck = two_steps_then_edit(tmp_path, poison)
    digest = hashlib.sha1(ck.read_bytes()).hexdigest()
    cfg.train.steps = 6
    with pytest.raises(FloatingPointError, match="NaN.*checkpoint.*intact"):
        run(cfg, resume=True)
    assert hashlib.sha1(ck.read_bytes()).hexdigest() == digest


def test_bad_config_keys_and_types_are_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("task: mesh\ntrain:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train\.stepz.*valid keys"):
        load(p)
    p.write_text("task: mesh\ntrain:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"train\.steps must be an integer"):
        load(p)
    p.write_text("task: mesh\n")
    with pytest.raises(ConfigError, match=r"estimator\.name: unknown estimator 'nope'"):
        load(p, ["estimator.name=nope"])
    with pytest.raises(ConfigError, match=r"data\.kinds: unknown \['blob'\]"):
        load(p, ["data.kinds=[cube, blob]"])
    with pytest.raises(ConfigError, match=r"train\.std_final must be > 0"):
        load(p, ["train.std_final=0"])
    # the command line says it and starts nothing
    proc = subprocess.run([sys.executable, "-m", "learners.run", "--config", str(p),
                           "--set", "model.hiden=3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "model.hiden" in proc.stderr and not (tmp_path / "runs").exists()


def test_missing_or_corrupt_dataset_cache_is_a_clear_error(tmp_path):
    from gen3d.data import mesh_images

    cfg = mesh_images.MeshImageConfig(n_train=4, n_test=2, size=32, cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.*learners.run"):
        mesh_images.load(cfg)
    mesh_images.cache_path(cfg).write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="unreadable.*delete it"):
        mesh_images.load(cfg)


def test_generated_data_keeps_a_truth_that_renders_back_to_the_image(tmp_path):
    from envs.renderer import MeshRenderer
    from gen3d.data import mesh_images
    from learners.mesh_train import render_fn

    cfg = mesh_images.MeshImageConfig(n_train=6, n_test=3, size=32, cache_dir=str(tmp_path))
    r = MeshRenderer(32, 32, 16)
    try:
        train, test = mesh_images.load(cfg, render_fn(r))
        again, _ = mesh_images.load(cfg)  # from the cache now
        np.testing.assert_array_equal(train.images, again.images)
        assert len(train) == 6 and len(test) == 3 and train.masks.any(axis=(1, 2)).all()
        m = test.mesh(1)
        cols = test.colours[1][: m.n_sides]
        img = r.render_meshes([m], [cols], mask=True)
        np.testing.assert_array_equal(img.rgb[0], test.images[1])
    finally:
        r.release()


def test_data_on_rays_is_exactly_a_ray_mesh_the_model_can_render_back(tmp_path):
    from envs.renderer import MeshRenderer
    from gen3d import geometry as geo
    from gen3d.data import mesh_images
    from learners import mesh_eval
    from learners.mesh_train import render_fn

    cfg = mesh_images.MeshImageConfig(n_train=4, n_test=6, size=32, mesh="rays", cache_dir=str(tmp_path))
    r = MeshRenderer(32, 32, 16)
    try:
        _, test = mesh_images.load(cfg, render_fn(r))
        assert test.on_rays and mesh_images.load(cfg)[1].on_rays
        exact = mesh_images.load(mesh_images.MeshImageConfig(
            n_train=4, n_test=6, size=32, cache_dir=str(tmp_path)), render_fn(r))[1]
        np.testing.assert_array_equal(test.rotation, exact.rotation)  # the same scenes
        # the truth is a 162-ray mesh about its position: the model's own action renders it
        lengths = np.stack([np.linalg.norm(test.mesh(i).verts - test.translation[i], axis=1)
                            for i in range(len(test))])
        np.testing.assert_allclose(lengths, np.stack([geo.ray_lengths_of_mesh(
            test.mesh(i).verts, test.mesh(i).faces, test.translation[i]) for i in range(len(test))]),
            rtol=1e-4)
        back = r.render_rays(lengths, translation=test.translation, mask=True).mask
        assert mesh_eval.iou(back, test.masks).min() > 0.99
        assert mesh_eval.iou(back, exact.masks).mean() < 0.99  # corners were cut
    finally:
        r.release()


def test_adam_clip_bounds_each_gradient_element_by_its_running_rms():
    from learners.mesh_optim import clip_to_adam_rms

    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([p], lr=0.1, betas=(0.9, 0.999), eps=0.0)
    p.grad = torch.tensor([1.0, -1.0, 2.0, 0.5])
    opt.step()  # exp_avg_sq = 0.001 * g^2, so the bias-corrected RMS is |g|
    p.grad = torch.tensor([10.0, -10.0, 1.0, -0.1])
    clip_to_adam_rms(opt, 3.0)
    torch.testing.assert_close(p.grad, torch.tensor([3.0, -3.0, 1.0, -0.1]))


def test_adam_clip_takes_each_groups_own_eps_and_leaves_params_without_state():
    from learners.mesh_optim import clip_to_adam_rms

    a, b, c, d = (torch.nn.Parameter(torch.zeros(2)) for _ in range(4))
    opt = torch.optim.Adam([{"params": [a, c], "eps": 0.0}, {"params": [b, d], "eps": 1.0}],
                           lr=0.1, betas=(0.9, 0.999))
    a.grad, b.grad = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])
    opt.step()  # a and b: bias-corrected RMS |g|; c and d never had a gradient (no state)
    for p in (a, b, c):
        p.grad = torch.tensor([5.0, -5.0])
    clip_to_adam_rms(opt, 2.0)
    torch.testing.assert_close(a.grad, torch.tensor([2.0, -4.0]))      # 2 |g|
    torch.testing.assert_close(b.grad, torch.tensor([3.0, -5.0]))      # 2 |g| + eps
    torch.testing.assert_close(c.grad, torch.tensor([5.0, -5.0]))      # no state: untouched
    assert d.grad is None


def test_a_nan_gradient_is_not_stepped_on_and_a_row_of_them_stops_the_run():
    """One NaN element would make every weight NaN through Adam's moments: the step is skipped
    (weights and Adam's state as they were) and counted; a finite gradient steps as before;
    MAX_SKIPPED_IN_ROW in a row is a clear error."""
    from types import SimpleNamespace

    from learners.mesh_optim import clipped_step
    from learners.mesh_config import MeshTrainConfig
    from learners.mesh_train import MAX_SKIPPED_IN_ROW, skip_step

    model = torch.nn.Linear(3, 2)
    tc = MeshTrainConfig(adam_clip=3.0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert clipped_step(opt, model, tc)
    before = [p.detach().clone() for p in model.parameters()]
    moments = [opt.state[p]["exp_avg"].clone() for p in model.parameters()]
    model.bias.grad = torch.tensor([1.0, float("nan")])
    assert not clipped_step(opt, model, tc)
    for p, b, m in zip(model.parameters(), before, moments):
        assert torch.equal(p, b) and torch.equal(opt.state[p]["exp_avg"], m)
    model.bias.grad = torch.tensor([1.0, float("inf")])  # inf is the Adam clip's to bound
    assert clipped_step(opt, model, tc)
    assert all(torch.isfinite(p).all() for p in model.parameters())

    job = SimpleNamespace(step=7, skipped=0, skipped_in_row=0,
                          sk=SimpleNamespace(log=SimpleNamespace(checkpoint_path="ck.pt")))
    for _ in range(MAX_SKIPPED_IN_ROW - 1):
        skip_step(job)
    assert job.skipped == MAX_SKIPPED_IN_ROW - 1
    with pytest.raises(FloatingPointError, match="in a row had NaN gradients.*ck.pt.*intact"):
        skip_step(job)


def test_every_shipped_config_validates():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))
    assert len(configs) >= 7
    for p in configs:
        task, cfg = load(p)
        assert cfg.name == p.stem, f"{p.name}: its run name should match the file"


def test_weight_decay_shrinks_weights_but_leaves_the_sampling_std_and_biases():
    from gen3d.mesh_model import MeshModel, MeshModelConfig
    from learners.mesh_optim import decay_groups

    model = MeshModel(MeshModelConfig(hidden=16, channels=4, rotation=True, shape_templates=3), 32)
    with torch.no_grad():
        model.write.weight.fill_(1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(decay_groups(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only the decay moves anything
    opt.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["write.weight"], before["write.weight"] * (1 - 0.1 * 0.5))
    for name in ("log_std", "write.bias", "q.bias", "templates"):  # templates are shapes
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)


def test_the_std_scale_narrows_the_samples_and_their_density_alike():
    from gen3d.mesh_model import MeshModel, MeshModelConfig

    torch.manual_seed(0)
    model = MeshModel(MeshModelConfig(hidden=16, channels=8, shape_degree=2, colour="uniform"), 32)
    x = torch.rand(2, 3, 32, 32)
    noise = torch.randn(2, 3, model.decoder.dim)
    wide = model.sample(x, 3, noise=noise, generator=torch.Generator().manual_seed(1))
    model.std_scale.fill_(0.25)
    narrow = model.sample(x, 3, noise=noise, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(narrow.m - narrow.mean, 0.25 * (wide.m - wide.mean))
    # the same standard-normal point: the density rises by the log of the scale, per dimension
    torch.testing.assert_close(narrow.logp - wide.logp,
                               torch.full_like(wide.logp, -model.decoder.dim * math.log(0.25)))
    assert "std_scale" not in model.state_dict()  # a schedule's, set each step: not saved


def test_self_imitation_keeps_each_images_best_sample_and_replays_it_by_its_advantage():
    from gen3d.mesh_model import MeshModel, MeshModelConfig
    from learners.self_imitation import SelfImitation

    torch.manual_seed(0)
    model = MeshModel(MeshModelConfig(hidden=16, channels=8, shape_degree=2, colour="uniform"), 32)
    replay = SelfImitation(5, model.decoder.dim, "cpu")
    x, idx = torch.rand(2, 3, 32, 32), np.array([3, 1])
    s = model.sample(x, 4)
    r = torch.tensor([[1.0, 5.0, 2.0, 0.0], [-3.0, -1.0, -2.0, -4.0]])
    replay.loss(model, s, r, idx)
    torch.testing.assert_close(replay.r[idx], torch.tensor([5.0, -1.0]))
    torch.testing.assert_close(replay.m[3], s.m[0, 1])
    assert torch.isinf(replay.r[[0, 2, 4]]).all()
    # worse samples later leave the bests alone, and the replay pulls with (best - mean)_+
    s2 = model.sample(x, 4)
    low = torch.full((2, 4), -10.0)
    model.zero_grad()
    replay.loss(model, s2, low, idx).backward(retain_graph=True)
    torch.testing.assert_close(replay.m[3], s.m[0, 1])
    g = model.write.bias.grad.clone()
    std = model.std().detach()
    mean = (s2.m_rsample - std * s2.noise).detach()
    adv = torch.tensor([15.0, 9.0])[:, None, None]
    # d loss / d mean of p(m | z) per sample, the loss being a mean over 2 x 4 samples
    want = -(adv * (replay.m[idx][:, None] - mean) / std**2) / 8
    torch.testing.assert_close(g, want.sum((0, 1)), rtol=1e-4, atol=1e-3)
    # told to leave the std alone, the replay pulls the mean just the same and the std not at all
    model.zero_grad()
    replay.train_std = False
    replay.loss(model, s2, low, idx).backward()
    torch.testing.assert_close(model.write.bias.grad, g, rtol=0, atol=0)
    assert model.log_std.grad is None or not model.log_std.grad.any()
    replay.train_std = True
    # an image drawn twice in one micro-batch keeps the better of its two bests
    twice = SelfImitation(5, model.decoder.dim, "cpu")
    twice.loss(model, s, torch.tensor([[9.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]), np.array([4, 4]))
    assert float(twice.r[4]) == 9.0 and torch.equal(twice.m[4], s.m[0, 0])
    # an image whose best is no better than its current samples gets no pull
    model.zero_grad()
    assert float(replay.loss(model, s2, torch.tensor([[5.0] * 4, [-1.0] * 4]), idx).detach()) == 0.0


def test_a_run_that_reads_colours_scores_them_reads_poses_and_resumes(tmp_path):
    """``model.read_colours`` end to end: the fit to the colours read enters the loss, the
    report carries the pose read off each mesh, and a resume continues the same run."""
    from learners.mesh_train import run

    cfg = tiny(tmp_path)
    cfg.model.read_colours, cfg.model.colour, cfg.eval.pose_rotations = True, "sh", 200
    report = run(cfg)
    s = report["scores"]
    assert 0 <= s["kind_read"] <= 1 and 0 <= s["rot_err_mesh_deg"] <= 180
    assert 0 <= s["rot_err_kind_deg"] <= 180
    assert set(s["per_kind"]) <= set(cfg.data.kinds)
    assert all("rot_err_mesh_deg" in v for v in s["per_kind"].values())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(tmp_path / "runs/tiny/tb")).Reload().Tags()["scalars"]
    assert {"eval/rot_err_mesh_deg", "eval/kind_read", "eval/rot_err_kind_deg"} <= set(tags)
    cfg.train.steps = 6
    resumed = run(cfg, resume=True)
    assert resumed["scores"]["steps"] == 6
