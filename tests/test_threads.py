"""initbench.threads: the thread count a run takes by default, and OpenMP's wait policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import ROOT
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
    env = threads.child_threads(2, {})
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(max(1, usable // 2))}
    mine = threads.child_threads(2, {"OMP_NUM_THREADS": "4", "OMP_WAIT_POLICY": "ACTIVE"})
    assert mine == {"OMP_WAIT_POLICY": "ACTIVE"}  # the user's settings stand


def test_importing_initbench_makes_openmp_passive_before_torch_loads_it():
    code = ("import os, initbench, torch; "
            "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()  # fmt: skip
    assert out[0] == "PASSIVE"
    mine = {**env, "OMP_WAIT_POLICY": "ACTIVE"}
    out = subprocess.run([sys.executable, "-c", code], env=mine, capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()  # fmt: skip
    assert out[0] == "ACTIVE"


def test_a_run_takes_the_default_thread_count_and_says_so(compose_cfg, caplog, tmp_path):
    import logging

    import torch

    from initbench.run import run

    cfg = compose_cfg(["dataset=circles", "trainer.epochs=1", "logger=[]", "trainer.device=cpu"])
    torch.set_num_threads(1)
    try:
        with caplog.at_level(logging.INFO):
            run(cfg, tmp_path, make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
        assert torch.get_num_threads() == threads.default_threads()[0]
    finally:
        torch.set_num_threads(threads.default_threads()[0])
    assert f"device cpu ({threads.default_threads()[0]} threads)" in caplog.text
