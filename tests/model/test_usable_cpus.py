"""The CPUs a process may use honour a container's CPU quota, read from cgroup files
written here as the kernel writes them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.usable_cpus import cgroup_cpu_quota, own_cgroup, usable_cpus
from service.worker.train_process import threads_per_rank

PINNED = len(os.sched_getaffinity(0))


def _v2(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, controller: str, quota: str, period: str = "100000") -> Path:
    folder = root / controller
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(quota + "\n")
    (folder / "cpu.cfs_period_us").write_text(period + "\n")
    return root


@pytest.mark.parametrize(
    ("text", "quota"),
    [("max 100000\n", None), ("100000 100000\n", 1.0), ("150000 100000\n", 1.5)],
)
def test_cgroup_v2_quota(tmp_path: Path, text: str, quota: float | None) -> None:
    assert cgroup_cpu_quota(_v2(tmp_path, text)) == quota


def test_cgroup_v1_quota_in_either_controller_folder(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(_v1(tmp_path / "a", "cpu", "-1")) is None  # no limit
    assert cgroup_cpu_quota(_v1(tmp_path / "b", "cpu,cpuacct", "50000")) == 0.5
    assert cgroup_cpu_quota(_v1(tmp_path / "c", "cpu", "400000", "200000")) == 2.0


def test_no_or_unreadable_cgroup_files_mean_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "missing") is None
    assert cgroup_cpu_quota(_v2(tmp_path / "garbled", "not numbers")) is None
    assert cgroup_cpu_quota(_v2(tmp_path / "zero", "100000 0")) is None


def test_a_limit_on_the_own_cgroup_or_any_above_it_counts(tmp_path: Path) -> None:
    """A systemd unit's CPUQuota= is on the unit's cgroup, not the root (outside a
    container the root has no cpu.max at all)."""
    unit = tmp_path / "system.slice" / "mmv.service"
    unit.mkdir(parents=True)
    (unit / "cpu.max").write_text("200000 100000\n")
    (unit.parent / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path, "/system.slice/mmv.service") == 2.0
    (unit.parent / "cpu.max").write_text("100000 100000\n")  # the slice allows less
    assert cgroup_cpu_quota(tmp_path, "/system.slice/mmv.service") == 1.0
    assert cgroup_cpu_quota(tmp_path, "/") is None  # the root is not limited


def test_the_own_cgroup_is_read_from_proc(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("12:cpu,cpuacct:/old\n0::/system.slice/mmv.service\n")
    assert own_cgroup(proc) == "/system.slice/mmv.service"
    proc.write_text("4:memory:/x\n")  # cgroup v1 only
    assert own_cgroup(proc) == "/"
    assert own_cgroup(tmp_path / "missing") == "/"


def test_a_quota_caps_the_pinned_cores_and_rounds_up(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path / "none") == PINNED
    assert usable_cpus(_v2(tmp_path / "one", "100000 100000")) == 1
    assert usable_cpus(_v2(tmp_path / "half", "50000 100000")) == 1  # never 0
    assert usable_cpus(_v2(tmp_path / "big", "6400000 100000")) == PINNED  # above the cores
    if PINNED >= 2:
        assert usable_cpus(_v2(tmp_path / "frac", "150000 100000")) == 2


def test_training_threads_follow_the_quota_not_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker in a container limited to one CPU started one torch thread per host core
    in each training process."""
    monkeypatch.setattr("model.usable_cpus.CGROUP_ROOT", _v2(tmp_path, "100000 100000"))
    assert threads_per_rank(0, 1) == 1
    assert threads_per_rank(3, 1) == 3  # set explicitly: kept
