"""Packed runs: runs of one network that differ only in init and seed, trained together.

:func:`run_pack` takes the members' resolved configs (each as ``initbench.run.run`` takes one)
and one run directory each. Every member is checked, locked, skipped when already done, resumed
from its own checkpoint, and recorded in its own directory with the files an unpacked run
writes there (config.yaml, checkpoint.pt, metrics.jsonl, summary.json, weights.npz,
diagnose.json, TensorBoard events, its own W&B run), so reports and dashboards see ordinary
runs. The training itself is one batched model (:mod:`initbench.packing`).

A member's checkpoint has the form of an unpacked run's: a pack resumes from its members'
checkpoints, and members found at different points (a kill between two members' saves) train
as separate packs, one per resume point.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from initbench import inits
from initbench.build import (
    check_memory,
    load_data,
    max_pack_members,
    meta_model,
    prepare,
    validate,
)
from initbench.checkpoint import config_changes, load_previous_checkpoint
from initbench.config import PACK_MEMBER_KEYS
from initbench.data import is_seeded
from initbench.engine import Callback, fit, optimizer_for, optimizer_params
from initbench.errors import Interrupted, UserError
from initbench.io import atomic_write
from initbench.lock import hold_run_dir
from initbench.models.residual import lr_scales
from initbench.packing import (
    Member,
    PackedModel,
    PackedTraining,
    check_packable,
    member_optimizer_state,
    refuse_batch_norm,
    stacked_optimizer_state,
)
from initbench.run import (
    MakeOptimizer,
    Session,
    already_done,
    check_optimizer,
    check_writable,
    epoch_callbacks,
    interrupted_before_training,
    record_failure,
    recording_early_ends,
    resumable_checkpoint,
    start_threads,
)
from initbench.signals import stop_on_signals

log = logging.getLogger(__name__)

# What may differ between the members of a pack (with what follows from them: the run name).
PACK_VARIES = (*PACK_MEMBER_KEYS, "run_name")


def check_pack(cfgs: Sequence[Mapping[str, Any]]) -> None:
    """The members must differ only in :data:`PACK_VARIES`, and their model must be one a pack
    can train.

    Raises:
        UserError: naming the member and the field that differs, or the setting a pack cannot
            honour. (Members may share a run name, e.g. ``init.std`` variants: their run
            directories tell them apart.)
    """
    if not cfgs:
        raise UserError("a pack needs at least one member (got none)")
    first = cfgs[0]
    for i, cfg in enumerate(cfgs[1:], start=2):
        changed = config_changes(first, cfg, allowed=PACK_VARIES)
        if changed:
            raise UserError(
                f"the members of a pack may differ only in init and seed; member {i} "
                f"({cfg['run_name']}) differs from member 1 ({first['run_name']}) in "
                f"{'; '.join(changed)}"
            )
    structures = {inits.structure_scheme(cfg["init"]["name"]) for cfg in cfgs}
    if len(structures) > 1:
        raise UserError(
            f"the members of a pack must share one model structure, and init "
            f"{' and '.join(sorted(s for s in structures if s))} adds its own scalars to "
            f"the model's residual blocks: pack its runs apart from the others (the sweep "
            f"runner does)"
        )
    try:
        refuse_batch_norm(meta_model(first))  # the model's structure, before anything is built
    except ValueError as err:
        raise UserError(str(err)) from None
    if first["trainer"]["compile"]:
        raise UserError("trainer.compile must be false in a pack (got true); run it unpacked")


def run_pack(
    cfgs: Sequence[Mapping[str, Any]],
    run_dirs: Sequence[str | Path],
    make_optimizer: MakeOptimizer,
    choices: Sequence[Mapping[str, Any] | None] | None = None,
    *,
    max_members: int | None = None,
) -> list[dict[str, Any]]:
    """Train the members ``cfgs`` (one run directory each) as packs of at most ``max_members``
    (and as many as fit in memory). Returns each member's summary, in order.

    Raises:
        UserError: a bad value, members that differ in more than init and seed, a run
            directory that cannot be written, before any training.
        Interrupted: SIGTERM/SIGINT; every member still training saved a checkpoint first.
    """
    cfgs, run_dirs = [dict(c) for c in cfgs], [Path(d) for d in run_dirs]
    choices = list(choices) if choices is not None else [None] * len(cfgs)
    if not len(cfgs) == len(run_dirs) == len(choices):
        raise ValueError("run_pack needs one run directory (and choices) per member")
    if len(set(run_dirs)) != len(run_dirs):
        raise UserError("two members of the pack have the same run directory")
    if max_members is not None and max_members < 1:
        raise UserError(f"pack.max_members must be >= 1 or null (got {max_members})")
    for cfg in cfgs:
        validate(cfg)
    check_pack(cfgs)
    for run_dir in run_dirs:
        check_writable(run_dir)
    summaries: list[dict[str, Any] | None] = [None] * len(cfgs)
    with ExitStack() as stack:
        for run_dir in run_dirs:
            stack.enter_context(hold_run_dir(run_dir))
        received = stack.enter_context(stop_on_signals())
        todo: list[tuple[int, Mapping[str, Any] | None]] = []
        with interrupted_before_training(cfgs, run_dirs):
            for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
                done = already_done(cfg, run_dir)
                if done is not None:
                    summaries[i] = done
                    continue
                ckpt = resumable_checkpoint(cfg, run_dir)
                with atomic_write(run_dir / "config.yaml") as f:
                    yaml.safe_dump(cfg, f, sort_keys=False)
                todo.append((i, ckpt))
            if todo:
                check_optimizer(make_optimizer)
        groups = pack_groups(cfgs, align_checkpoints(todo, run_dirs), max_members)
        log.info(
            "%d member(s): %d already done, %d to train in %d pack(s)",
            len(cfgs), len(cfgs) - len(todo), len(todo), len(groups),
        )  # fmt: skip
        for group in groups:
            members = [(i, cfgs[i], run_dirs[i], ckpt, choices[i]) for i, ckpt in group]
            # A signal before the pack's first step (while it prepares, or runs its members'
            # step-0 reports) stops it as it stops a run: recorded interrupted, exit 128 + n.
            with interrupted_before_training([m[1] for m in members], [m[2] for m in members]):
                pack = Pack(members, make_optimizer)
                outcomes = pack.run(received)
            for i, summary in outcomes.items():
                summaries[i] = summary
    return [s if s is not None else {} for s in summaries]


def pack_groups(
    cfgs: Sequence[Mapping[str, Any]],
    todo: Sequence[tuple[int, Mapping[str, Any] | None]],
    max_members: int | None,
) -> list[list[tuple[int, Mapping[str, Any] | None]]]:
    """The members to train, split into packs: one per resume point (members saved at
    different steps cannot share a step), then at most ``max_members`` and what fits."""
    if not todo:
        return []
    by_point: dict[tuple[int, int], list[tuple[int, Mapping[str, Any] | None]]] = {}
    for i, ckpt in todo:
        by_point.setdefault(_point(ckpt), []).append((i, ckpt))
    cfg = cfgs[todo[0][0]]
    fits = max_pack_members(cfg, validate(cfg), datasets=_distinct_datasets(cfgs))
    size = min(max_members or fits, fits)
    return [
        members[j : j + size]
        for _, members in sorted(by_point.items())
        for j in range(0, len(members), size)
    ]


def _point(ckpt: Mapping[str, Any] | None) -> tuple[int, int]:
    """Where a checkpoint stands: (epochs done, optimizer steps); a fresh start is (0, 0)."""
    state = ckpt["train_state"] if ckpt is not None else {}
    return state.get("epoch", 0), state.get("global_step", 0)


def align_checkpoints(
    todo: list[tuple[int, Mapping[str, Any] | None]], run_dirs: Sequence[Path]
) -> list[tuple[int, Mapping[str, Any] | None]]:
    """Members ahead of the others go back to their previous checkpoint when it is where the
    others stand: a pack stopped while its members saved one after another (a kill between
    two saves) resumes as the one pack it was, so its dropout draws continue exactly."""
    points = {_point(ckpt) for _, ckpt in todo}
    if len(points) < 2:
        return todo
    behind = min(points)
    aligned = []
    for i, ckpt in todo:
        if _point(ckpt) != behind:
            previous = load_previous_checkpoint(run_dirs[i])
            if previous is not None and _point(previous) == behind:
                log.info("%s: back to its previous checkpoint, with its pack", run_dirs[i])
                ckpt = previous
        aligned.append((i, ckpt))
    return aligned


def _data_key(cfg: Mapping[str, Any]) -> int | None:
    """Members with the same key share one loaded dataset: the seed for synthetic sets."""
    return cfg["seed"] if is_seeded(cfg["dataset"]["name"]) else None


def _distinct_datasets(cfgs: Sequence[Mapping[str, Any]]) -> int:
    return len({_data_key(c) for c in cfgs})


class MemberSession(Session):
    """One member's run directory: an unpacked run's session whose model is a view into the
    pack, whose optimizer state is its slice of the pack's."""

    packed = True

    def __init__(self, pack: Pack, *args: Any, **kwargs: Any) -> None:
        self.pack = pack
        super().__init__(*args, **kwargs)

    def model_state(self) -> dict[str, Any]:
        # Clones: a view would save the whole stack into every member's checkpoint.
        return {k: v.clone() for k, v in self.prep.model.state_dict().items()}

    def optimizer_state(self) -> dict[str, Any]:
        training = self.pack.training
        position = training.ids.index(self.pack.sessions.index(self))
        return member_optimizer_state(training.optimizer, position)


def _check_packable(prep: Any) -> None:
    try:
        check_packable(prep.model, prep.data.train_x[:2])
    except ValueError as err:
        raise UserError(str(err)) from None


def pack_record(
    ckpt: Mapping[str, Any] | None, members: int, position: int, session: Session
) -> dict[str, Any]:
    """A member's ``summary.json["pack"]``: the pack's size and the member's position, and
    ``changes``, every resume in a pack of another size (a member's folder deleted, a member
    done or failed): dropout draws depend on who is in the pack, so its metrics from that epoch
    on differ from those of the uninterrupted pack."""
    before = (ckpt or {}).get("pack")
    changes = list(before.get("changes") or []) if isinstance(before, dict) else []
    if isinstance(before, dict) and before.get("members") != members:
        changes.append({"at_epoch": session.state.epoch, "members_before": before.get("members"),
                        "members_after": members})  # fmt: skip
        log.warning(
            "%s resumes in a pack of %d (it was in a pack of %s): its metrics from epoch %d on "
            "differ from those of the pack it started in (dropout draws depend on the members)",
            session.cfg["run_name"], members, before.get("members"), session.state.epoch,
        )  # fmt: skip
    record: dict[str, Any] = {"members": members, "position": position}
    if changes:
        record["changes"] = changes
    return record


class Pack(Callback):
    """Members prepared together: their data loaded once, their models built and initialized
    as their own runs would be, their sessions opened (sinks, summaries); trained by
    :func:`initbench.engine.fit`, whose callback it is for a member found diverged."""

    def __init__(
        self,
        members: Sequence[tuple[int, Mapping[str, Any], Path, Mapping[str, Any] | None, Any]],
        make_optimizer: MakeOptimizer,
    ) -> None:
        cfgs = [m[1] for m in members]
        self.cfg = cfgs[0]
        self.make_optimizer = make_optimizer
        self.device = validate(self.cfg)
        check_memory(self.cfg, self.device, members=len(cfgs), datasets=_distinct_datasets(cfgs))
        self.ids: list[int] = []  # the original index of each member with a session
        self.sessions: list[MemberSession] = []
        self.training: PackedTraining | None = None
        # A member that cannot start (its init refuses the model, ...) is recorded failed and
        # left out; the others are built first, and their sessions opened only then.
        self.failed: dict[int, dict[str, Any]] = {}
        loaded: dict[int | None, Any] = {}
        prepared, errors = [], []
        for member in members:
            i, cfg, run_dir, _, _ = member
            try:
                key = _data_key(cfg)
                if key not in loaded:
                    loaded[key] = load_data(cfg, self.device)
                prep = prepare(cfg, data=loaded[key], check=False)
                if not prepared:  # the first member: can this model be packed at all?
                    _check_packable(prep)
            except UserError as err:
                self.failed[i] = record_failure(cfg, run_dir, err)
                errors.append(err)
                log.error("%s cannot start: %s", cfg["run_name"], err)
                continue
            prep.channels_last = False  # a pack's inputs are K x B x C x H x W
            prepared.append((member, prep))
        if not prepared:
            raise errors[0]  # the same for all (missing data): one line
        for (i, cfg, run_dir, ckpt, choices), prep in prepared:
            self.ids.append(i)
            self.sessions.append(
                MemberSession(self, cfg, run_dir, prep, make_optimizer, ckpt, choices)
            )
        for position, ((_, _, _, ckpt, _), session) in enumerate(
            zip([m for m, _ in prepared], self.sessions, strict=True)
        ):
            session.summary["pack"] = pack_record(ckpt, len(self.sessions), position, session)
        log.info(
            "pack of %d: %s",
            len(self.sessions),
            ", ".join(s.cfg["run_name"] for s in self.sessions),
        )

    def run(self, received_signal: Callable[[], int | None]) -> dict[int, dict[str, Any]]:
        """Train; every member's outcome recorded as its own run's would be. Whatever ends
        the pack early is recorded in every unfinished member's summary.json first."""
        self.summaries: dict[int, dict[str, Any]] = dict(self.failed)
        self.open = list(range(len(self.sessions)))  # members not finished
        failed = "; the pack's members are recorded as failed"
        with recording_early_ends(self._open_sessions, self.sessions[0].run_dir, failed):
            self._train(received_signal)
            return self._finish(received_signal())

    def _open_sessions(self) -> list[MemberSession]:
        return [self.sessions[k] for k in self.open]

    def _train(self, received_signal: Callable[[], int | None]) -> None:
        trainer = self.cfg["trainer"]
        members = []
        for session in self.sessions:
            session.step0()  # on the member's own model, before it joins the pack
            telemetry = session.telemetry()
            members.append(Member(session.state, session.data_gen, session.prep.data, telemetry))
        pack = PackedModel([s.prep.model for s in self.sessions], self.device)
        # the members' parameter groups (Fixup's scalars at their own rate), over the stacks
        make = functools.partial(optimizer_for, self.make_optimizer, scales=lr_scales(pack.base))
        optimizer = make(pack.parameters())
        if not self.sessions[0].fresh:
            optimizer.load_state_dict(
                stacked_optimizer_state(
                    [s.optimizer.state_dict() for s in self.sessions], optimizer_params(optimizer)
                )
            )
        for session in self.sessions:
            session.optimizer = None  # the pack's optimizer holds every member's state
        self.training = PackedTraining(
            pack, members, optimizer, make, batch_size=trainer["batch_size"],
            eval_batch_size=trainer["eval_batch_size"], precision=self.sessions[0].prep.precision,
        )  # fmt: skip
        start_threads(self.sessions[0])
        fit(
            self.training, [m.state for m in members], epochs=trainer["epochs"],
            sinks=[s.sink for s in self.sessions],
            callbacks=[*epoch_callbacks(self.sessions), self],
            should_stop=lambda: received_signal() is not None,
        )  # fmt: skip

    def on_diverged(self, k: int) -> None:
        """A member found diverged: recorded now, before it leaves the pack."""
        self.summaries[self.ids[k]] = self.sessions[k].finish(self.sessions[k].state, None)
        self.open.remove(k)

    def _finish(self, signum: int | None) -> dict[int, dict[str, Any]]:
        interrupted: Interrupted | None = None
        for k in list(self.open):
            session = self.sessions[k]
            if session.state.status == "interrupted":
                session.checkpoint(session.state)
            try:
                self.summaries[self.ids[k]] = session.finish(session.state, signum)
            except Interrupted as stop:
                interrupted = stop
            self.open.remove(k)
        if interrupted is not None:
            name = signal.Signals(interrupted.signum).name
            raise Interrupted(
                interrupted.signum,
                self.sessions[0].run_dir,
                message=f"stopped by {name}; every member still training saved a checkpoint in "
                "its run directory.",
            )
        return self.summaries
