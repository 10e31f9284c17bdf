"""The machine a CPU benchmark ran on, as every result file names it: the CPU's model and its
cores, so that numbers from different hosts are never read as one (`gpu.py` names its card)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows where that is missing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    return f"{cpu()} ({platform.machine()}), {os.cpu_count()} CPUs, no GPU"
