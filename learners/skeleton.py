"""What every learner's run shares: seeds, the torch device, the run directory and its log,
the one resume path, the random state, the time limit, checkpoints, and the end of the run
(``report.json`` with its budget, the machine and digests of the final state, and one summary
line).

A learner builds ``RunSkeleton``, makes its model and optimisers, hands them to ``track``
and calls ``restore`` (which does nothing for a fresh run); from then on ``save(step)``
checkpoints everything tracked and ``finish`` writes the report. Every checkpoint has the
same keys: each tracked object's ``state_dict`` under its name, ``step``, ``train_s``
(seconds of training, counted on across resumes), ``global_rng`` (torch, numpy and Python
generators) and ``config``.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learners import checkpoint
from learners.config import as_config_file, to_dict, validate
from learners.device import resolve_device
from learners.provenance import digest, machine
from learners.runlog import RunLog


def make_device(name: str) -> torch.device:
    """The torch device a config names ("auto", "cpu", "cuda", "cuda:1"), announced on
    stderr; a clear error when CUDA is asked for and cannot be used."""
    return resolve_device(name)


def seed_everything(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators (a run's own generators are
    seeded where they are made)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def global_rng_state() -> dict[str, Any]:
    return checkpoint.rng_state()


def generator_state(g: torch.Generator | np.random.Generator) -> Any:
    return g.get_state() if isinstance(g, torch.Generator) else g.bit_generator.state


def set_generator_state(g: torch.Generator | np.random.Generator, state: Any) -> None:
    if isinstance(g, torch.Generator):
        g.set_state(state)
    else:
        g.bit_generator.state = state


class RunInterrupted(Exception):
    """A run stopped by Ctrl-C at a step's end, its checkpoint written: the message says where
    and how to go on."""


class RunSkeleton:
    """One run of any task: ``cfg`` has ``name``, ``out_dir``, ``seed`` and ``device``.

    ``steps`` is the planned step count and ``time_limit_s`` (0: none) a wall-clock bound on
    training; with ``resume`` the checkpoint is read here, before anything is built, and its
    ``step`` and ``train_s`` carry on."""

    def __init__(self, cfg: Any, steps: int, resume: bool = False, time_limit_s: float = 0.0,
                 progress: bool = True):
        validate(cfg)  # a config built or changed in code gets the checks a config file gets
        self.cfg, self.steps, self.time_limit_s = cfg, steps, time_limit_s
        seed_everything(cfg.seed)
        self.device = make_device(cfg.device)
        # the run directory is locked, and a resumed checkpoint read and matched against the
        # config's model, before anything is written there
        self.log = RunLog(cfg.out_dir, cfg.name, steps, config=as_config_file(cfg),
                          progress=progress, resume=resume,
                          match=getattr(cfg, "resume_keys", ("model",)),
                          free=getattr(cfg, "resume_free", ()))
        self.state: dict[str, Any] | None = self.log.state
        self.start = int(self.state["step"]) if self.state else 0
        if self.start > steps:
            print(f"note: the checkpoint is at step {self.start}, past the {steps} steps asked "
                  "for; nothing is trained, the run is scored as it stands", file=sys.stderr)
        self._train_s = float(self.state.get("train_s", 0.0)) if self.state else 0.0
        self._born = time.time()
        self.start_clock()
        self._tracked: dict[str, Any] = {}
        self.stopped_by = "steps"
        self.interrupted = False

    # ------------------------------------------------------------------ state

    def track(self, **objects: Any) -> None:
        """Objects saved in every checkpoint under their names: anything with ``state_dict``
        and ``load_state_dict`` (models, optimisers, estimators), torch or numpy generators,
        or None (saved as None)."""
        self._tracked.update(objects)

    def restore(self, optional: tuple[str, ...] = ()) -> dict[str, Any]:
        """Load every tracked object's state from the resumed checkpoint (nothing for a fresh
        run); returns the checkpoint's dict (empty when fresh) for keys of the learner's own.
        Names in ``optional`` (state a resumed run may newly switch on) start afresh when the
        checkpoint has none."""
        if self.state is None:
            return {}
        st = self.state
        for name, obj in self._tracked.items():
            if obj is None or (name in optional and st.get(name) is None):
                continue
            if st.get(name) is None:
                raise ValueError(f"checkpoint {self.log.checkpoint_path} has no saved {name!r}: "
                                 "it was written by another config or version; start afresh "
                                 "without --resume (or with another name)")
            if isinstance(obj, (torch.Generator, np.random.Generator)):
                set_generator_state(obj, st[name])
            else:
                obj.load_state_dict(st[name])
        if "global_rng" in st:
            checkpoint.set_rng_state(st["global_rng"])
        return st

    def save(self, step: int, **extra: Any) -> Path:
        """Checkpoint every tracked object, the step, the training time, the random state and
        the config (plus ``extra`` keys), atomically."""
        st = self.tracked_states()
        st.update(step=step, train_s=self.elapsed, global_rng=global_rng_state(),
                  config=to_dict(self.cfg), **extra)
        return self.log.save(st)

    def tracked_states(self) -> dict[str, Any]:
        """Every tracked object's state under its name, as a checkpoint holds it."""
        st: dict[str, Any] = {}
        for name, obj in self._tracked.items():
            if obj is None:
                st[name] = None
            elif isinstance(obj, (torch.Generator, np.random.Generator)):
                st[name] = generator_state(obj)
            else:
                st[name] = obj.state_dict()
        return st

    # ------------------------------------------------------------------ clock

    def start_clock(self) -> None:
        """Start counting training time now (call it when the set-up is done), on from where
        a resumed run stopped."""
        self._t0 = time.time() - self._train_s
        self._stopped: float | None = None

    def stop_clock(self) -> None:
        """Stop counting training time (call it when the training loop ends), so that the
        final scoring is not reported, or resumed, as training."""
        self._stopped = self.elapsed

    @property
    def elapsed(self) -> float:
        """Seconds of training so far, resumed runs included."""
        return self._stopped if self._stopped is not None else time.time() - self._t0

    def out_of_time(self) -> bool:
        """True once the time limit is spent, or once Ctrl-C was pressed inside
        ``stop_on_interrupt``; the run then says so in its report."""
        if self.interrupted:
            self.stopped_by = "interrupted"
            return True
        if self.time_limit_s and self.elapsed > self.time_limit_s:
            self.stopped_by = "time_limit"
            return True
        return False

    @contextlib.contextmanager
    def stop_on_interrupt(self):
        """Inside it, a first Ctrl-C (SIGINT) only asks the loop to stop after its step
        (``out_of_time`` turns True), so the run can checkpoint at a step's end; a second one
        interrupts at once. Outside the main thread it changes nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask(signum, frame):
            self.interrupted = True
            signal.signal(signal.SIGINT, signal.default_int_handler)
            print("\nstopping after this step (Ctrl-C again to stop at once)", file=sys.stderr,
                  flush=True)

        before = signal.signal(signal.SIGINT, ask)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, before)

    def interrupted_error(self, step: int, path: Path) -> RunInterrupted:
        """What a run stopped by Ctrl-C raises once its checkpoint is written."""
        return RunInterrupted(f"run {self.cfg.name}: stopped by Ctrl-C at step {step} of "
                              f"{self.steps}; checkpoint {path}; the same command with --resume "
                              "continues it")

    # ------------------------------------------------------------------ end

    def budget(self, step: int) -> dict[str, Any]:
        """How the run ended: steps done and planned, training seconds, and what stopped it."""
        return {"steps": step, "steps_planned": self.steps, "train_s": round(self.elapsed, 1),
                "time_limit_s": self.time_limit_s, "stopped_by": self.stopped_by,
                "wall_s": round(time.time() - self._born, 1)}

    def finish(self, report: dict[str, Any], step: int, headline: dict[str, float]) -> Path:
        """Write ``report.json`` (with ``budget``, ``machine`` and ``digest`` sections) and
        print one summary line: the held-out ``headline`` scores and the report's path.
        ``digest`` has sha1s of the final model weights and of the whole tracked training state
        (weights, optimisers, generators): two runs ended bit-identical exactly when these
        match."""
        report["budget"] = report.get("budget", {}) | self.budget(step)
        report["machine"] = machine(self.device)
        states = self.tracked_states()
        report["digest"] = {"model": digest(states.get("model")), "state": digest(states)}
        path = self.log.write_json("report.json", report)
        print(summary_line(self.cfg.name, headline, report["budget"], path), file=sys.stderr,
              flush=True)
        return path

    def close(self) -> None:
        self.log.close()


def summary_line(name: str, headline: dict[str, float], budget: dict[str, Any],
                 path: Path) -> str:
    """``run <name>: held-out iou 0.905, psnr 23.1 | 6000 of 6000 steps in 914 s (950 s
    wall) | report <path>``: training time (a resumed run's included), then this process's
    wall time (set-up and scoring too)."""
    scores = ", ".join(f"{k} {v:.4g}" for k, v in headline.items() if v is not None)
    why = " (stopped by the time limit)" if budget["stopped_by"] == "time_limit" else ""
    whole = f" ({budget['wall_s']:.0f} s wall)" if "wall_s" in budget else ""
    return (f"run {name}: held-out {scores} | {budget['steps']} of {budget['steps_planned']} "
            f"steps in {budget['train_s']:.0f} s{why}{whole} | report {path}")
