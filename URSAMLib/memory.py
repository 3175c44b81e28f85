"""Whether a CT fits in memory, decided from its header before any voxel is read.

A run holds the CT several times over (as read, as float32 HU, windowed), plus label maps,
per-organ crops and the outputs. ``benchmarks/memory.py`` measures the peak on real CT with a
stand-in model: 47 bytes per voxel with one organ on the 512x512x20 DICOM series, 70-76 with
six to nine organs, up to 164 with 31 organs. :data:`BYTES_PER_VOXEL` is the one-organ cost, so
a volume is refused only when it cannot fit even then; runs with many organs need more.

The free memory is the kernel's estimate of what can be allocated without swapping
(``MemAvailable`` in ``/proc/meminfo``), lowered to a container's cgroup limit when there is
one; elsewhere ``os.sysconf`` gives the free physical pages. When neither is known, only the
hard cap :data:`MAX_VOXELS` applies.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import URSAMError

BYTES_PER_VOXEL = 50
"""Measured peak memory of a one-organ run per CT voxel, rounded up (see the module docstring)."""

MAX_VOXELS = 2**30
"""Hard cap, whatever the memory: 2**30 voxels (e.g. 2048x2048x256) is far beyond any
diagnostic CT, and its working set (about 50 GB) beyond most workstations."""

_CROP_HINT = ("crop it to the region of the organs (e.g. 3D Slicer's Crop Volume module) or resample it to "
              "thicker slices or larger voxels first")


def available_memory() -> int | None:
    """Bytes that can be allocated now without swapping, or None when this system does not say."""
    free = _meminfo_available()
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):  # not on every platform (e.g. macOS, Windows)
            free = None
    limit = _cgroup_headroom()
    if limit is not None:
        free = limit if free is None else min(free, limit)
    return free


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, then v1); None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                return None
            limit, usage = int(limit_text), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # cgroup v1 writes "no limit" as a huge number
            return None
        return max(limit - usage, 0)
    return None


def _gigabytes(count: float) -> str:
    return f"{count / 1e9:.1f} GB"


def check_fits(size: tuple[int, ...], name: str, bytes_per_voxel: float = BYTES_PER_VOXEL) -> None:
    """Raise :class:`URSAMError` unless a volume of ``size`` voxels can be segmented in memory.

    Call it with the size from the image header, before reading the voxels.
    """
    voxels = 1
    for n in size:
        voxels *= int(n)
    shape = "x".join(str(int(n)) for n in size)
    if voxels > MAX_VOXELS:
        raise URSAMError(f"{name} has {shape} = {voxels:,} voxels, more than URSAM handles ({MAX_VOXELS:,}); "
                         f"{_CROP_HINT}.")
    needed = voxels * bytes_per_voxel
    free = available_memory()
    if free is not None and needed > free:
        raise URSAMError(f"{name} has {shape} voxels: segmenting it needs about {_gigabytes(needed)} of memory, "
                         f"but only {_gigabytes(free)} is free. Close other programs, or {_CROP_HINT}.")
