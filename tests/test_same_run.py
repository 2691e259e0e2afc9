"""benchmarks/same_run.py on reports whose truth is known: histories that part at a chosen step,
a report without a digest whose checkpoint holds the same or other weights."""

import json

import pytest
import torch

from benchmarks import same_run
from learners.provenance import digest


def write_run(path, history, weights=None, with_digest=True, pyramid=30.0, config=None):
    path.mkdir(parents=True)
    config = {"name": path.name, "seed": 0, "train": {"steps": 4, "lr": 1e-3}} | (config or {})
    (path / "config.json").write_text(json.dumps(config))
    report = {"scores": {"iou": 0.9, "psnr": 23.0, "rot_err_kind_deg": 20.0,
                         "per_kind": {"pyramid": {"rot_err_kind_deg": pyramid},
                                      "sphere": {"rot_err_kind_deg": None}}},
              "scores_unseen": {"iou": 0.85}, "elbo_history": history,
              "budget": {"steps": len(history)}, "machine": {"cpu": "Some CPU"}}
    if weights is not None:
        torch.save({"model": weights, "step": len(history)}, path / "checkpoint.pt")
        if with_digest:
            report["digest"] = {"model": digest(weights), "state": "x"}
    (path / "report.json").write_text(json.dumps(report))
    return str(path)


def test_same_weights_and_the_step_where_histories_part(tmp_path, capsys):
    w = {"a": torch.arange(4.0)}
    other = {"a": torch.arange(4.0) + 1e-7}
    runs = [write_run(tmp_path / "ref", [1.0, 2.0, 3.0, 4.0], w),
            write_run(tmp_path / "twin", [1.0, 2.0, 3.0, 4.0], w),
            write_run(tmp_path / "parts", [1.0, 2.0, 3.5, 4.0], other, pyramid=34.0,
                      config={"seed": 1, "train": {"steps": 4, "lr": 2e-3}}),
            write_run(tmp_path / "short", [1.0, 2.0, 3.0], w, with_digest=False,
                      config={"model": {"new": True}})]
    rows = {r["run"]: r for r in same_run.compare(runs)}
    assert rows[runs[1]]["same_weights"] and rows[runs[1]]["parts_at_step"] is None
    assert rows[runs[1]]["config_diff"] == ""  # the names differ, which is not the run
    assert rows[runs[2]]["config_diff"] == "seed, train.lr"
    assert rows[runs[3]]["config_diff"] == "1 key in one only"
    assert rows[runs[2]]["same_weights"] is False and rows[runs[2]]["parts_at_step"] == 3
    assert rows[runs[2]]["pyramid_deg"] == 34.0 and "sphere_deg" not in rows[runs[2]]
    # no digest in its report: read off its checkpoint, the same weights as the reference's
    assert rows[runs[3]]["same_weights"] and rows[runs[3]]["parts_at_step"] == 4
    assert same_run.main(["--runs", *runs, "--json", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert [r["parts_at_step"] for r in out["rows"]] == [None, None, 3, 4]
    assert "pyramid_deg" in capsys.readouterr().out


def test_a_directory_without_a_report_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty: no report.json"):
        same_run.compare([str(tmp_path / "empty")])
