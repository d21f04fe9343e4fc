"""Metric sinks: W&B and TensorBoard behind one small interface.

Both receive the same tag names (``train/loss``, ``val/acc``, ``weights/fc1``, ...). Each is
optional and imported lazily, so a run with W&B switched off never imports wandb.

Histograms are precomputed ``(bin_edges, counts)`` pairs (``len(edges) == len(counts) + 1``,
finite edges, at most 512 bins: W&B's limit), so no sink bins raw tensors itself.
"""

from __future__ import annotations

import html
import json
import logging
import os
import secrets
import string
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from initbench.io import dumps_strict

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What the training loop writes to."""

    wandb_run_id: str | None  # the W&B run's id (None for other sinks), kept for resuming

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None: ...

    def log_summary(self, summary: Mapping[str, Any]) -> None: ...

    def log_histograms(self, histograms: Mapping[str, Histogram], step: int) -> None: ...

    def log_table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None: ...

    def log_figure(self, tag: str, figure: Any, step: int) -> None: ...

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None: ...

    def save_file(self, path: Path) -> None: ...  # upload a run file (W&B: run.save)

    def mark_preempting(self) -> None: ...

    def finish(self) -> None: ...


Histogram = tuple[np.ndarray, np.ndarray]  # (bin_edges, counts)


def figure_to_rgb(figure: Any) -> np.ndarray:  # a matplotlib Figure
    """Render a matplotlib figure (no pyplot needed) to an H x W x 3 uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def markdown_table(columns: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, ``|`` and HTML (``<``, ``>``, ``&``) in cells escaped, so a name from a
    config is text, never markup (TensorBoard's text plugin renders it; so do the report's
    summary.md and the W&B page built from it)."""
    esc = [[html.escape(str(c), quote=False).replace("|", "\\|") for c in row]
           for row in [columns, *rows]]  # fmt: skip
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return "\n".join(lines)


class TensorBoardSink:
    """Scalars as TensorBoard event files in ``log_dir``.

    ``purge_step`` (set when a run resumes from a checkpoint taken at step S, as S + 1) hides
    events a killed process wrote after its checkpoint, so no step appears twice.
    """

    wandb_run_id = None

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in summary.items())
        self.writer.add_text("summary", text)

    def log_histograms(self, histograms: Mapping[str, Histogram], step: int) -> None:
        # TensorBoard's raw format: right edges per bucket, plus moments (from the bin centres).
        for tag, (edges, counts) in histograms.items():
            edges, counts = np.asarray(edges, dtype=np.float64), np.asarray(counts, np.float64)
            centres = (edges[:-1] + edges[1:]) / 2
            self.writer.add_histogram_raw(
                tag,
                min=float(edges[0]),
                max=float(edges[-1]),
                num=int(counts.sum()),
                sum=float(centres @ counts),
                sum_squares=float(centres**2 @ counts),
                bucket_limits=edges[1:].tolist(),
                bucket_counts=counts.tolist(),
                global_step=step,
            )

    def log_table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.writer.add_text(tag, markdown_table(columns, rows), global_step=step)

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        self.log_image(tag, figure_to_rgb(figure), step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, image, global_step=step, dataformats="HWC")

    def save_file(self, path: Path) -> None:
        pass

    def mark_preempting(self) -> None:
        pass

    def finish(self) -> None:
        self.writer.flush()
        self.writer.close()


AGENT_ENV = ("WANDB_RUN_ID", "WANDB_SWEEP_ID")  # what a W&B sweep agent gives its runs


def log_agent_run(
    run_dir: Path,
    node: Mapping[str, Any],
    name: str,
    config: Mapping[str, Any],
    table: tuple[list[str], list[list[Any]]],
    summary: Mapping[str, Any],
) -> int:
    """Log one W&B run as the sweep agent's own run (``$WANDB_RUN_ID``, in its sweep) with
    ``table`` and ``summary``, in a child process: in this one W&B's setup may already hold
    other runs' ids (a pack's members). Returns the child's exit code (0: logged)."""
    payload = {"dir": str(run_dir), "project": node["project"], "entity": node.get("entity"),
               "mode": node.get("mode"), "group": node.get("group"), "name": name,
               "config": dict(config), "columns": table[0], "rows": table[1],
               "summary": dict(summary)}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", "from initbench.telemetry.sinks import _agent_run; _agent_run()"],
        input=dumps_strict(payload), text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        log.warning("could not log the agent's W&B run: %s", proc.stderr.strip()[-500:])
    return proc.returncode


def _agent_run() -> None:
    """The child of :func:`log_agent_run`: the payload on stdin."""
    payload = json.loads(sys.stdin.read())
    sink = WandbSink(
        run_dir=payload["dir"], project=payload["project"], entity=payload["entity"],
        mode=payload["mode"], group=payload["group"], name=payload["name"],
        tags=["pack"], config=payload["config"],
    )  # fmt: skip
    sink.log_table("pack/members", payload["columns"], payload["rows"], 0)
    sink.log_summary(payload["summary"])
    sink.finish()


class WandbSink:
    """A W&B run. The mode comes from ``mode`` or, when that is None, from ``WANDB_MODE``.

    Without credentials, or with a server that does not answer within ``init_timeout``
    seconds, the run is started again in offline mode (one warning says how to upload it
    later with ``wandb sync``), so a run never fails or hangs because of W&B. ``run_id``
    resumes an earlier run (a restarted run directory) under the same id.
    """

    def __init__(
        self,
        *,
        run_dir: str | Path,
        project: str,
        name: str,
        group: str | None = None,
        entity: str | None = None,
        mode: str | None = None,
        tags: list[str] | None = None,
        config: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        init_timeout: float = 10,
        packed: bool = False,
    ) -> None:
        import wandb

        if packed and run_id is None:  # never the W&B agent's WANDB_RUN_ID: one id per member
            run_id = "".join(
                secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8)
            )

        self._wandb = wandb
        # Under a sweep agent W&B takes the agent's run ($WANDB_RUN_ID, $WANDB_SWEEP_ID) over
        # any id given, from the process's first W&B call: a pack's members hide both (each is
        # its own run, tagged with the sweep) and the agent's run is logged apart (log_agent_run).
        agent = {k: os.environ.pop(k) for k in AGENT_ENV if k in os.environ} if packed else {}
        if agent.get("WANDB_SWEEP_ID"):
            tags = [*(tags or []), f"sweep-{agent['WANDB_SWEEP_ID']}"]
        if "WANDB_SILENT" not in os.environ:  # W&B's warnings go through its global settings
            wandb.setup(wandb.Settings(silent=True))
        kwargs = dict(
            project=project,
            entity=entity,
            name=name,
            group=group,
            tags=list(tags or []),
            config=dict(config or {}),
            dir=str(run_dir),
            # W&B's own terminal output off (its banner, sync hints, warnings, the closing
            # summary): this sink says in one line where the run went (``_announce``).
            settings=wandb.Settings(
                init_timeout=init_timeout, console="off", quiet=True, silent=True
            ),
            # A multirun's jobs share one process: never reuse a run. A pack's members
            # (initbench.packing) log at once: one run each.
            reinit="create_new" if packed else "finish_previous",
        )
        if run_id is not None:
            kwargs.update(id=run_id, resume="allow")
        try:
            self.run = wandb.init(mode=mode, **kwargs)
            why = None
        except wandb.errors.Error as err:
            self.run = wandb.init(mode="offline", **kwargs)
            why = str(err).splitlines()[0]
        finally:
            os.environ.update(agent)
        self._announce(why)
        # Plot every metric against the training step we pass explicitly.
        self.run.define_metric("*", step_metric="trainer/step")

    def _announce(self, unavailable: str | None) -> None:
        """One line: where the run is (online: its URL; offline: the folder and the ``wandb
        sync`` command that uploads it; ``unavailable``: why it fell back to offline)."""
        if getattr(self.run.settings, "mode", None) == "disabled":
            return
        if not self.run.offline:
            log.info("W&B run: %s", self.run.url)
            return
        offline_dir = Path(self.run.dir).parent
        if unavailable is None:
            log.info("W&B offline: upload this run later with `wandb sync %s`", offline_dir)
        else:
            log.warning(
                "W&B is unavailable (%s): logging offline; upload this run later with "
                "`wandb sync %s`",
                unavailable,
                offline_dir,
            )

    @property
    def wandb_run_id(self) -> str:
        return self.run.id

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log({**scalars, "trainer/step": step})

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        for key, value in summary.items():
            self.run.summary[key] = value

    def log_histograms(self, histograms: Mapping[str, Histogram], step: int) -> None:
        data = {
            tag: self._wandb.Histogram(np_histogram=(np.asarray(counts), np.asarray(edges)))
            for tag, (edges, counts) in histograms.items()
        }
        self.run.log({**data, "trainer/step": step})

    def log_table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        table = self._wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        self.run.log({tag: table, "trainer/step": step})

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        self.log_image(tag, figure_to_rgb(figure), step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.run.log({tag: self._wandb.Image(image), "trainer/step": step})

    def save_file(self, path: Path) -> None:
        """Upload ``path`` as the run file of its name (``run.file(path.name)`` in the API)."""
        path = Path(path)
        self.run.save(str(path), base_path=str(path.parent), policy="now")

    def mark_preempting(self) -> None:
        self.run.mark_preempting()

    def finish(self) -> None:
        self.run.finish()


class MultiSink:
    """Fans every call out to several sinks."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    @property
    def wandb_run_id(self) -> str | None:
        """The W&B run's id, if one of the sinks is W&B."""
        return next((s.wandb_run_id for s in self.sinks if s.wandb_run_id), None)

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log_scalars(scalars, step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log_summary(summary)

    def log_histograms(self, histograms: Mapping[str, Histogram], step: int) -> None:
        for sink in self.sinks:
            sink.log_histograms(histograms, step)

    def log_table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        for sink in self.sinks:
            sink.log_table(tag, columns, rows, step)

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        if self.sinks:  # rendered once for all
            self.log_image(tag, figure_to_rgb(figure), step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        for sink in self.sinks:
            sink.log_image(tag, image, step)

    def save_file(self, path: Path) -> None:
        for sink in self.sinks:
            sink.save_file(path)

    def mark_preempting(self) -> None:
        for sink in self.sinks:
            sink.mark_preempting()

    def finish(self) -> None:
        for sink in self.sinks:
            sink.finish()


# Sink factories: the logger group's nodes name one each (``_target_`` + ``_partial_``), and
# initbench.build calls the partial with the run's SinkContext.


@dataclass(frozen=True)
class SinkContext:
    """What every sink factory gets besides its own config fields."""

    run_dir: Path
    run_name: str
    config: Mapping[str, Any]  # the resolved run config, recorded by W&B
    resume_step: int | None = None  # a resumed run's first step (None: a fresh start)
    wandb_run_id: str | None = None  # a resumed run's W&B id
    packed: bool = False  # a member of a pack: other runs log from the same process


def tensorboard_sink(ctx: SinkContext, *, subdir: str) -> TensorBoardSink:
    """TensorBoard event files in ``<run dir>/<subdir>``."""
    return TensorBoardSink(ctx.run_dir / subdir, purge_step=ctx.resume_step)


def wandb_sink(
    ctx: SinkContext,
    *,
    project: str,
    entity: str | None = None,
    mode: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
) -> WandbSink:
    """A W&B run named after the run, holding its config, resumed under its old id if any."""
    return WandbSink(
        run_dir=ctx.run_dir,
        project=project,
        entity=entity,
        mode=mode,
        group=group,
        tags=list(tags),
        name=ctx.run_name,
        config=ctx.config,
        run_id=ctx.wandb_run_id,
        packed=ctx.packed,
    )
