"""The step-0 signal-propagation report: does the signal survive one forward and backward pass?

Before any training, one forward and one backward pass (mean cross-entropy against the
batch's labels) on a fixed batch of training examples gives, for every Linear/Conv layer in
depth order (:func:`initbench.telemetry.find_probes`):

=================  ================================================================================
``name, kind``     the layer's module name (``fc1``, ``conv17``, ``head``) and its type (``linear``)
``fan_in/out``     as torch computes them (in/out features; channels x kernel size for convs)
``weight_std``     std of the layer's weights
``act_*``          mean, std and RMS of the layer's activations (post-activation; the head's output)
``grad_std``       std of the gradient w.r.t. those activations (the backward signal at that depth)
``weight_grad_std`` std of the gradient w.r.t. the weights
``dead_frac``      ReLU family: fraction of units never positive over the batch (else null)
``saturated_frac`` tanh/sigmoid/softsign: fraction of outputs near an asymptote (else null)
``nonfinite``      NaN/Inf elements among the activations (``grad_nonfinite``: among the gradients)
=================  ================================================================================

Statistics are over finite values, std is the population std (see
:mod:`initbench.telemetry.stats`). The network runs as training sees it (batch norm uses batch
statistics) but without dropout, on a copy, so a training run is unchanged by its report.

With ``samples`` > 1 the weights are drawn again with seeds ``seed, seed+1, ...`` (draw 0 is the
run's own initialization) and every value is the **median** over the draws; ``range`` holds the
**min and max** over the draws. ``dtype=float64`` runs model and batch in double precision, for
the extreme weight scales of the sigma-grid experiments.

With ``jacobian`` on, the report also holds the singular values of the input-output Jacobian
(d logits / d flattened input) of the run's own weights (draw 0) at the first
:data:`JACOBIAN_INPUTS` examples of the batch (:mod:`initbench.telemetry.jacobian`: exact, or a
Lanczos estimate of the top values for very wide outputs, said in ``method``): all equal to 1 is
dynamical isometry (Pennington et al. 2017).

Used by ``src/diagnose.py`` (the report alone) and by every fresh training run
(:func:`step0_report`); both write ``diagnose.json`` and ``diagnose.png`` into the run directory.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from initbench import inits
from initbench.build import Prepared, make_sinks, prepare
from initbench.io import atomic_write, dumps_strict
from initbench.lock import hold_run_dir
from initbench.telemetry import (
    Sink,
    figure_to_rgb,
    find_probes,
    jacobian_singular_values,
    spectrum_summary,
    stack,
    summarize,
)
from initbench.telemetry.residual import BLOCK_KEYS, BranchMonitor
from initbench.telemetry.stats import COL

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# The per-layer keys every report has (diagnose.json's schema), then the extra ones.
LAYER_KEYS = ("name", "kind", "fan_in", "fan_out", "weight_std", "act_mean", "act_std",
              "act_rms", "grad_std", "dead_frac", "saturated_frac", "nonfinite")  # fmt: skip
EXTRA_KEYS = ("weight_grad_std", "grad_nonfinite", "act_cos")
MEASURED = LAYER_KEYS[4:] + EXTRA_KEYS  # the numbers that vary between weight draws
TABLE_TAG = "diagnose/layers"
FIGURE_TAG = "diagnose/std_vs_depth"
BLOCKS_TAG = "diagnose/blocks"  # residual blocks: branch, shortcut and output RMS
JACOBIAN_TAG = "diagnose/jacobian"  # histogram of the singular values; scalars under it
JACOBIAN_INPUTS = 4  # examples the Jacobian is taken at


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[dict], float]:
    """One forward and one backward pass of ``model`` on ``(x, y)``: per-layer rows and the loss.

    ``model`` is run in training mode with its dropout off; its ``.grad`` fields are overwritten.
    """
    probes = find_probes(model, x[:1])
    n = len(probes)
    acts: list[torch.Tensor | None] = [None] * n
    out_grads: list[torch.Tensor | None] = [None] * n

    def catch(i: int):
        def hook(module, inputs, output):
            acts[i] = output.detach()
            if output.requires_grad:
                output.register_hook(lambda grad: out_grads.__setitem__(i, grad.detach()))

        return hook

    modes = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    handles = [p.output.register_forward_hook(catch(i)) for i, p in enumerate(probes)]
    try:
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.train(training)

    def filled(tensors: list[torch.Tensor | None], like: list[torch.Tensor]) -> list[torch.Tensor]:
        # a layer the passes skipped shows as NaN
        return [
            t if t is not None else torch.full_like(r, float("nan"))
            for t, r in zip(tensors, like, strict=True)
        ]

    weights = [p.layer.weight for p in probes]
    acts_f = filled(acts, weights)
    blocks = [
        summarize(stack(weights), n),
        summarize(stack(acts_f, [p.activation for p in probes]), n),
        summarize(stack(filled(out_grads, acts_f)), n),
        summarize(stack(filled([w.grad for w in weights], weights)), n),
    ]
    host = torch.cat(blocks).cpu().numpy().reshape(4, n, -1)  # one copy to the host
    w, a, g, wg = host
    cosines = torch.stack([mean_cosine(t) for t in acts_f]).cpu().numpy()
    rows = []
    for i, p in enumerate(probes):
        fan_in, fan_out = inits.fan_in_and_fan_out(p.layer.weight)
        rows.append(
            {
                "name": p.name,
                "kind": p.kind,
                "fan_in": int(fan_in),
                "fan_out": int(fan_out),
                "weight_std": w[i, COL["std"]],
                "act_mean": a[i, COL["mean"]],
                "act_std": a[i, COL["std"]],
                "act_rms": a[i, COL["rms"]],
                "grad_std": g[i, COL["std"]],
                "dead_frac": a[i, COL["dead_frac"]],
                "saturated_frac": a[i, COL["saturated_frac"]],
                "nonfinite": a[i, COL["nonfinite"]],
                "weight_grad_std": wg[i, COL["std"]],
                "grad_nonfinite": g[i, COL["nonfinite"]] + wg[i, COL["nonfinite"]],
                "act_cos": cosines[i],
            }
        )
    return rows, float(loss.detach())


def mean_cosine(acts: torch.Tensor) -> torch.Tensor:
    """The mean cosine between different examples' activations (B x ...): how alike the layer
    makes its inputs, the C-map's c (Poole et al. 2016; TAT aims it at eta at the last layer).
    NaN for fewer than 2 examples, or where an example's activation is zero or not finite."""
    a = acts.detach().flatten(1).double()
    b = a.shape[0]
    norms = a.norm(dim=1, keepdim=True)
    if b < 2 or not bool(torch.isfinite(a).all()) or bool((norms == 0).any()):
        return torch.tensor(float("nan"), device=acts.device, dtype=torch.float64)
    unit = a / norms
    return ((unit.sum(0) ** 2).sum() - b) / (b * (b - 1))


def aggregate(draws: list[list[dict]]) -> list[dict]:
    """Per layer: the median over draws of every measured value, and its [min, max] ``range``."""
    layers = []
    for i, first in enumerate(draws[0]):
        row = {k: first[k] for k in LAYER_KEYS[:4]}
        spread = {}
        for key in MEASURED:
            values = np.array([d[i][key] for d in draws], dtype=np.float64)
            finite = values[~np.isnan(values)]
            row[key] = float(np.median(finite)) if finite.size else None
            spread[key] = [float(finite.min()), float(finite.max())] if finite.size else None
        for key in ("nonfinite", "grad_nonfinite"):
            if row[key] is not None and float(row[key]).is_integer():
                row[key] = int(row[key])
        row["range"] = spread
        layers.append(row)
    return layers


def aggregate_blocks(draws: list[list[dict]]) -> list[dict]:
    """Per residual block, the median of each :data:`BLOCK_KEYS` value over the weight draws
    (None where no draw has a finite one)."""
    blocks = []
    for i, first in enumerate(draws[0]):
        row: dict[str, Any] = {"name": first["name"]}
        for key in BLOCK_KEYS:
            values = np.array([d[i][key] for d in draws], dtype=float)
            finite = values[np.isfinite(values)]
            row[key] = float(np.median(finite)) if finite.size else None
        blocks.append(row)
    return blocks


def report_for(cfg: Mapping[str, Any], prep: Prepared) -> dict[str, Any]:
    """The report for a prepared run (its model is copied, never changed).

    Draw 0 is the model as ``prepare`` initialized it; draw k re-initializes a copy with seed
    ``seed + k``.
    """

    params = cfg["diagnose"]
    batch_size, samples, dtype = params["batch_size"], params["samples"], DTYPES[params["dtype"]]
    seed, data = cfg["seed"], prep.data
    n = min(batch_size, len(data.train_y))
    # Seed + 2: not LSUV's calibration batch (seed) nor the data order (seed + 1), so a
    # data-dependent init is measured out of sample.
    x, y = data.sample_batch(n, generator=torch.Generator().manual_seed(seed + 2))
    x = x.to(dtype)
    draws, block_draws, losses, jacobian = [], [], [], None
    for k in range(samples):
        model = copy.deepcopy(prep.model)
        if k > 0:  # weights are drawn on the CPU, as prepare() does
            model = model.cpu()
            inits.init_module(
                model,
                prep.init_name,
                activation=prep.activation,
                data=prep.init_batch,
                generator=torch.Generator().manual_seed(seed + k),
                device=prep.device,
                **prep.init_params,
            )
        model = model.to(device=prep.device, dtype=dtype)
        with BranchMonitor(model) as branches:
            rows, loss = measure(model, x, y)
        draws.append(rows)
        block_draws.append(branches.rows())
        losses.append(loss)
        if k == 0 and params.get("jacobian"):
            values, method = jacobian_singular_values(
                model, x[:JACOBIAN_INPUTS], generator=torch.Generator().manual_seed(seed)
            )
            jacobian = {**spectrum_summary(values, method), "draw": 0}
    report = {
        "layers": aggregate(draws),
        "loss": float(np.nanmedian(losses)) if not all(map(math.isnan, losses)) else None,
        "samples": samples,
        "spread": "range = [min, max] over the weight draws; values are medians",
        "batch_size": n,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(prep.device),
        "config": dict(cfg),
    }
    if block_draws[0]:
        report["blocks"] = aggregate_blocks(block_draws)
    if jacobian is not None:
        report["jacobian"] = jacobian
    if prep.init_report:  # what a data-dependent init measured (draw 0's)
        report["init"] = prep.init_report
    report["init_cost"] = prep.init_cost.as_dict()  # what draw 0's init spent
    return report


def render(report: Mapping[str, Any]) -> np.ndarray:
    """The std-vs-depth plot (:func:`figure`) as an H x W x 3 uint8 image."""
    return figure_to_rgb(figure(report))


def write_report(
    report: Mapping[str, Any], run_dir: str | Path, image: np.ndarray | None = None
) -> tuple[Path, Path]:
    """Write ``diagnose.json`` and ``diagnose.png`` (``image``, rendered if not given) into
    ``run_dir``; returns their paths."""
    from matplotlib.image import imsave

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = run_dir / "diagnose.json", run_dir / "diagnose.png"
    text = dumps_strict(report, indent=2)  # NaN/Inf as null
    with atomic_write(json_path) as f:  # temp + rename: never through a symlink, never half
        f.write(text)
    with atomic_write(png_path, "wb") as f:
        imsave(f, render(report) if image is None else image, format="png")
    return json_path, png_path


TABLE_COLUMNS = ["layer", "kind", "fan_in", "fan_out", "weight_std", "act_mean", "act_std",
                 "act_rms", "grad_std", "dead", "saturated", "nonfinite", "cos"]  # fmt: skip
TABLE_KEYS = (*LAYER_KEYS, "act_cos")  # a report written before act_cos existed shows "-"


def table_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    """The report's layers as rows of :data:`TABLE_COLUMNS` (numbers to 3 significant digits)."""

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return [[fmt(row.get(k)) for k in TABLE_KEYS] for row in report["layers"]]


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table for the terminal."""
    rows = [TABLE_COLUMNS, *table_rows(report)]
    widths = [max(len(r[j]) for r in rows) for j in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    note = f"{report['samples']} weight draw(s), batch {report['batch_size']}, {report['dtype']}"
    if report["samples"] > 1:
        note += "; medians over the draws"
    loss = report.get("loss")
    lines.append(f"({note}; initial loss {fmt_loss(loss)})")
    blocks = report.get("blocks")
    if blocks:
        lines.append(format_blocks(blocks))
    jacobian = report.get("jacobian")
    if jacobian:
        lines.append(
            f"input-output Jacobian ({jacobian['method']}, {jacobian['inputs']} inputs): singular "
            f"values min {_g(jacobian['min'])}, max {_g(jacobian['max'])}, mean square "
            f"{_g(jacobian['mean_sq'])} (isometry: all 1)"
        )
    return "\n".join(lines)


BLOCK_COLUMNS = ["block", "branch_rms", "shortcut_rms", "out_rms", "branch/shortcut"]


def format_blocks(blocks: Sequence[Mapping[str, Any]]) -> str:
    """The residual blocks' table: each branch's output scale against its shortcut's."""
    rows = [BLOCK_COLUMNS] + [[str(b["name"]), *(_g(b.get(k)) for k in BLOCK_KEYS)] for b in blocks]
    widths = [max(len(r[j]) for r in rows) for j in range(len(BLOCK_COLUMNS))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return (
        "residual blocks (RMS of each branch's output after its gate, of the shortcut, of "
        "the block's output):\n" + "\n".join(lines)
    )


def fmt_loss(loss: float | None) -> str:
    return "non-finite" if loss is None or not math.isfinite(loss) else f"{loss:.4g}"


def figure(report: Mapping[str, Any]):
    """Activation std and gradient std against depth, log scale (min-max band over draws)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter, MaxNLocator

    jacobian = report.get("jacobian")
    fig = Figure(figsize=(13.5 if jacobian else 9, 3.6))
    fig.subplots_adjust(left=0.06 if jacobian else 0.08, right=0.98, bottom=0.14, top=0.78,
                        wspace=0.25)  # fmt: skip
    axes = fig.subplots(1, 3 if jacobian else 2)
    if jacobian:
        _spectrum_panel(axes[2], jacobian)
    layers = report["layers"]
    depth = np.arange(1, len(layers) + 1)
    cfg = report.get("config") or {}
    title = " ".join(
        str(cfg.get(g, {}).get("name", "")) for g in ("init", "activation", "model", "dataset")
    ).strip()
    for ax, key, label in zip(
        axes[:2],
        ("act_std", "grad_std"),
        ("activation std (forward)", "gradient std w.r.t. activations (backward)"),
        strict=True,
    ):
        values = np.array([_positive(r[key]) for r in layers])
        ax.plot(depth, values, marker="o", markersize=3)
        if report.get("samples", 1) > 1:
            lo = np.array([_positive((r["range"][key] or [None])[0]) for r in layers])
            hi = np.array([_positive((r["range"][key] or [None, None])[1]) for r in layers])
            ax.fill_between(depth, lo, hi, alpha=0.25, label="min-max over draws")
            ax.legend(loc="best", fontsize="small")
        if np.isfinite(values).any():
            ax.set_yscale("log")
            # plain-text tick labels: the default mathtext ones take half a second to typeset
            ax.yaxis.set_major_formatter(LogFormatter())
            ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.4)))
        hidden = int(np.isnan(values).sum())
        if hidden:  # zero (underflow, dead) or non-finite: a log axis cannot show them
            label += f"\n({hidden} layer{'s' if hidden > 1 else ''} at 0 or non-finite, not shown)"
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, len(layers) + 0.5)
        ax.set_xlabel("layer (depth)")
        ax.set_title(label, fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def _spectrum_panel(ax, jacobian: Mapping[str, Any]) -> None:
    """Sorted singular values of the input-output Jacobian, log scale, with the isometry line."""
    from matplotlib.ticker import LogFormatter

    values = np.array([_positive(v) for v in jacobian["singular_values"]])
    ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, linestyle="none")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="isometry (all = 1)")
    if np.isfinite(values).any():
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.4)))
    ax.set_xlabel("rank (all inputs pooled)")
    what = "exact" if jacobian["method"] == "exact" else "Lanczos estimate, top values"
    ax.set_title(
        f"input-output Jacobian singular values\n({what}, {jacobian['inputs']} inputs)",
        fontsize="medium",
    )
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, which="both", alpha=0.3)


def jacobian_histogram(jacobian: Mapping[str, Any], bins: int = 32) -> tuple[Any, Any] | None:
    """The singular values as a sink histogram (bin edges, counts); None if none is finite."""
    values = np.array([v for v in jacobian["singular_values"] if v is not None], dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5 * max(abs(lo), 1e-12), hi + 0.5 * max(abs(hi), 1e-12)
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return edges, counts


def jacobian_scalars(jacobian: Mapping[str, Any]) -> dict[str, float]:
    """``diagnose/jacobian_{mean_sq,max,min}`` (the finite ones)."""
    return {
        f"{JACOBIAN_TAG}_{key}": jacobian[key]
        for key in ("mean_sq", "max", "min")
        if jacobian.get(key) is not None
    }


def _positive(value: float | None) -> float:
    """A value a log axis can show (NaN for missing, zero or negative)."""
    return value if value is not None and value > 0 and math.isfinite(value) else np.nan


def log_report(
    report: Mapping[str, Any], sink: Sink, step: int = 0, image: np.ndarray | None = None
) -> None:
    """Log the report's table and std-vs-depth plot (``image``, rendered if not given)."""
    sink.log_table(TABLE_TAG, TABLE_COLUMNS, table_rows(report), step)
    sink.log_image(FIGURE_TAG, render(report) if image is None else image, step)
    blocks = report.get("blocks")
    if blocks:
        rows = [[b["name"], *(b.get(k) for k in BLOCK_KEYS)] for b in blocks]
        sink.log_table(BLOCKS_TAG, ["block", *BLOCK_KEYS], rows, step)
    jacobian = report.get("jacobian")
    if jacobian:
        histogram = jacobian_histogram(jacobian)
        if histogram is not None:
            sink.log_histograms({JACOBIAN_TAG: histogram}, step)
        sink.log_scalars(jacobian_scalars(jacobian), step)


INIT_TAG = "init/log"


def log_init(rows: Sequence[Mapping[str, Any]] | None, sink: Sink, step: int = 0) -> None:
    """What a data-dependent init logged (``InitContext.log``), as one table ``init/log``
    whose columns are the rows' keys in order of first appearance; nothing when it logged none."""
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    sink.log_table(INIT_TAG, columns, [[row.get(c) for c in columns] for row in rows], step)


def init_cost_scalars(cost: inits.InitCost) -> dict[str, float]:
    """What the init spent, as the sinks' ``init/*`` scalars at step 0."""
    return {"init/seconds": cost.seconds, "init/forward_passes": cost.forward_passes,
            "init/backward_passes": cost.backward_passes}  # fmt: skip


def step0_report(
    cfg: Mapping[str, Any], prep: Prepared, run_dir: str | Path, sink: Sink
) -> dict[str, Any] | None:
    """A training run's report before its first step: written to ``run_dir`` and logged to
    ``sink``. Skipped (None) when ``diagnose.at_start`` is false."""
    if not cfg["diagnose"]["at_start"]:
        return None
    report = report_for(cfg, prep)
    image = render(report)
    json_path, _ = write_report(report, run_dir, image)
    log_report(report, sink, image=image)
    sink.save_file(json_path)  # what the report's W&B source reads (run.file("diagnose.json"))
    last = report["layers"][-1]
    log.info(
        "step-0 report: last layer act std %s, grad std %s, initial loss %s (diagnose.json)",
        _g(last["act_std"]), _g(last["grad_std"]), fmt_loss(report["loss"]),
    )  # fmt: skip
    return report


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def run_diagnose(cfg: Mapping[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """``src/diagnose.py``: prepare the run's data and initialized model, report, write files.

    Raises:
        UserError: a bad config value or missing data (as for training), or another process
            holds ``run_dir`` (:mod:`initbench.lock`).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold_run_dir(run_dir):  # one process per run directory, as for training
        prep = prepare(cfg)
        report = report_for(cfg, prep)
        image = render(report)
        json_path, _ = write_report(report, run_dir, image)
        # The same sinks as a training run, so a W&B sweep of diagnose runs gets one W&B run each.
        sink = make_sinks(cfg, run_dir)
        try:
            log_init(report.get("init"), sink)
            sink.log_scalars(init_cost_scalars(prep.init_cost), 0)
            log_report(report, sink, image=image)
            sink.save_file(json_path)
            last = report["layers"][-1]
            sink.log_summary(
                {
                    "diagnose/last_act_std": last["act_std"],
                    "diagnose/last_grad_std": last["grad_std"],
                    "diagnose/loss": report["loss"],
                    "diagnose/nonfinite_layers": sum(1 for r in report["layers"] if r["nonfinite"]),
                    **jacobian_scalars(report.get("jacobian") or {}),
                }
            )
        finally:
            sink.finish()
    return report
