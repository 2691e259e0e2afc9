"""Starting or joining Ray.

Local by default: ``num_cpus`` from the config, no dashboard, a temp dir of the run's own
(removed with its logs when Ray stops or the process ends; a ``RAY_TMPDIR`` the user sets is
used and kept instead), and every Ray server (GCS, raylet, workers) listening on 127.0.0.1
only. With an address
(``host:port``, ``auto`` or ``ray://...``) the run joins an existing cluster: a token found in
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` turns on Ray's token
authentication for this driver, and the project's own packages travel to the cluster's nodes
in Ray's runtime environment.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

TOKEN_HINT = ("give this process the head's token: export RAY_AUTH_MODE=token and "
              "RAY_AUTH_TOKEN=<token> (the head prints it with `ray get-auth-token`), or copy the "
              "head's ~/.ray/auth_token to this machine (or point RAY_AUTH_TOKEN_PATH at a copy)")


@dataclass
class RayConfig:
    address: str | None = None
    """Join this cluster instead of starting a local Ray ("10.0.0.5:6379", "auto", "ray://...")."""
    num_cpus: int = 2
    """CPUs a local Ray may use (learner and render workers together)."""
    num_gpus: int = 0
    """GPUs a local Ray may hand to workers."""
    connect_timeout_s: float = 10.0
    """How long joining waits for the head to answer before it gives up with an error."""
    ship_code: bool = True
    """When joining, send the project's packages to every node (Ray's runtime environment), so
    that a node needs only the dependencies, not a copy of this checkout."""

    def __post_init__(self):
        if self.num_cpus < 0:
            raise ValueError(f"num_cpus: must be >= 0, got {self.num_cpus}")
        if self.num_gpus < 0:
            raise ValueError(f"num_gpus: must be >= 0, got {self.num_gpus}")
        if not self.connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s: must be > 0, got {self.connect_timeout_s}")
        if self.address is not None and not self.address.strip():
            raise ValueError("address: empty; leave it out for a local Ray, or give HOST:PORT")


def start(cfg: RayConfig) -> None:
    """Start a local Ray, or join ``cfg.address``; a no-op when Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    if cfg.address:
        join(cfg)
        return
    tmp = os.environ.get("RAY_TMPDIR") or _own_temp_dir()
    with _loopback_only():
        ray.init(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", _temp_dir=tmp, log_to_driver=True,
                 configure_logging=False)


_OWNED_TEMP_DIRS: list[str] = []


def _own_temp_dir() -> str:
    """A fresh temp dir for a local Ray, removed by ``stop`` (at the latest at exit: our handler
    runs before Ray's own, registered at its import, so Ray is shut down first)."""
    # a short path: Ray's unix sockets live under it and their paths are length-limited
    tmp = tempfile.mkdtemp(prefix="gen3d-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    atexit.unregister(stop)  # once, however many Rays this process starts
    atexit.register(stop)
    _OWNED_TEMP_DIRS.append(tmp)
    return tmp


class _loopback_only:
    """Ray 2.60 on Linux swaps "127.0.0.1" for the machine's address (to be reachable from
    other nodes); its GCS and raylet bind to loopback only when the node's address stays
    127.0.0.1. A local run has no other nodes, so it keeps the loopback address."""

    def __enter__(self):
        from ray._private import ray_constants

        self._saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
        if self._saved is not None:  # a Ray without the switch keeps its own choice
            ray_constants.ENABLE_RAY_CLUSTER = False

    def __exit__(self, *exc):
        from ray._private import ray_constants

        if self._saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = self._saved


def token_source() -> str | None:
    """Where Ray would read an auth token from on this machine, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH ({path})" if Path(path).is_file() else None
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def join(cfg: RayConfig) -> None:
    """Join an existing cluster, failing within ``connect_timeout_s`` with an error that
    names the address, or the token and how to pass it."""
    import ray

    address = cfg.address.strip()
    _token_mode_if_token()
    if not address.startswith("ray://") and address != "auto":
        _check_reachable(address, cfg.connect_timeout_s)
        _check_token(address)
    runtime_env = project_runtime_env() if cfg.ship_code else None
    ray.init(address=address, log_to_driver=True, runtime_env=runtime_env,
             configure_logging=False)


def _token_mode_if_token() -> None:
    """Token mode when a token is at hand and RAY_AUTH_MODE is unset: what Ray itself does for
    address "auto", but not for an explicit address."""
    if os.environ.get("RAY_AUTH_MODE") is not None or not token_source():
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # Ray's internals moved: the variable alone, read at Ray's next start
        os.environ["RAY_AUTH_MODE"] = "token"
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _check_reachable(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"ray.address: {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379), "
                         "'auto' or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(
            f"ray.address={address}: nothing answers there ({e}); start the head on that "
            f"machine with `ray start --head --port={port}`, or fix the address") from None


def _check_token(address: str) -> None:
    """Ask the head's GCS once: a refused token fails here in milliseconds, where
    ``ray.init`` would retry for half a minute and end with no word about the token."""
    import ray

    try:
        from ray._raylet import GcsClient
    except ImportError:  # Ray's internals moved: ray.init's own (slower) error will do
        return
    try:
        GcsClient(address=address)
    except ray.exceptions.AuthenticationError as e:
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        where = token_source() or "no token found on this machine"
        raise ConnectionError(
            f"ray.address={address}: the cluster refused this process's auth token "
            f"(RAY_AUTH_MODE={mode}, token from: {where}); {TOKEN_HINT}. Ray said: "
            f"{str(e).splitlines()[0][:200]}") from None


def project_runtime_env() -> dict:
    """Ray's runtime environment that ships the render side of this project (``gen3d``,
    ``envs``, ``workers``) to every node; the dependencies must be installed there."""
    import envs
    import gen3d
    import workers

    mods = [str(Path(m.__file__).parent) for m in (gen3d, envs, workers)]
    return {"py_modules": mods, "excludes": ["__pycache__", "*.pyc"]}


def stop() -> None:
    """Shut Ray down and remove the temp dirs (logs included) of the local Rays started here."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    while _OWNED_TEMP_DIRS:
        shutil.rmtree(_OWNED_TEMP_DIRS.pop(), ignore_errors=True)
