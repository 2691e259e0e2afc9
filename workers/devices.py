"""Which EGL device is the GPU Ray gave a worker.

Ray names a worker's GPU by its CUDA id: an index, or a UUID (``GPU-...``, ``MIG-...``) when
the node lists its GPUs that way. EGL numbers its devices in its own order and lists Mesa's
software device among them, so the index cannot be used as it is: the GPU is found in the
driver's list (``nvidia-smi``: index, UUID, PCI bus id), then the EGL device on the same PCI
bus (EGL_EXT_device_drm), or else the one whose EGL_NV_device_cuda id is that index.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software rasterizer")


class GpuMappingError(RuntimeError):
    """The GPU Ray assigned has no matching EGL device (or only a software one)."""


@dataclass
class Gpu:
    index: int
    uuid: str
    pci_bus_id: str
    mig_uuids: list[str] = field(default_factory=list)


def pci_key(bus_id: str | None) -> str | None:
    """One spelling of a PCI address: ``00000000:3B:00.0`` and ``0000:3b:00.0`` agree."""
    if not bus_id:
        return None
    m = re.fullmatch(r"(?:([0-9a-fA-F]+):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])", bus_id.strip())
    if not m:
        return bus_id.strip().lower()
    dom, bus, dev, fn = m.groups()
    return f"{int(dom or '0', 16):04x}:{bus.lower()}:{dev.lower()}.{fn}"


def find_gpu(assigned: str, gpus: list[Gpu]) -> Gpu:
    """The physical GPU behind Ray's id: an index into the driver's list, or a GPU/MIG UUID."""
    a = str(assigned).strip()
    for g in gpus:
        if a == g.uuid or a in g.mig_uuids:
            return g
    if a.isdigit():
        for g in gpus:
            if g.index == int(a):
                return g
    listed = ", ".join(f"{g.index} {g.uuid} ({g.pci_bus_id})" for g in gpus) or "none"
    raise GpuMappingError(f"Ray assigned GPU {a!r}, which the NVIDIA driver does not list "
                          f"(it lists: {listed}); check CUDA_VISIBLE_DEVICES on the node that "
                          "started Ray")


def egl_index(assigned: str, gpus: list[Gpu], egl: list[dict], visible: str | None = None) -> int:
    """The EGL device index of the GPU Ray assigned (``egl``: ``envs.gl.egl_devices()``).
    ``visible``: this process's CUDA_VISIBLE_DEVICES (Ray sets it), which renumbers the CUDA
    ids that EGL_NV_device_cuda reports."""
    gpu = find_gpu(assigned, gpus)
    cuda_id = gpu.index
    shown = [v.strip() for v in (visible or "").split(",") if v.strip()]
    if shown:
        cuda_id = shown.index(str(assigned)) if str(assigned) in shown else -1
    hardware = [d for d in egl if not d.get("software")]
    want = pci_key(gpu.pci_bus_id)
    for d in hardware:
        if want and pci_key(d.get("pci_bus_id")) == want:
            return int(d["index"])
    for d in hardware:
        if d.get("cuda_device") is not None and d["cuda_device"] == cuda_id:
            return int(d["index"])
    seen = "; ".join(f"{d['index']}: " + ("software" if d.get("software") else
                                         f"pci {d.get('pci_bus_id')}, cuda {d.get('cuda_device')}")
                     for d in egl) or "none"
    raise GpuMappingError(
        f"no EGL device is GPU {assigned!r} (PCI {gpu.pci_bus_id}); EGL lists: {seen}. Install "
        "the NVIDIA driver's EGL library (libEGL_nvidia) on that node, or set "
        "pool.allow_software_gl: true to render on the CPU there")


def parse_nvidia_smi(query_csv: str, listing: str = "") -> list[Gpu]:
    """GPUs from ``nvidia-smi --query-gpu=index,uuid,pci.bus_id --format=csv,noheader`` and
    (for MIG instances) ``nvidia-smi -L``."""
    gpus = []
    for line in query_csv.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0].isdigit():
            gpus.append(Gpu(int(parts[0]), parts[1], parts[2]))
    by_index = {g.index: g for g in gpus}
    current = None
    for line in listing.splitlines():
        m = re.match(r"\s*GPU (\d+):", line)
        if m:
            current = by_index.get(int(m.group(1)))
            continue
        mig = re.search(r"UUID:\s*(MIG-[^)\s]+)", line)
        if mig and current is not None:
            current.mig_uuids.append(mig.group(1))
    return gpus


def driver_gpus() -> list[Gpu]:
    """This machine's NVIDIA GPUs, or [] without the driver's tools."""
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,pci.bus_id",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(q.stdout, listing.stdout) if q.returncode == 0 else []


def is_software(renderer: str | None) -> bool:
    return bool(renderer) and any(s in renderer.lower() for s in SOFTWARE_RENDERERS)
