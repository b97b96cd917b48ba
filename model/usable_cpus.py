"""How many CPUs this process may really use: the cores it is pinned to, capped by the
CPU quota of its cgroup (a container's `cpus:` limit, Kubernetes' CPU limit).

os.cpu_count() counts the host's cores. In a container limited to 4 CPUs on a 64-core
host, training started 64 torch threads per process and 64 decoding workers, and the
kernel throttled them all to 4 CPUs' worth of time: every parallel region of a step
waited for threads that were not allowed to run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path | None = None) -> int:
    """The CPUs this process may use, at least 1. A fractional quota (1.5 CPUs) rounds up:
    two threads get 1.5 CPUs' worth of time, one thread only one."""
    pinned = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = pinned or os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root or CGROUP_ROOT)
    if quota is None:
        return cores
    return max(1, min(cores, math.ceil(quota)))


def cgroup_cpu_quota(cgroup_root: Path) -> float | None:
    """The CPU quota in CPUs from cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` over
    `cpu.cfs_period_us`); None when there is none or it cannot be read. Inside a
    container the cgroup namespace makes the container's own cgroup the root."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else _cpus(quota, period)
    except (OSError, ValueError):
        pass
    for controller in ("cpu", "cpu,cpuacct"):
        folder = cgroup_root / controller
        try:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
            return _cpus(quota, period)
        except (OSError, ValueError):
            continue
    return None


def _cpus(quota: str, period: str) -> float | None:
    """quota/period in CPUs; None for no quota (v1 writes -1) or a period of 0."""
    q, p = int(quota), int(period)
    return q / p if q > 0 and p > 0 else None
