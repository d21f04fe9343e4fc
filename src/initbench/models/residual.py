"""Residual blocks the init schemes can see: ``out = post(shortcut(x) + gate(branch(entry(x))))``.

A network built from :class:`ResidualBlock` (the shipped ResNet, or one's own) exposes its
residual branches to the schemes made for them: ``fixup``, ``skipinit`` and ``rezero`` change
the block's small parts (``entry``, ``gate``, ``post``, scalar biases inside the branch), and
``fixup`` and ``zero_init`` find each branch's layers (:func:`branch_layers`). Until a scheme
changes them, ``entry``, ``gate`` and ``post`` are what the builder gave (identities, and the
block's activation as ``post`` in a post-activation block), so the block is the plain
``post(shortcut(x) + branch(x))``.

The scalar modules a scheme adds are parameters of the model (they train, they are counted,
checkpointed and packed): :class:`Gate` (a multiplier, with a bias for Fixup) and
:class:`ScalarBias`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

# The layers an init scheme draws (initbench.inits.LAYER_TYPES is this tuple).
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ScalarBias(nn.Module):
    """``x + b`` with one trainable scalar ``b`` (Fixup's scalar biases), 0 when made.
    ``lr_scale``: its learning rate as a fraction of the run's (:func:`lr_scales`)."""

    def __init__(self, lr_scale: float = 1.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.lr_scale = lr_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


class Gate(nn.Module):
    """``scale * x`` (+ ``bias`` when made with ``bias=True``) with trainable scalars: the
    multiplier on a residual branch (SkipInit's and ReZero's alpha, Fixup's scale and last
    bias). ``lr_scale``: their learning rate as a fraction of the run's (:func:`lr_scales`)."""

    def __init__(self, scale: float = 1.0, bias: bool = False, lr_scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(scale)))
        self.bias = nn.Parameter(torch.zeros(1)) if bias else None
        self.lr_scale = lr_scale

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.scale
        return x + self.bias if self.bias is not None else x


class ResidualBlock(nn.Module):
    """``post(shortcut(entry(x)) + gate(branch(entry(x))))``; an identity shortcut takes ``x``
    itself (as Fixup's code: only a downsampling shortcut sees the entry bias).

    Args:
        branch: the residual branch, an ``nn.Sequential`` (its children are named, e.g.
            ``conv1, act1, conv2``); Fixup puts its scalar biases between them.
        shortcut: what the block adds the branch to (default: the identity).
        post: what follows the sum (a post-activation block's activation; default: none).
    """

    def __init__(
        self,
        branch: nn.Sequential,
        shortcut: nn.Module | None = None,
        post: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(branch, nn.Sequential):
            raise ValueError(
                f"a ResidualBlock's branch must be an nn.Sequential (got {type(branch).__name__})"
            )
        self.entry: nn.Module = nn.Identity()
        self.branch = branch
        self.gate: nn.Module = nn.Identity()
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.post = post if post is not None else nn.Identity()
        self.form: str | None = None  # the scheme that changed the block (fixup, skipinit, ...)

    def forward(self, x: Tensor) -> Tensor:
        h = self.entry(x)
        skip = self.shortcut(x if isinstance(self.shortcut, nn.Identity) else h)
        return self.post(skip + self.gate(self.branch(h)))


def residual_blocks(model: nn.Module) -> list[tuple[str, ResidualBlock]]:
    """The model's residual blocks, ``(qualified name, block)`` in ``named_modules`` order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ResidualBlock)]


def branch_layers(block: ResidualBlock) -> list[nn.Module]:
    """The Linear/Conv layers of a block's branch, in definition order."""
    return [m for m in block.branch.modules() if isinstance(m, LAYER_TYPES)]


def branch_positions(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Every Linear/Conv layer inside a residual branch: its qualified name -> (position in its
    branch, number of layers in that branch). Layers outside branches are not in it."""
    where: dict[str, tuple[int, int]] = {}
    for block_name, block in residual_blocks(model):
        prefix = f"{block_name}.branch." if block_name else "branch."
        layers = [(n, m) for n, m in block.branch.named_modules() if isinstance(m, LAYER_TYPES)]
        for i, (name, _) in enumerate(layers):
            where[prefix + name] = (i, len(layers))
    return where


def require_blocks(model: nn.Module, scheme: str) -> list[tuple[str, ResidualBlock]]:
    """The residual blocks; ValueError naming the scheme when the model has none."""
    blocks = residual_blocks(model)
    if not blocks:
        raise ValueError(
            f"init {scheme!r} is made for residual networks, and {type(model).__name__} has no "
            f"residual blocks: use model=resnet (resnet20, resnet56, resnet110), or build your "
            f"network's blocks from initbench.models.ResidualBlock"
        )
    return blocks


def claim(block: ResidualBlock, form: str) -> bool:
    """Mark ``block`` as changed by ``form``; False when it already was (nothing to add), and
    ValueError when another scheme changed it."""
    if block.form == form:
        return False
    if block.form is not None:
        raise ValueError(
            f"this model's residual blocks were changed for init {block.form!r}; build the "
            f"model again for init {form!r}"
        )
    block.form = form
    return True


def insert_before(
    seq: nn.Sequential, wanted: Callable[[nn.Module], bool], skip_first: bool
) -> None:
    """Put a :class:`ScalarBias` (named ``bias_<child>``) before each child of ``seq`` that
    ``wanted`` accepts, except the first such child when ``skip_first``."""
    items: list[tuple[str, nn.Module]] = []
    first = True
    for name, child in seq.named_children():
        if wanted(child):
            if not (first and skip_first):
                items.append((f"bias_{name}", ScalarBias()))
            first = False
        items.append((name, child))
    seq._modules = OrderedDict(items)


def added_parameters(model: nn.Module) -> int:
    """How many scalars a residual scheme added to ``model`` (its :class:`ScalarBias` and
    :class:`Gate` parameters; 0 for a model no scheme changed)."""
    return sum(
        p.numel() for m in model.modules() if isinstance(m, (ScalarBias, Gate))
        for p in m.parameters(recurse=False)
    )  # fmt: skip


def lr_scales(model: nn.Module) -> list[float]:
    """Each parameter's learning-rate factor, in ``model.parameters()`` order: a module's
    ``lr_scale`` (Fixup's scalars train at a tenth of the run's rate), 1 for the others."""
    scale = {
        id(p): float(getattr(m, "lr_scale", 1.0))
        for m in model.modules() for p in m.parameters(recurse=False)
    }  # fmt: skip
    return [scale[id(p)] for p in model.parameters()]
