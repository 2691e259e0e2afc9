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


# EGL enums (EGL_EXT_device_query, EGL_EXT_device_drm, EGL_NV_device_cuda)
_EGL_EXTENSIONS = 0x3055
_EGL_DRM_DEVICE_FILE_EXT = 0x3233
_EGL_DRM_RENDER_NODE_FILE_EXT = 0x3377
_EGL_CUDA_DEVICE_NV = 0x323A
_EGL_TRUE = 1


def egl_devices() -> list[dict]:
    """The EGL devices in EGL's own order (the order ``device_index`` picks from), each with
    what identifies its hardware: ``cuda_device`` (EGL_NV_device_cuda), ``pci_bus_id`` (from
    its DRM node), and ``software`` (Mesa's llvmpipe device). Empty without libEGL or
    EGL_EXT_device_enumeration."""
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("EGL") or "libEGL.so.1")
    except OSError:
        return []
    proc = lib.eglGetProcAddress
    proc.restype, proc.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    addrs = [proc(name) for name in (b"eglQueryDevicesEXT", b"eglQueryDeviceStringEXT",
                                     b"eglQueryDeviceAttribEXT")]
    if not all(addrs):
        return []
    vp, i32 = ctypes.c_void_p, ctypes.c_int
    query_devices = ctypes.CFUNCTYPE(ctypes.c_uint, i32, ctypes.POINTER(vp), ctypes.POINTER(i32))(addrs[0])
    query_string = ctypes.CFUNCTYPE(ctypes.c_char_p, vp, i32)(addrs[1])
    query_attrib = ctypes.CFUNCTYPE(ctypes.c_uint, vp, i32, ctypes.POINTER(ctypes.c_ssize_t))(addrs[2])
    n = i32()
    if query_devices(0, None, ctypes.byref(n)) != _EGL_TRUE or n.value <= 0:
        return []
    handles = (vp * n.value)()
    query_devices(n.value, handles, ctypes.byref(n))
    out = []
    for i in range(n.value):
        ext = (query_string(handles[i], _EGL_EXTENSIONS) or b"").decode()
        cuda = ctypes.c_ssize_t(-1)
        has_cuda = ("EGL_NV_device_cuda" in ext
                    and query_attrib(handles[i], _EGL_CUDA_DEVICE_NV, ctypes.byref(cuda)) == _EGL_TRUE)
        drm = None
        for enum in (_EGL_DRM_DEVICE_FILE_EXT, _EGL_DRM_RENDER_NODE_FILE_EXT):
            if drm is None and "EGL_EXT_device_drm" in ext:
                raw = query_string(handles[i], enum)
                drm = raw.decode() if raw else None
        out.append({"index": i, "extensions": ext, "software": "EGL_MESA_device_software" in ext,
                     "cuda_device": int(cuda.value) if has_cuda else None,
                     "drm": drm, "pci_bus_id": _pci_bus_id(drm)})
    return out


def _pci_bus_id(drm_path: str | None) -> str | None:
    """``/dev/dri/card1`` -> ``0000:3b:00.0`` (its PCI address, from sysfs)."""
    if not drm_path:
        return None
    link = f"/sys/class/drm/{os.path.basename(drm_path)}/device"
    try:
        return os.path.basename(os.path.realpath(link)) if os.path.exists(link) else None
    except OSError:
        return None
