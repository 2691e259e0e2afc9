"""A user's own estimator picked up by name from a config and trained with, then the
diagnostics CLI on that run's checkpoint (CPU, llvmpipe, local Ray)."""

import json
import math
import subprocess
import sys

import pytest
import torch
import yaml

from gen3d.estimators import Batch, Estimator, register
from gen3d.estimators.base import leave_one_out_mean
from learners.config import ConfigError, from_dict, to_dict
from tests.test_mesh_train import tiny


@register("test_clipped_rloo")
class ClippedRLOO(Estimator):
    """A user's estimator: RLOO with the advantages clipped; counts its calls."""

    min_samples = 2
    calls: list = []

    def __init__(self, clip: float = 1e9) -> None:
        super().__init__()
        self.clip = clip

    def loss(self, batch: Batch) -> torch.Tensor:
        ClippedRLOO.calls.append((self.clip, tuple(batch.reward.shape)))
        adv = (batch.reward - leave_one_out_mean(batch.reward)).clamp(-self.clip, self.clip)
        return -(adv * (batch.logp - batch.logp.detach())).mean() - batch.reward.mean()


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """Two steps of the tiny config with ``estimator: test_clipped_rloo`` (clip 5)."""
    from learners.mesh_train import MeshRunConfig, run

    tmp = tmp_path_factory.mktemp("diagnose")
    d = to_dict(tiny(tmp, steps=2))
    d["estimator"] = {"name": "test_clipped_rloo", "kwargs": {"clip": 5.0}}
    cfg = from_dict(MeshRunConfig, d, "user config")
    ClippedRLOO.calls.clear()
    report = run(cfg)
    return tmp, d, report


def test_a_user_registered_estimator_is_picked_up_by_name_from_a_config(user_run):
    from learners.mesh_train import MeshRunConfig

    tmp, d, report = user_run
    b, k = d["train"]["batch"], d["train"]["samples"]
    # every micro-batch of both steps went through it, with the config's option
    parts = min(d["train"]["microbatches"], b)
    assert len(ClippedRLOO.calls) == 2 * parts
    assert {c for c, _ in ClippedRLOO.calls} == {5.0}
    assert sum(shape[0] for _, shape in ClippedRLOO.calls) == 2 * b
    assert all(shape[1] == k for _, shape in ClippedRLOO.calls)
    assert report["scores"]["steps"] == 2
    saved = torch.load(report["checkpoint"], weights_only=False)
    assert saved["config"]["estimator"]["name"] == "test_clipped_rloo"
    with pytest.raises(ConfigError, match="unknown estimator 'test_not_registered'"):
        from_dict(MeshRunConfig, {"estimator": {"name": "test_not_registered"}}, "cfg")


def test_diagnose_cli_writes_finite_figures_and_loo_beats_plain_reinforce(user_run):
    tmp, d, report = user_run
    d = dict(d, estimator={"name": "rloo"}, task="mesh")  # the CLI's process knows built-ins only
    cfg_path = tmp / "diag.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    out = tmp / "diag_out"
    n = 100
    proc = subprocess.run(
        [sys.executable, "-m", "learners.diagnose", "--config", str(cfg_path), "--checkpoint",
         report["checkpoint"], "--estimators", "reinforce,rloo,pathwise,moving_average",
         "--opt", "moving_average.bogus=2", "--opt", "rloo.normalize=false", "--estimates", str(n),
         "--ref-estimates", "30", "--oracle-estimates", "5", "--warmup", "0", "--no-progress",
         "--std-scale", "0.5",
         "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "diagnose.json").read_text())
    # the samples were drawn at half the checkpoint's std
    ck = torch.load(report["checkpoint"], weights_only=False)["model"]
    own = (d["model"]["min_std"] + ck["log_std"].exp()).mean()
    assert res["settings"]["model_std_mean"] == pytest.approx(0.5 * float(own), rel=1e-6)

    def numbers(x):
        if isinstance(x, dict):
            return [v for val in x.values() for v in numbers(val)]
        if isinstance(x, list):
            return [v for val in x for v in numbers(val)]
        return [x] if isinstance(x, float) else []

    assert all(math.isfinite(v) for v in numbers(res["rows"]) + numbers(res["reference"]))
    rows = {r["estimator"]: r for r in res["rows"]}
    assert set(rows) == {"reinforce", "rloo", "pathwise", "moving_average"}
    # an option the estimator does not take fails its row alone, naming what it does take
    ma = rows.pop("moving_average")
    assert "bogus" in ma["error"] and "decay" in ma["error"] and "var_mean" not in ma
    assert not any("error" in r for r in rows.values())
    assert rows["rloo"]["options"] == {"normalize": False} and rows["reinforce"]["options"] == {}
    bk = d["train"]["batch"] * d["train"]["samples"]
    for name in ("reinforce", "rloo"):
        r = rows[name]
        assert r["estimates"] == n and r["renders_per_estimate"] == bk and r["gl_renders"] == n * bk
        assert r["var_max"] >= r["var_mean"] > 0 and -1 <= r["cos_oracle"] <= 1
        # both are unbiased for the ELBO gradient the reference estimates: their distance to it
        # is the noise the variances predict (it concentrates in many dimensions)
        assert r["bias_rel"] < 1.5 * r["bias_noise_floor_rel"], r
    assert rows["reinforce"]["var_mean"] > rows["rloo"]["var_mean"]
    assert rows["rloo"]["var_ratio_vs_reinforce"] > 1
    assert rows["pathwise"]["render_kind"] == "soft" and rows["pathwise"]["gl_renders"] == 0
    assert (out / "diagnose.png").stat().st_size > 0 and list((out / "tb").glob("events.*"))


def test_diagnose_cli_refuses_unknown_estimators(tmp_path, capsys):
    from learners.diagnose import main

    p = tmp_path / "c.yaml"
    p.write_text("task: mesh\n")
    assert main(["--config", str(p), "--checkpoint", "nope.pt", "--estimators", "rloo,bogus"]) == 2
    assert "unknown ['bogus']" in capsys.readouterr().err
    assert main(["--config", str(p), "--checkpoint", "nope.pt", "--std-scale", "0"]) == 2
    assert "--std-scale must be > 0" in capsys.readouterr().err
    p.write_text("task: mesh\ndata:\n  second_view: 90\n")
    assert main(["--config", str(p), "--checkpoint", "nope.pt"]) == 2
    assert "data.second_view: diagnostics measure" in capsys.readouterr().err
    p.write_text("task: mesh\n")
    assert main(["--config", str(p), "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt: no such file" in capsys.readouterr().err
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"not a checkpoint")
    assert main(["--config", str(p), "--checkpoint", str(torn)]) == 2
    assert "cannot be read" in capsys.readouterr().err.splitlines()[-1]
