"""CPU threads that never collapse: as many as the CPUs this process may use, fewer while other
processes keep them busy.

torch's intra-op threads wait for work by spinning (OpenMP's default wait policy). On a quiet
machine that is the fastest: measured on 2 cores, the default MLP ran 300 steps/s with 2
spinning threads, 213 with 1 and 152 with 2 passive (sleeping) ones. Beside a busy process the
spinning threads take the cores from the thread with work, and a step waits for all of them:
81 steps/s with 2 spinning threads, 231 with 1 (docs/performance.md). So the default
(``trainer.num_threads: null``) is adaptive, not a fixed count:

- :func:`usable_cpus`: the CPUs this process may use — the fewest of its affinity mask, its
  cgroup's CPU quota and SLURM's ``SLURM_CPUS_PER_TASK`` (torch's own default counts the
  machine's cores, which on a container or a shared node can be many more); ``OMP_NUM_THREADS``,
  when set, is taken as given (:func:`default_threads`);
- :func:`choose_threads`: before training it measures for a tenth of a second how much of
  those CPUs other processes use (``/proc/stat`` against this process's CPU time) and sets
  torch's threads to the CPUs left, at least 1 (:func:`threads_for`). The count holds for the
  run and is saved in its checkpoint: a reduction's result depends on how many threads split
  it, so a resumed run takes the count it started with and computes exactly what it would
  have. A job that starts beside a run already training can still slow it (up to 3x for the
  small MLP on 2 cores); the next run sees it.

A fixed ``trainer.num_threads`` (or ``OMP_NUM_THREADS``) is taken as given. The sweep runner
gives each of its ``--parallel`` children an equal share (:func:`child_threads`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")


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
    unless the user set it."""
    if _positive_int(environ.get("OMP_NUM_THREADS")) is not None:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, usable_cpus(environ)[0] // max(1, parallel)))}


# Other processes' CPU use that costs a thread: a quarter of a CPU busy is enough for spinning
# threads to wait on it (threads_for).
BUSY_SHARE = 0.25
PROC_STAT = Path("/proc/stat")


def threads_for(usable: int, others_busy: float | None) -> int:
    """Threads for ``usable`` CPUs of which other processes keep ``others_busy`` busy (in
    CPUs; None: unknown): the CPUs left, rounded down once a quarter of one is taken."""
    if others_busy is None:
        return usable
    return max(1, min(usable, usable - math.ceil(others_busy - BUSY_SHARE)))


class CpuLoad:
    """Other processes' CPU use on this process's CPUs between two :meth:`others` calls, from
    ``/proc/stat`` (the CPUs of the affinity mask) minus this process's own CPU time."""

    def __init__(self, stat: Path = PROC_STAT) -> None:
        self.stat = stat
        self.cpus = (
            {f"cpu{i}" for i in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity")
            else None
        )  # fmt: skip
        self.last = self._read()

    def _read(self) -> tuple[float, float, float, float] | None:
        """(busy jiffies, all jiffies, this process's CPU seconds, wall seconds); None where
        there is no /proc/stat."""
        try:
            lines = self.stat.read_text().splitlines()
        except OSError:
            return None
        busy = total = 0.0
        for line in lines:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if self.cpus is not None and name not in self.cpus:
                continue
            values = [float(v) for v in fields[:8]]  # user .. steal (guest is inside user)
            total += sum(values)
            busy += sum(values) - values[3] - values[4]  # minus idle and iowait
        return busy, total, time.process_time(), time.monotonic()

    def others(self) -> float | None:
        """CPUs (of this process's) that other processes kept busy since the last call."""
        now, last = self._read(), self.last
        self.last = now
        if now is None or last is None or now[1] <= last[1] or now[3] <= last[3]:
            return None
        n_cpus = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
        busy_cpus = (now[0] - last[0]) / (now[1] - last[1]) * n_cpus
        ours = (now[2] - last[2]) / (now[3] - last[3])
        return max(0.0, busy_cpus - ours)


def choose_threads(fixed: int | None = None, saved: int | None = None,
                   sample_s: float = 0.1) -> str:  # fmt: skip
    """Set torch's intra-op threads for a run and say how they were chosen: ``fixed``
    (``trainer.num_threads``) as given; else ``saved`` (the count a resumed run started with,
    so that it computes exactly what it would have: a reduction's result depends on how many
    threads split it); else ``OMP_NUM_THREADS`` when set; else the CPUs this process may use
    less those other processes keep busy, from a ``sample_s`` look at the load
    (:func:`threads_for`). The count then holds for the whole run."""
    if fixed:
        n, how = fixed, "trainer.num_threads"
    elif saved:
        n, how = saved, "as when the run started: the same count computes the same results"
    else:
        usable, source = default_threads()
        n, how = usable, source
        if source != "OMP_NUM_THREADS":
            load = CpuLoad()
            time.sleep(sample_s)
            others = load.others()
            n = threads_for(usable, others)
            busy = "" if others is None else f", other processes busy on {others:.1f}"
            how = f"{usable} CPUs from {source}{busy}"
    torch.set_num_threads(n)
    return f"{n} thread{'s' if n != 1 else ''} ({how})"
