"""The versions, machine and code revision a report or benchmark was made with."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from .. import __version__


def environment(backbone=None) -> dict:
    """Versions, machine and code revision, for the report."""
    versions = {"ursam": __version__, "python": platform.python_version()}
    for module in ("torch", "numpy", "scipy", "SimpleITK", "matplotlib"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # a missing optional module is not worth failing a report for
            versions[module] = "not installed"
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass  # not Linux: platform's answer stands
    machine = {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count()}
    try:
        import torch

        machine["torch_threads"] = torch.get_num_threads()
        machine["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:
        pass
    return {"versions": versions, "commit": commit, "machine": machine}
