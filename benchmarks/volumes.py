"""Speed and quality of the volume model (issue 4).

Speed: one training step (forward, backward, clip, Adam) at T=12 on 32^3 volumes, B=64 and
B=1024, for the separable VST write and the naive one that samples the whole canvas at every
step (``write_mode: dense``); on CUDA also with the step captured as a CUDA graph.
Quality: held-out Primitives-30^3 bounds (negative ELBO and IWAE, nats per volume) at
T in {1, 6, 12} after a fixed number of steps, and the IoU of completed left halves.

    python benchmarks/volumes.py --quick --json benchmarks/volumes.json          # CPU
    python benchmarks/volumes.py --device cuda --json benchmarks/volumes_gpu.json

Prints a table and writes ``{"machine", "speed": [...], "quality": [...], "completion"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gen3d.data.vol_procedural import primitives  # noqa: E402
from gen3d.data.volumes import VolumeDataConfig  # noqa: E402
from gen3d.volumes.model import VolumeModel, VolumeModelConfig  # noqa: E402
from learners.provenance import cpu_model  # noqa: E402
from learners.volume_train import (EvalConfig, TrainConfig, TrainStep,  # noqa: E402
                                   VolumeRunConfig, run)


def machine(device: str) -> str:
    cpu = f"{cpu_model()}, {torch.get_num_threads()} threads"
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} ({cpu}), torch {torch.__version__}"
    return f"CPU {cpu}, torch {torch.__version__}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_step(device: str, batch: int, write: str, graph: bool, iters: int, warmup: int,
              compile_steps: bool = False) -> dict:
    """Mean wall time of one training step at T=12, 32^3, on primitives-like volumes."""
    torch.manual_seed(0)
    vols, _ = primitives(min(batch, 256), seed=0, size=32, extent=12)
    x = torch.from_numpy(vols).float()[:, None].repeat(-(-batch // len(vols)), 1, 1, 1, 1)[:batch]
    x = x.to(device)
    model = VolumeModel(VolumeModelConfig(steps=12, canvas_size=32, write_mode=write)).to(device)
    if compile_steps:
        model.compile_steps(dynamic=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, capturable=graph)
    step = TrainStep(model, opt, clip=100.0, graph=graph)
    for _ in range(warmup):
        step(x, None)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        loss = step(x, None)[0]
    sync(device)
    ms = (time.perf_counter() - t0) / iters * 1000
    cpu_ms = (time.process_time() - c0) / iters * 1000  # robust to other processes' load
    if not torch.isfinite(loss):
        raise FloatingPointError(f"speed run diverged (batch {batch}, {write})")
    return {"T": 12, "batch": batch, "write": write, "cuda_graph": graph, "device": device,
            "compiled": compile_steps, "step_ms": round(ms, 2),
            "volumes_per_s": round(batch / ms * 1000, 1), "process_cpu_ms": round(cpu_ms, 1)}


def flush(args, result: dict) -> None:
    """Write the JSON so far: a run cut short by a time limit keeps what it measured."""
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def speed(args, result: dict) -> list[dict]:
    rows = result["speed"]
    cuda = args.device.startswith("cuda")
    for write in args.writes:
        for batch in args.batches:
            if not cuda and write == "dense" and batch > 64 and args.quick:
                continue  # the naive CPU step at B=1024 takes minutes; B=64 shows the trap
            for graph in ([False, True] if cuda else [False]):
                iters = 2 if (not cuda and (batch > 64 or write == "dense")) else args.iters
                warm = 1 if not cuda else 3
                try:
                    row = time_step(args.device, batch, write, graph, iters, warm)
                except torch.OutOfMemoryError:
                    row = {"T": 12, "batch": batch, "write": write, "cuda_graph": graph,
                           "device": args.device, "error": "out of memory"}
                    torch.cuda.empty_cache()
                rows.append(row)
                print(json.dumps(row), flush=True)
                flush(args, result)
    if cuda and args.compile and "separable" in args.writes:
        for batch in args.batches:  # compiled per-step function inside the CUDA graph
            try:
                row = time_step(args.device, batch, "separable", True, args.iters, 3, True)
            except Exception as e:  # report, don't lose the other rows
                row = {"T": 12, "batch": batch, "write": "separable", "cuda_graph": True,
                       "compiled": True, "device": args.device, "error": repr(e)[:300]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            flush(args, result)
    return rows


def quality(args, result: dict) -> None:
    rows = result["quality"]
    result["quality_budget"] = (f"{args.steps} Adam steps of batch 64 (lr 1e-3) on "
                                f"{args.n_train} volumes; bounds on {args.n_test} held out")
    cuda = args.device.startswith("cuda")
    for t in args.T:
        for context in args.contexts:
            cfg = VolumeRunConfig(
                name=f"bench_volumes_T{t}_{context}", out_dir=args.out_dir, seed=0,
                device=args.device,
                data=VolumeDataConfig(dataset="primitives", n_train=args.n_train,
                                      n_test=args.n_test, cache_dir=args.cache_dir),
                model=VolumeModelConfig(steps=t, canvas_size=30, context=context,
                                        n_views=3, n_classes=6),
                train=TrainConfig(steps=args.steps, batch=64, lr=1e-3,
                                  eval_every=max(args.steps // 4, 1), ckpt_every=args.steps,
                                  log_every=25, cuda_graph=cuda),
                eval=EvalConfig(n_eval=args.n_test, iwae_k=args.iwae_k, n_pictures=12,
                                completion=(t == max(args.T) and context == "none"),
                                completion_steps=args.completion_steps, n_completion=128))
            t0 = time.time()
            rep = run(cfg)
            row = {"dataset": "primitives", "T": t, "context": context,
                   "bound_nats": round(rep["neg_elbo_nats"], 1),
                   "iwae_nats": round(rep["neg_iwae_nats"], 1) if "neg_iwae_nats" in rep else None,
                   "steps": args.steps, "batch": 64, "train_s": round(time.time() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if "completion_iou" in rep:
                result["completion"] = {
                        "dataset": "primitives", "T": t, "iou": round(rep["completion_iou"], 3),
                        "iou_empty_half": round(rep["completion_iou_empty"], 3),
                        "chain_steps": rep["completion_steps"],
                        "volumes": rep["completion_volumes"]}
                print(json.dumps(result["completion"]), flush=True)
            flush(args, result)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--quick", action="store_true", help="fewer steps and volumes")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--only", choices=["speed", "quality"], help="run one half")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--batches", default="64,1024", help="speed: batch sizes")
    ap.add_argument("--writes", default="separable,dense", help="speed: write modes")
    ap.add_argument("--iters", type=int, default=10, help="speed: timed steps")
    ap.add_argument("--compile", action="store_true",
                    help="speed on CUDA: also time the torch.compile'd step inside the graph")
    ap.add_argument("--T", default="1,6,12", help="quality: steps T")
    ap.add_argument("--contexts", default="none", help="quality: none,class,views")
    ap.add_argument("--steps", type=int, default=0, help="quality: training steps (budget)")
    ap.add_argument("--iwae-k", type=int, default=10)
    ap.add_argument("--n-train", dest="n_train_arg", type=int, default=0, help="quality: training volumes")
    ap.add_argument("--completion-steps", type=int, default=50)
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--cache-dir", default="data_cache/volumes")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.set_float32_matmul_precision("high")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.writes = args.writes.split(",")
    args.T = [int(t) for t in args.T.split(",")]
    args.contexts = args.contexts.split(",")
    args.steps = args.steps or (150 if args.quick else 1500)
    args.n_train, args.n_test = (1000, 100) if args.quick else (4000, 500)
    args.n_train = args.n_train_arg if args.n_train_arg else args.n_train
    if args.quick:
        args.iters = min(args.iters, 3)
    result: dict = {"machine": machine(args.device), "speed": [], "quality": []}
    if args.only != "quality":
        speed(args, result)
    if args.only != "speed":
        quality(args, result)
    print(f"\nmachine: {result['machine']}")
    print(f"{'write':>10} {'graph':>5} {'comp.':>5} {'batch':>6} {'step ms':>9} {'volumes/s':>10}")
    for r in result["speed"]:
        print(f"{r['write']:>10} {str(r['cuda_graph']):>5} {str(r.get('compiled')):>5} {r['batch']:>6} "
              f"{r.get('step_ms', float('nan')):>9} {r.get('volumes_per_s', float('nan')):>10}")
    for r in result["quality"]:
        print(f"primitives T={r['T']:>2} context={r['context']:<5} -ELBO {r['bound_nats']:>7} "
              f"-IWAE {r['iwae_nats']} nats ({r['steps']} steps, {r['train_s']} s)")
    if result.get("completion"):
        print(f"completion IoU {result['completion']}")
    flush(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
