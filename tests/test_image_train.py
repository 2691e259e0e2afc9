"""The image_volume task: configs, a tiny run from images alone scored in 3D, and resume."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from learners.config import ConfigError, load
from learners.image_train import run

ROOT = Path(__file__).resolve().parents[1]

# 16^3 primitives, 16x16 depth images, T=2: small enough for a few hundred CPU steps
TINY = ["data.size=16", "data.n_train=48", "data.n_test=16", "views.image_size=16",
        "views.depth_samples=32", "views.n_targets=3", "model.projection.image_size=16",
        "model.projection.conv3d=[4]", "model.projection.conv2d=[16]",
        "model.volume.canvas_size=16", "model.volume.steps=2", "model.volume.hidden=64",
        "model.volume.enc_hidden=64", "model.volume.write_patch=4", "model.volume.read_patch=4",
        "model.volume.context_dim=32", "model.reader_dim=64", "train.batch=8",
        "train.lr=0.004", "train.log_every=20", "train.image_every=100",
        "train.checkpoint_every=100", "eval.batch=16", "eval.iwae_samples=2",
        "eval.grid_items=2"]



def tiny(tmp_path: Path, config: str, *extra: str):
    over = TINY + [f"out_dir={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
                   *extra]
    return load(ROOT / "configs" / config, over)[1]


@pytest.mark.parametrize("config", ["images_single.yaml", "images_multiview.yaml"])
def test_shipped_configs_validate(config):
    task, cfg = load(ROOT / "configs" / config)
    assert cfg.views.experiment in config
    assert cfg.model.volume.canvas_size == cfg.data.volume_size


def test_mismatched_config_is_named(tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "images_multiview.yaml").read_text())
    data["model"]["projection"]["likelihood"] = "gaussian"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="likelihood: bernoulli"):
        load(p)
    with pytest.raises(ConfigError, match="canvas_size"):
        load(ROOT / "configs" / "images_single.yaml", ["model.volume.canvas_size=32"])
    with pytest.raises(ConfigError, match="context: none"):
        load(ROOT / "configs" / "images_single.yaml", ["model.volume.context=views"])


def test_tiny_model_learns_3d_from_images_alone(tmp_path):
    """Trained on silhouettes only (3 context + 3 random target views per shape), the inferred
    canvas beats an empty and a full volume in 3D IoU against held-out volumes it never saw."""
    torch.manual_seed(0)
    cfg = tiny(tmp_path, "images_multiview.yaml", "train.steps=250", "name=learn",
               "views.image=silhouette", "model.projection.likelihood=bernoulli",
               "model.projection.render=max")
    report = run(cfg)
    assert report["budget"]["steps"] == 250
    assert report["iou3d_empty"] == 0.0 and 0 < report["iou3d_full"] < 0.2
    assert report["iou3d"] > report["iou3d_full"] + 0.05, report
    assert report["iou3d"] > report["iou3d_empty"]
    d = tmp_path / "runs" / "learn"
    assert json.loads((d / "report.json").read_text())["iou3d"] == report["iou3d"]
    assert (d / "views.png").stat().st_size > 0 and (d / "checkpoint.pt").is_file()
    assert any((d / "tb").iterdir())


def test_resume_continues_exactly(tmp_path):
    """Three steps, stop, resume for three more: the same weights as six steps in one go."""
    a = tiny(tmp_path, "images_single.yaml", "train.steps=6", "name=whole", "eval.iwae_samples=0")
    whole = run(a)
    b = tiny(tmp_path, "images_single.yaml", "train.steps=3", "name=split", "eval.iwae_samples=0")
    run(b)
    b.train.steps = 6
    report = run(b, resume=True)
    assert report["budget"]["steps"] == 6
    wa = torch.load(tmp_path / "runs" / "whole" / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "runs" / "split" / "checkpoint.pt", weights_only=False)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert report["digest"] == whole["digest"]  # weights, optimiser and generators alike
