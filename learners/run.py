"""Entry point: ``python -m learners.run --config configs/<name>.yaml [--set k=v ...] [--resume]
[--import my_module ...]``.

The config's ``task`` picks the training loop (mesh, volume, image_volume, ...); every key is
validated before anything starts.
"""

from __future__ import annotations

import argparse
import sys

from learners import rundir
from learners.config import IMPORT_HELP, ConfigError, import_modules, load
from learners.skeleton import RunInterrupted
from workers.contract import WorkerError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m learners.run", description=__doc__)
    ap.add_argument("--config", required=True, help="YAML experiment file, e.g. configs/primitives.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set train.steps=100 (repeatable)")
    ap.add_argument("--resume", action="store_true", help="continue from runs/<name>/checkpoint.pt")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                    help=IMPORT_HELP)
    args = ap.parse_args(argv)
    try:
        import_modules(args.imports)
        task, cfg = load(args.config, args.overrides)
        rundir.preflight(cfg, args.resume)  # seconds, not after the data and Ray are up
        task.run(cfg, resume=args.resume)
    # a bad config, a busy run directory, a checkpoint that cannot resume, no workers to be
    # had, a cluster not reached: one line each
    except (ConfigError, WorkerError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunInterrupted as e:  # Ctrl-C: checkpointed at a step's end
        print(e, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
