"""What this machine gives gen3d: which torch build is installed and whether the learner can
use a GPU with it (what ``device: auto`` will choose), and the EGL devices OpenGL can render
on (the render workers' GPUs, or Mesa's llvmpipe on the CPU). ``scripts/setup.sh`` runs it at
its end; run it on its own with

    .venv/bin/python scripts/machine_report.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def torch_report() -> dict:
    import torch

    from learners.device import cuda_problem, describe, resolve_device

    dev = resolve_device("auto", announce=False)
    return {"torch": torch.__version__, "cuda_build": torch.version.cuda,
            "gpus": torch.cuda.device_count() if dev.type == "cuda" else 0,
            "auto": describe(dev), "cuda_problem": cuda_problem()}


def egl_devices(max_devices: int = 16) -> tuple[list[dict], str | None]:
    """The GL renderer of each EGL device (tried in order until one is missing), and the error
    that ended the list when not even the first one works."""
    from envs.gl import GLUnavailableError, create_context, describe

    found: list[dict] = []
    for i in range(max_devices):
        try:
            ctx = create_context(device_index=i)
        except GLUnavailableError as e:
            return found, None if found else str(e)
        found.append({"index": i, **describe(ctx)})
        ctx.release()
    return found, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args(argv)
    t = torch_report()
    gl, gl_error = egl_devices()
    build = f"a CUDA {t['cuda_build']} build" if t["cuda_build"] else "a CPU-only build"
    print(f"torch {t['torch']} ({build}); the learner's device: auto -> {t['auto']}")
    if gl_error:
        print(f"OpenGL: no usable EGL device: {gl_error}")
    for d in gl:
        print(f"OpenGL: EGL device {d['index']}: {d['renderer']} ({d['version']})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"torch": t, "egl_devices": gl, "gl_error": gl_error},
                                              indent=2))
    return 0 if gl else 1


if __name__ == "__main__":
    sys.exit(main())
