"""Kill a CPU training run with SIGKILL at random moments, resume it each time, and check that
its final metrics equal those of an uninterrupted run of the same config.

Usage:
    python scripts/chaos.py [--kills 10] [--seed 0] [--out outputs/chaos] [-- extra overrides]
    python scripts/chaos.py --pack [...]    # a pack (src/pack.py): every member must match

With ``--pack`` the run is a pack of 3 inits x 2 seeds (src/pack.py); each member's final
metrics and history must equal its member's in the uninterrupted pack.

One restart in five is killed during start-up; the others once training has started (the run
has rewritten its summary.json), after a random 0-30% of the reference run's training time, so
kills land mid-epoch, at epoch ends and during checkpoint writes, and the run needs several
restarts to finish. Exit code 0 when the resumed run matches the reference exactly, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Small enough for 2 CPU cores, with many steps and a checkpoint every epoch.
DEFAULT_OVERRIDES = [
    "dataset=circles",
    "dataset.n_train=4000",
    "model.width=64",
    "model.dropout=0.2",
    "trainer.batch_size=32",
    "trainer.epochs=10",
    "trainer.device=cpu",
    "logger=tensorboard",
]


PACK_OVERRIDES = ["pack.inits=[kaiming_normal,xavier_normal,zeros]", "pack.seeds=[0,1]"]
PACKED = False  # --pack: the run is a pack of members, each in a folder of the pack's folder


def train_cmd(run_dir: Path, overrides: list[str]) -> list[str]:
    program, extra = ("src/pack.py", PACK_OVERRIDES) if PACKED else ("src/train.py", [])
    return [sys.executable, str(ROOT / program), f"hydra.run.dir={run_dir}", *extra, *overrides]


def run_dirs(run_dir: Path) -> list[Path]:
    """The run's directory, or a pack's members' directories (those holding a config.yaml)."""
    if not PACKED:
        return [run_dir]
    return sorted(p.parent for p in run_dir.glob("[!.]*/config.yaml"))  # not Hydra's .hydra/


def run_to_end(run_dir: Path, overrides: list[str]) -> tuple[float, float]:
    """Run to completion; returns (start-up seconds, training seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        train_cmd(run_dir, overrides), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    started = wait_until_training(run_dir, proc, after=time.time() - 1) or time.monotonic()
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"chaos: run in {run_dir} failed (exit {proc.returncode}):\n{err[-2000:]}")
    return started - start, time.monotonic() - started


def wait_until_training(run_dir: Path, proc: subprocess.Popen, after: float) -> float | None:
    """Block until the process has rewritten summary.json (it is past start-up); returns the
    monotonic time then, or None if the process exited first."""
    while proc.poll() is None:
        for folder in run_dirs(run_dir):  # a pack: its first member
            summary = folder / "summary.json"
            try:
                if summary.stat().st_mtime > after and '"running"' in summary.read_text():
                    return time.monotonic()
            except OSError:
                pass
            break
        time.sleep(0.05)
    return None


def outcome(run_dir: Path) -> dict:
    """Per run (each member of a pack): its status, final metrics and metrics.jsonl."""
    result = {}
    for folder in run_dirs(run_dir):
        summary = json.loads((folder / "summary.json").read_text())
        metrics = (folder / "metrics.jsonl").read_text()
        result[folder.name if PACKED else "run"] = {
            "status": summary["status"], "final": summary["final"], "metrics": metrics,
        }  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs to deliver (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/chaos", help="work folder")
    parser.add_argument("--pack", action="store_true", help="kill and resume a pack instead")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the run")
    args = parser.parse_args()
    global PACKED
    PACKED = args.pack
    overrides = DEFAULT_OVERRIDES + args.overrides
    if "OMP_NUM_THREADS" not in os.environ:
        # one thread count for the reference and every restart: a run's default adapts to the
        # load at its start, and a reduction's result depends on the count (initbench.threads)
        from initbench.threads import default_threads

        os.environ["OMP_NUM_THREADS"] = str(default_threads()[0])
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    reference, chaos = args.out / "reference", args.out / "chaos"

    startup, training = run_to_end(reference, overrides)
    print(f"chaos: reference run: start-up {startup:.1f} s, training {training:.1f} s")
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    kills = 0
    while kills < args.kills:
        launched = time.time()
        proc = subprocess.Popen(
            train_cmd(chaos, overrides), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        if rng.random() < 0.2:
            moment, delay = "start-up", rng.uniform(0, startup)
        else:
            moment, delay = "training", rng.uniform(0, 0.3 * training)
            wait_until_training(chaos, proc, after=launched)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.returncode != -signal.SIGKILL:
            print(f"chaos: the run finished (exit {proc.returncode}) after {kills} kills")
            break
        kills += 1
        print(f"chaos: kill {kills}/{args.kills} {delay:.1f} s into {moment}; {_progress(chaos)}")
    startup, training = run_to_end(chaos, overrides)
    print(f"chaos: final resume: training {training:.1f} s")

    ref, got = outcome(reference), outcome(chaos)
    same = ref == got
    for name in ref:
        print(f"chaos: {name}: reference final {ref[name]['final']}")
        print(f"chaos: {name}: resumed   final {got.get(name, {}).get('final')}")
    print(f"chaos: {'IDENTICAL' if same else 'DIFFERENT'} final metrics and per-epoch history")
    return 0 if same else 1


def _progress(run_dir: Path) -> str:
    """Epochs recorded so far (metrics.jsonl is rewritten with every checkpoint)."""
    try:
        folders = run_dirs(run_dir)
        epochs = [len((f / "metrics.jsonl").read_text().splitlines()) for f in folders]
        return f"epoch {', '.join(map(str, epochs))}"
    except OSError:
        return "none yet"


if __name__ == "__main__":
    sys.exit(main())
