"""How long a sweep takes on this device, from the benchmark's measured times.

``scripts/bench.py`` measures a FashionMNIST MLP epoch and the plain CNNs' steps and writes
them to ``outputs/bench/bench.json``; :func:`preset_epoch_seconds` turns those into one
epoch's seconds per experiment preset, and :func:`estimate_wall_time` adds up a list of runs
(preset, epochs), one at a time. The bench (``grid_wall_time_estimate``) and the local sweep's
dry run share these, so both give the same figure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

EVAL_OVERHEAD = 1.07  # an epoch's evaluation adds about 7% to its training time
BENCH_JSON = Path("outputs") / "bench" / "bench.json"  # scripts/bench.py's default --out


def preset_epoch_seconds(results: Mapping[str, Any]) -> dict[str, float] | None:
    """One training epoch's seconds per experiment preset (``fashion_mlp``, ``cifar_cnn``,
    ``cifar_cnn30``) from a bench's results; None if a measurement is missing or the bench
    ran ``--quick`` (its figures are not measurements)."""
    mlp = results.get("mlp_epoch_speedup_vs_dataloader")
    cnn = results.get("cnn30_speedup_fast_path")
    meta = results.get("meta") or {}
    if not mlp or not cnn or mlp.get("ratio") is None or cnn.get("ratio") is None:
        return None
    if meta.get("quick"):
        return None
    steps = 50_000 / cnn["batch_size"]
    return {
        "fashion_mlp": mlp["epoch_s_ours"] * 60_000 / mlp["train_examples"],
        "cifar_cnn": steps * cnn["step_ms_cnn10_fast"] / 1e3,
        "cifar_cnn30": steps * cnn["step_ms_fast"] / 1e3,
    }


def packed_epoch_seconds(
    results: Mapping[str, Any], epoch_s: Mapping[str, float]
) -> dict[str, float] | None:
    """``epoch_s`` when runs train as packs (src/pack.py, ``local_sweep --pack``): each preset's
    epoch divided by its measured pack speedup (``packed_speedup``: the MLP's ratio for
    ``fashion_mlp``, the 30-layer CNN's for both CNN presets); None without that measurement."""
    packed = results.get("packed_speedup")
    if not packed or packed.get("ratio") is None or packed.get("cnn30_ratio") is None:
        return None
    speedup = {"fashion_mlp": packed["ratio"], "cifar_cnn": packed["cnn30_ratio"],
               "cifar_cnn30": packed["cnn30_ratio"]}  # fmt: skip
    return {p: t / speedup[p] for p, t in epoch_s.items() if p in speedup}


def estimate_wall_time(
    runs: Iterable[tuple[str | None, int]], epoch_s: Mapping[str, float]
) -> dict[str, Any]:
    """Seconds for ``runs`` — (experiment preset, epochs) each — one at a time: epochs x the
    preset's epoch time x :data:`EVAL_OVERHEAD`. Runs of a preset with no measured time are
    counted in ``not_estimated`` (preset -> runs) and left out of the sum."""
    seconds, counted, unknown = 0.0, 0, {}
    for preset, epochs in runs:
        if preset not in epoch_s:
            unknown[str(preset)] = unknown.get(str(preset), 0) + 1
            continue
        seconds += epochs * epoch_s[preset] * EVAL_OVERHEAD
        counted += 1
    return {"seconds": seconds, "hours": seconds / 3600, "runs": counted, "not_estimated": unknown}


def read_bench(path: str | Path = BENCH_JSON) -> dict[str, Any] | None:
    """A bench's results (``scripts/bench.py --out``), or None if there is no readable file."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None
