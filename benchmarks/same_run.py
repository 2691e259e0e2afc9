"""Are these the same run? Finished runs compared with the first one given: whether their final
weights are bit-identical (the reports' ``digest``; for a report without one, the digest of
the checkpoint's weights), the config keys they differ in, the first step at which their ELBO
histories part, and their held-out scores side by side (IoU, PSNR, unseen kinds, each kind's
turn) with the CPU each ran on.

    python benchmarks/same_run.py --runs runs/a runs/b [runs/c ...] [--json PATH]

One config, seed and step count on one machine give the same run. On another CPU model the
float kernels differ in the last bits, the histories part after some steps, and the scores
show how far apart that leaves two runs of the same seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, table, write_json  # noqa: E402


def read_report(run: str) -> dict:
    path = Path(run) / "report.json"
    if not path.is_file():
        raise SystemExit(f"{run}: no report.json; pass finished runs' directories (runs/<name>)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not JSON ({e}); the run may not have finished") from None


NOT_THE_RUN = ("name", "out_dir")
"""Config keys that say where a run is written, not what it does."""


def flat(cfg: dict, prefix: str = "") -> dict:
    """A config as {"train.steps": 3000, ...}."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(run: str, reference: str) -> str:
    """The config keys (dotted) that ``run`` and ``reference`` both have and set differently,
    and how many keys only one has (an option added by later code, which may sit at a default
    that changes nothing): "" for none, "?" where either has no ``config.json``."""
    paths = [Path(r) / "config.json" for r in (run, reference)]
    if not all(p.is_file() for p in paths):
        return "?"
    a, b = (flat(json.loads(p.read_text())) for p in paths)
    keys = sorted(k for k in a.keys() & b.keys() if k not in NOT_THE_RUN and a[k] != b[k])
    text = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
    one_only = len(a.keys() ^ b.keys())
    if one_only:
        text += f"{'; ' if text else ''}{one_only} key{'s' * (one_only > 1)} in one only"
    return text


def model_digest(run: str, report: dict) -> str | None:
    """The final weights' digest: the report's, else the checkpoint's, else None."""
    if "digest" in report:
        return report["digest"]["model"]
    if not (Path(run) / "checkpoint.pt").is_file():
        return None
    from benchmarks.common import checkpoint
    from learners.provenance import digest

    return digest(checkpoint(run)["model"])


def parts_at(history: list, reference: list) -> int | None:
    """The first step (counted from 1) whose ELBO differs, or that only one run took; None for
    histories equal to the end."""
    for i, (a, b) in enumerate(zip(history, reference)):
        if a != b:
            return i + 1
    return None if len(history) == len(reference) else min(len(history), len(reference)) + 1


def scores(report: dict) -> dict:
    """The headline scores, whichever task's report: the mesh task's with each kind's turn."""
    s = report.get("scores", report)
    row = {k: s.get(k) for k in ("iou", "psnr", "rot_err_kind_deg") if s.get(k) is not None}
    if "scores_unseen" in report:
        row["iou_unseen"] = report["scores_unseen"]["iou"]
    for kind, v in s.get("per_kind", {}).items():
        if isinstance(v, dict) and v.get("rot_err_kind_deg") is not None:
            row[f"{kind}_deg"] = v["rot_err_kind_deg"]
    return row


def compare(runs: list[str]) -> list[dict]:
    reports = [read_report(r) for r in runs]
    ref_digest = model_digest(runs[0], reports[0])
    ref_history = reports[0].get("elbo_history")
    rows = []
    for run, rep in zip(runs, reports):
        d = model_digest(run, rep)
        row = {"run": run, "cpu": rep.get("machine", {}).get("cpu", "?"),
               "steps": rep.get("budget", {}).get("steps"), "digest": d,
               "same_weights": None if d is None or ref_digest is None else d == ref_digest,
               "config_diff": config_diff(run, runs[0])}
        if rep.get("elbo_history") and ref_history:  # the mesh task keeps one
            row["parts_at_step"] = parts_at(rep["elbo_history"], ref_history)
        rows.append(row | scores(rep))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True,
                    help="finished runs' directories; the first is the reference")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    rows = compare(args.runs)
    cols = list(dict.fromkeys(k for r in rows for k in r if k != "cpu"))
    print(table(rows, cols))
    for r in rows:
        print(f"{r['run']}: {r['cpu']}")
    write_json(args.json, {"machine": machine(), "runs": args.runs, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
