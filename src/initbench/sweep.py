"""Sweep files and a local sweep runner that needs no W&B server.

A sweep file (``sweeps/*.yaml``) is a W&B sweep configuration: ``wandb sweep FILE`` registers
it and ``wandb agent`` processes run its combinations. This module reads the same file and runs
it here, with the same semantics:

- **grid**: every combination, in the order of W&B's engine (``itertools.product`` over the
  parameters in file order; ``value`` is a constant, ``values`` a list, ``int_uniform`` and
  ``q_uniform`` are expanded to their values), as in the ``sweeps`` package's grid search;
- **random**: ``count`` draws from each parameter's distribution (``values`` with optional
  ``probabilities``, ``uniform``, ``int_uniform``, ``log_uniform_values``, ``normal``, ... as
  W&B defines them), reproducible from a seed, so a re-run draws the same combinations;
- each combination runs the file's ``command`` with W&B's macros filled in as the agent fills
  them (``${env}``, ``${interpreter}``, ``${program}``, ``${args_no_hyphens}`` -> ``key=value``),
  plus ``hydra.run.dir=<out>/<combination name>``: a fixed folder per combination, so a
  re-run skips what is done (``summary.json`` says finished or diverged) and resumes the rest
  from their checkpoints.

The W&B engine itself (the ``sweeps`` package) is not used: its dependency pins (numpy < 2,
scipy, scikit-learn) do not fit this project, and grid and random are a few lines each.
``bayes`` needs the W&B server's history and is refused here.

Usage::

    sweep = load_sweep("sweeps/circles.yaml")
    combos = combinations(sweep)
    outcomes = run_local_sweep(sweep, combos, "outputs/local-sweeps/circles", parallel=2)
    print(results_table(sweep, outcomes))
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from initbench.config import CONF_DIR, ENTRY_CONFIGS
from initbench.io import read_json

METHODS = ("grid", "random")
# W&B's parameter distributions (docs: "Sweep configuration options"); grid takes the first four.
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")
DISTRIBUTIONS = GRID_DISTRIBUTIONS + (
    "uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
    "beta",
    "q_beta",
)
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")
DONE = ("finished", "diverged")  # a combination in one of these states is not run again
RECORD = "local_sweep.json"  # per combination: command, exit code, status, wall time
LOG = "local_sweep.log"  # per combination: the program's stdout and stderr
INDEX = "combinations.json"  # per sweep folder: the sweep file and its combinations
NAME_OK = re.compile(r"[^A-Za-z0-9._-]")


class SweepError(ValueError):
    """A sweep file that cannot be run as written; the message names the file and the key."""


@dataclass(frozen=True)
class Param:
    """One swept parameter: its key (a Hydra override key) and its W&B spec."""

    key: str
    distribution: str
    spec: Mapping[str, Any]

    def grid_values(self) -> list[Any]:
        """The values a grid takes, as W&B's grid search expands them."""
        s = self.spec
        if self.distribution == "constant":
            return [s["value"]]
        if self.distribution == "categorical":
            return list(s["values"])
        if self.distribution == "int_uniform":
            return list(range(int(s["min"]), int(s["max"]) + 1))
        if self.distribution == "q_uniform":
            return np.arange(s["min"], s["max"], s["q"]).tolist()
        raise SweepError(
            f"parameter {self.key!r}: distribution {self.distribution!r} cannot be gridded; "
            f"grid takes {', '.join(GRID_DISTRIBUTIONS)}"
        )

    def sample(self, rng: np.random.Generator) -> Any:
        """One random draw, as W&B's random search defines each distribution."""
        s, d = self.spec, self.distribution
        if d == "constant":
            return s["value"]
        if d == "categorical":
            values = list(s["values"])
            p = s.get("probabilities")
            return values[int(rng.choice(len(values), p=None if p is None else np.asarray(p)))]
        if d == "int_uniform":
            return int(rng.integers(int(s["min"]), int(s["max"]) + 1))
        if d == "beta" or d == "q_beta":
            x = float(rng.beta(s.get("a", 1.0), s.get("b", 1.0)))
        elif d in ("normal", "q_normal", "log_normal", "q_log_normal"):
            x = float(rng.normal(s.get("mu", 0.0), s.get("sigma", 1.0)))
            x = math.exp(x) if "log" in d else x
        else:
            lo, hi = float(s["min"]), float(s["max"])
            if d.startswith("inv_log"):  # X = exp(-U); *_values: U between -log(max), -log(min)
                if d.endswith("_values"):
                    lo, hi = -math.log(hi), -math.log(lo)
                x = math.exp(-float(rng.uniform(lo, hi)))
            elif "log" in d:  # X = exp(U); *_values: U between log(min), log(max)
                if d.endswith("_values"):
                    lo, hi = math.log(lo), math.log(hi)
                x = math.exp(float(rng.uniform(lo, hi)))
            else:
                x = float(rng.uniform(lo, hi))
        if d.startswith("q_"):
            q = s.get("q", 1)
            x = round(x / q) * q
            return int(x) if isinstance(q, int) else x
        return x


@dataclass(frozen=True)
class Sweep:
    """A sweep file, checked."""

    path: Path
    name: str
    method: str
    program: str
    command: tuple[str, ...]
    params: tuple[Param, ...]
    metric: Mapping[str, Any] | None = None  # {"name": "val/acc", "goal": "maximize"}
    run_cap: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def metric_name(self) -> str | None:
        return (self.metric or {}).get("name")

    @property
    def maximize(self) -> bool:
        return (self.metric or {}).get("goal", "minimize") == "maximize"


@dataclass(frozen=True)
class Combination:
    """One point of a sweep: parameter values in file order, and a folder name for it."""

    index: int
    params: Mapping[str, Any]
    name: str

    @property
    def args(self) -> list[str]:
        """The ``${args_no_hyphens}`` of a W&B agent: ``key=value`` with Python's ``str``."""
        return [f"{k}={v}" for k, v in self.params.items()]

    def label(self, keys: Sequence[str] | None = None) -> str:
        """``key=value`` pairs (only ``keys`` when given), for progress lines."""
        keys = list(self.params) if keys is None else keys
        return " ".join(f"{k}={self.params[k]}" for k in keys if k in self.params)


def _infer_distribution(key: str, spec: Mapping[str, Any], where: str) -> str:
    if "parameters" in spec:
        raise SweepError(
            f"{where}: parameter {key!r} has nested parameters; Hydra takes flat keys: "
            f"write it as {key}.<field>"
        )
    if "distribution" in spec:
        d = spec["distribution"]
        if d not in DISTRIBUTIONS:
            raise SweepError(
                f"{where}: parameter {key!r} has distribution {d!r}; "
                f"valid: {', '.join(DISTRIBUTIONS)}"
            )
        return d
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if "min" in spec and "max" in spec:
        ints = all(
            isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max")
        )
        return "int_uniform" if ints else "uniform"
    if "mu" in spec or "sigma" in spec:
        return "normal"
    raise SweepError(
        f"{where}: parameter {key!r} needs value, values, min/max or a distribution "
        f"(got {dict(spec)})"
    )


def _check_value(key: str, value: Any, where: str) -> None:
    text = str(value)
    if "," in text:
        raise SweepError(
            f"{where}: parameter {key!r} has a value with a comma ({text!r}); Hydra would read "
            f"it as a multirun sweep: use a preset (conf/experiment/) or a single field instead"
        )
    if isinstance(value, (dict, list)):
        raise SweepError(f"{where}: parameter {key!r} has a non-scalar value {text!r}")


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a W&B sweep file.

    Checks what a W&B server would (method, parameters, distributions) and what Hydra needs
    (flat keys without ``+``/``~``, values without commas).

    Raises:
        SweepError: the problem, naming the file and the parameter.
    """
    path = Path(path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SweepError(f"cannot read sweep file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{where} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: a sweep file is a mapping with method, program, parameters")
    method = raw.get("method")
    if method == "bayes":
        raise SweepError(
            f"{where}: method 'bayes' needs the W&B server (it learns from finished runs); "
            f"use `wandb sweep {path}`, or grid/random to run it locally"
        )
    if method not in METHODS:
        raise SweepError(f"{where}: method must be one of grid, random, bayes (got {method!r})")
    program = raw.get("program")
    if not isinstance(program, str) or not program:
        raise SweepError(f"{where}: program is missing (e.g. program: src/train.py)")
    command = raw.get("command", list(DEFAULT_COMMAND))
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise SweepError(f"{where}: command must be a list of strings")
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, dict) or not params_raw:
        raise SweepError(f"{where}: parameters is missing or empty")
    params = []
    for key, spec in params_raw.items():
        if not isinstance(key, str) or not key or key[0] in "+~":
            raise SweepError(
                f"{where}: parameter {key!r}: swept keys must exist in the config (no +/~ prefix)"
            )
        if not isinstance(spec, dict):
            raise SweepError(f"{where}: parameter {key!r} must be a mapping (values: [...])")
        dist = _infer_distribution(key, spec, where)
        param = Param(key, dist, dict(spec))
        if dist == "categorical":
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise SweepError(f"{where}: parameter {key!r}: values must be a non-empty list")
            probs = spec.get("probabilities")
            if probs is not None and (
                len(probs) != len(values) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6)
            ):
                raise SweepError(
                    f"{where}: parameter {key!r}: probabilities must match values and sum to 1"
                )
        if dist in GRID_DISTRIBUTIONS:
            for value in param.grid_values():
                _check_value(key, value, where)
        params.append(param)
    run_cap = raw.get("run_cap")
    metric = raw.get("metric")
    if metric is not None and not (isinstance(metric, dict) and "name" in metric):
        raise SweepError(f"{where}: metric must be a mapping with name (and goal)")
    return Sweep(
        path=path,
        name=str(raw.get("name") or path.stem),
        method=method,
        program=program,
        command=tuple(command),
        params=tuple(params),
        metric=metric,
        run_cap=int(run_cap) if run_cap else None,
        raw=raw,
    )


def combination_name(params: Mapping[str, Any], prefix: str = "") -> str:
    """A folder name from the values, readable and safe in a Hydra override.

    ``{"init": "zeros", "seed": 0}`` -> ``init-zeros__seed-0``; characters other than letters,
    digits and ``._-`` become ``_`` and a short hash of the values is then appended, so two
    combinations never share a folder; over-long names are shortened the same way.
    """
    parts = [f"{k}-{v}" for k, v in params.items()]
    name = prefix + "__".join(NAME_OK.sub("_", p) for p in parts)
    exact = prefix + "__".join(parts)
    if name != exact or len(name) > 150:
        digest = hashlib.sha1(json.dumps(list(params.items()), default=str).encode()).hexdigest()
        name = f"{name[:140]}-{digest[:8]}"
    return name


def grid_combinations(sweep: Sweep) -> list[Combination]:
    """Every combination of a grid, in W&B's order (the last parameter varies fastest)."""
    import itertools

    keys = [p.key for p in sweep.params]
    out = []
    seen = set()
    for values in itertools.product(*(p.grid_values() for p in sweep.params)):
        params = dict(zip(keys, values, strict=True))
        name = combination_name(params)
        if name in seen:  # a value listed twice: W&B runs it once
            continue
        seen.add(name)
        out.append(Combination(len(out), params, name))
    return out


def random_combinations(sweep: Sweep, count: int, seed: int = 0) -> list[Combination]:
    """``count`` random draws; the first ``k`` are the same for any ``count >= k``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        params = {p.key: p.sample(rng) for p in sweep.params}
        for key, value in params.items():
            _check_value(key, value, str(sweep.path))
        out.append(Combination(i, params, combination_name(params, prefix=f"{i:04d}__")))
    return out


def combinations(sweep: Sweep, count: int | None = None, seed: int = 0) -> list[Combination]:
    """The combinations a local run of ``sweep`` goes through.

    Args:
        count: random sweeps: how many draws (default: the file's ``run_cap``); grid sweeps: at
            most this many of the grid (like ``wandb agent --count``).
        seed: random sweeps: the draws' seed.
    """
    if sweep.method == "grid":
        combos = grid_combinations(sweep)
        return combos if count is None else combos[:count]
    count = count if count is not None else sweep.run_cap
    if not count:
        raise SweepError(
            f"{sweep.path}: a random sweep runs until stopped on W&B; give --count N "
            f"(or run_cap: N in the file) to run it locally"
        )
    return random_combinations(sweep, count, seed)


def varying_keys(combos: Sequence[Combination]) -> list[str]:
    """The parameters that take more than one value among ``combos`` (all if none does)."""
    if not combos:
        return []
    keys = list(combos[0].params)
    varying = [k for k in keys if len({str(c.params.get(k)) for c in combos}) > 1]
    return varying or keys


# ----------------------------------------------------------------------------- commands


def build_command(
    sweep: Sweep, combo: Combination, run_dir: str | Path, interpreter: str | None = None
) -> list[str]:
    """The process a W&B agent would start for ``combo``, plus ``hydra.run.dir=<run_dir>``."""
    macros = {
        "${env}": [] if os.name == "nt" else ["/usr/bin/env"],
        "${interpreter}": [interpreter or sys.executable],
        "${program}": [sweep.program],
        "${args_no_hyphens}": combo.args,
        "${args}": [f"--{a}" for a in combo.args],
    }
    cmd: list[str] = []
    for part in sweep.command:
        if part in macros:
            cmd += macros[part]
        else:
            cmd.append(part)
    return cmd + [f"hydra.run.dir={run_dir}"]


def program_config(program: str | Path) -> tuple[Path, str]:
    """The config folder and name a program composes: ``src/train.py`` -> conf/, ``train``.

    Raises:
        SweepError: the program is not one of the project's Hydra entry points.
    """
    name = Path(program).stem.removeprefix("initbench-")
    if name not in ENTRY_CONFIGS:
        raise SweepError(
            f"program {program} is not an initbench entry point; valid programs: "
            f"{', '.join(f'src/{n}.py' for n in ENTRY_CONFIGS)}"
        )
    return CONF_DIR, ENTRY_CONFIGS[name]


def compose_combinations(
    sweep: Sweep, combos: Sequence[Combination], root: str | Path = "."
) -> Iterator[tuple[Combination, dict[str, Any] | Exception]]:
    """Compose every combination with the config its program uses, as Hydra would.

    Yields ``(combination, resolved config dict)``, or the exception when it does not compose.
    Hydra composes once per distinct set of config-group choices; each combination's plain
    ``key=value`` overrides are then applied as Hydra applies them (struct mode: a key that
    is not in the config fails), so a large grid is checked in seconds.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from initbench.config import register_resolvers

    register_resolvers()
    config_dir, config_name = program_config(Path(root) / sweep.program)
    parser = OverridesParser.create()
    composed: dict[tuple[str, ...], Any] = {}
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for combo in combos:
            try:
                overrides = parser.parse_overrides(combo.args)
                groups = tuple(
                    o.input_line
                    for o in overrides
                    if (config_dir / o.key_or_group).is_dir() or o.key_or_group.startswith("hydra")
                )
                if groups not in composed:
                    try:
                        composed[groups] = compose(config_name=config_name, overrides=list(groups))
                    except Exception as err:  # remembered: every combination with it fails
                        composed[groups] = err
                base = composed[groups]
                if isinstance(base, Exception):
                    raise base
                cfg = copy.deepcopy(base)
                for o in overrides:
                    if o.input_line in groups:
                        continue
                    try:
                        OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
                    except Exception as err:  # as Hydra words it (struct mode: no new keys)
                        chosen = " ".join(groups) or "the defaults"
                        raise SweepError(
                            f"could not override '{o.key_or_group}': not in the config "
                            f"composed from {config_name}.yaml with {chosen} ({type(err).__name__})"
                        ) from None
                yield combo, OmegaConf.to_container(cfg, resolve=True)
            except Exception as err:
                yield combo, err


# ----------------------------------------------------------------------------- running


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
    """The last logged value of ``name`` (what W&B's run summary holds)."""
    if not name:
        return None
    value = None
    try:
        with open(run_dir / "metrics.jsonl") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if row.get(name) is not None:
                    value = row[name]
    except OSError:
        return None
    return value


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


def _last_error_line(log_path: Path) -> str | None:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.strip() and ("error" in line.lower() or "exception" in line.lower()):
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else None


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def write_index(sweep: Sweep, combos: Sequence[Combination], out_dir: Path) -> None:
    """``<out>/sweep.yaml`` (the file as run) and ``<out>/combinations.json`` (what is in it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sweep.path, out_dir / "sweep.yaml")
    index = {
        "sweep": sweep.name,
        "file": str(sweep.path),
        "method": sweep.method,
        "program": sweep.program,
        "metric": sweep.metric,
        "combinations": [{"name": c.name, "params": dict(c.params)} for c in combos],
    }
    (out_dir / INDEX).write_text(json.dumps(index, indent=2, default=str))


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
) -> list[Outcome]:
    """Run every combination not yet done, ``parallel`` processes at a time.

    Each combination runs in ``out_dir/<combination name>`` (its ``hydra.run.dir``), with
    ``WANDB_MODE=wandb_mode``; its output goes to ``local_sweep.log`` there. A combination
    whose program fails, diverges or is killed is recorded and the sweep goes on. SIGINT or
    SIGTERM stops the running combinations (they checkpoint) and launches no more; running
    the same call again continues.

    Returns:
        One outcome per combination, in ``combos`` order.
    """
    out_dir = Path(out_dir).resolve()
    root = Path(root)
    if not (root / sweep.program).exists():
        raise SweepError(f"program {sweep.program} not found under {root.resolve()}")
    if parallel < 1:
        raise SweepError(f"--parallel must be >= 1 (got {parallel})")
    write_index(sweep, combos, out_dir)
    metric = sweep.metric_name
    keys = varying_keys(combos)
    total = len(combos)
    outcomes: dict[int, Outcome] = {}
    pending = []
    for combo in combos:
        outcome = read_outcome(combo, out_dir / combo.name, metric)
        if outcome.status in DONE:
            outcome.skipped = True
            outcomes[combo.index] = outcome
        else:
            pending.append(combo)
    start = time.perf_counter()
    echo(
        f"local sweep {sweep.name} ({sweep.method}): {total} combinations, "
        f"{total - len(pending)} already done, {len(pending)} to run, {parallel} at a time, "
        f"W&B {wandb_mode} -> {out_dir}"
    )
    child_env = {**os.environ, **(env or {}), "WANDB_MODE": wandb_mode, "PYTHONUNBUFFERED": "1"}
    running: dict[int, tuple[subprocess.Popen, Combination, float, Any]] = {}
    stop: list[int] = []
    done_count = total - len(pending)
    started = 0

    def on_signal(signum, frame):
        if not stop:
            echo(f"{signal.Signals(signum).name}: stopping the running combinations (they save)")
        stop.append(signum)
        for proc, *_ in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    try:
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = {}
    try:
        queue = list(pending)
        while queue or running:
            while queue and len(running) < parallel and not stop:
                combo = queue.pop(0)
                run_dir = out_dir / combo.name
                run_dir.mkdir(parents=True, exist_ok=True)
                cmd = build_command(sweep, combo, run_dir)
                log_file = open(run_dir / LOG, "a")
                log_file.write(f"\n$ {' '.join(cmd)}\n")
                log_file.flush()
                # own process group: a Ctrl-C reaches the children only through on_signal
                proc = subprocess.Popen(
                    cmd,
                    cwd=root,
                    env=child_env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                started += 1
                running[combo.index] = (proc, combo, time.perf_counter(), log_file)
                echo(
                    f"[started {done_count + len(running)}/{total}] {combo.label(keys)}"
                    f"  (elapsed {_hms(time.perf_counter() - start)})"
                )
            if not running:
                break
            time.sleep(0.1)
            for index, (proc, combo, t0, log_file) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                log_file.close()
                del running[index]
                done_count += 1
                run_dir = out_dir / combo.name
                wall = time.perf_counter() - t0
                status = _status_after(rc, run_dir)
                error = _last_error_line(run_dir / LOG) if status == "failed" else None
                record = {
                    "params": dict(combo.params),
                    "command": build_command(sweep, combo, run_dir),
                    "returncode": rc,
                    "status": status,
                    "wall_s": wall,
                    "error": error,
                }
                (run_dir / RECORD).write_text(json.dumps(record, indent=2, default=str))
                outcome = read_outcome(combo, run_dir, metric)
                outcome.status, outcome.returncode = status, rc
                outcome.error = outcome.error or error
                outcomes[index] = outcome
                shown = f"  {metric}={outcome.metric:.4f}" if outcome.metric is not None else ""
                why = f"  ({error})" if error else ""
                echo(
                    f"[done {done_count}/{total}] {status} {combo.label(keys)}{shown}  {wall:.1f} s"
                    f"  (elapsed {_hms(time.perf_counter() - start)}){why}"
                )
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    for combo in combos:
        if combo.index not in outcomes:
            outcomes[combo.index] = read_outcome(combo, out_dir / combo.name, metric)
    result = [outcomes[c.index] for c in combos]
    if stop:
        echo("stopped; run the same command again to continue where it left off")
    return result


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
    """``outputs/local-sweeps/<sweep name>``: fixed, so running the same file again resumes."""
    return Path("outputs") / "local-sweeps" / sweep.name


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
) -> int:
    """``scripts/local_sweep.py``: list, check or run a sweep file; returns the exit code.

    0: every combination finished or diverged (or the listing/check passed); 1: some failed
    (or did not compose, with ``check``); 128 + signal number: stopped by a signal.

    Raises:
        SweepError: the file, its method or its program cannot be run.
    """
    sweep = load_sweep(path)
    combos = combinations(sweep, count=count, seed=seed)
    out_dir = Path(out) if out is not None else default_out_dir(sweep)
    keys = varying_keys(combos)
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
        for combo in combos:
            state = read_outcome(combo, out_dir / combo.name).status
            mark = "" if state == "pending" else f"  [{state}]"
            echo(f"  {combo.index + 1:>{width}}  {combo.label(keys)}{mark}")
        if combos:
            echo(
                "first command: "
                + " ".join(build_command(sweep, combos[0], out_dir / combos[0].name))
            )
        return 0
    outcomes = run_local_sweep(
        sweep, combos, out_dir, parallel=parallel, wandb_mode=wandb_mode, echo=echo
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
