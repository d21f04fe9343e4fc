"""Run a sweep here, with no W&B server: one process per combination, in a fixed folder.

Each combination runs its command (:func:`initbench.sweep.commands.build_command`) with
``hydra.run.dir=<out>/<combination name>``: a fixed folder per combination, so a re-run skips
what is done (``summary.json`` says finished or diverged) and resumes the rest from their
checkpoints. The sweep folder gets ``sweep.yaml`` and ``combinations.json``; each combination's
folder ``local_sweep.log`` and ``local_sweep.json``.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from initbench.config import is_pack_member_key
from initbench.data import missing_data
from initbench.io import atomic_write, dumps_strict, open_log, read_json, read_jsonl, safe_name
from initbench.progress import Progress, hms
from initbench.signals import handling_signals
from initbench.sweep.combinations import Combination, combinations, varying_keys
from initbench.sweep.commands import compose_by, compose_combinations
from initbench.sweep.jobs import Job, pack_jobs, single_jobs
from initbench.sweep.spec import Sweep, SweepError, load_sweep
from initbench.threads import child_threads
from initbench.walltime import (
    BENCH_JSON,
    estimate_wall_time,
    packed_epoch_seconds,
    preset_epoch_seconds,
    read_bench,
)

DONE = ("finished", "diverged")  # a combination in one of these states is not run again
RECORD = "local_sweep.json"  # per combination: command, exit code, status, wall time
LOG = "local_sweep.log"  # per combination: the program's stdout and stderr
INDEX = "combinations.json"  # per sweep folder: the sweep file and its combinations


@dataclass
class Outcome:
    """What became of one combination."""

    combo: Combination
    run_dir: Path
    status: str  # finished | diverged | failed | interrupted | pending | ... (summary.json's)
    returncode: int | None = None
    wall_s: float | None = None
    metric: float | None = None
    best_val_acc: float | None = None
    skipped: bool = False  # already done before this invocation
    error: str | None = None


def _last_metric(run_dir: Path, name: str | None) -> float | None:
    """The last logged value of ``name`` (what W&B's run summary holds); NaN where the run
    wrote null (a non-finite value, see :func:`initbench.io.to_strict_json`)."""
    if not name:
        return None
    value = None
    try:
        rows = read_jsonl(run_dir / "metrics.jsonl")
    except ValueError:  # not a regular file, too big: no metric to show
        return None
    for row in rows:
        if name in row:  # null: a non-finite value
            value = float("nan") if row[name] is None else row[name]
    return value if value is None or isinstance(value, int | float) else None


def read_outcome(combo: Combination, run_dir: Path, metric: str | None = None) -> Outcome:
    """A combination's state from its folder: ``summary.json`` if the program wrote one, else
    the exit code recorded by the local runner (programs such as diagnose.py write none)."""
    summary = read_json(run_dir / "summary.json")
    record = read_json(run_dir / RECORD) or {}
    status = "pending"
    if isinstance(summary, dict) and summary.get("status"):
        status = summary["status"]
    elif record.get("returncode") is not None:
        status = "finished" if record["returncode"] == 0 else record.get("status", "failed")
    summary = summary if isinstance(summary, dict) else {}
    return Outcome(
        combo=combo,
        run_dir=run_dir,
        status=status,
        returncode=record.get("returncode"),
        wall_s=summary.get("wall_s", record.get("wall_s")),
        metric=_last_metric(run_dir, metric),
        best_val_acc=summary.get("best_val_acc"),
        error=summary.get("error") or record.get("error"),
    )


def _status_after(returncode: int, run_dir: Path) -> str:
    summary = read_json(run_dir / "summary.json")
    if isinstance(summary, dict) and summary.get("status") in DONE + ("interrupted", "failed"):
        return summary["status"]
    if returncode == 0:
        return "finished"
    if returncode > 128 or returncode < 0:
        return "interrupted"
    return "failed"


# Hydra's closing hint after an error: never the cause.
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1"


def _last_error_line(log_path: Path) -> str | None:
    """The line of a failed combination's log that says why. In the last attempt's output
    (after its ``$ command`` line), without Hydra's HYDRA_FULL_ERROR hint: a traceback's
    exception line; else the last line naming an error or exception; else the first line
    (Hydra's own errors: "Could not find 'init/bogus'", "Could not override ...")."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    lines = lines[starts[-1] + 1 :] if starts else lines
    lines = [line for line in lines if line.strip() and HYDRA_HINT not in line]
    if not lines:
        return None
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    if tracebacks:
        ends = [line for line in lines[tracebacks[-1] :] if not line[0].isspace()]
        return ends[-1].strip()[:300]
    for line in reversed(lines):
        if "error" in line.lower() or "exception" in line.lower():
            return line.strip()[:300]
    return lines[0].strip()[:300]


def write_index(sweep: Sweep, combos: Sequence[Combination], out_dir: Path) -> None:
    """``<out>/sweep.yaml`` (the file as run) and ``<out>/combinations.json`` (what is in it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    copy = out_dir / "sweep.yaml"
    if not (copy.exists() and copy.samefile(sweep.path)):  # not a rerun from the copy itself
        with atomic_write(copy) as f:
            f.write(Path(sweep.path).read_text())
    index = {
        "sweep": sweep.name,
        "file": str(sweep.path),
        "method": sweep.method,
        "program": sweep.program,
        "metric": sweep.metric,
        "combinations": [{"name": c.name, "params": dict(c.params)} for c in combos],
    }
    text = dumps_strict(index, indent=2, default=str)
    with atomic_write(out_dir / INDEX) as f:  # temp + rename: never through a symlink
        f.write(text)


def run_local_sweep(
    sweep: Sweep,
    combos: Sequence[Combination],
    out_dir: str | Path,
    *,
    parallel: int = 1,
    wandb_mode: str = "offline",
    root: str | Path = ".",
    echo: Callable[[str], None] = print,
    env: Mapping[str, str] | None = None,
    pack: int | None = None,
) -> list[Outcome]:
    """Run every combination not yet done, ``parallel`` processes at a time.

    Each combination runs in ``out_dir/<combination name>`` (its ``hydra.run.dir``), with
    ``WANDB_MODE=wandb_mode``; its output goes to ``local_sweep.log`` there. A combination
    whose program fails, diverges or is killed is recorded and the sweep goes on. SIGINT or
    SIGTERM stops the running combinations (they checkpoint) and launches no more; running
    the same call again continues.

    ``pack``: train the combinations that differ only in init and seed as packs of at most
    ``pack`` members (0: no limit but memory), one process each (:mod:`initbench.sweep.jobs`);
    each member still runs in its combination's folder.

    Returns:
        One outcome per combination, in ``combos`` order.
    """
    out_dir = Path(out_dir).resolve()
    root = Path(root)
    _check_runnable(sweep, root, parallel)
    write_index(sweep, combos, out_dir)
    outcomes, pending = _done_before(combos, out_dir, sweep.metric_name)
    if pack is None:
        jobs = single_jobs(sweep, pending, out_dir)
    else:
        jobs = pack_jobs(sweep, pending, out_dir, max_members=pack or None)
    total = len(combos)
    local = _LocalRun(
        sweep,
        out_dir,
        root=root,
        env={
            **os.environ,
            **child_threads(parallel),
            **(env or {}),
            "WANDB_MODE": wandb_mode,
            "PYTHONUNBUFFERED": "1",
        },  # fmt: skip
        keys=varying_keys(combos),
        total=total,
        ended=total - len(pending),
        echo=echo,
    )
    echo(
        f"local sweep {sweep.name} ({sweep.method}): {total} combinations, "
        f"{total - len(pending)} already done, {len(pending)} to run"
        + (f" in {len(jobs)} processes" if pack is not None else "")
        + f", {parallel} at a time, W&B {wandb_mode} -> {out_dir}"
    )
    with handling_signals(local.stop_all, (signal.SIGINT, signal.SIGTERM)):
        outcomes.update(local.run(jobs, parallel))
    for combo in combos:  # not started: stopped by a signal first
        if combo.index not in outcomes:
            outcomes[combo.index] = read_outcome(combo, out_dir / combo.name, sweep.metric_name)
    if local.signals:
        echo("stopped; run the same command again to continue where it left off")
    return [outcomes[c.index] for c in combos]


def _check_runnable(sweep: Sweep, root: Path, parallel: int) -> None:
    if not (root / sweep.program).exists():
        raise SweepError(f"program {sweep.program} not found under {root.resolve()}")
    if parallel < 1:
        raise SweepError(f"--parallel must be >= 1 (got {parallel})")


def _done_before(
    combos: Sequence[Combination], out_dir: Path, metric: str | None
) -> tuple[dict[int, Outcome], list[Combination]]:
    """The outcomes of the combinations already done (marked skipped), and the rest."""
    done: dict[int, Outcome] = {}
    pending = []
    for combo in combos:
        outcome = read_outcome(combo, out_dir / combo.name, metric)
        if outcome.status in DONE:
            outcome.skipped = True
            done[combo.index] = outcome
        else:
            pending.append(combo)
    return done, pending


@dataclass
class _Child:
    """A job's running process."""

    proc: subprocess.Popen
    job: Job
    t0: float  # time.perf_counter() at launch
    log: IO[str]  # local_sweep.log, the process's stdout and stderr


@dataclass
class _LocalRun:
    """One ``run_local_sweep`` call's processes: launched, reaped, stopped on a signal."""

    sweep: Sweep
    out_dir: Path
    root: Path  # the children's working directory
    env: Mapping[str, str]  # the children's environment
    keys: list[str]  # the parameters that vary, for the labels
    total: int  # combinations in the sweep
    ended: int  # of those: done before, or ended since
    echo: Callable[[str], None]
    running: dict[str, _Child] = field(default_factory=dict)  # by job name
    signals: list[int] = field(default_factory=list)  # received: launch no more
    start: float = field(default_factory=time.perf_counter)
    failed: int = 0  # combinations that failed in this call
    progress: Progress | None = None  # done/total, failures, ETA: a line after each run

    def __post_init__(self) -> None:
        self.progress = Progress(
            self.total, f"sweep {self.sweep.name}", "run", initial=self.ended, tty=False,
            interval=0, write=self.echo,
        )  # fmt: skip

    def run(self, jobs: Sequence[Job], parallel: int) -> dict[int, Outcome]:
        """Launch ``jobs`` in order, ``parallel`` at a time, until all have ended or a
        signal stopped the sweep and the running ones have ended."""
        outcomes: dict[int, Outcome] = {}
        queue = list(jobs)
        while queue or self.running:
            while queue and len(self.running) < parallel and not self.signals:
                self.launch(queue.pop(0))
            if not self.running:
                break
            time.sleep(0.1)
            outcomes.update(self.reap())
        return outcomes

    def launch(self, job: Job) -> None:
        job.folder.mkdir(parents=True, exist_ok=True)
        cmd = job.cmd
        log = open_log(job.folder / LOG)
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        # own process group: a Ctrl-C reaches the children only through stop_all; and a
        # SIGTERM when this process dies, however it dies (see _stop_with_parent)
        proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stop_with_parent(),
        )
        self.running[job.name] = _Child(proc, job, time.perf_counter(), log)
        started = self.ended + sum(len(c.job.combos) for c in self.running.values())
        if job.packed:
            shared = [k for k in self.keys if not is_pack_member_key(k)]
            what = f"pack of {len(job.combos)}: {job.combos[0].label(shared)}".rstrip(": ")
        else:
            what = job.combos[0].label(self.keys)
        self.echo(f"[started {started}/{self.total}] {what}  (elapsed {self._elapsed()})")

    def reap(self) -> dict[int, Outcome]:
        """The outcomes of the processes that have ended since the last call, recorded."""
        outcomes = {}
        for name, child in list(self.running.items()):
            returncode = child.proc.poll()
            if returncode is not None:
                child.log.close()
                del self.running[name]
                for combo in child.job.combos:
                    outcomes[combo.index] = self._ended(child, combo, returncode)
                # one progress line per process: a pack's members end together, and counting
                # them one by one would show an ETA per member (a jump to 0:00:00 at the last)
                self.progress.update(len(child.job.combos))
        return outcomes

    def stop_all(self, signum: int, frame: FrameType | None = None) -> None:
        """The SIGINT/SIGTERM handler: SIGTERM to every running process (they save)."""
        if not self.signals:
            self.echo(
                f"{signal.Signals(signum).name}: stopping the running combinations (they save)"
            )
        self.signals.append(signum)
        for child in self.running.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)

    def _ended(self, child: _Child, combo: Combination, returncode: int) -> Outcome:
        """Record a combination whose process has ended, say so, and return its outcome."""
        self.ended += 1
        run_dir = self.out_dir / combo.name
        metric = self.sweep.metric_name
        wall = time.perf_counter() - child.t0
        record = _write_record(child.job, combo, run_dir, returncode, wall)
        status, error = record["status"], record["error"]
        outcome = read_outcome(combo, run_dir, metric)
        outcome.status, outcome.returncode = status, returncode
        outcome.error = outcome.error or error
        shown = f"  {metric}={outcome.metric:.4f}" if outcome.metric is not None else ""
        why = f"  ({error})" if error else ""
        # the run's own seconds (summary.json's wall_s, the sweep table's) and its process's
        # (start-up, data loading and the step-0 report included; a pack's for its members)
        took = f"{wall:.1f} s"
        if isinstance(outcome.wall_s, (int, float)):
            took = f"{outcome.wall_s:.1f} s run, {wall:.1f} s process"
        self.echo(
            f"[done {self.ended}/{self.total}] {status} {combo.label(self.keys)}{shown}"
            f"  {took}  (elapsed {self._elapsed()}){why}"
        )
        if status == "failed":
            self.failed += 1
        if self.failed:
            self.progress.set_postfix(failed=self.failed)
        return outcome

    def _elapsed(self) -> str:
        return hms(time.perf_counter() - self.start)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up once in the parent (not between fork and exec); None where
    there is none (macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _stop_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` after which Linux sends the child SIGTERM when this process dies, even
    by SIGKILL (``PR_SET_PDEATHSIG``): the child checkpoints and exits, so a re-run of the
    sweep resumes its combination instead of training it a second time beside it. None where
    there is no prctl: there a killed runner's children run on to their end."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(128 + signal.SIGTERM)

    return preexec


def _write_record(
    job: Job, combo: Combination, run_dir: Path, returncode: int, wall_s: float
) -> dict[str, Any]:
    """``local_sweep.json`` for a combination whose process has ended: its command, exit
    code, status, wall time and, if it failed, the log's last error line (a pack's: the
    pack's log, ``pack`` names its folder)."""
    status = _status_after(returncode, run_dir)
    record = {
        "params": dict(combo.params),
        "command": job.cmd,
        "pack": str(job.folder) if job.packed else None,
        "returncode": returncode,
        "status": status,
        "wall_s": wall_s,
        "error": _last_error_line(job.folder / LOG) if status == "failed" else None,
    }
    run_dir.mkdir(parents=True, exist_ok=True)  # a pack that failed first made no folders
    text = dumps_strict(record, indent=2, default=str)
    with atomic_write(run_dir / RECORD) as f:  # temp + rename: never through a symlink
        f.write(text)
    return record


def results_table(sweep: Sweep, outcomes: Sequence[Outcome]) -> str:
    """A plain-text table of the outcomes, best first by the sweep's metric."""
    keys = varying_keys([o.combo for o in outcomes])
    metric = sweep.metric_name

    def order(o: Outcome):
        value = o.metric
        missing = value is None or not math.isfinite(value)
        return (missing, -(value or 0.0) if sweep.maximize else (value or 0.0), o.combo.index)

    header = [*keys, "status", metric or "metric", "best_val_acc", "wall_s"]
    rows: list[list[str]] = []
    for o in sorted(outcomes, key=order):
        rows.append(
            [
                *(str(o.combo.params.get(k)) for k in keys),
                o.status + (" (earlier)" if o.skipped else ""),
                "" if o.metric is None else f"{o.metric:.4f}",
                "" if o.best_val_acc is None else f"{o.best_val_acc:.4f}",
                "" if o.wall_s is None else f"{o.wall_s:.1f}",
            ]
        )
    # columns nobody has a value in (a program without a metric, e.g. diagnose.py) are dropped
    keep = [i for i, h in enumerate(header) if i < len(keys) + 1 or any(r[i] for r in rows)]
    header = [header[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


def default_out_dir(sweep: Sweep) -> Path:
    """``outputs/local-sweeps/<sweep name>``: fixed, so running the same file again resumes;
    the name made one path component (``name: ../../x`` stays inside, as ``x``)."""
    return Path("outputs") / "local-sweeps" / safe_name(sweep.name)


def _sets_data_or_budget(key: str) -> bool:
    """The parameters that can change a run's dataset, data folder or epochs."""
    return key == "experiment" or key.split(".")[0] in ("dataset", "data_dir", "trainer")


def plan_notes(
    sweep: Sweep,
    combos: Sequence[Combination],
    bench: str | Path = BENCH_JSON,
    packed: bool = False,
) -> list[str]:
    """What a dry run says about ``combos`` (those still to run) before anything runs: which
    need data that is not on disk (how many, the dataset, the folder, the fix), and their wall
    time on the device ``bench`` measured, one at a time, or ``packed`` at the bench's pack
    speedups (:mod:`initbench.walltime`).
    Composes one config per distinct experiment/dataset/epochs setting, not per combination."""
    cfgs = compose_by(sweep, combos, _sets_data_or_budget)
    notes, missing = [], {}
    for cfg in cfgs:
        if isinstance(cfg, Exception) or "dataset" not in cfg:
            continue  # --check names what does not compose
        name, folder = cfg["dataset"]["name"], Path(str(cfg["data_dir"])).expanduser().absolute()
        try:
            fix = missing_data(name, folder)
        except ValueError:
            continue
        if fix is not None:
            missing.setdefault((name, folder, fix), []).append(cfg)
    for (name, folder, fix), found in missing.items():
        download = " (each will try to download it: dataset.download=true)" if all(
            c["dataset"].get("download") for c in found
        ) else ""  # fmt: skip
        notes.append(
            f"warning: {len(found)} of {len(combos)} combinations to run use {name}, which is "
            f"not in {folder}{download}; to fix: {fix}"
        )
    if Path(sweep.program).stem.removeprefix("initbench-") == "diagnose":
        notes.append(f"wall time: {sweep.program} trains nothing (seconds per combination)")
        return notes
    results = read_bench(bench)
    epoch_s = preset_epoch_seconds(results) if results else None
    if epoch_s is None:
        why = f"no results in {bench}" if results is None else f"{bench} is a --quick run"
        notes.append(
            f"wall time: not estimated ({why}); run `python scripts/bench.py` on this device "
            "first, or pass its results with --bench FILE"
        )
        return notes
    runs = [
        (combo.params.get("experiment"), cfg["trainer"]["epochs"])
        for combo, cfg in zip(combos, cfgs, strict=True)
        if not isinstance(cfg, Exception) and "trainer" in cfg
    ]
    how = "one at a time"
    if packed:
        packed_s = packed_epoch_seconds(results, epoch_s)
        if packed_s is None:
            how += f" (no packed_speedup in {bench}: the packs' gain is not counted)"
        else:
            epoch_s, how = packed_s, "packed, at the measured pack speedups"
    est = estimate_wall_time(runs, epoch_s)
    meta = results.get("meta", {})
    where = f"{meta.get('device', '?')} ({meta.get('device_name', '?')}, measured in {bench})"
    line = (
        f"estimated wall time on {where}: {hms(est['seconds'])} ({est['hours']:.1f} h) for "
        f"{est['runs']} of the {len(combos)} combinations to run, {how}"
    )
    if est["not_estimated"]:
        unknown = ", ".join(f"{n} x {p}" for p, n in sorted(est["not_estimated"].items()))
        line += f"; not estimated (no measured epoch time): {unknown}"
    notes.append(line)
    return notes


def local_sweep(
    path: str | Path,
    *,
    out: str | Path | None = None,
    dry_run: bool = False,
    check: bool = False,
    parallel: int = 1,
    count: int | None = None,
    seed: int = 0,
    wandb_mode: str = "offline",
    echo: Callable[[str], None] = print,
    pack: int | None = None,
    bench: str | Path = BENCH_JSON,
) -> int:
    """``scripts/local_sweep.py``: list, check or run a sweep file; returns the exit code.
    ``pack``: as for :func:`run_local_sweep`.

    A dry run also warns about combinations whose data files are missing and estimates the
    wall time of those still to run from ``bench`` (``scripts/bench.py``'s results).

    0: every combination finished or diverged (or the listing/check passed); 1: some failed
    (or did not compose, with ``check``); 128 + signal number: stopped by a signal.

    Raises:
        SweepError: the file, its method or its program cannot be run.
    """
    sweep = load_sweep(path)
    combos = combinations(sweep, count=count, seed=seed)
    out_dir = Path(out) if out is not None else default_out_dir(sweep)
    if any(c in str(out_dir.absolute()) for c in ",="):  # it goes to Hydra as hydra.run.dir=...
        raise SweepError(
            f"--out {out_dir}: a folder whose path holds ',' or '=' cannot be a run directory "
            "(Hydra reads hydra.run.dir=a,b as two runs); choose another folder"
        )
    keys = varying_keys(combos)
    _check_runnable(sweep, Path("."), parallel)  # a dry run too: what the real run would refuse
    if check:
        bad = [(c, e) for c, e in compose_combinations(sweep, combos) if isinstance(e, Exception)]
        for combo, err in bad:
            echo(f"does not compose: {combo.label()}: {type(err).__name__}: {err}")
        echo(f"{len(combos) - len(bad)} of {len(combos)} combinations compose")
        if bad:
            return 1
    if dry_run:
        echo(
            f"sweep {sweep.name} ({sweep.method}, {sweep.program}): {len(combos)} combinations "
            f"-> {out_dir}"
        )
        width = len(str(len(combos)))
        todo = []
        for combo in combos:
            state = read_outcome(combo, out_dir / combo.name).status
            mark = "" if state == "pending" else f"  [{state}]"
            echo(f"  {combo.index + 1:>{width}}  {combo.label(keys)}{mark}")
            if state not in DONE:
                todo.append(combo)
        if pack is not None:
            jobs = pack_jobs(sweep, combos, out_dir.resolve(), max_members=pack or None)
            packs = [j for j in jobs if j.packed]
            echo(
                f"--pack: {len(jobs)} processes, {len(packs)} of them packs of "
                f"{', '.join(sorted({str(len(j.combos)) for j in packs})) or '-'} members"
            )
        else:
            jobs = single_jobs(sweep, combos, out_dir)
        if jobs:
            echo("first command: " + " ".join(jobs[0].cmd))
        if todo:
            for line in plan_notes(sweep, todo, bench, packed=pack is not None):
                echo(line)
        return 0
    outcomes = run_local_sweep(
        sweep, combos, out_dir, parallel=parallel, wandb_mode=wandb_mode, echo=echo, pack=pack
    )
    echo("")
    echo(results_table(sweep, outcomes))
    echo(f"\nrun folders: {out_dir}   report: python scripts/report.py {out_dir}")
    stopped = [
        o for o in outcomes if o.status == "interrupted" and o.returncode and o.returncode > 128
    ]
    if stopped:
        return stopped[0].returncode
    return 1 if any(o.status not in DONE for o in outcomes) else 0
