"""The benchmarks' shared helpers: the summary over seeds (mean, spread and extremes of each
numeric score) and loading a finished run."""

import pytest

from benchmarks.common import seed_spread


def test_seed_spread_summarises_numeric_scores_over_seeds():
    runs = [{"seed": 0, "iou": 0.90, "steps": 100, "stopped_by": "steps"},
            {"seed": 1, "iou": 0.88, "steps": 100, "stopped_by": "steps"},
            {"seed": 2, "iou": 0.95, "steps": 100, "stopped_by": "time_limit"}]
    s = seed_spread(runs, ["seed", "iou", "steps", "stopped_by"])
    assert set(s) == {"mean", "std", "min", "max"} and set(s["mean"]) == {"iou", "steps"}
    assert s["mean"]["iou"] == pytest.approx(0.91)
    assert s["std"]["iou"] == pytest.approx(0.036055, rel=1e-4)  # sqrt(0.0026 / 2)
    assert (s["min"]["iou"], s["max"]["iou"]) == (0.88, 0.95)
    assert s["std"]["steps"] == 0.0


def test_a_benchmark_pointed_at_no_run_says_which_file_is_missing(tmp_path):
    from benchmarks.common import load_run

    with pytest.raises(SystemExit, match=r"no config\.json or checkpoint\.pt\); pass --run runs/<name>"):
        load_run(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"\(no checkpoint.pt\)"):
        load_run(str(tmp_path))


def test_a_benchmark_takes_a_positive_image_count_only():
    from benchmarks.common import run_parser

    ap = run_parser("doc", 500, "images")
    assert ap.parse_args(["--run", "r", "--n", "3"]).n == 3
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit):
            ap.parse_args(["--run", "r", "--n", bad])


def test_a_benchmark_pointed_at_a_torn_checkpoint_or_another_task_says_so_in_one_line(tmp_path):
    import shutil
    from pathlib import Path

    from benchmarks.common import load_run

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "configs" / "volumes_generation.yaml", tmp_path / "config.json")
    (tmp_path / "checkpoint.pt").write_bytes(b"torn")
    with pytest.raises(SystemExit, match="a VolumeRunConfig run; this benchmark reads mesh runs"):
        load_run(str(tmp_path))
    shutil.copy(root / "configs" / "primitives.yaml", tmp_path / "config.json")
    with pytest.raises(SystemExit, match=r"checkpoint .* cannot be read .*give another --run"):
        load_run(str(tmp_path))


def test_refinement_settings_are_read_before_anything_loads():
    import argparse

    from benchmarks.refine import parse_settings

    got = parse_settings("150:16:0.01:0.01,100:8:0.02:0.005")
    assert [t for t, _ in got] == ["150:16:0.01:0.01", "100:8:0.02:0.005"]
    assert (got[1][1].steps, got[1][1].samples, got[1][1].std, got[1][1].lr) == (100, 8, 0.02, 0.005)
    for bad in ("2:4", "a:16:0.01:0.01"):
        with pytest.raises(argparse.ArgumentTypeError, match="steps:samples:std:lr|invalid literal"):
            parse_settings(bad)
