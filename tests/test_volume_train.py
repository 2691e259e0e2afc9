"""End to end: ``python -m learners.run`` with tiny volume configs trains, logs, reports,
checkpoints and resumes; bad configs stop before training with the key named."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from learners import run as run_mod
from learners.config import ConfigError, load



def tiny_config(tmp_path, name: str, **over) -> str:
    cfg = {
        "task": "volume", "name": name, "out_dir": str(tmp_path / "runs"),
        "data": {"dataset": "primitives", "size": 12, "n_train": 24, "n_test": 16,
                 "cache_dir": str(tmp_path / "cache")},
        "model": {"steps": 2, "z_dim": 3, "hidden": 24, "enc_hidden": 24, "canvas_size": 12,
                  "write_patch": 4, "read_patch": 4},
        "train": {"steps": 6, "batch": 8, "log_every": 2, "eval_every": 3, "ckpt_every": 3},
        "eval": {"n_eval": 8, "iwae_k": 3, "n_pictures": 4, "completion": True,
                 "completion_steps": 3, "n_completion": 4},
    }
    for k, v in over.items():
        cfg[k].update(v)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_run_reports_and_resumes(tmp_path):
    path = tiny_config(tmp_path, "gen")
    assert run_mod.main(["--config", path]) == 0
    d = tmp_path / "runs" / "gen"
    rep = json.loads((d / "report.json").read_text())
    assert rep["steps"] == 6 and rep["neg_elbo_nats"] > 0
    assert rep["iwae_nats"] >= rep["elbo_nats"] - 5  # k = 3: tighter up to noise
    assert 0 <= rep["completion_iou"] <= 1
    for f in ("samples.png", "completion.png", "checkpoint.pt", "config.json"):
        assert (d / f).is_file()
    assert any((d / "tb").iterdir())
    state = torch.load(d / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6
    # resume to 9 steps: starts from the checkpoint's weights and step
    assert run_mod.main(["--config", path, "--resume", "--set", "train.steps=9"]) == 0
    state2 = torch.load(d / "checkpoint.pt", weights_only=False)
    assert state2["step"] == 9
    assert json.loads((d / "report.json").read_text())["steps"] == 9
    w0, w1 = state["model"]["what.weight"], state2["model"]["what.weight"]
    assert not torch.equal(w0, w1)


def test_class_conditional_run_reports_accuracy(tmp_path):
    path = tiny_config(tmp_path, "cls", model={"context": "class", "n_classes": 6},
                       eval={"completion": False, "iwae_k": 0})
    assert run_mod.main(["--config", path]) == 0
    rep = json.loads((tmp_path / "runs" / "cls" / "report.json").read_text())
    assert 0 <= rep["nearest_mean_accuracy"] <= 1 and rep["chance"] == pytest.approx(1 / 6)


def test_views_run(tmp_path):
    path = tiny_config(tmp_path, "views", model={"context": "views", "n_views": 2,
                                                  "context_dim": 8},
                       eval={"completion": False, "iwae_k": 0})
    assert run_mod.main(["--config", path, "--set", "train.steps=2"]) == 0


def test_bad_configs_name_the_key(tmp_path, capsys):
    path = tiny_config(tmp_path, "bad", model={"canvas_size": 16})
    task, cfg = load(path)
    with pytest.raises(ConfigError, match="model.canvas_size"):
        task.run(cfg)
    path = tiny_config(tmp_path, "bad2", model={"context": "class", "n_classes": 3})
    task, cfg = load(path)
    with pytest.raises(ConfigError, match="n_classes: 6"):
        task.run(cfg)
    assert run_mod.main(["--config", path, "--set", "model.stepz=3"]) == 2
    assert "stepz" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        load(path, ["model.steps=0"])


@pytest.mark.parametrize("name", ["volumes_generation", "volumes_class", "volumes_completion"])
def test_shipped_configs_validate(name):
    task, cfg = load(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    assert cfg.model.canvas_size == 30 and cfg.data.dataset == "primitives"
