"""The benchmark harness: speed and overhead figures, each a ratio measured within one process.

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
import functools
import importlib.util
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from initbench.build import Prepared, model_params, prepare
from initbench.config import CONF_DIR
from initbench.data import DataNotFoundError, DeviceDataset, load_dataset
from initbench.data.cifar10 import FOLDER, TEST_FILE, TRAIN_FILES
from initbench.data.fashion_mnist import FILES, locate
from initbench.engine import train
from initbench.io import dumps_strict
from initbench.models import build_model
from initbench.sweep import compose_by, grid_combinations, load_sweep
from initbench.telemetry import TensorBoardSink, build_telemetry
from initbench.walltime import estimate_wall_time, packed_epoch_seconds, preset_epoch_seconds

TARGETS = {"cpu": 1.10, "cuda": 1.05}  # telemetry on/off step-time ratio we aim for
# The tutorials' DataLoader loop that mlp_epoch_speedup_vs_dataloader compares against: a
# baseline, not part of the package, so it stays in the repository's scripts/.
REFERENCE_LOOP = CONF_DIR.parent / "scripts" / "bench_reference.py"


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


def _reference_loop() -> ModuleType | None:
    """scripts/bench_reference.py as a module (None outside a clone of the repository)."""
    if not REFERENCE_LOOP.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_reference", REFERENCE_LOOP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@measurement("telemetry_overhead")
def telemetry_overhead(ctx: BenchContext) -> dict[str, Any]:
    """Step time with telemetry at the config's interval vs. off (see the module docstring)."""
    cfg, prep = ctx.cfg, ctx.prep
    node = {**cfg["telemetry"], "enabled": True}
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
            observer = build_telemetry(
                node, prep.model, sink, steps_per_epoch=n_steps, example=prep.data.train_x[:1]
            )
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


def _median_interleaved(arms: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median of each arm's timings, the arms taking turns (order reversed every other repeat)."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    order = list(arms)
    for r in range(repeats):
        for name in order if r % 2 == 0 else reversed(order):
            times[name].append(arms[name]())
    return {name: statistics.median(t) for name, t in times.items()}


def _train_steps(model, data, *, batch_size, precision, channels_last, device) -> float:
    """Seconds for one epoch of the real loop (``engine.train``) over ``data``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    _sync(device)
    start = time.perf_counter()
    train(
        model,
        data,
        optimizer,
        epochs=1,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(0),
        eval_batch_size=batch_size,
        precision=precision,
        channels_last=channels_last,
    )
    _sync(device)
    return time.perf_counter() - start


@measurement("mlp_epoch_speedup_vs_dataloader")
def mlp_epoch_speedup_vs_dataloader(ctx: BenchContext) -> dict[str, Any]:
    """One training epoch of the FashionMNIST MLP: the tutorials' loop (torchvision dataset +
    ToTensor + DataLoader, batches copied to the device, ``loss.item()`` every step) divided by
    ours (device-resident data, index gathers, no host sync per step); same model, batch size,
    optimizer and device. Needs the FashionMNIST files (apt-get install dataset-fashion-mnist)."""
    reference = _reference_loop()
    if reference is None:
        return {"ratio": None, "skipped": f"the reference loop {REFERENCE_LOOP} is missing"}
    cfg, device = ctx.cfg, ctx.prep.device
    batch_size = cfg["trainer"]["batch_size"]
    try:
        files = locate(Path(cfg["data_dir"]), download=False)
        ours_data = load_dataset(
            "fashion_mnist", root=cfg["data_dir"], device=device, download=False
        )
    except DataNotFoundError as err:
        return {"ratio": None, "skipped": str(err).split(". ")[0]}
    reference_data = reference.fashion_mnist(
        files, FILES, ctx.workdir, 2048 if ctx.quick else len(ours_data.train_y)
    )
    n = len(reference_data)
    test = torch.arange(batch_size, device=device)
    ours_data = DeviceDataset(
        name="fashion_mnist",
        train_x=ours_data.train_x[:n],
        train_y=ours_data.train_y[:n],
        test_x=ours_data.test_x.index_select(0, test),
        test_y=ours_data.test_y.index_select(0, test),
        input_shape=ours_data.input_shape,
        num_classes=ours_data.num_classes,
    )

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        target, params = model_params(cfg["model"])
        m = build_model(
            target, input_shape=(1, 28, 28), num_classes=10,
            activation=cfg["activation"]["name"], **params,
        )  # fmt: skip
        return m.to(device)

    def reference_epoch() -> float:
        return reference.epoch_seconds(
            model(), reference_data, batch_size=batch_size, device=device, sync=_sync
        )

    def our_epoch() -> float:
        return _train_steps(
            model(), ours_data, batch_size=batch_size, precision="fp32",
            channels_last=False, device=device,
        )  # fmt: skip

    reference_epoch(), our_epoch()  # warm-up
    t = _median_interleaved(
        {"reference": reference_epoch, "ours": our_epoch}, 1 if ctx.quick else 3
    )
    return {
        "ratio": t["reference"] / t["ours"],
        "epoch_s_reference": t["reference"],
        "epoch_s_ours": t["ours"],
        "samples_per_s_ours": n / t["ours"],
        "samples_per_s_reference": n / t["reference"],
        "train_examples": n,
        "target": {"cpu": 2.0, "cuda": 10.0}.get(device.type),
    }


@measurement("cnn30_speedup_fast_path")
def cnn30_speedup_fast_path(ctx: BenchContext) -> dict[str, Any]:
    """Step time of the 30-layer plain CNN on CIFAR-10-shaped batches: eager fp32 divided by the
    fast path (bf16 autocast on CUDA + channels_last, + torch.compile when trainer.compile is
    on), both through the real loop. Also times the 10-layer CNN's fast path (for the grid
    estimate). On the CPU only channels_last differs, and the figure is not the CUDA target's."""
    cfg, device = ctx.cfg, ctx.prep.device
    batch_size, steps, channels = (8, 2, 4) if ctx.quick else (128, 20, 16)
    repeats = 1 if ctx.quick else 5
    if device.type == "cpu" and not ctx.quick:  # seconds per step on a CPU: fewer, same shape
        steps, repeats = 4, 3
    g = torch.Generator().manual_seed(0)
    n = batch_size * steps
    data = DeviceDataset(
        name="cifar10_shaped",
        train_x=torch.randn(n, 3, 32, 32, generator=g).to(device),
        train_y=torch.randint(0, 10, (n,), generator=g).to(device),
        test_x=torch.randn(batch_size, 3, 32, 32, generator=g).to(device),
        test_y=torch.randint(0, 10, (batch_size,), generator=g).to(device),
        input_shape=(3, 32, 32),
        num_classes=10,
    )
    compile_model = cfg["trainer"]["compile"]
    fast_precision = "bf16" if device.type == "cuda" else "fp32"

    def arm(depth: int, fast: bool) -> Callable[[], float]:
        torch.manual_seed(0)
        net = build_model("cnn", input_shape=(3, 32, 32), num_classes=10, depth=depth,
                          channels=channels).to(device)  # fmt: skip
        if fast:
            net = net.to(memory_format=torch.channels_last)
            if compile_model:
                net = torch.compile(net)

        def timed() -> float:
            return _train_steps(
                net, data, batch_size=batch_size, precision=fast_precision if fast else "fp32",
                channels_last=fast, device=device,
            ) / steps  # fmt: skip

        timed()  # warm-up (and compilation)
        return timed

    t = _median_interleaved(
        {"eager": arm(30, False), "fast": arm(30, True), "cnn10_fast": arm(10, True)}, repeats
    )
    return {
        "ratio": t["eager"] / t["fast"],
        "step_ms_eager_fp32": 1e3 * t["eager"],
        "step_ms_fast": 1e3 * t["fast"],
        "step_ms_cnn10_fast": 1e3 * t["cnn10_fast"],
        "samples_per_s_fast": batch_size / t["fast"],
        "fast_path": {"precision": fast_precision, "channels_last": True, "compile": compile_model},
        "batch_size": batch_size,
        "channels": channels,
        "epoch_s_fast_estimate": 50_000 / batch_size * t["fast"],
    }


def thread_arm(model: str, threads: str, steps: int, batch_size: int, depth: int) -> None:
    """One arm of :func:`threads_under_load`, run in a child process: print the seconds per
    training step (``engine.train``, fp32, on the CPU) of ``model`` (``mlp``: the default run's
    FashionMNIST-shaped MLP; ``cnn``: the plain CNN of ``depth`` layers on CIFAR-10-shaped
    batches) with ``threads``: ``default`` (a run's rule: initbench.threads.choose_threads,
    which looks at the load first), ``torch`` (torch's own default: the machine's cores) or a
    count."""
    from initbench.threads import choose_threads

    if threads == "default":
        choose_threads()
    elif threads != "torch":
        torch.set_num_threads(int(threads))
    shape = (1, 28, 28) if model == "mlp" else (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    n = batch_size * steps
    data = DeviceDataset(
        name="shaped", train_x=torch.randn(n, *shape, generator=g),
        train_y=torch.randint(0, 10, (n,), generator=g), test_x=torch.randn(batch_size, *shape),
        test_y=torch.randint(0, 10, (batch_size,), generator=g), input_shape=shape,
        num_classes=10,
    )  # fmt: skip
    torch.manual_seed(0)
    kwargs = {"depth": 2, "width": 256, "dropout": 0.2} if model == "mlp" else {"depth": depth}
    net = build_model(model, input_shape=shape, num_classes=10, activation="relu", **kwargs)
    cpu = torch.device("cpu")
    warm = fixed_steps(data, 2, batch_size)
    _train_steps(net, warm, batch_size=batch_size, precision="fp32", channels_last=False,
                 device=cpu)  # fmt: skip
    seconds = _train_steps(net, data, batch_size=batch_size, precision="fp32",
                           channels_last=False, device=cpu)  # fmt: skip
    print(json.dumps({"s_per_step": seconds / steps, "threads": torch.get_num_threads()}))


def _thread_arm_seconds(model: str, threads: str, steps: int, batch_size: int, depth: int) -> float:
    """Seconds per step of one :func:`thread_arm` in a fresh process (its OpenMP settings are
    read once, at start)."""
    code = (f"from initbench.bench import thread_arm; "
            f"thread_arm({model!r}, {threads!r}, {steps}, {batch_size}, {depth})")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"thread arm {model}/{threads} failed: {proc.stderr[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["s_per_step"]


@measurement("threads_under_load")
def threads_under_load(ctx: BenchContext) -> dict[str, Any]:
    """Seconds per training step on the CPU of the default MLP and the 30-layer CNN, each
    thread setting in its own process, with the machine as it is (``quiet``) and with one
    competing busy process (``loaded``): a run's default (``default``: the CPUs the process may
    use, fewer while others keep them busy; initbench.threads), torch's own default (``torch``:
    the machine's cores), and fixed counts 1, 2, 4, ... up to the usable CPUs, the arms taking
    turns. ``ratio`` is the MLP's loaded default / best; targets: default / best <= 1.1
    quiet and <= 2 loaded."""
    from initbench.threads import usable_cpus

    if ctx.prep.device.type != "cpu":
        return {"ratio": None, "skipped": "a CPU measurement (run with --device cpu)"}
    usable, source = usable_cpus()
    counts = sorted({1, usable, *(2**k for k in range(1, 8) if 2**k < usable)})
    modes = ["default", "torch", *map(str, counts)]
    workloads = {"mlp": ("mlp", 40, 128, 0), "cnn30": ("cnn", 3, 128, 30)}
    if ctx.quick:  # the code path only: the MLP, two settings
        workloads, modes = {"mlp": ("mlp", 4, 32, 0)}, ["default", "1"]
    repeats = 1 if ctx.quick else 2
    result: dict[str, Any] = {"usable_cpus": usable, "usable_cpus_from": source}
    for phase in ("quiet", "loaded"):
        busy = None
        if phase == "loaded":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            for name, args in workloads.items():
                t = _median_interleaved(
                    {m: functools.partial(_thread_arm_seconds, args[0], m, *args[1:])
                     for m in modes}, repeats,
                )  # fmt: skip
                fixed = {m: t[m] for m in modes if m.isdigit()}
                best = min(fixed, key=lambda m: fixed[m])
                result.setdefault(name, {})[phase] = {
                    "ms_per_step": {m: 1e3 * v for m, v in t.items()},
                    "best_threads": int(best),
                    "default_over_best": t["default"] / fixed[best],
                    "default_over_one": t["default"] / fixed["1"],
                    "torch_over_best": t["torch"] / fixed[best] if "torch" in t else None,
                    "load_average_1min": load,
                }
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    result["ratio"] = result["mlp"]["loaded"]["default_over_best"]
    result["quiet_ratio"] = result["mlp"]["quiet"]["default_over_best"]
    result["target"], result["target_op"] = 2.0, "<="
    result["target_quiet"] = 1.1
    return result


ROOT = CONF_DIR.parent  # the repository: src/train.py, src/pack.py, sweeps/
GRID = ROOT / "sweeps" / "grid.yaml"


def grid_axis(key: str) -> list[Any]:
    """The values of one of sweeps/grid.yaml's parameters (the packed workload's members are
    the grid's 17 inits x 3 seeds)."""
    (param,) = [p for p in load_sweep(GRID).params if p.key == key]
    return list(param.grid_values())


def write_cifar10_shaped(root: Path, n_train: int, n_test: int) -> Path:
    """Random images in CIFAR-10's files and format (``cifar-10-batches-py``: pickled dicts of
    uint8 N x 3072 ``data`` and ``labels``), ``n_train`` spread over the five training batches:
    what the packed CNN workload trains on where the real files cannot be fetched."""
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = [n_train // 5 + (i < n_train % 5) for i in range(5)] + [n_test]
    for name, n in zip([*TRAIN_FILES, TEST_FILE], sizes, strict=True):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}  # fmt: skip
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root


def _timed_process(args: list[str], workdir: Path) -> float:
    """Wall seconds of ``python *args`` run from the repository, as a sweep starts a run.

    Raises:
        RuntimeError: the process failed (its last lines of output).
    """
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args, f"hydra.run.dir={workdir}"], cwd=ROOT, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(args[:1])} failed ({proc.returncode}): {tail}")
    return seconds


def _pack_vs_alone(
    overrides: list[str], inits: list[str], seeds: list[int], sample: int, workdir: Path
) -> dict[str, Any]:
    """One pack of ``inits`` x ``seeds`` (one ``src/pack.py`` process) against the same runs
    unpacked (one ``src/train.py`` process each). Unpacked runs are independent processes, so
    their total is linear in their number: ``sample`` of them, spread over the members, are
    timed and the total is their mean times K (all K when ``sample`` >= K)."""
    members = [(i, s) for i in inits for s in seeds]
    k = len(members)
    pack_s = _timed_process(
        ["src/pack.py", *overrides, f"pack.inits=[{','.join(inits)}]",
         f"pack.seeds=[{','.join(map(str, seeds))}]"],
        workdir / "pack",
    )  # fmt: skip
    step = max(1, k // sample)
    chosen = members[::step][:sample]
    alone = [
        _timed_process(["src/train.py", *overrides, f"init={i}", f"seed={s}"], workdir / f"{i}-{s}")
        for i, s in chosen
    ]
    alone_total = statistics.fmean(alone) * k
    return {
        "ratio": alone_total / pack_s,
        "members": k,
        "pack_s": pack_s,
        "alone_s_per_run": statistics.fmean(alone),
        "alone_s_total": alone_total,
        "alone_timed": len(alone),
    }


@measurement("packed_speedup")
def packed_speedup(ctx: BenchContext) -> dict[str, Any]:
    """K unpacked runs (separate ``src/train.py`` processes, as a sweep runs them) over one
    pack of the same K (``src/pack.py``), wall time, same device: the FashionMNIST MLP with
    the grid's 17 inits x 3 seeds for one epoch (``ratio``), and the 30-layer CNN on
    CIFAR-10-shaped random data (``cnn30``; 17 x 3 members on CUDA, fewer on a CPU, where a
    step of 51 members takes minutes). Targets: >= 3 on CPU, >= 20 on CUDA (the MLP)."""
    device = ctx.prep.device
    base = [f"trainer.device={device}", "logger=[tensorboard]", "trainer.epochs=1"]
    if ctx.cfg["trainer"]["num_threads"]:
        base.append(f"trainer.num_threads={ctx.cfg['trainer']['num_threads']}")
    if ctx.quick:  # seconds: checks that it runs
        mlp = ["dataset=circles", "model.width=16", *base]
        inits, seeds, sample = ["zeros", "kaiming_normal"], [0], 1
    else:
        try:
            locate(Path(ctx.cfg["data_dir"]), download=False)
        except DataNotFoundError as err:
            return {"ratio": None, "skipped": str(err).split(". ")[0]}
        mlp = [f"data_dir={Path(ctx.cfg['data_dir']).absolute()}", "dataset.download=false", *base]
        inits, seeds, sample = grid_axis("init"), grid_axis("seed"), 6
    result = _pack_vs_alone(mlp, inits, seeds, sample, ctx.workdir / "mlp")
    cifar = write_cifar10_shaped(ctx.workdir / "cifar", 256 if ctx.quick else 2560, 256)
    cnn = [
        "model=cnn30", "dataset=cifar10", f"data_dir={cifar}", "dataset.download=false",
        "trainer.batch_size=128", "trainer.eval_batch_size=256", *base,
    ]  # fmt: skip
    if ctx.quick:
        cnn_inits, cnn_seeds, cnn_sample = ["kaiming_normal"], [0, 1], 1
        cnn[0] = "model=cnn"
    elif device.type == "cuda":
        cnn_inits, cnn_seeds, cnn_sample = grid_axis("init"), grid_axis("seed"), 6
    else:
        cnn_inits, cnn_seeds, cnn_sample = ["kaiming_normal", "xavier_normal"], [0, 1], 2
    result["cnn30"] = _pack_vs_alone(cnn, cnn_inits, cnn_seeds, cnn_sample, ctx.workdir / "cnn")
    result["cnn30_ratio"] = result["cnn30"]["ratio"]
    result["target"] = {"cpu": 3.0, "cuda": 20.0}.get(device.type)
    return result


def grid_estimate(results: Mapping[str, Any], sweep_path: Path) -> dict[str, Any] | None:
    """Wall time of ``sweep_path`` on this device, one run at a time, from the measured epoch
    and step times (:mod:`initbench.walltime`, which the local sweep's dry run shares): each
    combination's epochs x (train epoch + ~7% for evaluation).

    Epochs are each experiment preset's ``trainer.epochs`` as Hydra composes it (or the
    combination's own ``trainer.epochs``); ``sweep_path`` lies in ``<repo>/sweeps/``.
    """
    epoch_s = preset_epoch_seconds(results)
    if epoch_s is None:
        return None
    sweep = load_sweep(sweep_path)
    combos = grid_combinations(sweep)
    cfgs = compose_by(
        sweep, combos, lambda k: k in ("experiment", "trainer.epochs"),
        root=Path(sweep_path).resolve().parents[1],
    )  # fmt: skip
    runs, epochs = [], {}
    for combo, cfg in zip(combos, cfgs, strict=True):
        if isinstance(cfg, Exception):
            raise cfg
        exp = combo.params.get("experiment")
        runs.append((exp, cfg["trainer"]["epochs"]))
        if exp in epoch_s and "trainer.epochs" not in combo.params:
            epochs[exp] = cfg["trainer"]["epochs"]
    est = estimate_wall_time(runs, epoch_s)
    estimate = {
        "hours": est["hours"],
        "runs": est["runs"],
        "epoch_s": epoch_s,
        "epochs": epochs,
        "not_estimated": sorted(est["not_estimated"]),
    }
    packed = packed_epoch_seconds(results, epoch_s)
    if packed is not None:
        estimate["hours_packed"] = estimate_wall_time(runs, packed)["hours"]
    return estimate


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
    if GRID.exists():
        results["grid_wall_time_estimate"] = grid_estimate(results, GRID)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(dumps_strict(results, indent=2))
    return results


def format_results(results: Mapping[str, Any]) -> str:
    """A short table: per measurement its ratio, target and absolute figures."""
    meta = results["meta"]
    lines = [
        f"device {meta['device']} ({meta['device_name']}), torch {meta['torch']}, "
        f"{meta['threads']} threads, workload {meta['model']} on {meta['dataset']}, batch "
        f"{meta['batch_size']}{'  [quick: not a measurement]' if meta['quick'] else ''}",
        f"{'measurement':<33} {'ratio':>7} {'target':>8}  absolute figures",
    ]
    for name, r in results.items():
        if name == "meta" or not isinstance(r, Mapping):
            continue
        if name == "grid_wall_time_estimate":
            packed = r.get("hours_packed")
            packed = f"; packed {packed:.2f} h" if packed is not None else ""
            lines.append(
                f"{name:<33} {r['hours']:.1f} h for {r['runs']} runs, one at a time{packed}"
            )
            continue
        if r.get("ratio") is None:
            lines.append(f"{name:<33} {'-':>7} {'-':>8}  skipped: {r.get('skipped')}")
            continue
        target = r.get("target")
        op = r.get("target_op") or ("<=" if target is not None and target < 2 else ">=")
        target = "-" if target is None else f"{op}{target:.2f}" if op == "<=" else f">={target:g}"
        figures = ", ".join(
            f"{k} {v:.4g}" for k, v in r.items()
            if isinstance(v, float) and k not in ("ratio", "target")
        )  # fmt: skip
        lines.append(f"{name:<33} {r['ratio']:>7.3f} {target:>8}  {figures}")
    return "\n".join(lines)
