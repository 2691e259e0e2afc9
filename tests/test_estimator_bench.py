"""The estimator benchmark on a tiny config: per-estimator options, a failing estimator that does
not stop the others, paired seeds, JSON rows and PNG figures (CPU, llvmpipe, local Ray)."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from learners.config import ConfigError, from_dict, to_dict
from tests.test_mesh_train import tiny

SEEDS = [5, 6]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Two seeds of reinforce, rloo (config options plus one from the command line) and a
    moving average given an option it does not take. The learning rate is 0, so every run's
    final weights are its initial ones and its ELBO per step says which images and samples it
    drew: what pairing must make equal across one seed's estimators."""
    from benchmarks.estimators import main

    tmp = tmp_path_factory.mktemp("bench")
    d = to_dict(tiny(tmp))
    d["task"] = "mesh"
    d["estimator"] = {"name": "rloo", "kwargs": {"keep_scale": True}}
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(d))
    out = tmp / "out"
    res = main(["--config", str(cfg), "--estimators", "reinforce,rloo,moving_average",
                "--opt", "rloo.normalize=true", "--opt", "moving_average.bogus=3",
                "--seeds", str(len(SEEDS)), "--seed", str(SEEDS[0]), "--budget", "96",
                "--points", "2", "--estimates", "4", "--no-softras", "--out", str(out),
                "--json", str(tmp / "res" / "bench.json"), "--set", "train.lr=0",
                "--set", "data.size=32", "--set", "data.n_train=48", "--set", "data.n_test=12",
                "--set", "model.hidden=32", "--set", "model.channels=8",
                "--set", "train.batch=4", "--set", "train.samples=4"])
    return tmp, out, res


def test_each_estimator_runs_with_its_own_options_and_a_bad_one_fails_alone(bench):
    tmp, out, res = bench
    saved = json.loads((tmp / "res" / "bench.json").read_text())
    rows = {r["estimator"]: r for r in saved["rows"]}
    assert [r["estimator"] for r in saved["rows"]] == ["reinforce", "rloo", "moving_average"]
    assert saved["command"][1:4] == ["--config", str(tmp / "tiny.yaml"), "--estimators"]
    # the config's options go to the config's estimator only; --opt adds to them
    assert rows["rloo"]["options"] == {"keep_scale": True, "normalize": True}
    assert rows["reinforce"]["options"] == {}
    for name, kwargs in (("rloo", {"keep_scale": True, "normalize": True}), ("reinforce", {})):
        for seed in SEEDS:
            run_cfg = json.loads((out / "runs" / f"s{seed}_{name}" / "config.json").read_text())
            assert run_cfg["estimator"]["name"] == name
            assert run_cfg["estimator"]["kwargs"] == kwargs
    ma = rows["moving_average"]
    assert ma["seeds_done"] == 0 and "bogus" in ma["error"] and "decay" in ma["error"]
    steps = 96 // (4 * 4)
    for name in ("reinforce", "rloo"):
        r = rows[name]
        assert "error" not in r and r["seeds_done"] == len(SEEDS)
        assert [s["seed"] for s in r["seeds"]] == SEEDS
        assert all(s["renders"] == steps * 16 for s in r["seeds"])
        for key in ("final_elbo_gain", "iou", "var_mean"):
            v = r[key]
            assert v["n"] == len(SEEDS) and v["min"] <= v["mean"] <= v["max"]
            assert v["min"] == pytest.approx(min(s[key] for s in r["seeds"]))
    # the diagnosis ran every estimator with its options, the failing one as an error row
    for d in saved["diagnose"].values():
        drows = {r["estimator"]: r for r in d["rows"]}
        assert drows["rloo"]["options"] == {"keep_scale": True, "normalize": True}
        assert "bogus" in drows["moving_average"]["error"] and "var_mean" in drows["reinforce"]


def test_figures_are_valid_pngs_and_reach_tensorboard(bench):
    from benchmarks.estimators import main

    tmp, out, res = bench
    figs = res["figures"]
    assert set(figs) == {"elbo_gain", "heldout_iou", "variance"}
    for path in figs.values():
        assert path.startswith(str(tmp / "res" / "bench_"))
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
            a = np.asarray(im.convert("L"))
        assert a.std() > 5  # something is drawn on it, not a blank canvas
    assert list((out / "tb").glob("events.*"))
    # the same figures again from the JSON alone
    again = main(["--replot", str(tmp / "res" / "bench.json"), "--plots", str(tmp / "again"),
                  "--out", str(tmp / "again_out")])["figures"]
    assert set(again) == set(figs)
    for key, path in again.items():
        with Image.open(path) as im, Image.open(figs[key]) as first:
            assert im.format == "PNG" and im.size == first.size


def test_seeds_are_paired_across_estimators(bench):
    tmp, out, res = bench
    rows = {r["estimator"]: r for r in res["rows"]}
    for seed in SEEDS:
        weights = {n: torch.load(out / "runs" / f"s{seed}_{n}" / "checkpoint.pt",
                                 weights_only=False)["model"] for n in ("reinforce", "rloo")}
        for k, v in weights["reinforce"].items():  # same initial network (lr 0 kept it)
            assert torch.equal(v, weights["rloo"][k]), k
        reports = {n: json.loads((out / "runs" / f"s{seed}_{n}" / "report.json").read_text())
                   for n in ("reinforce", "rloo")}
        # same images and the same samples of them every step: the same ELBO, bit for bit
        assert reports["reinforce"]["elbo_history"] == reports["rloo"]["elbo_history"]
        dig = [next(s["digests"] for s in rows[n]["seeds"] if s["seed"] == seed)
               for n in ("reinforce", "rloo")]
        assert dig[0] == dig[1]
    # and the seeds differ from each other, in weights and in draws
    a, b = (torch.load(out / "runs" / f"s{s}_rloo" / "checkpoint.pt", weights_only=False)["model"]
            for s in SEEDS)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    h = [json.loads((out / "runs" / f"s{s}_rloo" / "report.json").read_text())["elbo_history"]
         for s in SEEDS]
    assert h[0] != h[1]
    seeds_rows = rows["rloo"]["seeds"]
    assert seeds_rows[0]["digests"]["data"] == seeds_rows[1]["digests"]["data"]
    assert seeds_rows[0]["digests"]["batches"] != seeds_rows[1]["digests"]["batches"]


def test_estimator_options_parse_and_name_the_fix():
    from learners.diagnose import options_for, parse_options
    from learners.mesh_train import MeshRunConfig

    assert parse_options(["rloo.normalize=true", "rloo.keep_scale=false", "neural.hidden=8"]) == {
        "rloo": {"normalize": True, "keep_scale": False}, "neural": {"hidden": 8}}
    with pytest.raises(ConfigError, match="ESTIMATOR.OPTION=VALUE"):
        parse_options(["normalize=true"])
    with pytest.raises(ConfigError, match="ESTIMATOR.OPTION=VALUE"):
        parse_options(["rloo.normalize"])
    with pytest.raises(ConfigError, match="'vimco' is not one of the estimators run"):
        parse_options(["vimco.x=1"], ["rloo", "reinforce"])
    cfg = from_dict(MeshRunConfig, {"estimator": {"name": "rloo", "kwargs": {"normalize": True}}})
    assert options_for("rloo", cfg, {}) == {"normalize": True}
    assert options_for("reinforce", cfg, {}) == {}  # the crash of the committed config
    assert options_for("rloo", cfg, {"rloo": {"normalize": False}}) == {"normalize": False}


def test_a_budget_under_one_step_is_refused_with_the_fix(tmp_path, capsys):
    from benchmarks.estimators import main

    with pytest.raises(SystemExit):
        main(["--quick", "--budget", "5", "--no-softras", "--out", str(tmp_path)])
    assert "raise --budget" in capsys.readouterr().err


def test_estimators_with_networks_start_from_the_same_network(tmp_path):
    """An estimator's own networks (neural, lax) draw their initial weights too: the model's
    must still be the one every other estimator starts from at that seed."""
    from learners.mesh_train import run

    weights = {}
    for name in ("reinforce", "neural"):
        cfg = tiny(tmp_path, steps=1, lr=0.0)
        cfg.name, cfg.estimator.name, cfg.pool.backend = name, name, "local"
        weights[name] = torch.load(run(cfg)["checkpoint"], weights_only=False)["model"]
    assert all(torch.equal(v, weights["neural"][k]) for k, v in weights["reinforce"].items())
