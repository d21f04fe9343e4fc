"""Per residual block: how big the branch's contribution is next to the shortcut's.

For a residual network without normalization the statistic that tells the schemes apart at
step 0 is the scale of each branch's output against the stream it is added to: Fixup, SkipInit,
ReZero and ZerO start every branch at 0 (ratio 0), He init adds branches as large as the
stream, which then doubles in variance block after block. :class:`BranchMonitor` hooks each
:class:`~initbench.models.ResidualBlock` of a model for one forward pass and gives, per block,
the RMS of the branch's output after its gate (``branch_rms``), of the shortcut's output
(``shortcut_rms``) and of the block's output (``out_rms``), and ``branch_ratio`` =
branch_rms / shortcut_rms. The reductions stay on the device until :meth:`values` copies them
to the host once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from initbench.models.residual import residual_blocks

BLOCK_KEYS = ("branch_rms", "shortcut_rms", "out_rms", "branch_ratio")


def _rms(x: Tensor) -> Tensor:
    x = x.detach().float()
    return x.pow(2).mean().sqrt() if x.numel() else torch.full((), float("nan"), device=x.device)


class BranchMonitor:
    """Hooks on every residual block of ``model`` while :meth:`start` ... :meth:`stop` (or
    ``with``) lasts; each forward pass in between overwrites the last one's values. A model
    without residual blocks gives no rows."""

    def __init__(self, model: nn.Module) -> None:
        self.blocks = residual_blocks(model)
        self.names = [name or "<root>" for name, _ in self.blocks]
        self._handles: list[Any] = []
        self._values: dict[tuple[int, str], Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def _catch(self, i: int, key: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor):
                self._values[(i, key)] = _rms(output)

        return hook

    def start(self) -> BranchMonitor:
        self._values = {}
        for i, (_, block) in enumerate(self.blocks):
            for part, key in ((block.gate, "branch_rms"), (block.shortcut, "shortcut_rms"),
                              (block, "out_rms")):  # fmt: skip
                self._handles.append(part.register_forward_hook(self._catch(i, key)))
        return self

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> BranchMonitor:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def values(self) -> np.ndarray:
        """blocks x :data:`BLOCK_KEYS` (NaN where the pass did not reach a block), one copy to
        the host."""
        if not self.blocks:
            return np.zeros((0, len(BLOCK_KEYS)))
        nan = torch.tensor(float("nan"))
        device = next((v.device for v in self._values.values()), nan.device)
        cols = [
            torch.stack(
                [self._values.get((i, key), nan.to(device)) for i in range(len(self.blocks))]
            )
            for key in BLOCK_KEYS[:3]
        ]
        table = torch.stack(cols, 1).double().cpu().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = table[:, 0] / table[:, 1]
        return np.column_stack([table, ratio])

    def rows(self) -> list[dict[str, Any]]:
        """One dict per block: ``name`` and :data:`BLOCK_KEYS`."""
        return [
            {"name": name, **{k: float(v) for k, v in zip(BLOCK_KEYS, row, strict=True)}}
            for name, row in zip(self.names, self.values(), strict=True)
        ]
