"""initbench.threads: the thread count a run takes by default, and OpenMP's wait policy."""

from __future__ import annotations

import os

import pytest

from initbench import threads


def cgroup_v2(tmp_path, quota, nested=None):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    if nested:
        folder = tmp_path / nested
        folder.mkdir(parents=True)
        (folder / "cpu.max").write_text(f"{quota} 100000\n")
        own = tmp_path / "self_cgroup"
        own.write_text(f"0::/{nested}\n")
        return own
    (tmp_path / "cpu.max").write_text(f"{quota} 100000\n")
    return tmp_path / "missing"


def test_a_cgroup_v2_quota_is_read_from_the_process_own_cgroup(tmp_path):
    own = cgroup_v2(tmp_path, 250000, nested="system.slice/job.scope")
    assert threads.cgroup_cpu_quota(tmp_path, own) == 2.5
    assert threads.usable_cpus({}, tmp_path, own) == (
        min(2, len(os.sched_getaffinity(0))),
        "the cgroup CPU quota" if len(os.sched_getaffinity(0)) > 2 else "the affinity mask",
    )


def test_no_quota_and_cgroup_v1_quotas(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, tmp_path / "missing") is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(v1, tmp_path / "missing") == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_quota(v1, tmp_path / "missing") is None


def test_the_fewest_of_affinity_quota_and_slurm_wins_and_a_fraction_is_one_thread(tmp_path):
    own = cgroup_v2(tmp_path, 50000)
    assert threads.usable_cpus({}, tmp_path, own) == (1, "the cgroup CPU quota")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    affinity = len(os.sched_getaffinity(0))
    got = threads.usable_cpus({"SLURM_CPUS_PER_TASK": "1"}, tmp_path, own)
    assert got == (1, "SLURM_CPUS_PER_TASK" if affinity > 1 else "the affinity mask")
    assert threads.usable_cpus({"SLURM_CPUS_PER_TASK": "x"}, tmp_path, own) == (
        affinity, "the affinity mask",
    )  # fmt: skip


@pytest.mark.parametrize("omp, expected", [("3", (3, "OMP_NUM_THREADS")), ("0", None), ("", None)])
def test_omp_num_threads_set_by_the_user_wins(tmp_path, omp, expected):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    got = threads.default_threads({"OMP_NUM_THREADS": omp}, root=tmp_path,
                                  self_cgroup=tmp_path / "missing")  # fmt: skip
    assert got == (expected or (len(os.sched_getaffinity(0)), "the affinity mask"))


def test_parallel_children_share_the_usable_cpus():
    usable = threads.usable_cpus({})[0]
    assert threads.child_threads(2, {}) == {"OMP_NUM_THREADS": str(max(1, usable // 2))}
    assert threads.child_threads(2, {"OMP_NUM_THREADS": "4"}) == {}  # the user's setting stands


@pytest.mark.parametrize(
    "usable, others, expected",
    [(2, None, 2), (2, 0.0, 2), (2, 0.2, 2), (2, 0.3, 1), (2, 1.0, 1), (2, 1.9, 1),
     (16, 3.1, 13), (16, 3.3, 12), (16, 0.24, 16), (1, 5.0, 1)],
)  # fmt: skip
def test_threads_are_the_cpus_other_processes_leave(usable, others, expected):
    assert threads.threads_for(usable, others) == expected


def write_stat(path, busy, idle, cpus=2):
    """A /proc/stat whose CPUs have ``busy`` and ``idle`` jiffies in all."""
    lines = [f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0"]
    lines += [f"cpu{i} {busy / cpus} 0 0 {idle / cpus} 0 0 0 0 0 0" for i in range(cpus)]
    path.write_text("\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n")


def test_cpu_load_is_the_busy_share_minus_this_process(tmp_path, monkeypatch):
    """Two CPUs, 100 jiffies each between the samples: 150 busy is 1.5 CPUs; this process used
    0.5 CPU (process time over wall time), so others used 1.0."""
    stat = tmp_path / "stat"
    clock = {"cpu": 10.0, "wall": 100.0}
    monkeypatch.setattr(threads.time, "process_time", lambda: clock["cpu"])
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    write_stat(stat, busy=1000, idle=1000)
    load = threads.CpuLoad(stat)
    write_stat(stat, busy=1150, idle=1050)
    clock.update(cpu=10.5, wall=101.0)
    assert load.others() == pytest.approx(1.0)
    assert load.others() is None  # no time passed since the last call
    assert threads.CpuLoad(tmp_path / "missing").others() is None


def test_threads_are_chosen_once_from_the_load_a_fixed_count_or_the_saved_one(monkeypatch):
    import torch

    monkeypatch.setattr(threads, "default_threads", lambda: (2, "the affinity mask"))
    monkeypatch.setattr(threads.CpuLoad, "others", lambda self: 1.0)  # a busy process beside
    before = torch.get_num_threads()
    try:
        text = threads.choose_threads(sample_s=0)
        assert torch.get_num_threads() == 1
        assert text == "1 thread (2 CPUs from the affinity mask, other processes busy on 1.0)"
        assert threads.choose_threads(3) == "3 threads (trainer.num_threads)"
        assert torch.get_num_threads() == 3
        resumed = threads.choose_threads(None, saved=2)
        assert torch.get_num_threads() == 2 and resumed.startswith("2 threads (as when the run")
    finally:
        torch.set_num_threads(before)


def test_a_resumed_run_computes_with_the_thread_count_it_started_with(compose_cfg, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    """Started with 1 thread (the machine was busy), resumed with 2 free CPUs: the resume keeps
    1 thread, and its metrics equal the uninterrupted 1-thread run's bit for bit."""
    import itertools
    from contextlib import contextmanager

    import torch

    from initbench import run as run_module
    from initbench.errors import Interrupted
    from initbench.run import run

    base = ["dataset=circles", "dataset.n_train=2000", "trainer.epochs=3", "logger=[]",
            "trainer.device=cpu", "telemetry.enabled=false", "diagnose.at_start=false"]  # fmt: skip
    cfg = compose_cfg(base)
    make = lambda p: torch.optim.Adam(p, lr=1e-3)  # noqa: E731
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the adaptive rule, not the tests' pin
    monkeypatch.setattr(threads, "default_threads", lambda: (2, "the affinity mask"))
    monkeypatch.setattr(threads.CpuLoad, "others", lambda self: 1.0)
    before = torch.get_num_threads()
    try:
        reference = run(cfg, tmp_path / "reference", make_optimizer=make)
        polls = itertools.count(1)

        @contextmanager
        def stop_at_40():
            yield lambda: 15 if next(polls) >= 40 else None

        with monkeypatch.context() as m:
            m.setattr(run_module, "stop_on_signals", stop_at_40)
            with pytest.raises(Interrupted):
                run(cfg, tmp_path / "stopped", make_optimizer=make)
        monkeypatch.setattr(threads.CpuLoad, "others", lambda self: 0.0)  # the machine is free
        resumed = run(cfg, tmp_path / "stopped", make_optimizer=make)
        assert torch.get_num_threads() == 1  # the count the run started with
    finally:
        torch.set_num_threads(before)
    assert resumed["final"] == reference["final"]


def test_a_cpu_run_says_its_threads(compose_cfg, caplog, tmp_path):
    import logging

    import torch

    from initbench.run import run

    cfg = compose_cfg(["dataset=circles", "trainer.epochs=1", "logger=[]", "trainer.device=cpu",
                       "trainer.num_threads=1"])  # fmt: skip
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO):
            run(cfg, tmp_path, make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "CPU threads: 1 thread (trainer.num_threads)" in caplog.text
