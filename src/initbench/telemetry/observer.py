"""Training telemetry: per-layer histograms and statistics every N steps, as a step observer.

:class:`Telemetry` plugs into ``engine.train(observer=...)``. On a snapshot step (step 0 and
every ``every_n_steps``, or every ``every_n_epochs``) it

1. ``before_step``: registers forward hooks on every layer's activation module and copies the
   weights (for the update-to-weight ratio);
2. ``after_backward``: removes the hooks and reduces activations and weight gradients on the
   device (:mod:`initbench.telemetry.stats`);
3. ``after_step``: reduces the weights and their updates, copies the one result matrix to the
   host, and logs it.

Every other step costs one modulo. Tags, the same in every sink, with ``<layer>`` the module
name (``fc1``, ``conv17``, ``head``)::

    weights/<layer>  acts/<layer>  grads/<layer>                    histograms
    stats/{weight,act,grad}_{mean,std,rms,nonfinite}/<layer>        scalars
    stats/grad_norm/<layer>  stats/update_ratio/<layer>             ||dL/dW||, ||dW|| / ||W||
    stats/dead_frac/<layer>       (ReLU family)
    stats/saturated_frac/<layer>  (tanh, sigmoid, softsign)
    stats/{branch_rms,shortcut_rms,out_rms,branch_ratio}/<block>   residual blocks
                                  (initbench.telemetry.residual: a branch's output scale)

Activations are the activation module's output (post-activation; the head's raw output),
taken in training mode (before dropout); weights and gradients are the ones of that step,
before the optimizer updates them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from initbench.telemetry.residual import BLOCK_KEYS, BranchMonitor
from initbench.telemetry.sinks import Histogram, Sink
from initbench.telemetry.stats import (
    COL,
    FIELDS,
    MAX_BINS,
    find_probes,
    row_norms,
    stack,
    summarize,
)

KINDS = ("weight", "act", "grad")  # row blocks of a snapshot, in this order
HISTOGRAM_PREFIX = {"weight": "weights", "act": "acts", "grad": "grads"}


class Telemetry:
    """Per-layer snapshots of a model during training, written to ``sink``.

    Args:
        model: the network being trained (its Linear/Conv layers are observed).
        sink: where the histograms and scalars go.
        every_n_steps: snapshot interval in optimizer steps (step 0 is always a snapshot).
        every_n_epochs: if set, snapshot at the first step of every N-th epoch instead.
        steps_per_epoch: optimizer steps per epoch (needed with ``every_n_epochs``).
        histograms: log histograms (False: scalar statistics only).
        bins: histogram bins (<= 512).
        example: an input the model takes (one example is enough): pairs every layer with the
            activation the forward pass calls after it (:func:`find_probes`).
    """

    def __init__(
        self,
        model: nn.Module,
        sink: Sink,
        *,
        every_n_steps: int | None = 100,
        every_n_epochs: int | None = None,
        steps_per_epoch: int | None = None,
        histograms: bool = True,
        bins: int = 64,
        example: torch.Tensor | None = None,
    ) -> None:
        if every_n_steps is None and every_n_epochs is None:
            raise ValueError("Telemetry needs every_n_steps or every_n_epochs")
        if not 1 <= bins <= MAX_BINS:
            raise ValueError(f"bins must be in [1, {MAX_BINS}] (got {bins})")
        if every_n_epochs is not None:
            if not steps_per_epoch:
                raise ValueError("telemetry.every_n_epochs needs steps_per_epoch")
            self.interval = every_n_epochs * steps_per_epoch
        else:
            self.interval = every_n_steps
        self.sink = sink
        self.bins = bins if histograms else 0
        self.probes = find_probes(model, example)
        self.branches = BranchMonitor(model)
        self.names = [p.name for p in self.probes]
        self.activations = [p.activation for p in self.probes]
        self.families = [p.family for p in self.probes]
        self._hooks: list[Any] = []
        self._acts: list[torch.Tensor | None] = []
        self._weights0 = None
        self._pending: list[torch.Tensor] = []
        self.snapshots: list[int] = []  # the steps snapshotted so far

    def is_snapshot(self, step: int) -> bool:
        """Whether ``step`` (0-based global step) gets a snapshot."""
        return step % self.interval == 0

    def _weights(self) -> list[torch.Tensor]:
        return [p.layer.weight for p in self.probes]

    def before_step(self, step: int) -> None:
        if not self.is_snapshot(step):
            return
        self._acts = [None] * len(self.probes)
        for i, probe in enumerate(self.probes):
            self._hooks.append(probe.output.register_forward_hook(self._catch(i)))
        self.branches.start()
        self._weights0 = stack(self._weights())

    def _catch(self, i: int):
        def hook(module, inputs, output):
            self._acts[i] = output.detach()

        return hook

    def after_backward(self, step: int) -> None:
        if self._weights0 is None:
            return
        self._remove_hooks()
        self.branches.stop()
        # a layer the forward pass skipped shows as one NaN
        acts = [
            a if a is not None else torch.full((1,), float("nan"), device=p.layer.weight.device)
            for a, p in zip(self._acts, self.probes, strict=True)
        ]
        grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in self._weights()]
        n = len(self.probes)
        self._pending = [
            summarize(stack(acts, self.activations), n, self.bins),
            summarize(stack(grads), n, self.bins),
        ]
        self._acts = []

    def after_step(self, step: int) -> None:
        if self._weights0 is None:
            return
        n = len(self.probes)
        updates = stack(self._weights())
        for new, old in zip(updates, self._weights0, strict=True):
            new.data.sub_(old.data)
        update_norms = row_norms(updates, n)
        weights = summarize(self._weights0, n, self.bins)
        acts, grads = self._pending
        # The one device -> host copy of this snapshot.
        host = torch.cat([weights, acts, grads, _pad(update_norms, weights.shape[1])])
        host = host.cpu().numpy()
        self._weights0, self._pending = None, []
        self._log(host.reshape(4, n, -1), step)  # blocks: weights, acts, grads, update norms
        self.snapshots.append(step)

    def _log(self, blocks: np.ndarray, step: int) -> None:
        scalars: dict[str, float] = {}
        histograms: dict[str, Histogram] = {}
        for i, name in enumerate(self.names):
            for kind, block in zip(KINDS, blocks[:3], strict=True):
                row = block[i]
                for stat in ("mean", "std", "rms", "nonfinite"):
                    scalars[f"stats/{kind}_{stat}/{name}"] = float(row[COL[stat]])
                if self.bins:
                    edges = np.linspace(row[COL["lo"]], row[COL["hi"]], self.bins + 1)
                    histograms[f"{HISTOGRAM_PREFIX[kind]}/{name}"] = (edges, row[len(FIELDS) :])
            weight, act, grad = blocks[0][i], blocks[1][i], blocks[2][i]
            scalars[f"stats/grad_norm/{name}"] = float(_norm(grad))
            with np.errstate(divide="ignore", invalid="ignore"):  # all-zero weights: inf or nan
                scalars[f"stats/update_ratio/{name}"] = float(blocks[3][i][0] / _norm(weight))
            if self.families[i] == "relu":
                scalars[f"stats/dead_frac/{name}"] = float(act[COL["dead_frac"]])
            elif self.families[i] == "saturating":
                scalars[f"stats/saturated_frac/{name}"] = float(act[COL["saturated_frac"]])
        for name, row in zip(self.branches.names, self.branches.values(), strict=True):
            for key, value in zip(BLOCK_KEYS, row, strict=True):
                scalars[f"stats/{key}/{name}"] = float(value)
        if histograms:
            self.sink.log_histograms(histograms, step)
        self.sink.log_scalars(scalars, step)

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


def _norm(row: np.ndarray) -> float:
    """The L2 norm of a tensor's finite elements, from its statistics row."""
    return row[COL["rms"]] * math.sqrt(row[COL["count"]])


def _pad(column: torch.Tensor, width: int) -> torch.Tensor:
    """A column as the first entry of rows ``width`` wide (NaN elsewhere), to cat with them."""
    out = torch.full((column.shape[0], width), float("nan"), dtype=column.dtype,
                     device=column.device)  # fmt: skip
    out[:, 0] = column
    return out


def build_telemetry(
    node: Mapping[str, Any],
    model: nn.Module,
    sink: Sink,
    *,
    steps_per_epoch: int,
    example: torch.Tensor | None = None,
) -> Telemetry | None:
    """The observer a checked ``telemetry`` config node asks for (None when it is disabled)."""
    params = dict(node)
    if not params.pop("enabled"):
        return None
    return Telemetry(model, sink, steps_per_epoch=steps_per_epoch, example=example, **params)
