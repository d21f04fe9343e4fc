"""What a local sweep launches: one process per combination, or with ``--pack`` one per pack.

A pack is a group of combinations that differ only in ``init`` (and ``init.*``) and ``seed``,
and whose inits add the same structure to the model (``fixup``, ``skipinit`` and ``rezero``
each pack apart from the others):
``src/pack.py`` trains them as one batched model (:mod:`initbench.run_pack`), each member in
the folder its unpacked run would have (``<out>/<combination name>``), so skipping what is done
and resuming stay per combination, and packed and unpacked runs of one sweep mix freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from initbench import inits
from initbench.config import is_pack_member_key
from initbench.sweep.combinations import Combination, combination_name
from initbench.sweep.commands import build_command, fill_command
from initbench.sweep.spec import Sweep, SweepError

PACKS = "packs"  # <out>/packs/<pack name>: a pack's log and pack.json


@dataclass(frozen=True)
class Job:
    """One process of a local sweep and the combinations it runs."""

    name: str
    folder: Path  # its log (local_sweep.log) goes here
    combos: tuple[Combination, ...]
    cmd: list[str]

    @property
    def packed(self) -> bool:
        return self.folder.parent.name == PACKS


def single_jobs(sweep: Sweep, combos: Sequence[Combination], out_dir: Path) -> list[Job]:
    """One process per combination, in its own folder."""
    return [
        Job(c.name, out_dir / c.name, (c,), build_command(sweep, c, out_dir / c.name))
        for c in combos
    ]


def pack_program(program: str) -> str:
    """The pack entry point beside a sweep's training program: ``src/train.py`` ->
    ``src/pack.py``, ``initbench-train`` -> ``initbench-pack``.

    Raises:
        SweepError: the sweep does not run src/train.py (nothing to pack).
    """
    path = Path(program)
    if path.stem.removeprefix("initbench-") != "train":
        raise SweepError(
            f"--pack trains several combinations of src/train.py at once; this sweep runs "
            f"{program} (run it without --pack)"
        )
    return str(path.with_name(path.name.replace("train", "pack")))


def hydra_quote(text: str) -> str:
    """``text`` as a quoted string inside a Hydra override's list."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pack_jobs(
    sweep: Sweep,
    combos: Sequence[Combination],
    out_dir: Path,
    max_members: int | None = None,
) -> list[Job]:
    """Combinations grouped into packs: those equal in every parameter but init and seed,
    at most ``max_members`` per pack (``src/pack.py`` splits further what does not fit in
    memory). A group of one runs unpacked."""
    program = pack_program(sweep.program)
    if max_members is not None and max_members < 1:
        raise SweepError(f"--pack must be >= 1 (got {max_members})")
    groups: dict[tuple, list[Combination]] = {}
    for combo in combos:
        shared = tuple((k, str(v)) for k, v in combo.params.items() if not is_pack_member_key(k))
        structure = inits.structure_scheme(combo.params.get("init"))
        groups.setdefault((shared, structure), []).append(combo)
    jobs = []
    for (shared, structure), members in groups.items():
        size = max_members or len(members)
        chunks = [members[i : i + size] for i in range(0, len(members), size)]
        for n, chunk in enumerate(chunks):
            if len(chunk) == 1:
                jobs += single_jobs(sweep, chunk, out_dir)
                continue
            name = "pack__" + (combination_name(dict(shared)) or "all")
            name += f"__{structure}" if structure else ""
            name += f"__{n + 1}" if len(chunks) > 1 else ""
            folder = out_dir / PACKS / name
            args = [a for a in chunk[0].args if not is_pack_member_key(a.split("=", 1)[0])]
            members_arg = ",".join(
                hydra_quote(" ".join(a for a in c.args if is_pack_member_key(a.split("=", 1)[0])))
                for c in chunk
            )
            dirs_arg = ",".join(hydra_quote(str(out_dir / c.name)) for c in chunk)
            args += [f"pack.members=[{members_arg}]", f"pack.dirs=[{dirs_arg}]"]
            jobs.append(Job(name, folder, tuple(chunk), fill_command(sweep, program, args, folder)))
    return jobs
