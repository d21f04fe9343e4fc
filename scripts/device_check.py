"""The device check: every CUDA path and every GPU figure in one command, in under 8 minutes.

Run it through scripts/device_check.sh (which installs Hydra from prepared wheels where it is
missing and puts src/ on the path); docs/performance.md says how. Parts, in order, each in its
own process with its own time budget (a part that fails or runs out of time is recorded and
the rest go on; the budgets are cut to what is left of --budget):

  env          nvidia-smi, Python / torch / CUDA / cuDNN versions, the device (env.txt)
  cuda_tests   pytest -m cuda: the tests only a CUDA device can run        (cuda_tests.xml)
  bench_*      scripts/bench.py --only <one measurement>: MLP epoch vs DataLoader, telemetry
               overhead, the cnn30 fast path, packed speedup (MLP at K = 51 and the cnn30)
  epochs       the FashionMNIST MLP (defaults) and the cnn30 on CIFAR-10-shaped data (50,000
               random images in CIFAR-10's format, bf16 + channels_last): seconds per epoch
  packs        a packed MLP (fp32) against one member's unpacked run, and a packed cnn30 under
               bf16 autocast, through src/pack.py

Writes to --out: device_check.json (every part's status, seconds and figures; the targets
table), bench.json (the bench parts merged, with the grid estimate), device_check.log (every
part's output), env.txt and cuda_tests.xml; prints the targets table at the end.

``--device cpu --quick`` is the CPU rehearsal that CI runs: the same parts and files, tiny
workloads, the CUDA tests run on the CPU (INITBENCH_CUDA_TESTS_ON_CPU=1); its figures mean
nothing. Exit code 0 when every part passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The test files holding tests marked cuda (tests/test_device_check.py checks the list):
# pytest imports only these, so a test module needing a package the GPU machine lacks (W&B)
# cannot stop the collection.
CUDA_TEST_FILES = [
    "tests/test_cuda.py",
    "tests/test_memory.py",
    "tests/test_data.py",
    "tests/test_telemetry.py",
]
# The H100 targets (docs/performance.md): figure -> (comparison, value, where it comes from).
TARGETS = {
    "mlp_epoch_vs_dataloader": (">=", 10.0, "bench mlp_epoch_speedup_vs_dataloader ratio"),
    "telemetry_overhead": ("<=", 1.05, "bench telemetry_overhead ratio"),
    "packed_speedup_mlp_k51": (">=", 20.0, "bench packed_speedup ratio"),
    "grid_hours_packed": ("<=", 1.0, "bench grid_wall_time_estimate hours_packed"),
    "cnn30_cifar10_epoch_s": ("<=", 3.0, "epochs part: cnn30, 50k CIFAR-10-shaped, epoch 2"),
    "mlp_epoch_s": ("<=", 0.5, "epochs part: default FashionMNIST MLP, epoch 2"),
}


@dataclass
class Context:
    device: str
    quick: bool
    out: Path
    work: Path
    data_dir: Path | None
    log: Any  # the open device_check.log
    deadline: float  # the whole check's end
    part_end: float = math.inf  # the running part's end (its budget from its start)

    def run(self, args: list[str], env: dict[str, str] | None = None) -> str:
        """Run ``args`` from the repository with what is left of the part's budget (and of the
        whole check's); log its output; return it. Raises on failure or timeout."""
        timeout = max(5.0, min(self.part_end, self.deadline) - time.monotonic())
        self.log.write(f"$ {' '.join(args)}   [budget {timeout:.0f} s]\n")
        self.log.flush()
        try:
            proc = subprocess.run(
                args,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            self.log.write(out + f"\n[timed out after {timeout:.0f} s]\n")
            raise TimeoutError(f"timed out after {timeout:.0f} s: {' '.join(args[:4])}") from None
        self.log.write(proc.stdout + "\n")
        self.log.flush()
        if proc.returncode != 0:
            tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
            raise RuntimeError(f"exit {proc.returncode}: {tail[-400:]}")
        return proc.stdout

    def data_overrides(self, download: bool = True) -> list[str]:
        """Where FashionMNIST is (``dataset.download=false`` too unless ``download`` is False:
        the bench's workload has no such field)."""
        if self.data_dir is None:
            return []
        return [f"data_dir={self.data_dir}", *(["dataset.download=false"] if download else [])]


Part = Callable[[Context], dict[str, Any]]
PARTS: dict[str, tuple[Part, float, float]] = {}  # name -> (fn, budget on cuda, budget quick)


def part(name: str, budget: float, quick_budget: float) -> Callable[[Part], Part]:
    def register(fn: Part) -> Part:
        PARTS[name] = (fn, budget, quick_budget)
        return fn

    return register


@part("env", 30, 60)
def env_part(ctx: Context) -> dict[str, Any]:
    lines = []
    smi = shutil.which("nvidia-smi")
    if smi:
        lines.append(ctx.run([smi]))
    info = ctx.run([sys.executable, "-c", ENV_PROBE])
    lines.append(info)
    (ctx.out / "env.txt").write_text("\n".join(lines))
    figures = json.loads(info.strip().splitlines()[-1])
    if ctx.device == "cuda" and not figures["cuda_available"]:
        raise RuntimeError("torch sees no CUDA device")
    return figures


ENV_PROBE = """
import json, os, platform, sys, torch
d = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
     "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available(),
     "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
     "platform": platform.platform()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    d.update(device_name=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
             memory_gib=round(p.total_memory / 2**30, 1))
for name in ("hydra", "omegaconf", "tensorboard", "pandas", "matplotlib", "tqdm", "pytest"):
    try:
        d[name] = __import__(name).__version__
    except Exception as err:
        d[name] = f"missing ({type(err).__name__})"
print(json.dumps(d))
"""


@part("cuda_tests", 150, 240)
def cuda_tests(ctx: Context) -> dict[str, Any]:
    xml = ctx.out / "cuda_tests.xml"
    env = {"INITBENCH_CUDA_TESTS_ON_CPU": "1"} if ctx.device == "cpu" else {}
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        f"--junitxml={xml}",
        *CUDA_TEST_FILES,
    ]
    try:
        output = ctx.run(args, env)
    finally:
        counts = _junit_counts(xml)
    counts["summary"] = output.strip().splitlines()[-1]
    return counts


def _junit_counts(xml: Path) -> dict[str, Any]:
    if not xml.exists():
        return {}
    head = xml.read_text()[:2000]
    found = dict(re.findall(r'(tests|failures|errors|skipped)="(\d+)"', head))
    return {k: int(v) for k, v in found.items()}


def _bench(ctx: Context, name: str) -> dict[str, Any]:
    out = ctx.work / f"bench_{name}.json"
    args = [
        sys.executable,
        "scripts/bench.py",
        "--device",
        ctx.device,
        "--only",
        name,
        "--out",
        str(out),
        *(["--quick"] if ctx.quick else []),
        *ctx.data_overrides(False),
    ]
    ctx.run(args)
    result = json.loads(out.read_text())
    return result[name] | {"meta": result["meta"]}


@part("bench_mlp_epoch", 60, 90)
def bench_mlp_epoch(ctx: Context) -> dict[str, Any]:
    return _bench(ctx, "mlp_epoch_speedup_vs_dataloader")


@part("bench_telemetry", 60, 90)
def bench_telemetry(ctx: Context) -> dict[str, Any]:
    return _bench(ctx, "telemetry_overhead")


@part("bench_cnn30", 60, 90)
def bench_cnn30(ctx: Context) -> dict[str, Any]:
    return _bench(ctx, "cnn30_speedup_fast_path")


EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+)\b.*\(([\d.]+) s\)")


def _epoch_seconds(output: str) -> list[float]:
    return [float(m.group(3)) for m in EPOCH_LINE.finditer(output)]


@part("epochs", 75, 180)
def epochs(ctx: Context) -> dict[str, Any]:
    """Two epochs each; the second (warm) epoch's time, as the run's log line prints it
    (training + evaluation)."""
    from initbench.bench import write_cifar10_shaped

    base = [f"trainer.device={ctx.device}", "trainer.epochs=2", "logger=[tensorboard]"]
    mlp = [*ctx.data_overrides()] if not ctx.quick else ["dataset=circles"]
    out = ctx.run(
        [sys.executable, "src/train.py", *base, *mlp, f"hydra.run.dir={ctx.work / 'epochs_mlp'}"]
    )
    mlp_s = _epoch_seconds(out)
    n_train, n_test = (512, 256) if ctx.quick else (50_000, 10_000)
    cifar = write_cifar10_shaped(ctx.work / "cifar_epochs", n_train, n_test)
    cnn = [
        "model=cnn30",
        "dataset=cifar10",
        f"data_dir={cifar}",
        "dataset.download=false",
        "trainer.batch_size=128",
        "trainer.eval_batch_size=1000",
    ]
    out = ctx.run(
        [sys.executable, "src/train.py", *base, *cnn, f"hydra.run.dir={ctx.work / 'epochs_cnn30'}"]
    )
    cnn_s = _epoch_seconds(out)
    if len(mlp_s) != 2 or len(cnn_s) != 2:
        raise RuntimeError(f"expected two epoch lines each, found {mlp_s} and {cnn_s}")
    return {
        "mlp_epoch_s": mlp_s[1],
        "mlp_epoch_s_first": mlp_s[0],
        "mlp_dataset": "circles" if ctx.quick else "fashion_mnist",
        "cnn30_cifar10_epoch_s": cnn_s[1],
        "cnn30_cifar10_epoch_s_first": cnn_s[0],
        "cnn30_train_images": n_train,
    }


def _summaries(folder: Path) -> dict[str, dict[str, Any]]:
    """The summary.json of every run under ``folder``, by its folder's name."""
    return {p.parent.name: json.loads(p.read_text()) for p in folder.rglob("summary.json")}


@part("packs", 60, 180)
def packs(ctx: Context) -> dict[str, Any]:
    """A packed MLP (fp32) whose kaiming_normal seed-0 member is compared with the same run
    unpacked, and a packed cnn30 under bf16 autocast (trainer.precision=auto: bf16 on CUDA)."""
    from initbench.bench import write_cifar10_shaped

    base = [f"trainer.device={ctx.device}", "trainer.epochs=1", "logger=[tensorboard]"]
    mlp = ["dataset=circles"] if ctx.quick else [*ctx.data_overrides()]
    mlp += ["model.dropout=0", "trainer.precision=fp32", *base]  # dropout: other masks packed
    ctx.run(
        [
            sys.executable,
            "src/pack.py",
            *mlp,
            "pack.inits=[kaiming_normal,xavier_normal,zeros]",
            "pack.seeds=[0,1]",
            f"hydra.run.dir={ctx.work / 'pack_mlp'}",
        ]
    )
    ctx.run(
        [
            sys.executable,
            "src/train.py",
            *mlp,
            "init=kaiming_normal",
            "seed=0",
            f"hydra.run.dir={ctx.work / 'alone_mlp'}",
        ]
    )
    members = _summaries(ctx.work / "pack_mlp")
    (alone,) = _summaries(ctx.work / "alone_mlp").values()
    (member,) = [
        s
        for s in members.values()
        if s["choices"]["init"] == "kaiming_normal" and s["choices"]["seed"] == 0
    ]
    diff = max(
        abs(member["final"][k] - alone["final"][k]) / max(abs(alone["final"][k]), 1e-12)
        for k in ("train_loss", "val_loss")
    )
    cifar = write_cifar10_shaped(ctx.work / "cifar_packs", 256 if ctx.quick else 2560, 256)
    ctx.run(
        [
            sys.executable,
            "src/pack.py",
            "model=cnn30",
            "dataset=cifar10",
            f"data_dir={cifar}",
            "dataset.download=false",
            "trainer.batch_size=128",
            *base,
            "pack.inits=[kaiming_normal,orthogonal]",
            "pack.seeds=[0,1]",
            # the CPU's step-0 reports of 4 cnn30 members take most of a minute; tested elsewhere
            *(["diagnose.at_start=false"] if ctx.quick else []),
            f"hydra.run.dir={ctx.work / 'pack_cnn30'}",
        ]
    )
    cnn = _summaries(ctx.work / "pack_cnn30")
    statuses = sorted({s["status"] for s in [*members.values(), *cnn.values()]})
    if len(members) != 6 or len(cnn) != 4 or statuses != ["finished"]:
        raise RuntimeError(f"{len(members)} MLP and {len(cnn)} cnn30 members, status {statuses}")
    if not diff <= 1e-3:
        raise RuntimeError(f"the packed member differs from its unpacked run by {diff:.2e}")
    return {
        "mlp_members": len(members),
        "mlp_member_vs_alone_rel_diff": diff,
        "cnn30_members": len(cnn),
        "cnn30_val_loss": [s["final"]["val_loss"] for s in cnn.values()],
    }


@part("bench_packed", 150, 240)
def bench_packed(ctx: Context) -> dict[str, Any]:
    return _bench(ctx, "packed_speedup")


def targets_table(results: dict[str, Any], bench: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per H100 target: the measured value (None where its part failed) and whether
    it is met."""

    def get(*path: str) -> float | None:
        node: Any = results
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, (int, float)) and math.isfinite(node) else None

    measured = {
        "mlp_epoch_vs_dataloader": get("bench_mlp_epoch", "figures", "ratio"),
        "telemetry_overhead": get("bench_telemetry", "figures", "ratio"),
        "packed_speedup_mlp_k51": get("bench_packed", "figures", "ratio"),
        "grid_hours_packed": (bench.get("grid_wall_time_estimate") or {}).get("hours_packed"),
        "cnn30_cifar10_epoch_s": get("epochs", "figures", "cnn30_cifar10_epoch_s"),
        "mlp_epoch_s": get("epochs", "figures", "mlp_epoch_s"),
    }
    rows = []
    for name, (op, target, source) in TARGETS.items():
        value = measured[name]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        rows.append(
            {
                "figure": name,
                "value": value,
                "target": f"{op} {target:g}",
                "met": met,
                "source": source,
            }
        )
    return rows


def merged_bench(results: dict[str, Any]) -> dict[str, Any]:
    """The bench parts' measurements in one bench.json, with the grid estimate from them."""
    from initbench.bench import GRID, grid_estimate

    bench: dict[str, Any] = {}
    for name, result in results.items():
        figures = result.get("figures") or {}
        if name.startswith("bench_") and "meta" in figures:
            bench.setdefault("meta", figures["meta"])
            key = {
                "bench_mlp_epoch": "mlp_epoch_speedup_vs_dataloader",
                "bench_telemetry": "telemetry_overhead",
                "bench_cnn30": "cnn30_speedup_fast_path",
                "bench_packed": "packed_speedup",
            }[name]
            bench[key] = {k: v for k, v in figures.items() if k != "meta"}
    try:
        bench["grid_wall_time_estimate"] = grid_estimate(bench, GRID) if bench else None
    except Exception as err:  # the estimate needs the epoch figures; say why it is missing
        bench["grid_wall_time_estimate"] = {"error": f"{type(err).__name__}: {err}"}
    return bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny workloads (the CPU rehearsal)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or ROOT / "outputs" / "device_check"),
        help="default: $OUT, else outputs/device_check",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the whole check (default 450 on cuda, 900 quick)",
    )
    parser.add_argument("--parts", nargs="*", choices=list(PARTS), help="default: all")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="FashionMNIST's folder (device_check.sh passes the prepared one)",
    )
    args = parser.parse_args(argv)
    budget = args.budget or (900.0 if args.quick else 450.0)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work, open(args.out / "device_check.log", "w") as log:
        ctx = Context(
            args.device, args.quick, args.out, Path(work), args.data_dir, log, started + budget
        )
        for name in args.parts or list(PARTS):
            fn, cuda_budget, quick_budget = PARTS[name]
            part_budget = quick_budget if args.quick else cuda_budget
            t0 = time.monotonic()
            ctx.part_end = t0 + part_budget
            print(f"device_check: {name} (budget {part_budget:.0f} s) ...", flush=True)
            log.write(f"\n===== {name} =====\n")
            if ctx.deadline - t0 < 5:
                results[name] = {"status": "skipped", "error": "the check's budget is spent"}
            else:
                try:
                    results[name] = {"status": "passed", "figures": fn(ctx)}
                except Exception as err:
                    results[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            results[name]["seconds"] = round(time.monotonic() - t0, 1)
            print(
                f"device_check: {name} {results[name]['status']} "
                f"({results[name]['seconds']} s) {results[name].get('error', '')}",
                flush=True,
            )
        bench = merged_bench(results)
    table = targets_table(results, bench)
    report = {
        "device": args.device,
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "budget_s": budget,
        "parts": results,
        "targets": table,
    }
    (args.out / "bench.json").write_text(json.dumps(bench, indent=2, default=str))
    (args.out / "device_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(format_report(report))
    return 0 if all(r["status"] == "passed" for r in results.values()) else 1


def format_report(report: dict[str, Any]) -> str:
    env = (report["parts"].get("env") or {}).get("figures") or {}
    lines = [
        f"device check on {env.get('device_name', report['device'])} (torch {env.get('torch')}, "
        f"CUDA {env.get('cuda')}): {report['seconds']} s of {report['budget_s']:.0f}"
        + ("  [quick rehearsal: figures mean nothing]" if report["quick"] else ""),
        f"{'part':<16} {'status':<8} {'s':>6}  note",
    ]
    for name, r in report["parts"].items():
        lines.append(f"{name:<16} {r['status']:<8} {r['seconds']:>6}  {r.get('error', '')[:90]}")
    lines.append(f"{'H100 target':<26} {'measured':>10} {'target':>8}  met")
    for row in report["targets"]:
        value = "-" if row["value"] is None else f"{row['value']:.3g}"
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        lines.append(f"{row['figure']:<26} {value:>10} {row['target']:>8}  {met}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
