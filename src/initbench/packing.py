"""Packed training: K members of one architecture trained as one batched model.

The members share the architecture, dataset, activation, optimizer and schedule, and differ in
their initial weights (scheme, hparams, seed) and their data order. Their parameters are
stacked along a new leading dimension (``torch.func.stack_module_state``) and the network is
run once for all of them with ``torch.func.functional_call`` under ``torch.vmap``
(``randomness="different"``: every member draws its own dropout masks). The loss is the sum of
the members' mean losses, so each member's gradient is exactly its own; SGD and Adam act
element-wise, so one optimizer over the stacked parameters updates each member as its own
optimizer would.

:class:`PackedTraining` is the pack as an :class:`initbench.engine.Trainable`: the loop is
:func:`initbench.engine.fit`'s, the one a plain run uses. Each member keeps its own
:class:`~initbench.engine.TrainState` and data-order generator; a step gathers every member's
batch from its own permutation in one index gather. A member whose loss turns non-finite is
found at the next divergence check (as an unpacked run would), told to the callbacks, and
dropped from the pack: its parameters and optimizer state leave the stacks, so it is frozen and
costs nothing more.

Each member also has a plain ``nn.Module`` whose parameters are views into the stacks, so
what works on one model (telemetry hooks, weight samples, state dicts for its checkpoint) works
on a member unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from initbench.data import DeviceDataset
from initbench.data.base import crop_and_flip
from initbench.engine import StepObserver, TrainState, autocast_context, optimizer_params

log = logging.getLogger(__name__)

MakeOptimizer = Callable[..., torch.optim.Optimizer]


ALONE = "train its members as separate runs (src/train.py, or a sweep without packs)"


def refuse_batch_norm(model: nn.Module) -> None:
    """ValueError naming the first batch-norm layer: its running statistics are buffers that
    change in training, which a pack's stacked forward pass cannot update per member."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"this model cannot be packed: it has batch norm ({name}: "
                f"{type(module).__name__}), whose running statistics a pack cannot keep per "
                f"member; {ALONE}"
            )


def check_packable(model: nn.Module, example: Tensor) -> None:
    """Refuse, with one line, a model a pack cannot train: batch norm, or a forward pass that
    ``torch.vmap`` cannot run (data-dependent control flow such as ``if x.sum() > 0``, or
    ``.item()``). Runs two stacked copies of ``model`` on ``example`` (a batch of 1-2 inputs);
    ``model`` is left as it was."""
    refuse_batch_norm(model)
    base = copy.deepcopy(model)
    params, buffers = stack_module_state([base, base])

    def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x,))

    try:
        with torch.no_grad():
            torch.vmap(one, in_dims=(0, 0, None), randomness="different")(params, buffers, example)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"this model cannot be packed: torch.vmap cannot run its forward pass ({reason}); "
            f"{ALONE}"
        ) from None


class PackedModel:
    """K copies of one architecture with their own weights, run as one batched model.

    Args:
        members: the members' modules, already initialized (same architecture, no buffers
            that change in training: batch norm is not supported). They are kept, with their
            parameters replaced by views into the stacks.
        device: where the stacks live.
    """

    def __init__(self, members: Sequence[nn.Module], device: torch.device) -> None:
        if not members:
            raise ValueError("a pack needs at least one member")
        refuse_batch_norm(members[0])
        self.base = copy.deepcopy(members[0]).to("meta")  # the structure functional_call runs
        params, buffers = stack_module_state(list(members))
        self.params = {n: nn.Parameter(p.detach().to(device)) for n, p in params.items()}
        self.buffers = {n: b.to(device) for n, b in buffers.items()}
        self.members = list(members)
        self._bind_views()

    def __len__(self) -> int:
        return len(self.members)

    def parameters(self) -> list[nn.Parameter]:
        """The stacked parameters, in the members' ``named_parameters`` order."""
        return list(self.params.values())

    def _bind_views(self) -> None:
        """Point every member's parameters at its slice of the stacks (no copy)."""
        for k, module in enumerate(self.members):
            for name, stacked in self.params.items():
                owner, _, attr = name.rpartition(".")
                sub = module.get_submodule(owner) if owner else module
                setattr(sub, attr, nn.Parameter(stacked.detach()[k], requires_grad=False))

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)
        for module in self.members:
            module.train(mode)

    def __call__(self, x: Tensor, shared: bool = False) -> Tensor:
        """Logits K x B x classes for inputs K x B x ... (or B x ... given to every member
        when ``shared``)."""

        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], xb: Tensor) -> Tensor:
            return functional_call(self.base, (params, buffers), (xb,))

        run = torch.vmap(one, in_dims=(0, 0, None if shared else 0), randomness="different")
        return run(self.params, self.buffers, x)

    def bind_grads(self) -> None:
        """Give every member's parameters their slice of the stacked gradients (telemetry)."""
        for k, module in enumerate(self.members):
            for name, param in module.named_parameters():
                grad = self.params[name].grad
                param.grad = None if grad is None else grad[k]

    def keep(self, keep: Sequence[int]) -> None:
        """Keep only the members at positions ``keep`` (new stacks; the others' modules keep
        the values they had)."""
        index = torch.tensor(list(keep), device=next(iter(self.params.values())).device)
        self.params = {
            n: nn.Parameter(p.detach().index_select(0, index)) for n, p in self.params.items()
        }
        self.buffers = {n: b.index_select(0, index) for n, b in self.buffers.items()}
        self.members = [self.members[k] for k in keep]
        self._bind_views()


# ------------------------------------------------------------------------------------------
# Optimizer state: one optimizer over the stacks <-> one per member (checkpoints)


def _is_stacked(value: Any, param: Tensor) -> bool:
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape == param.shape


def member_optimizer_state(optimizer: torch.optim.Optimizer, k: int) -> dict[str, Any]:
    """Member ``k``'s part of the pack optimizer's state, in the form an unpacked run's
    optimizer has (``state_dict()`` of an optimizer over the member's own parameters, grouped
    as the pack's by :func:`initbench.engine.optimizer_for`)."""
    full = optimizer.state_dict()
    state = {}
    for i, param in enumerate(optimizer_params(optimizer)):
        if i in full["state"]:
            state[i] = {
                key: value[k].clone() if _is_stacked(value, param) else copy.deepcopy(value)
                for key, value in full["state"][i].items()
            }
    return {"state": state, "param_groups": copy.deepcopy(full["param_groups"])}


def stacked_optimizer_state(
    member_states: Sequence[dict[str, Any]], params: Sequence[Tensor]
) -> dict[str, Any]:
    """The pack optimizer's state from its members' (the inverse of
    :func:`member_optimizer_state`); per-tensor values are stacked, scalars (Adam's step
    count, equal in a pack) taken from the first member. ``params``: the pack optimizer's,
    in its order (:func:`initbench.engine.optimizer_params`)."""
    first = member_states[0]
    state = {}
    for i, param in enumerate(params):
        if i not in first["state"]:
            continue
        entry = {}
        for key, value in first["state"][i].items():
            if isinstance(value, Tensor) and value.shape == param.shape[1:] and value.dim() > 0:
                entry[key] = torch.stack([m["state"][i][key] for m in member_states])
            else:
                entry[key] = value
        state[i] = entry
    return {"state": state, "param_groups": copy.deepcopy(first["param_groups"])}


def shrink_optimizer(
    optimizer: torch.optim.Optimizer,
    make_optimizer: MakeOptimizer,
    new_params: Sequence[nn.Parameter],
    keep: Sequence[int],
) -> torch.optim.Optimizer:
    """A new optimizer over ``new_params`` (the stacks after :meth:`PackedModel.keep`) with the
    kept members' state."""
    full = optimizer.state_dict()
    index = list(keep)
    for i, param in enumerate(optimizer_params(optimizer)):
        for key, value in full["state"].get(i, {}).items():
            if _is_stacked(value, param):
                full["state"][i][key] = value[index]
    new = make_optimizer(new_params)
    new.load_state_dict(full)
    return new


# ------------------------------------------------------------------------------------------
# The pack as a Trainable of engine.fit


@dataclass
class Member:
    """What a pack keeps per member besides the shared stacks."""

    state: TrainState  # its state, which engine.fit is given (fit(pack, [m.state ...]))
    generator: torch.Generator  # its data order (a CPU generator, seeded as its run's)
    data: DeviceDataset  # its dataset (one object for all members when the data are fixed)
    observer: StepObserver | None = None


Plans = tuple[Tensor, Tensor | None, Tensor | None]  # orders K x N, crops K x N x 2, flips K x N


class PackedTraining:
    """A :class:`PackedModel` and its members as an :class:`initbench.engine.Trainable`:
    ``fit(PackedTraining(...), [m.state for m in members], epochs=...)`` trains it, member by
    member as :func:`initbench.engine.train` would: the same data order per member, the same
    divergence checks, the same per-epoch metrics, ``final`` and ``history``.

    Args:
        pack: the members' stacked model.
        members: per member (the pack's order) its state, generator, data, sink, observer.
        optimizer: over ``pack.parameters()``.
        make_optimizer: builds an optimizer like ``optimizer`` (used when the pack shrinks).
        batch_size, eval_batch_size, precision: as for ``engine.train``.
    """

    def __init__(
        self,
        pack: PackedModel,
        members: Sequence[Member],
        optimizer: torch.optim.Optimizer,
        make_optimizer: MakeOptimizer,
        *,
        batch_size: int,
        eval_batch_size: int = 1024,
        precision: str = "fp32",
    ) -> None:
        if len(members) != len(pack):
            raise ValueError(f"{len(members)} members for a pack of {len(pack)}")
        self.pack, self.members, self.optimizer = pack, list(members), optimizer
        self.make_optimizer = make_optimizer
        self.ids = list(range(len(members)))  # original index of each member still packed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.precision = precision
        self.device = members[0].data.device
        self.shared_data = all(m.data is members[0].data for m in members)
        self.plans: Plans | None = None

    def __len__(self) -> int:
        return len(self.members)

    def num_batches(self) -> int:
        return self.members[0].data.num_batches("train", self.batch_size)

    def num_train(self) -> int:
        return len(self.members[0].data.train_y)

    def train(self, mode: bool = True) -> None:
        self.pack.train(mode)

    def models(self) -> list[nn.Module]:
        return list(self.pack.members)

    # -- batches -----------------------------------------------------------------------------

    def epoch(self, states: Sequence[TrainState]) -> range:
        for m, state in zip(self.members, states, strict=True):
            if state.step_in_epoch == 0:
                state.epoch_rng = m.generator.get_state()
            else:  # resume mid-epoch: replay this epoch's draws
                m.generator.set_state(state.epoch_rng)
        self.plans = self._epoch_plans()
        return range(states[0].step_in_epoch, self.num_batches())

    def _epoch_plans(self) -> Plans:
        """Every member's epoch draws from its own generator, stacked: orders K x N, crops
        K x N x 2 and flips K x N (augmentation only)."""
        plans = [m.data.epoch_plan(m.generator) for m in self.members]
        orders = torch.stack([p[0] for p in plans])
        if plans[0][1] is None:
            return orders, None, None
        return orders, torch.stack([p[1] for p in plans]), torch.stack([p[2] for p in plans])

    def _batch(self, plans: Plans, i: int) -> tuple[Tensor, Tensor]:
        """Batch ``i`` of the epoch for every member: inputs K x B x ..., labels K x B."""
        orders, crops, flips = plans
        idx = orders[:, i * self.batch_size : (i + 1) * self.batch_size]
        k, b = idx.shape
        data = self.members[0].data
        if self.shared_data:
            flat = idx.reshape(-1)
            x, y = data.train_x.index_select(0, flat), data.train_y.index_select(0, flat)
        else:
            pairs = list(zip(self.members, idx, strict=True))
            x = torch.cat([m.data.train_x.index_select(0, j) for m, j in pairs])
            y = torch.cat([m.data.train_y.index_select(0, j) for m, j in pairs])
        if crops is not None and flips is not None:
            sl = slice(i * self.batch_size, i * self.batch_size + b)
            x = crop_and_flip(x, crops[:, sl].reshape(-1, 2), flips[:, sl].reshape(-1))
        return x.view(k, b, *x.shape[1:]), y.view(k, b)

    # -- the step ----------------------------------------------------------------------------

    def step(self, i: int, step: int) -> tuple[Tensor, Tensor, int]:
        x, y = self._batch(self.plans, i)
        observers = [m.observer for m in self.members if m.observer is not None]
        for k, m in enumerate(self.members):
            if m.observer is not None:
                m.observer.before_step(step)
                if m.observer.is_snapshot(step):  # its hooks catch its own forward
                    with torch.no_grad(), autocast_context(self.device, self.precision):
                        self.pack.members[k](x[k])
        with autocast_context(self.device, self.precision):
            logits = self.pack(x)
            k, b = y.shape
            losses = F.cross_entropy(
                logits.float().reshape(k * b, -1), y.reshape(-1), reduction="none"
            ).view(k, b).mean(1)  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        if observers:
            self.pack.bind_grads()
            for o in observers:
                o.after_backward(step)
        self.optimizer.step()
        for o in observers:
            o.after_step(step)
        return losses.detach(), (logits.detach().argmax(-1) == y).sum(1), b

    def drop(self, keep: Sequence[int]) -> None:
        """Take the members not in ``keep`` out of the stacks, the optimizer and the plans."""
        self.pack.keep(keep)
        self.optimizer = shrink_optimizer(
            self.optimizer, self.make_optimizer, self.pack.parameters(), keep
        )
        self.members = [self.members[k] for k in keep]
        self.ids = [self.ids[k] for k in keep]
        self.shared_data = all(m.data is self.members[0].data for m in self.members)
        if self.plans is not None:
            index = torch.tensor(list(keep), device=self.device, dtype=torch.int64)
            self.plans = tuple(p.index_select(0, index) if p is not None else None
                               for p in self.plans)  # fmt: skip

    def evaluate(self, split: str = "test") -> tuple[list[float], list[float]]:
        """Every member's mean cross-entropy and accuracy on its ``split`` (test or holdout)."""
        datasets = [m.data for m in self.members]
        return evaluate_pack(self.pack, datasets, self.eval_batch_size, self.precision, split)


@torch.no_grad()
def evaluate_pack(
    pack: PackedModel,
    datasets: Sequence[DeviceDataset],
    batch_size: int,
    precision: str,
    split: str = "test",
) -> tuple[list[float], list[float]]:
    """Each member's mean cross-entropy and accuracy on its dataset's ``split`` (test or
    holdout; one batched pass over a split the members share)."""
    pack.train(False)
    k, data, device = len(datasets), datasets[0], datasets[0].device
    shared = all(d is data for d in datasets)
    splits = [d.tensors(split) for d in datasets]
    loss_sum = torch.zeros(k, device=device, dtype=torch.float64)
    correct = torch.zeros(k, device=device, dtype=torch.int64)
    n = len(splits[0][1])
    for i in range(0, n, batch_size):
        sl = slice(i, i + batch_size)
        if shared:
            x, y = splits[0][0][sl], splits[0][1][sl].expand(k, -1)
        else:
            x = torch.stack([xs[sl] for xs, _ in splits])
            y = torch.stack([ys[sl] for _, ys in splits])
        with autocast_context(device, precision):
            logits = pack(x, shared=shared)
        b = y.shape[1]
        losses = F.cross_entropy(
            logits.float().reshape(k * b, -1), y.reshape(-1), reduction="none"
        ).view(k, b)  # fmt: skip
        loss_sum += losses.sum(1)
        correct += (logits.argmax(-1) == y).sum(1)
    return (loss_sum / n).tolist(), (correct.double() / n).tolist()
