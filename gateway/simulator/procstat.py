"""CPU and memory of processes on this machine, read from ``/proc`` (Linux), for the load driver
(:mod:`gateway.simulator.load`) and ``gateway bench load``.
"""

from __future__ import annotations

import os

__all__ = ["ProcStat", "machine_busy_s"]

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcStat:
    """CPU seconds and RSS of a process on this machine, read from ``/proc/<pid>``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float:
        """User + system CPU seconds of every thread so far."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)

    def rss_bytes(self) -> int:
        """Resident set size (``VmRSS``)."""
        with open(f"/proc/{self.pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def alive(self) -> bool:
        return os.path.exists(f"/proc/{self.pid}")


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used since boot (``/proc/stat``), or 0."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK
