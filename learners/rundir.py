"""Ownership of a run directory: ``runs/<name>/run.lock`` names the process training there (pid,
host, the process's start time). A second run with the same name refuses while that process
lives, before it writes anything; a lock whose process is gone (killed, crashed) is stale and
is taken over with a note."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from learners import checkpoint
from learners.config import ConfigError, to_dict

LOCK_NAME = "run.lock"


class RunDirBusy(ConfigError):
    """Another live process is training in this run directory."""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first); None without."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): tells a live process from a new one that
    was given the pid of a dead one. None where /proc is not there."""
    st = _stat(pid)
    return int(st[19]) if st and len(st) > 19 else None


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` runs (and, if ``start`` is known, is the one that started then);
    a killed process that its parent has not reaped yet (a zombie) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    st = _stat(pid)
    if st is None:
        return True
    return st[0] != "Z" and (start is None or int(st[19]) == start)


def owner_record() -> dict:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start": _start_ticks(pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _who(rec: dict) -> str:
    return f"pid {rec.get('pid')} on {rec.get('host')}, since {rec.get('since')}"


def preflight(cfg: Any, resume: bool) -> None:
    """What can be known before a task loads data or starts Ray: that its device can be had,
    that no other live run holds ``<cfg.out_dir>/<cfg.name>/`` and, with ``resume``, that its
    checkpoint is readable and was made with this config's model (``cfg.resume_keys``,
    default "model")."""
    check_name(cfg.name)
    run_dir = Path(cfg.out_dir) / cfg.name
    check_writable(Path(cfg.out_dir))
    if getattr(cfg, "device", None) is not None:  # cuda asked for where torch cannot use it
        from learners.device import resolve_device

        resolve_device(cfg.device, announce=False)
    RunLock(run_dir).check_free()
    if not resume and (run_dir / "checkpoint.pt").exists():
        done = "finished" if (run_dir / "report.json").exists() else "stopped"
        raise ConfigError(f"{run_dir} holds a {done} run (its checkpoint.pt); --resume continues "
                          f"it, --set name=<another> starts a new run beside it, or delete "
                          f"{run_dir} to start this name afresh")
    if resume:
        path = run_dir / "checkpoint.pt"
        state = checkpoint.load(path)
        checkpoint.check_matches(state, to_dict(cfg), getattr(cfg, "resume_keys", ("model",)), path,
                                 getattr(cfg, "resume_free", ()))


def check_name(name: str) -> None:
    """A run's name is one folder under ``out_dir``: it cannot climb out of it or be it."""
    if name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"name: {name!r} is not a folder name; a run writes to "
                          "<out_dir>/<name>/, so give a plain name and set out_dir for the place")


def check_writable(out_dir: Path) -> None:
    """``out_dir`` can be made (the folders this makes to find out are removed again) and this
    process may write in it."""
    made = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        ok = os.access(out_dir, os.W_OK | os.X_OK)
    except OSError as e:
        raise ConfigError(f"out_dir {str(out_dir)!r} cannot be made ({e.strerror}); set out_dir "
                          "to a folder you can write") from None
    finally:
        for p in made:  # deepest first: nothing is left behind by a run that then refuses
            try:
                p.rmdir()
            except OSError:
                pass
    if not ok:
        raise ConfigError(f"out_dir {str(out_dir)!r} is not writable; set out_dir to a folder you "
                          "can write")


class RunLock:
    """``acquire`` takes ``<run_dir>/run.lock`` or raises ``RunDirBusy``; re-entrant within a
    process (a run closes and reopens its log when it resumes)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self.held = False

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        me = owner_record()
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._ours_or_stale(me):
                    return
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise RunDirBusy(f"{self.dir}: could not take {self.path} (another run keeps taking it); "
                         "choose another name with --set name=...")

    def _ours_or_stale(self, me: dict) -> bool:
        """True if the existing lock is this process's; removes it if stale (False: retry);
        raises if a live process holds it."""
        other = self.read()
        if other is None:  # being written this instant, or torn: give it a moment
            if time.time() - self._mtime() < 2.0:
                time.sleep(0.05)
                return False
            other = {"pid": -1, "host": me["host"], "since": "?"}
        if other.get("pid") == me["pid"] and other.get("host") == me["host"]:
            self.held = True
            return True
        self._refuse_if_live(other, me)
        print(f"note: {self.path}: the run that held it ({_who(other)}) is gone; taking it over",
              file=sys.stderr)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        return False

    def _refuse_if_live(self, other: dict, me: dict) -> None:
        if other.get("host") != me["host"]:
            raise RunDirBusy(f"{self.dir} is in use by a run on another machine ({_who(other)}); "
                             f"choose another name with --set name=..., or delete {self.path} if "
                             "that run is gone")
        if other.get("pid", -1) > 0 and pid_alive(other["pid"], other.get("start")):
            raise RunDirBusy(f"{self.dir} is in use by a run still training there ({_who(other)}); "
                             "choose another name with --set name=..., or wait for it or stop it "
                             "first")

    def check_free(self) -> None:
        """Raise ``RunDirBusy`` if another live process holds the directory; takes nothing."""
        other = self.read()
        me = owner_record()
        if other is not None and not (other.get("pid") == me["pid"] and other.get("host") == me["host"]):
            self._refuse_if_live(other, me)

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        other = self.read()
        if other is not None and other.get("pid") == os.getpid():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
