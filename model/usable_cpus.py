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
    quota = cgroup_cpu_quota(cgroup_root or CGROUP_ROOT, own_cgroup())
    if quota is None:
        return cores
    return max(1, min(cores, math.ceil(quota)))


def own_cgroup(proc_file: Path = Path("/proc/self/cgroup")) -> str:
    """This process's cgroup in the v2 hierarchy (the "0::" line); "/" when unknown. In a
    container with its own cgroup namespace it is "/"."""
    try:
        for line in proc_file.read_text().splitlines():
            if line.startswith("0::"):
                return line[3:] or "/"
    except OSError:
        pass
    return "/"


def cgroup_cpu_quota(cgroup_root: Path, own: str = "/") -> float | None:
    """The CPU quota in CPUs, None when there is none or it cannot be read. cgroup v2: the
    lowest `cpu.max` of `own` and every cgroup above it (a systemd unit's CPUQuota=, a
    limit on its slice); else v1's `cpu.cfs_quota_us` over `cpu.cfs_period_us`."""
    found, lowest = False, None
    mine = Path(own.strip("/"))
    for level in (mine, *mine.parents):
        try:
            text = (cgroup_root / level / "cpu.max").read_text()
        except OSError:
            continue
        found = True
        cpus = _v2_cpus(text)
        if cpus is not None:
            lowest = cpus if lowest is None else min(lowest, cpus)
    if found:
        return lowest
    for controller in ("cpu", "cpu,cpuacct"):
        folder = cgroup_root / controller
        try:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
            return _cpus(quota, period)
        except (OSError, ValueError):
            continue
    return None


def _v2_cpus(text: str) -> float | None:
    """`cpu.max` ("max 100000" or "150000 100000") in CPUs; None for no limit."""
    try:
        quota, period = text.split()[:2]
        return None if quota == "max" else _cpus(quota, period)
    except ValueError:
        return None


def _cpus(quota: str, period: str) -> float | None:
    """quota/period in CPUs; None for no quota (v1 writes -1) or a period of 0."""
    q, p = int(quota), int(period)
    return q / p if q > 0 and p > 0 else None
