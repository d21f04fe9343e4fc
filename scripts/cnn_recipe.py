"""He et al. 2015's contrast under the plain CNNs' own recipe: Kaiming trains, Xavier stalls.

For each plain CNN (cnn, cnn22, cnn30) this trains init=kaiming and init=xavier x seeds on
FashionMNIST as one pack (src/pack.py, with the model's default optimizer: conf/optimizer/
sgd_cnn.yaml) and prints the evidence as a markdown table: validation accuracy per epoch, the
final training loss, the step-0 signal (diagnose.json: the activations' RMS after the first and
the last conv layer, the gradient at the first) and the fraction of dead ReLU channels per
layer at the last telemetry snapshot (TensorBoard ``stats/dead_frac/<layer>``). Members already
done are kept, so a second call only prints the table (docs/results.md; the recipe:
docs/models-and-data.md, "The plain CNNs' recipe").

    python scripts/cnn_recipe.py                              # cnn, cnn22, cnn30 x seeds 0 1 2
    python scripts/cnn_recipe.py --models cnn30 --seeds 0     # one model, one seed
    python scripts/cnn_recipe.py --models cnn30 optimizer=adam optimizer.lr=1e-4   # another recipe
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from initbench.report.sources import load_local
from initbench.telemetry.sinks import markdown_table

ROOT = Path(__file__).resolve().parents[1]
INITS = ("kaiming", "xavier")


def pack_command(model: str, seeds: list[int], epochs: int, folder: Path, extra: list[str]):
    """src/pack.py for one model: the two inits x ``seeds``, TensorBoard only."""
    return [
        sys.executable, str(ROOT / "src" / "pack.py"), f"model={model}",
        f"pack.inits=[{','.join(INITS)}]", f"pack.seeds=[{','.join(map(str, seeds))}]",
        f"trainer.epochs={epochs}", "logger=tensorboard", f"hydra.run.dir={folder}", *extra,
    ]  # fmt: skip


def dead_fractions(run_dir: str) -> dict[str, float]:
    """Each layer's dead fraction at the run's last telemetry snapshot (TensorBoard)."""
    events = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    prefix = "stats/dead_frac/"
    return {
        tag[len(prefix) :]: events.Scalars(tag)[-1].value
        for tag in events.Tags()["scalars"]
        if tag.startswith(prefix)
    }


def evidence(folder: Path) -> pd.DataFrame:
    """One row per member under ``folder``: accuracy per epoch, loss, step 0, dead units."""
    runset = load_local(folder)
    rows = []
    for run in runset.runs.itertuples():
        curve = runset.curves[runset.curves.run_id == run.run_id].sort_values("epoch")
        step0 = runset.layers[runset.layers.run_id == run.run_id].sort_values("depth")
        convs = step0[step0.kind == "conv2d"]
        dead = dead_fractions(run.run_dir)
        names = list(convs.name)
        middle = names[len(names) // 2] if names else None
        rows.append(
            {
                "model": run.model,
                "init": run.init,
                "seed": run.seed,
                "status": run.status,
                "val acc per epoch": " / ".join(f"{a:.3f}" for a in curve["val/acc"]),
                "final train loss": run.final_train_loss,
                "step-0 act RMS, conv1 → last conv": (
                    f"{convs.act_rms.iloc[0]:.2g} → {convs.act_rms.iloc[-1]:.2g}" if names else None
                ),
                "step-0 grad std at conv1": convs.grad_std.iloc[0] if names else None,
                "dead at end: conv1": dead.get(names[0]) if names else None,
                "middle": dead.get(middle),
                "last conv": dead.get(names[-1]) if names else None,
                "mean over convs": sum(dead.get(n, 0.0) for n in names) / max(len(names), 1),
            }
        )
    return pd.DataFrame(rows).sort_values(["model", "init", "seed"], ignore_index=True)


def markdown(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if value == value else "–"
        return "–" if value is None else str(value)

    rows = [[cell(v) for v in row] for row in table.itertuples(False)]
    return markdown_table(list(table.columns), rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "cnn22", "cnn30"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "cnn_recipe")
    parser.add_argument("overrides", nargs="*", help="train.py overrides shared by every run")
    args = parser.parse_args(argv)
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    for model in args.models:
        folder = (args.out / model).resolve()
        print(f"cnn_recipe: {model}: {len(INITS) * len(args.seeds)} runs in {folder}", flush=True)
        command = pack_command(model, args.seeds, args.epochs, folder, args.overrides)
        if subprocess.run(command, env=env, cwd=ROOT).returncode != 0:
            print(f"cnn_recipe: the pack for {model} failed (see {folder}/pack.log)")
            return 1
    table = pd.concat([evidence((args.out / m).resolve()) for m in args.models])
    text = markdown(table)
    (args.out / "cnn_recipe.md").write_text(text + "\n")
    print(text)
    print(f"\ntable: {args.out / 'cnn_recipe.md'}; curves: python scripts/report.py {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
