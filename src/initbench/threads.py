"""CPU threads that never collapse: how many torch may use, and OpenMP threads that sleep.

Two rules, used by every entry point, the sweep runner's children and the tests:

- :func:`quiet_openmp`: ``OMP_WAIT_POLICY=PASSIVE`` unless set. An idle OpenMP thread otherwise
  spins for a while before it sleeps; on a machine whose cores are busy with other work, the
  spinning threads take the cores from the thread with work, and a step waits for all of them
  (measured on 2 busy cores: the default MLP ran 86 steps/s with 2 spinning threads, 200 with 2
  passive ones and 237 with one; docs/performance.md). OpenMP reads the variable once, when
  torch is imported, so ``initbench/__init__`` calls this before anything imports torch.
- :func:`default_threads`: ``trainer.num_threads: null`` means the CPUs this process may really
  use — the fewest of its affinity mask, its cgroup's CPU quota and SLURM's
  ``SLURM_CPUS_PER_TASK`` — or ``OMP_NUM_THREADS`` when set. torch's own default counts the
  machine's cores, which on a container or a shared node can be many more than it may use.

This module imports nothing heavy: it runs before torch is imported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def quiet_openmp(environ: MutableMapping[str, str] = os.environ) -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set (see the module docstring)."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _positive_int(value: str | None) -> int | None:
    try:
        n = int(str(value).strip())
    except ValueError:
        return None
    return n if n >= 1 else None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = Path("/proc/self/cgroup")
                     ) -> float | None:  # fmt: skip
    """The CPU quota (in CPUs) of this process's cgroup and its parents, the smallest; None
    when there is none. cgroup v2 (``cpu.max``: "<quota> <period>" or "max <period>") and v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, -1 = none)."""
    folders = [root, root / "cpu", root / "cpu,cpuacct"]
    try:
        for line in self_cgroup.read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[2].startswith("/") and parts[2] != "/":
                rel = Path(parts[2].lstrip("/"))
                for base in [root] if parts[0] == "0" else [root / "cpu", root / "cpu,cpuacct"]:
                    folders += [base / rel, *[base / p for p in rel.parents if str(p) != "."]]
    except OSError:
        pass
    quotas = []
    for folder in folders:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                quotas.append(int(quota) / int(period))
            continue
        except (OSError, ValueError):
            pass
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
            if quota > 0 and period > 0:
                quotas.append(quota / period)
        except (OSError, ValueError):
            pass
    return min(quotas) if quotas else None


def usable_cpus(environ: Mapping[str, str] = os.environ, root: Path = CGROUP_ROOT,
                self_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[int, str]:  # fmt: skip
    """The CPUs this process may use and what sets that number: its affinity mask (or the
    machine's CPU count where there is none), its cgroup's quota (rounded down, at least 1),
    SLURM's ``SLURM_CPUS_PER_TASK`` — the fewest."""
    if hasattr(os, "sched_getaffinity"):
        limits = {"the affinity mask": len(os.sched_getaffinity(0))}
    else:
        limits = {"the CPU count": os.cpu_count() or 1}
    quota = cgroup_cpu_quota(root, self_cgroup)
    if quota is not None:
        limits["the cgroup CPU quota"] = max(1, math.floor(quota))
    slurm = _positive_int(environ.get("SLURM_CPUS_PER_TASK"))
    if slurm is not None:
        limits["SLURM_CPUS_PER_TASK"] = slurm
    source = min(limits, key=lambda k: limits[k])
    return limits[source], source


def default_threads(environ: Mapping[str, str] = os.environ, **kwargs) -> tuple[int, str]:
    """torch's thread count for ``trainer.num_threads: null``, and why: ``OMP_NUM_THREADS``
    when set, else :func:`usable_cpus`."""
    omp = _positive_int(environ.get("OMP_NUM_THREADS"))
    if omp is not None:
        return omp, "OMP_NUM_THREADS"
    return usable_cpus(environ, **kwargs)


def child_threads(parallel: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment for one of ``parallel`` processes sharing this one's CPUs (the sweep
    runner's children): ``OMP_NUM_THREADS`` = the usable CPUs / ``parallel`` (at least 1),
    unless the user set it, and the passive wait policy."""
    env = {"OMP_WAIT_POLICY": environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if _positive_int(environ.get("OMP_NUM_THREADS")) is None:
        env["OMP_NUM_THREADS"] = str(max(1, usable_cpus(environ)[0] // max(1, parallel)))
    return env
