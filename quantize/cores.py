"""How many CPU cores this process may run on."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores in this process's affinity mask (taskset, a container's cpuset, a test worker
    given one core), not the machine's count: llama.cpp's threads spin while they wait for each
    other, so a thread more than the cores it may use costs far more than it gives."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity masks here (macOS)
        return os.cpu_count() or 1
