"""Headless OpenGL contexts. A backend is a tiny contract, as in glcontext: ``create`` a
context, use it, ``release`` it. EGL is the one that works without a display: Mesa's llvmpipe
on a CPU machine, the GPU's driver where there is one.

A context is made inside the process that uses it (a Ray actor's ``__init__``), never at import
time: a process that forks after making one hangs its child, and a context cannot be pickled.
"""

from __future__ import annotations

import os

GL_PACKAGES = "libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri"
SETUP_HINT = (f"install the headless OpenGL system packages ({GL_PACKAGES}) — `make setup` "
              "(scripts/setup.sh) does it on Debian/Ubuntu — or run on a machine with a GPU driver")


class GLUnavailableError(RuntimeError):
    """No usable OpenGL 3.3+ context could be made headless."""


def create_context(backend: str = "egl", device_index: int | None = None):
    """A standalone moderngl context (GL 3.3 core or newer).

    ``device_index`` picks an EGL device (GPU machines may list several); None lets the driver
    choose, or reads GEN3D_EGL_DEVICE.
    """
    try:
        import moderngl
    except ImportError as e:  # the Python package itself
        raise GLUnavailableError(f"moderngl is not installed ({e}); run `make setup`") from None
    if device_index is None and os.environ.get("GEN3D_EGL_DEVICE"):
        device_index = int(os.environ["GEN3D_EGL_DEVICE"])
    kwargs = {"standalone": True, "backend": backend, "require": 330}
    if device_index is not None:
        kwargs["device_index"] = int(device_index)
    try:
        ctx = moderngl.create_context(**kwargs)
    except Exception as e:
        raise GLUnavailableError(
            f"could not create a headless OpenGL context with backend {backend!r} ({e}); "
            + SETUP_HINT) from None
    return ctx


def describe(ctx) -> dict:
    """Vendor, renderer and version of a context: which GPU (or llvmpipe) is drawing."""
    info = ctx.info
    return {k: info.get(f"GL_{k.upper()}") for k in ("vendor", "renderer", "version")}
