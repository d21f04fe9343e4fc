"""The combinations of a sweep: its points, in W&B's order, each with a folder name.

- **grid**: every combination, in the order of W&B's engine (``itertools.product`` over the
  parameters in file order; ``value`` is a constant, ``values`` a list, ``int_uniform`` and
  ``q_uniform`` are expanded to their values), as in the ``sweeps`` package's grid search;
- **random**: ``count`` draws from each parameter's distribution (``values`` with optional
  ``probabilities``, ``uniform``, ``int_uniform``, ``log_uniform_values``, ``normal``, ... as
  W&B defines them), reproducible from a seed, so a re-run draws the same combinations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from initbench.io import UNSAFE_CHAR
from initbench.sweep.spec import Sweep, SweepError, check_value


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


def _identity(params: Mapping[str, Any]) -> str:
    """The values as one string: equal for the same values only (``1``, ``1.0`` and ``"1"``
    differ)."""
    return json.dumps(list(params.items()), default=str)


def combination_name(params: Mapping[str, Any], prefix: str = "", hashed: bool = False) -> str:
    """A folder name from the values, readable and safe in a Hydra override.

    ``{"init": "zeros", "seed": 0}`` -> ``init-zeros__seed-0``; characters other than letters,
    digits and ``._-`` become ``_`` (:data:`initbench.io.UNSAFE_CHAR`, as for every name made a
    path) and a short hash of the values is then appended, so two combinations never share a
    folder; over-long names are shortened the same way. Every part is ``key-value``, so the
    name is one path component, never ``.`` or ``..``, whatever the values (``../../x``).
    ``hashed``: append the hash anyway (values that read like another combination's name).
    """
    parts = [f"{k}-{v}" for k, v in params.items()]
    name = prefix + "__".join(UNSAFE_CHAR.sub("_", p) for p in parts)
    exact = prefix + "__".join(parts)
    if hashed or name != exact or len(name) > 150:
        digest = hashlib.sha1(_identity(params).encode()).hexdigest()
        name = f"{name[:140]}-{digest[:8]}"
    return name


def _product(seqs: Sequence[Sequence[Any]]) -> Iterator[tuple[Any, ...]]:
    """``itertools.product`` over indexable sequences (the last varies fastest) that never
    copies them: ``itertools.product`` first turns each into a tuple, a ``range`` of a billion
    seeds included."""
    sizes = [len(s) for s in seqs]
    if 0 in sizes:
        return
    index = [0] * len(seqs)
    while True:
        yield tuple(s[i] for s, i in zip(seqs, index, strict=True))
        k = len(seqs) - 1
        while k >= 0:
            index[k] += 1
            if index[k] < sizes[k]:
                break
            index[k] = 0
            k -= 1
        if k < 0:
            return


def grid_combinations(sweep: Sweep, limit: int | None = None) -> list[Combination]:
    """Every combination of a grid, in W&B's order — its grid engine sorts the parameter names
    and varies the last of them fastest (``sweeps.grid_search``; tests/data pins its first runs
    of every sweep file) —, each combination's parameters kept in file order (its folder's
    name); with ``limit``, only the first ``limit``, the rest never built (a grid over a range
    of a billion seeds hands out its head at once)."""
    keys = [p.key for p in sweep.params]
    ordered = sorted(sweep.params, key=lambda p: p.key)
    out: list[Combination] = []
    seen, names = set(), set()
    for values in _product([p.grid_sequence() for p in ordered]):
        if limit is not None and len(out) >= limit:
            break
        drawn = dict(zip([p.key for p in ordered], values, strict=True))
        params = {key: drawn[key] for key in keys}
        identity = _identity(params)
        if identity in seen:  # a value listed twice: W&B runs it once
            continue
        seen.add(identity)
        name = combination_name(params)
        if name in names:  # other values that read the same (a value holding "__key-")
            name = combination_name(params, hashed=True)
        names.add(name)
        out.append(Combination(len(out), params, name))
    return out


def random_combinations(sweep: Sweep, count: int, seed: int = 0) -> list[Combination]:
    """``count`` random draws; the first ``k`` are the same for any ``count >= k``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        params = {p.key: p.sample(rng) for p in sweep.params}
        for key, value in params.items():
            check_value(key, value, str(sweep.path))
        out.append(Combination(i, params, combination_name(params, prefix=f"{i:04d}__")))
    return out


def combinations(sweep: Sweep, count: int | None = None, seed: int = 0) -> list[Combination]:
    """The combinations a local run of ``sweep`` goes through.

    Args:
        count: random sweeps: how many draws (default: the file's ``run_cap``); grid sweeps: at
            most this many of the grid (like ``wandb agent --count``).
        seed: random sweeps: the draws' seed.
    """
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise SweepError(f"--count must be an integer >= 1 (got {count!r})")
    if sweep.method == "grid":
        return grid_combinations(sweep, limit=count)
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
