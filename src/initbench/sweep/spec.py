"""Sweep files: read a W&B sweep configuration and check it for W&B and for Hydra.

A sweep file (``sweeps/*.yaml``) is what ``wandb sweep FILE`` registers: ``method``, ``program``,
``command`` and ``parameters``, each parameter a constant (``value``), a list (``values``) or one
of W&B's distributions. :func:`load_sweep` checks what a W&B server would (method, parameters,
distributions) and what Hydra needs (flat keys without ``+``/``~``, values without commas), and
returns a :class:`Sweep` of :class:`Param`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from initbench.io import UnreadableFile, load_yaml

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
# The project's programs: they take key=value overrides, never --key=value (cli.common).
OUR_PROGRAMS = ("train.py", "diagnose.py", "pack.py")


MAX_Q_VALUES = 10**6  # a q_uniform grid parameter of more values is refused, not built


class SweepError(ValueError):
    """A sweep file that cannot be run as written; the message names the file and the key."""


@dataclass(frozen=True)
class Param:
    """One swept parameter: its key (a Hydra override key) and its W&B spec."""

    key: str
    distribution: str
    spec: Mapping[str, Any]

    def grid_values(self) -> list[Any]:
        """The values a grid takes, as W&B's grid search expands them (a list: see
        :meth:`grid_sequence` for a range that need not be built)."""
        return list(self.grid_sequence())

    def grid_sequence(self) -> Sequence[Any]:
        """:meth:`grid_values` without building it where it is a range (``int_uniform``: a
        ``range``), so a grid over a billion seeds can hand out its first combinations."""
        s = self.spec
        if self.distribution == "constant":
            return [s["value"]]
        if self.distribution == "categorical":
            return list(s["values"])
        if self.distribution == "int_uniform":
            return range(int(s["min"]), int(s["max"]) + 1)
        if self.distribution == "q_uniform":
            size = math.ceil((s["max"] - s["min"]) / s["q"])
            if size > MAX_Q_VALUES:
                raise SweepError(
                    f"parameter {self.key!r}: q_uniform from {s['min']} to {s['max']} in steps "
                    f"of {s['q']} is {size} values, more than a grid can take ({MAX_Q_VALUES}); "
                    "use a larger q or method: random"
                )
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


def check_value(key: str, value: Any, where: str) -> None:
    """Refuse a value Hydra cannot take as one ``key=value`` override (a comma, a list)."""
    text = str(value)
    if "," in text:
        raise SweepError(
            f"{where}: parameter {key!r} has a value with a comma ({text!r}); Hydra would read "
            f"it as a multirun sweep: use a group option (an experiment preset, an init variant) "
            f"or a single field instead"
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
        raw = load_yaml(path)
    except FileNotFoundError:
        raise SweepError(f"cannot read sweep file {path}: no such file") from None
    except UnreadableFile as err:  # not a regular file, too big or deep, not YAML
        raise SweepError(f"cannot read sweep file {path}: {err}") from None
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
    if "${args}" in command and Path(program).name in OUR_PROGRAMS:
        given = "command: [..., ${args}]" if "command" in raw else "no command: (W&B's default)"
        raise SweepError(
            f"{where}: {given} passes --key=value, which {program} refuses (settings are "
            "key=value overrides); add command: [${env}, ${interpreter}, ${program}, "
            "${args_no_hyphens}]"
        )
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
        if dist in ("constant", "categorical"):  # listed values; a range's are numbers
            for value in param.grid_sequence():
                check_value(key, value, where)
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
