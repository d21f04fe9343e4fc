"""Benchmarks of the suite's own overheads, measured as ratios within one process.

Each measurement is a function registered with ``@measurement("<key>")``: it takes a
:class:`BenchContext` and returns a dict of numbers, which :func:`run_bench` stores under
``<key>`` in ``bench.json``. Adding a measurement is one decorated function.

``telemetry_overhead``: step time of the real training loop (``engine.train``) with telemetry
at the config's interval against telemetry off, same model, data and TensorBoard sink; the
arms alternate over the repeats (off/on, then on/off, ...) and the ratio is the median of the
per-repeat on/off ratios. Each timed run is a whole number of snapshot intervals, so it holds
exactly the share of snapshot steps a long run has. Targets: <= 1.10 on CPU, <= 1.05 on GPU.

``scripts/bench.py`` composes the workload's config and calls :func:`run_bench`.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from initbench.data import DeviceDataset
from initbench.engine import train
from initbench.runner import Prepared, prepare
from initbench.telemetry import TensorBoardSink, build_telemetry

TARGETS = {"cpu": 1.10, "cuda": 1.05}  # telemetry on/off step-time ratio we aim for


@dataclass
class BenchContext:
    """What every measurement gets: the workload's config, built once."""

    cfg: dict[str, Any]  # resolved train config of the workload
    prep: Prepared  # its data and initialized model, on the device
    make_optimizer: Callable[..., torch.optim.Optimizer]
    quick: bool  # a fast smoke run (tests), not a measurement to quote
    workdir: Path  # scratch space (sinks write here)


Measurement = Callable[[BenchContext], dict[str, Any]]
MEASUREMENTS: dict[str, Measurement] = {}


def measurement(name: str) -> Callable[[Measurement], Measurement]:
    """Register a measurement under ``name`` (its key in bench.json)."""

    def register(fn: Measurement) -> Measurement:
        if name in MEASUREMENTS:
            raise ValueError(f"measurement {name!r} is already registered")
        MEASUREMENTS[name] = fn
        return fn

    return register


def fixed_steps(data: DeviceDataset, steps: int, batch_size: int) -> DeviceDataset:
    """A copy of ``data`` whose training split is exactly ``steps`` batches (examples repeat
    if needed) and whose test split is one batch, so one epoch of ``train`` is ``steps`` steps."""
    device = data.device
    idx = torch.arange(steps * batch_size, device=device) % len(data.train_y)
    test = torch.arange(min(batch_size, len(data.test_y)), device=device)
    return DeviceDataset(
        name=data.name,
        train_x=data.train_x.index_select(0, idx),
        train_y=data.train_y.index_select(0, idx),
        test_x=data.test_x.index_select(0, test),
        test_y=data.test_y.index_select(0, test),
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        augment=data.augment,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@measurement("telemetry_overhead")
def telemetry_overhead(ctx: BenchContext) -> dict[str, Any]:
    """Step time with telemetry at the config's interval vs. off (see the module docstring)."""
    cfg, prep = ctx.cfg, ctx.prep
    node = {**(cfg.get("telemetry") or {}), "enabled": True}
    if ctx.quick:  # exercise the code path quickly; the ratio means little
        node.update(every_n_steps=5, every_n_epochs=None)
    interval = node["every_n_steps"]
    if node.get("every_n_epochs"):
        raise ValueError("the telemetry benchmark needs telemetry.every_n_steps (not per epoch)")
    steps = interval * 2
    repeats = 2 if ctx.quick else 15
    batch_size = cfg["trainer"]["batch_size"]
    data = fixed_steps(prep.data, steps, batch_size)
    initial = copy.deepcopy(prep.model.state_dict())
    device = prep.device

    def run(telemetry_on: bool, n_steps: int = steps) -> tuple[float, float]:
        """Seconds per step: wall clock, and this process's CPU time."""
        run_data = data if n_steps == steps else fixed_steps(data, n_steps, batch_size)
        prep.model.load_state_dict(initial)
        optimizer = ctx.make_optimizer(prep.model.parameters())
        sink = TensorBoardSink(Path(tempfile.mkdtemp(dir=ctx.workdir)))
        observer = None
        if telemetry_on:
            observer = build_telemetry(node, prep.model, sink, steps_per_epoch=n_steps)
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        train(
            prep.model,
            run_data,
            optimizer,
            epochs=1,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(0),
            eval_batch_size=batch_size,
            precision=prep.precision,
            sink=sink,
            observer=observer,
        )
        _sync(device)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        sink.finish()
        return elapsed / n_steps, cpu / n_steps

    run(False, interval)  # warm-up: allocator, threads, kernels, the writer
    run(True, interval)
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for r in range(repeats):
        for on in (False, True) if r % 2 == 0 else (True, False):
            times[on].append(run(on))
    ratios = [on[0] / off[0] for on, off in zip(times[True], times[False], strict=True)]
    cpu_ratios = [on[1] / off[1] for on, off in zip(times[True], times[False], strict=True)]
    target = TARGETS.get(device.type)
    ratio = statistics.median(ratios)
    return {
        "ratio": ratio,
        "step_ms_off": 1e3 * statistics.median(t[0] for t in times[False]),
        "step_ms_on": 1e3 * statistics.median(t[0] for t in times[True]),
        # CPU time of this process: on a shared CPU machine it is less disturbed by other
        # processes than the wall clock (meaningless on a GPU, where the work is asynchronous)
        "ratio_cpu_time": statistics.median(cpu_ratios) if device.type == "cpu" else None,
        "ratios": ratios,
        "every_n_steps": interval,
        "steps_per_repeat": steps,
        "repeats": repeats,
        "target": target,
        "within_target": None if target is None else ratio <= target,
    }


def run_bench(
    cfg: Mapping[str, Any],
    make_optimizer: Callable[..., torch.optim.Optimizer],
    *,
    quick: bool = False,
    names: list[str] | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Run the measurements ``names`` (all by default) on the workload ``cfg``.

    Writes the results to ``out`` (JSON) if given and returns them: ``{"meta": {...},
    <name>: {...}, ...}``.
    """
    unknown = sorted(set(names or []) - set(MEASUREMENTS))
    if unknown:
        raise ValueError(f"unknown measurements {unknown}; valid: {', '.join(MEASUREMENTS)}")
    cfg = dict(cfg)
    prep = prepare(cfg)
    results: dict[str, Any] = {
        "meta": {
            "device": str(prep.device),
            "device_name": torch.cuda.get_device_name(prep.device)
            if prep.device.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "quick": quick,
            "model": cfg["model"].get("name"),
            "dataset": cfg["dataset"]["name"],
            "batch_size": cfg["trainer"]["batch_size"],
        }
    }
    with tempfile.TemporaryDirectory() as workdir:
        ctx = BenchContext(cfg, prep, make_optimizer, quick, Path(workdir))
        for name in names or list(MEASUREMENTS):
            results[name] = MEASUREMENTS[name](ctx)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
    return results


def format_results(results: Mapping[str, Any]) -> str:
    """A short table: one line per measurement with its absolute times and ratio."""
    meta = results["meta"]
    lines = [
        f"device {meta['device']} ({meta['device_name']}), torch {meta['torch']}, "
        f"{meta['threads']} threads, {meta['model']} on {meta['dataset']}, batch "
        f"{meta['batch_size']}{'  [quick: not a measurement]' if meta['quick'] else ''}",
        f"{'measurement':<20} {'off ms/step':>12} {'on ms/step':>11} {'ratio':>7} "
        f"{'target':>7} {'ratio (CPU time)':>17}",
    ]
    for name, r in results.items():
        if name == "meta":
            continue
        target = "-" if r.get("target") is None else f"<={r['target']:.2f}"
        cpu = "-" if r.get("ratio_cpu_time") is None else f"{r['ratio_cpu_time']:.3f}"
        lines.append(
            f"{name:<20} {r['step_ms_off']:>12.3f} {r['step_ms_on']:>11.3f} "
            f"{r['ratio']:>7.3f} {target:>7} {cpu:>17}"
        )
    return "\n".join(lines)
