"""The report: results.csv, summary.md, figures and index.html from a small real CPU sweep."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from helpers import ROOT, compose_dict, run_cli
from initbench.report import ReportError, build_report, load_local, load_wandb
from initbench.report.runset import RawRun
from initbench.report.tables import assemble
from initbench.run import run
from initbench.telemetry.weights import SAMPLE_SIZE, read_weight_samples, sample_indices

INITS = ("kaiming_normal", "zeros", "xavier_uniform")
ACTIVATIONS = ("relu", "tanh")
SEEDS = (0, 1)


def train(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_dict(
        [
            "experiment=circles_mlp",
            "trainer.epochs=10",
            "optimizer.lr=0.05",
            "trainer.device=cpu",
            "logger=[]",
            "telemetry.enabled=false",
            *overrides,
        ]
    )
    return run(cfg, run_dir, instantiate(cfg["optimizer"]))


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory) -> Path:
    """A local sweep's folder (3 inits x 2 activations x 2 seeds on circles, plus a run that
    diverges at step 0) and a second sweep's folder holding an unfinished run."""
    root = tmp_path_factory.mktemp("runs")
    sweep = root / "tiny"
    for init in INITS:
        for act in ACTIVATIONS:
            for seed in SEEDS:
                # the step-0 report (diagnose.json) for the first seed only: the figures use
                # the first seed, and the report copes with runs that have none
                train(
                    sweep / f"{init}-{act}-{seed}",
                    f"init={init}",
                    f"activation={act}",
                    f"seed={seed}",
                    f"diagnose.at_start={seed == 0}",
                )
    train(sweep / "huge-relu-0", "init=normal", "init.std=1e30")  # diverges at once
    (sweep / "combinations.json").write_text(json.dumps({"sweep": "tiny"}))
    other = root / "other"
    shutil.copytree(sweep / "kaiming_normal-relu-0", other / "cut-short")
    summary = json.loads((other / "cut-short" / "summary.json").read_text())
    (other / "cut-short" / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    (other / "combinations.json").write_text(json.dumps({"sweep": "other"}))
    assert (sweep / "zeros-tanh-0" / "diagnose.json").exists()
    return root


@pytest.fixture(scope="module")
def report(runs_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    files = build_report(load_local(runs_folder), out)
    return files, pd.read_csv(files.results_csv)


def test_results_csv_has_one_correct_row_per_run(runs_folder, report):
    _, results = report
    summaries = {
        str(p.parent.relative_to(runs_folder)): json.loads(p.read_text())
        for p in runs_folder.rglob("summary.json")
    }
    assert sorted(results["run_id"]) == sorted(summaries)
    for _, row in results.iterrows():
        s = summaries[row["run_id"]]
        assert row["status"] == s["status"]
        assert row["activation"] == s["choices"]["activation"]
        assert row["seed"] == s["choices"]["seed"]
        assert row["architecture"] == "mlp10-5/circles" and row["dataset"] == "circles"
        for key in ("best_val_acc", "final_val_acc", "final_train_loss", "wall_s"):
            want = s.get(key, (s.get("final") or {}).get(key.removeprefix("final_")))
            assert (pd.isna(row[key]) and want is None) or row[key] == pytest.approx(want), key
        if s["status"] == "finished":  # epochs to target, recomputed from metrics.jsonl
            curve = [
                json.loads(x)
                for x in (runs_folder / row["run_id"] / "metrics.jsonl").read_text().splitlines()
            ]
            reached = [r["epoch"] for r in curve if r["val/acc"] >= row["target_acc"]]
            assert (row["epochs_to_target"] if reached else None) == (
                reached[0] if reached else None
            )
    assert set(results["scheme"]) == {
        "kaiming_normal",
        "zeros",
        "xavier_uniform",
        "normal(std=1e+30)",
    }
    assert results[results["scheme"] == "zeros"]["stalled"].all()  # stuck at chance
    assert not results[results["scheme"] == "kaiming_normal"]["stalled"].any()
    huge = results[results["scheme"] == "normal(std=1e+30)"].iloc[0]
    assert huge["status"] == "diverged" and pd.isna(huge["best_val_acc"])
    assert huge["diverged_at_step"] == 0
    assert set(results["sweep"]) == {"tiny", "other"}


def test_summary_ranks_as_the_numbers_say(report):
    files, results = report
    text = files.summary_md.read_text()
    trained = results[results["status"].isin(["finished", "diverged"])].copy()
    trained["score"] = trained["best_val_acc"].fillna(trained["chance_acc"])
    for act in ACTIVATIONS:
        cell = trained[trained["activation"] == act]
        means = cell.groupby("scheme")["score"].mean().sort_values(ascending=False, kind="stable")
        section = text.split(f"### mlp10-5/circles · {act}")[1].split("###")[0]
        ranked = re.findall(r"^\| (\d+) \| ([^|]+) \| (\d+) \| ([\d.]+) ± ([\d.]+)", section, re.M)
        assert [name.strip() for _, name, *_ in ranked] == list(means.index)
        for (_, _name, n, mean, std), (scheme, value) in zip(ranked, means.items(), strict=True):
            assert float(mean) == pytest.approx(value, abs=6e-5)
            assert int(n) == len(cell[cell["scheme"] == scheme])
            if int(n) > 1:
                assert float(std) == pytest.approx(
                    cell[cell["scheme"] == scheme]["score"].std(ddof=1), abs=6e-5
                )
        best_row = re.search(r"^\| mlp10-5/circles \|(.*)$", text, re.M).group(1)
        assert means.index[0] in best_row
    stalled = re.search(r"^\| \d+ \| zeros \|.*\| (\d+) \|$", text, re.M)
    assert stalled and int(stalled.group(1)) == 2  # both zeros seeds stall, per activation


def test_left_out_says_what_and_why(report):
    files, _ = report
    text = files.summary_md.read_text()
    left_out = text.split("## Left out")[1].split("##")[0]
    assert "other/cut-short" in left_out and "running" in left_out
    assert "tiny/huge-relu-0" in left_out  # no per-epoch metrics: no curves
    assert "2 sweeps (other, tiny)" in left_out
    assert "counted at chance" in left_out
    assert "weight histograms" not in left_out  # every trained run wrote weights.npz


def test_figures_are_readable_images_of_sensible_size(report):
    files, _ = report
    names = {p.name for p in files.figures}
    expected = {"heatmap__mlp10-5_circles.png"} | {
        f"{kind}__mlp10-5_circles__{act}.png"
        for kind in ("curves", "step0", "weights")
        for act in ACTIVATIONS
    }
    assert names == expected
    import matplotlib.image as mpimg

    for path in files.figures:
        img = mpimg.imread(path)
        h, w = img.shape[:2]
        assert 300 <= w <= 4000 and 200 <= h <= 3000, (path.name, w, h)
        assert img[..., :3].std() > 0.01, f"{path.name} is blank"


def test_index_html_references_only_files_that_exist(report):
    files, _ = report
    page = files.index_html.read_text()
    refs = re.findall(r"(?:src|href)='([^']+)'", page)
    assert {p.name for p in files.figures} <= set(refs)
    assert "results.csv" in refs and "summary.md" in refs
    for ref in refs:
        assert (files.out_dir / ref).is_file(), ref
    assert "<table>" in page and "Left out" in page


def test_runs_record_weight_samples_and_the_class_count(runs_folder):
    """Every trained run keeps samples of every weight layer at init and at the end: the init
    ones are what a fresh build of its config draws, the final ones its last weights."""
    import torch

    from initbench.build import prepare

    for run_dir in sorted(d for d in (runs_folder / "tiny").iterdir() if d.is_dir()):
        assert json.loads((run_dir / "summary.json").read_text())["num_classes"] == 2
        samples = read_weight_samples(run_dir)
        assert list(samples) == ["init", "final"], run_dir.name
        assert list(samples["init"]) == list(samples["final"]) == ["fc1", "fc2", "head"]
    run_dir = runs_folder / "tiny" / "xavier_uniform-tanh-1"
    cfg = load_local(runs_folder).configs["tiny/xavier_uniform-tanh-1"]
    fresh = prepare({**cfg, "trainer": {**cfg["trainer"], "device": "cpu"}}).model.state_dict()
    end = torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]  # last epoch's
    samples = read_weight_samples(run_dir)
    for name in ("fc1", "fc2", "head"):
        start = fresh[f"{name}.weight"].flatten().numpy()
        assert samples["init"][name].numel == start.size  # small layers: every value
        assert np.array_equal(samples["init"][name].values, start)
        assert np.array_equal(samples["final"][name].values, end[f"{name}.weight"].flatten())
        assert not np.array_equal(samples["init"][name].values, samples["final"][name].values)


def test_wide_layers_are_sampled_at_the_same_indices_and_the_caption_says_so(tmp_path):
    import torch
    import yaml

    from initbench.build import prepare

    run_dir = tmp_path / "wide" / "run"
    train(run_dir, "model.widths=[80,80]", "trainer.epochs=2")  # fc2: 6400 values
    samples = read_weight_samples(run_dir)
    start, final = samples["init"]["fc2"], samples["final"]["fc2"]
    assert start.numel == final.numel == 6400
    assert start.values.shape == final.values.shape == (SAMPLE_SIZE,)
    idx = sample_indices("fc2", 6400)
    fresh = prepare(yaml.safe_load((run_dir / "config.yaml").read_text())).model
    assert np.array_equal(start.values, fresh.state_dict()["fc2.weight"].flatten().numpy()[idx])
    end = torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]["fc2.weight"]
    assert np.array_equal(final.values, end.flatten().numpy()[idx])
    files = build_report(load_local(tmp_path / "wide"), tmp_path / "report")
    assert "weights__mlp2x80_circles__relu.png" in {p.name for p in files.figures}
    page = files.index_html.read_text()
    assert "fc2: a sample of 4096 of the layer&#x27;s 6400 values" in page


def test_the_report_reads_weights_npz_and_never_a_checkpoint_or_a_model(
    runs_folder, tmp_path, monkeypatch
):
    import torch

    import initbench.build

    folder = tmp_path / "runs"
    shutil.copytree(runs_folder / "tiny", folder)
    for path in folder.rglob("checkpoint*.pt"):
        path.unlink()
    (folder / "zeros-relu-0" / "weights.npz").unlink()  # as a run from before weights.npz

    def refuse(*args, **kwargs):
        raise AssertionError("the report loaded a checkpoint or rebuilt a model")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(initbench.build, "prepare", refuse)
    files = build_report(load_local(folder), tmp_path / "report")
    names = {p.name for p in files.figures}
    assert {f"weights__mlp10-5_circles__{act}.png" for act in ACTIVATIONS} <= names
    skips = [n for n in files.notes if n.startswith("weight histograms left out")]
    assert skips == ["weight histograms left out for 1 run(s): zeros-relu-0: no weights.npz"]


def test_the_class_count_comes_from_the_summary(runs_folder, tmp_path):
    run_dir = tmp_path / "five"
    shutil.copytree(runs_folder / "tiny" / "zeros-tanh-0", run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "num_classes": 5}))
    assert load_local(run_dir).runs["chance_acc"].iloc[0] == pytest.approx(0.2)
    del summary["num_classes"]  # a run from before num_classes: circles has 2
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert load_local(run_dir).runs["chance_acc"].iloc[0] == pytest.approx(0.5)


def test_the_report_package_imports_neither_torch_nor_the_build_layer():
    for path in (ROOT / "src" / "initbench" / "report").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import torch|from torch)", text, re.M), path.name
        assert not re.search(r"initbench\.(build|run)\b", text), path.name
    code = "import sys, initbench.report; print(sorted(sys.modules))"
    proc = run_cli("-c", code, env={"PYTHONPATH": str(ROOT / "src")}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "'initbench.build'" not in proc.stdout and "'initbench.run'" not in proc.stdout


def test_a_wandb_sweep_gives_the_same_tables(runs_folder, report):
    """The W&B source (through a stand-in for the public API) goes through the same table."""
    _, local = report

    class FakeRun:
        def __init__(self, run_dir: Path):
            self.id = run_dir.name
            s = json.loads((run_dir / "summary.json").read_text())
            self.state = {"running": "running"}.get(s["status"], "finished")
            self.config = json.loads(json.dumps(load_local(run_dir).configs[run_dir.name]))
            self._rows = (
                [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
                if (run_dir / "metrics.jsonl").exists()
                else []
            )
            self.summary_metrics = dict(
                {
                    **{
                        k: s.get(k)
                        for k in ("status", "epochs_completed", "best_val_acc", "diverged_at_step")
                    },
                    **(self._rows[-1] if self._rows else {}),
                    "_runtime": s.get("wall_s"),
                    "choices": s["choices"],
                }
            )
            self._dir = run_dir

        def scan_history(self, keys):  # W&B's rows: trainer/step as logged, _step its counter
            return [{**r, "trainer/step": r["step"], "_step": 10 * i} for i, r in
                    enumerate(self._rows)]  # fmt: skip

        def file(self, name):
            src = self._dir / name

            class File:
                def download(self, root, replace):
                    shutil.copy(src, Path(root) / name)

            return File()

    class FakeApi:
        def sweep(self, path):
            dirs = [d for d in (runs_folder / "tiny").iterdir() if d.is_dir()]
            return type("Sweep", (), {"runs": [FakeRun(d) for d in dirs]})()

    remote = load_wandb("team/initbench/abc123", api=FakeApi()).runs
    mine = local[local["sweep"] == "tiny"].copy()
    mine["run_id"] = mine["run_id"].str.removeprefix("tiny/")
    cols = [
        "run_id",
        "architecture",
        "activation",
        "scheme",
        "seed",
        "status",
        "stalled",
        "final_val_acc",
        "final_train_loss",
        "best_val_acc",
        "epochs_to_target",
        "epochs_completed",
        "has_step0",
    ]
    a = mine[cols].sort_values("run_id").reset_index(drop=True)
    b = remote[cols].sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(ReportError, match="no runs under"):
        load_local(tmp_path)
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(ReportError, match="no runs under"):
        load_local(tmp_path)
    proc = run_cli("scripts/report.py", str(tmp_path / "missing"), timeout=120)
    assert proc.returncode == 2
    assert "report: error:" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_writes_the_report_and_logs_it_to_wandb_offline(runs_folder, tmp_path):
    out = tmp_path / "rep"
    proc = run_cli(
        *[
            "scripts/report.py",
            str(runs_folder / "tiny"),
            "--out",
            str(out),
            "--target-acc",
            "0.9",
            "--hist-schemes",
            "2",
            "--wandb",
        ],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"open {out / 'index.html'}" in proc.stdout
    assert "left out:" in proc.stdout  # the diverged run's missing curve
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 13 and (results["target_acc"] == 0.9).all()
    assert list((out / "wandb").glob("offline-run-*"))


def test_the_default_target_is_nine_tenths_of_the_architectures_best():
    """Two architectures with known best accuracies: the target of each run is 0.9 x the best
    of its own architecture, and epochs to target the first epoch reaching it."""

    def raw(run_id, width, curve):
        cfg = compose_dict(["dataset=circles", f"model.width={width}", f"seed={run_id[-1]}"])
        rows = [{"epoch": e, "step": 10 * e, "val/acc": a, "val/loss": 1.0, "train/loss": 1.0,
                 "train/acc": a} for e, a in enumerate(curve, 1)]  # fmt: skip
        summary = {
            "status": "finished",
            "epochs_completed": len(curve),
            "best_val_acc": max(curve),
            "final": {k.replace("/", "_"): v for k, v in rows[-1].items() if "/" in k},
            "choices": {"init": "kaiming", "seed": int(run_id[-1])},
            "num_classes": 2,
        }
        return RawRun(run_id, "s", cfg, summary, rows, [])

    runs = assemble(
        "test",
        [
            raw("wide0", 64, [0.5, 0.73, 0.8]),  # best of its architecture: 0.8, target 0.72
            raw("wide1", 64, [0.6, 0.6, 0.6]),  # never reaches 0.72
            raw("thin0", 8, [0.2, 0.44, 0.46, 0.5]),  # best 0.5, target 0.45
        ],
    ).runs.set_index("run_id")
    assert runs.loc["wide0", "architecture"] != runs.loc["thin0", "architecture"]
    assert runs.loc["wide0", "target_acc"] == pytest.approx(0.72)
    assert runs.loc["wide1", "target_acc"] == pytest.approx(0.72)
    assert runs.loc["thin0", "target_acc"] == pytest.approx(0.45)
    assert runs.loc["wide0", "epochs_to_target"] == 2
    assert pd.isna(runs.loc["wide1", "epochs_to_target"])
    assert runs.loc["thin0", "epochs_to_target"] == 3  # 0.46 >= 0.45; 0.5 would be epoch 4


def test_the_wandb_source_reads_the_step0_report_a_run_uploads(tmp_path, monkeypatch):
    """A run logging to W&B uploads diagnose.json (run.save); the W&B source, through a
    stand-in that serves only the run's uploaded files, reads the same layers."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    outcome = train(run_dir, "logger=wandb", "trainer.epochs=2")
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    uploaded = offline / "files"
    assert (uploaded / "diagnose.json").is_file()
    local_layers = json.loads((run_dir / "diagnose.json").read_text())["layers"]

    class FakeRun:
        id = outcome["wandb_run_id"]
        state = "finished"
        config = compose_dict(["experiment=circles_mlp", "trainer.epochs=2"])
        summary_metrics = {**{k: v for k, v in outcome.items() if k != "final"}, "val/acc": 0.5}

        def scan_history(self, keys):
            return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]

        def file(self, name):
            class File:  # only what was uploaded: a missing file fails, as the API's does
                def download(self, root, replace):
                    shutil.copy(uploaded / name, Path(root) / name)

            return File()

    class FakeApi:
        def sweep(self, path):
            return type("Sweep", (), {"runs": [FakeRun()]})()

    runset = load_wandb("team/initbench/abc123", api=FakeApi())
    assert runset.runs["has_step0"].tolist() == [True]
    assert runset.layers["name"].tolist() == [layer["name"] for layer in local_layers]
    assert runset.layers["act_std"].tolist() == pytest.approx(
        [layer["act_std"] for layer in local_layers]
    )


@pytest.mark.parametrize("layer, expected", [(None, "fc2"), ("head", "head"), ("fc1", "fc1")])
def test_the_layer_option_picks_the_weights_figures_layer(
    runs_folder, tmp_path, monkeypatch, layer, expected
):
    from initbench.cli import report as cli_report
    from initbench.report import render

    drawn = []

    def spy(panels, arch, act):
        drawn.extend(panels)
        return figure_weights(panels, arch, act)

    figure_weights = render.figure_weights
    monkeypatch.setattr(render, "figure_weights", spy)
    args = [str(runs_folder / "tiny"), "--out", str(tmp_path / "r"), "--hist-schemes", "2"]
    assert cli_report.main(args + (["--layer", layer] if layer else [])) == 0
    assert drawn and {panel.layer for panel in drawn} == {expected}  # fc1, fc2, head: middle fc2


def test_the_newest_of_repeated_combinations_is_kept(runs_folder, tmp_path):
    import os

    folder = tmp_path / "twice"
    for name, best, mtime in [("old", 0.25, 1_000_000), ("new", 0.75, 2_000_000)]:
        run_dir = folder / name
        shutil.copytree(runs_folder / "tiny" / "kaiming_normal-relu-0", run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        (run_dir / "summary.json").write_text(json.dumps({**summary, "best_val_acc": best}))
        for path in run_dir.iterdir():
            os.utime(path, (mtime, mtime))
        os.utime(run_dir, (mtime, mtime))
    # the older one listed last, so neither order nor name decides
    runset = load_local(folder)
    assert runset.runs["run_id"].tolist() == ["new"]
    assert runset.runs["best_val_acc"].tolist() == [0.75]
    assert any("kept the newest" in note and "old" in note for note in runset.notes)


def test_a_step0_report_of_the_same_combination_never_replaces_the_trained_run(
    runs_folder, tmp_path
):
    """src/diagnose.py run after training (same init, seed, model) writes a newer folder with
    diagnose.json only: both are kept, the trained run stays in the leaderboard."""
    import os

    folder = tmp_path / "both"
    shutil.copytree(runs_folder / "tiny" / "kaiming_normal-relu-0", folder / "trained")
    (folder / "diagnosed").mkdir()
    shutil.copy(folder / "trained" / "diagnose.json", folder / "diagnosed" / "diagnose.json")
    os.utime(folder / "diagnosed" / "diagnose.json", (4_000_000_000, 4_000_000_000))
    runset = load_local(folder)
    assert sorted(runset.runs["run_id"]) == ["diagnosed", "trained"]
    assert sorted(runset.runs["status"]) == ["diagnosed", "finished"]
    assert not any("kept the newest" in note for note in runset.notes)


# ---- statistics: bootstrap intervals over seeds, ties with the best ------------------------------


def synthetic_runs(scores: dict[str, list[float]], **cfg_overrides: str) -> list[RawRun]:
    """Finished circles runs, one per (scheme, seed), whose best val accuracy is given."""
    raws = []
    for init, values in scores.items():
        cfg = compose_dict(["dataset=circles", f"init={init}"])
        for seed, acc in enumerate(values):
            rows = [{"epoch": 1, "step": 10, "val/acc": acc, "val/loss": 1.0, "train/loss": 1.0,
                     "train/acc": acc}]  # fmt: skip
            summary = {
                "status": "finished",
                "epochs_completed": 1,
                "best_val_acc": acc,
                "final": {"val_acc": acc, "val_loss": 1.0, "train_loss": 1.0, "train_acc": acc},
                "choices": {"init": init, "seed": seed},
                "num_classes": 2,
            }
            run_cfg = {**cfg, "seed": seed}
            raws.append(RawRun(f"{init}-{seed}", "syn", run_cfg, summary, rows, []))
    return raws


def test_bootstrap_interval_matches_the_normal_interval_and_is_reproducible():
    from initbench.report.ranking import bootstrap_ci

    x = np.random.default_rng(3).normal(0.8, 0.02, size=40)
    lo, hi = bootstrap_ci(x)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)  # the CLT interval for the mean
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.2 * half)
    assert bootstrap_ci(x) == (lo, hi)  # fixed seed: the same every time
    assert all(np.isnan(bootstrap_ci([0.9])))
    lo3, hi3 = bootstrap_ci([0.80, 0.85, 0.90])
    assert 0.80 <= lo3 < 0.85 < hi3 <= 0.90  # never wider than the seeds' range


def test_leaderboards_mark_ties_state_the_rule_and_write_leaderboard_csv(tmp_path):
    from initbench.report.ranking import LEADERBOARD_COLUMNS

    scores = {
        "kaiming_normal": [0.90, 0.91, 0.92, 0.93, 0.94],
        "xavier_uniform": [0.89, 0.90, 0.91, 0.92, 0.93],  # overlaps the best: tied
        "lecun_normal": [0.50, 0.52, 0.51],  # far below: not tied; 3 seeds: flagged
        "zeros": [0.40],  # 1 seed: undefined interval, tie unknown
    }
    runset = assemble("synthetic", synthetic_runs(scores))
    files = build_report(runset, tmp_path / "a", hist_schemes=0)
    board = pd.read_csv(files.leaderboard_csv)
    assert list(board.columns) == LEADERBOARD_COLUMNS
    by = board.set_index("scheme")
    assert list(board["scheme"]) == ["kaiming_normal", "xavier_uniform", "lecun_normal", "zeros"]
    assert by.loc["kaiming_normal", "ci_low"] < 0.92 < by.loc["kaiming_normal", "ci_high"]
    assert by.loc["kaiming_normal", "tied_with_best"] == True  # noqa: E712 (csv: object column)
    assert by.loc["xavier_uniform", "tied_with_best"] == True  # noqa: E712
    assert by.loc["lecun_normal", "tied_with_best"] == False  # noqa: E712
    assert pd.isna(by.loc["zeros", "tied_with_best"]) and pd.isna(by.loc["zeros", "ci_low"])
    text = files.summary_md.read_text()
    assert "bootstrap over seeds" in text and "undefined for 1 seed" in text
    assert "overlaps the best" in text  # the rule, stated
    assert "undefined (1 seed)" in text and "only 3 seeds: unreliable, read as wide" in text
    assert re.search(r"\| xavier_uniform \|.*\| yes \|", text)
    assert re.search(r"\| lecun_normal \|.*\| no \|", text)
    assert "bootstrap over seeds" in files.index_html.read_text()
    again = build_report(runset, tmp_path / "b", hist_schemes=0)
    assert again.leaderboard_csv.read_text() == files.leaderboard_csv.read_text()


def tuned_runs(table: dict[tuple[str, float], list[tuple[float, float]]]) -> list[RawRun]:
    """Finished circles runs with a holdout split: (init, lr) -> per seed (holdout, test)
    final accuracy; a test accuracy of None is a diverged run. Each records its init's cost."""
    raws = []
    for (init, lr), seeds in table.items():
        cfg = compose_dict(["dataset=circles", f"init={init}", f"optimizer.lr={lr}",
                            "trainer.holdout=100"])  # fmt: skip
        for seed, (holdout, test) in enumerate(seeds):
            diverged = test is None
            final = {} if diverged else {"val_acc": test, "val_loss": 1.0, "train_loss": 1.0,
                                         "train_acc": test, "holdout_acc": holdout}  # fmt: skip
            summary = {
                "status": "diverged" if diverged else "finished",
                "epochs_completed": 1,
                "best_val_acc": None if diverged else test,
                "final": final,
                "choices": {"init": init, "seed": seed},
                "num_classes": 2,
                "init_cost": {
                    "seconds": 2.0 if init == "lsuv" else 0.01,
                    "device": "cpu",
                    "forward_passes": 11 if init == "lsuv" else 0,
                    "backward_passes": 0,
                },  # fmt: skip
            }
            raws.append(
                RawRun(f"{init}-{lr}-{seed}", "syn", {**cfg, "seed": seed}, summary, [], [])
            )
    return raws


def test_the_tuned_leaderboard_picks_each_schemes_lr_on_the_holdout_and_shows_test_and_cost(
    tmp_path,
):
    from initbench.report.ranking import TUNED_COLUMNS

    runset = assemble("synthetic", tuned_runs({
        # lr 0.01 is better on the holdout; its test accuracy is lower than lr 0.1's: the table
        # must show the test accuracy at the holdout's pick, not the best test accuracy
        ("kaiming_normal", 0.01): [(0.95, 0.90), (0.94, 0.91), (0.96, 0.92)],
        ("kaiming_normal", 0.1): [(0.80, 0.97), (0.81, 0.97), (0.80, 0.96)],
        # lr 0.1 diverges in one seed: counts as chance (0.5) and loses to lr 0.01
        ("lsuv", 0.01): [(0.85, 0.84), (0.86, 0.85), (0.84, 0.83)],
        ("lsuv", 0.1): [(0.99, 0.99), (0.99, 0.99), (0.0, None)],
    }))  # fmt: skip
    files = build_report(runset, tmp_path / "r", hist_schemes=0)
    tuned = pd.read_csv(files.tuned_csv)
    assert list(tuned.columns) == TUNED_COLUMNS
    by = tuned.set_index("scheme")
    assert list(tuned["scheme"]) == ["kaiming_normal", "lsuv"]
    assert by.loc["kaiming_normal", "lr"] == 0.01 and by.loc["lsuv", "lr"] == 0.01
    assert by.loc["kaiming_normal", "lrs"] == "0.01 0.1"
    assert by.loc["kaiming_normal", "test_acc_mean"] == pytest.approx(0.91)
    assert by.loc["kaiming_normal", "holdout_acc_mean"] == pytest.approx(0.95)
    assert by.loc["lsuv", "test_acc_mean"] == pytest.approx(0.84)
    assert by.loc["lsuv", "tied_with_best"] == False  # noqa: E712
    assert by.loc["lsuv", "init_seconds"] == 2.0 and by.loc["lsuv", "init_forward_passes"] == 11
    text = files.summary_md.read_text()
    assert "Each scheme at its best learning rate" in text
    assert re.search(r"\| lsuv \| 0.01 \(0.01 0.1\) \|.*\| 2 s, 11 fwd / 0 bwd \(cpu\) \|", text)
    assert "tuned.csv" in files.index_html.read_text()


def test_no_tuned_leaderboard_without_a_holdout(tmp_path):
    runset = assemble("synthetic", synthetic_runs({"kaiming_normal": [0.9, 0.91]}))
    files = build_report(runset, tmp_path / "r", hist_schemes=0)
    assert files.tuned_csv is None and "best learning rate" not in files.summary_md.read_text()


# ---- the edge-of-chaos figure -------------------------------------------------------------------


def mean_field_runs(sigma_w2s, depths, accuracy) -> list[RawRun]:
    """Finished tanh mean_field runs on FashionMNIST (10 classes), σ_b² = 0.05, one per
    (σ_w², depth), with the best val accuracy ``accuracy(σ_w², depth)``; no data is loaded."""
    base = compose_dict(["experiment=fashion_mlp", "activation=tanh", "init=mean_field"])
    raws = []
    for sw in sigma_w2s:
        for depth in depths:
            acc = accuracy(sw, depth)
            cfg = {
                **base,
                "init": {**base["init"], "sigma_w2": sw, "sigma_b2": 0.05},
                "model": {**base["model"], "depth": depth},
            }
            summary = {
                "status": "finished",
                "epochs_completed": 1,
                "best_val_acc": acc,
                "final": {"val_acc": acc, "val_loss": 1.0, "train_loss": 1.0, "train_acc": acc},
                "choices": {"init": "mean_field", "seed": 0},
                "num_classes": 10,
            }
            rows = [{"epoch": 1, "step": 10, "val/acc": acc, "val/loss": 1.0, "train/loss": 1.0,
                     "train/acc": acc}]  # fmt: skip
            raws.append(RawRun(f"sw{sw}-d{depth}", "eoc", cfg, summary, rows, []))
    return raws


def test_edge_of_chaos_figure_draws_the_grid_with_theory_over_it(tmp_path):
    from initbench.report.tables import edge_of_chaos_tables
    from initbench.theory import critical_sigma_w2, mean_field

    sigma_w2s, depths = [0.5, 1.0, 1.76, 3.0], [5, 20, 50]

    def accuracy(sw, depth):  # trainable below 6 xi_c, chance above: the paper's picture
        return 0.85 if depth <= 6 * mean_field("tanh", sw, 0.05).xi_c else 0.1

    runset = assemble("synthetic", mean_field_runs(sigma_w2s, depths, accuracy))
    (table,) = edge_of_chaos_tables(runset)
    assert (table["activation"], table["sigma_b2"], table["dataset"]) == (
        "tanh",
        0.05,
        "fashion_mnist",
    )
    grid = table["grid"]
    assert list(grid.index) == depths and list(grid.columns) == sigma_w2s
    assert grid.loc[5, 1.76] == 0.85 and grid.loc[50, 0.5] == 0.1  # as the runs say
    theory = table["theory"]
    assert theory["sigma_w2"].min() == 0.5 and theory["sigma_w2"].max() == 3.0
    peak = theory.loc[theory["depth_limit"].idxmax(), "sigma_w2"]
    assert abs(peak - critical_sigma_w2("tanh", 0.05)) < 0.1  # 6 xi_c diverges at chi1 = 1
    assert table["critical"] == pytest.approx(1.761, abs=0.002)
    phase = table["phase"]
    assert phase["sigma_w2_critical"].iloc[0] == pytest.approx(1.0, rel=1e-6)  # tanh, sigma_b2=0
    assert phase["sigma_w2_critical"].is_monotonic_increasing

    files = build_report(runset, tmp_path, hist_schemes=0)
    (png,) = [p for p in files.figures if p.name.startswith("edge_of_chaos__")]
    image = plt_imread(png)
    assert image.shape[1] >= 1000 and image.std() > 0.05  # drawn, not blank
    assert png.name in files.index_html.read_text()


def test_no_edge_of_chaos_figure_without_a_sigma_w2_by_depth_grid(tmp_path):
    from initbench.report.tables import edge_of_chaos_tables

    one_depth = mean_field_runs([1.0, 2.0], [10], lambda sw, d: 0.8)
    assert edge_of_chaos_tables(assemble("synthetic", one_depth)) == []


def plt_imread(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


# ----------------------------------------------------------------------------- W&B Report page


def panels_of(page, kind: str) -> list:
    return [p for b in page.blocks if type(b).__name__ == "PanelGrid" for p in b.panels
            if type(p).__name__ == kind]  # fmt: skip


def test_the_wandb_report_page_is_built_offline_with_every_panel(runs_folder):
    """Built without a server: the blocks and panels, their metric keys and grouping."""
    pytest.importorskip("wandb_workspaces")
    from initbench.report import wandb_report

    runset = load_local(runs_folder / "tiny")
    page = wandb_report("team/initbench/abc123", runset)
    assert (page.entity, page.project) == ("team", "initbench") and "abc123" in page.title
    kinds = [type(b).__name__ for b in page.blocks]
    assert kinds.count("PanelGrid") == 5 and "MarkdownBlock" in kinds
    for grid in (b for b in page.blocks if type(b).__name__ == "PanelGrid"):
        (runs,) = grid.runsets  # every grid shows the sweep's runs, best val/acc first
        assert (runs.entity, runs.project, runs.filters) == (
            "team",
            "initbench",
            "Sweep = 'abc123' or Tags() in ['sweep-abc123']",  # packed members: the tag
        )
        assert runs.order[0].name.name == "val/acc" and runs.order[0].ascending is False
    from wandb_workspaces.expr import expr_to_filters  # W&B's own parser of the expression

    parsed = expr_to_filters(runs.filters)
    assert parsed.op == "OR" and [(f.key.name, f.op, f.value) for f in parsed.filters] == [
        ("sweep", "=", "abc123"), ("tags", "IN", ["sweep-abc123"])]  # fmt: skip
    # the leaderboard: the report's own tables, best scheme per cell first
    board = next(b for b in page.blocks if type(b).__name__ == "MarkdownBlock").text
    assert "Best scheme per architecture × activation" in board
    assert "**mlp10-5/circles · relu**" in board and "| 1 | kaiming_normal |" in board
    # curves: val acc, val loss, train loss against the step, grouped by init (mean, min-max)
    lines = panels_of(page, "LinePlot")
    curves = [p for p in lines if p.groupby is not None]
    assert [p.y for p in curves] == [["val/acc"], ["val/loss"], ["train/loss"]]
    for p in curves:
        assert p.x == "trainer/step" and p.groupby.name == "init.name"
        assert (p.groupby_aggfunc, p.groupby_rangefunc) == ("mean", "minmax")
    # every init group drawn: W&B's default is 10 runs or groups a plot, fewer than a sweep's
    assert all(p.max_runs_to_show >= 100 for p in lines)
    curve_grid = next(b for b in page.blocks if type(b).__name__ == "PanelGrid" and b.panels
                      and b.panels[0] in curves)  # fmt: skip
    assert curve_grid.runsets[0].groupby == ["init.name"]
    # init x architecture x activation -> val/acc
    (parallel,) = panels_of(page, "ParallelCoordinatesPlot")
    columns = [(type(c.metric).__name__, c.metric.name) for c in parallel.columns]
    assert columns == [("Config", "init.name"), ("Config", "experiment_name"),
                       ("Config", "activation.name"), ("SummaryMetric", "val/acc")]  # fmt: skip
    # per-layer histograms: first, middle and last layer x weights, acts, grads
    hist = [p.y[0] for p in lines if p.groupby is None]
    assert hist == [f"{k}/{layer}" for layer in ("fc1", "fc2", "head")
                    for k in ("weights", "acts", "grads")]  # fmt: skip
    # the step-0 figure (media) and table
    (media,) = panels_of(page, "MediaBrowser")
    assert media.media_keys == ["diagnose/std_vs_depth"]
    assert panels_of(page, "WeavePanelSummaryTable")[0].table_name == "diagnose/layers"


def test_the_wandb_report_without_runs_matches_every_layer_and_refuses_a_bad_path():
    pytest.importorskip("wandb_workspaces")
    from initbench.report import wandb_report

    page = wandb_report("team/initbench/abc123", layer=None)
    hist = [p for p in panels_of(page, "LinePlot") if p.groupby is None]
    assert [p.metric_regex for p in hist] == ["^weights/.*", "^acts/.*", "^grads/.*"]
    assert "No finished runs" in next(b.text for b in page.blocks if hasattr(b, "text")
                                      and "runs table" in str(b.text))  # fmt: skip
    assert panels_of(wandb_report("t/p/s", layer="fc2"), "LinePlot")[3].y == ["weights/fc2"]
    with pytest.raises(ReportError, match="entity/project/sweep_id"):
        wandb_report("just-a-sweep-id")


def test_cli_wandb_report_without_a_login_is_one_line(runs_folder, tmp_path):
    """The local report is written; saving the page needs a login, and says so in one line."""
    pytest.importorskip("wandb_workspaces")
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": None, "WANDB_CONFIG_DIR": str(tmp_path)}
    proc = run_cli("scripts/report.py", str(runs_folder / "tiny"), "--out", str(tmp_path / "r"),
                   "--wandb-report", "team/initbench/abc123", env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and (tmp_path / "r" / "index.html").exists()
    assert proc.stderr.startswith("report: error: cannot save the W&B report:"), proc.stderr
    assert proc.stderr.count("\n") == 1
    bad = run_cli("scripts/report.py", "--wandb-report", "abc123", env=env, timeout=120)
    assert bad.returncode == 2 and "entity/project/sweep_id" in bad.stderr


def test_names_from_configs_are_text_in_summary_md_and_never_formulas_in_the_csv_files(tmp_path):
    raws = synthetic_runs({"kaiming_normal": [0.9, 0.91]})
    for raw in raws:
        raw.config["model"] = {"_target_": "mine.Net", "name": "<script>alert(1)</script>"}
        raw.config["experiment_name"] = '=HYPERLINK("http://x")'
    files = build_report(assemble("synthetic", raws), tmp_path / "r", hist_schemes=0)
    text = files.summary_md.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>" not in files.index_html.read_text()
    results = files.results_csv.read_text()
    assert "'=HYPERLINK" in results and ",=HYPERLINK" not in results
    assert "-" in results  # numbers and other text untouched


def test_the_report_says_in_words_why_the_failing_schemes_fail(report):
    """zeros stalls at chance from symmetric units; the N(0, 1e30²) run diverges at step 0 with
    a non-finite forward pass: one sentence each, from what the runs recorded, in why.csv,
    summary.md and index.html."""
    files, _ = report
    why = pd.read_csv(files.out_dir / "why.csv")
    zeros = why[why["scheme"] == "zeros"]
    assert set(zeros["activation"]) == set(ACTIVATIONS)
    assert zeros["outcome"].str.fullmatch(r"stalled at chance \(2 of 2 runs\)").all()
    assert zeros["cause"].str.startswith("symmetric weights").all()
    huge = why[why["scheme"].str.contains("normal")]
    assert len(huge) == 1 and huge["outcome"].iloc[0].startswith("diverged at step")
    assert "not finite" in huge["cause"].iloc[0] or "explode" in huge["cause"].iloc[0]
    text = files.summary_md.read_text()
    section = text.split("## Why the others fail")[1].split("## Signal propagation")[0]
    assert "| zeros | stalled at chance (2 of 2 runs) | symmetric weights" in section
    page = files.index_html.read_text()
    assert "<h2>Why the others fail</h2>" in page and "symmetric weights" in page
    assert "*95% CI*" not in page and "<em>95% CI</em>" in page  # Markdown rendered, not raw


def test_every_scheme_is_drawn_in_the_step0_figure_zeros_on_the_floor(report, runs_folder):
    from initbench.report.figures import figure_step0
    from initbench.report.tables import step0_lines

    runset = load_local(runs_folder)
    lines = step0_lines(runset, "mlp10-5/circles", "tanh", [])
    fig = figure_step0(lines, "mlp10-5/circles", "tanh")
    act_axis = fig.axes[0]
    labels = [t.get_text() for t in act_axis.get_legend().get_texts()]
    assert any(label.startswith("zeros (") and "zero ▼" in label for label in labels)
    zeros_line = next(line for line in act_axis.get_lines() if line.get_label().startswith("zeros"))
    floor = min(v for v in lines["act_std"] if v > 0) / 10
    assert np.allclose(zeros_line.get_ydata(), floor)  # drawn, at the floor


def test_points_a_resumed_wandb_run_logged_twice_count_once_the_last_value(tmp_path):
    """A W&B run resumed from an epoch-1 checkpoint after epoch 3 logs epochs 2 and 3 again at
    the same trainer/step (W&B keeps both points): the report takes the last value per step."""
    first = [{"epoch": e, "trainer/step": 10 * e, "val/acc": 0.1 * e, "val/loss": 1.0,
              "train/loss": 1.0, "train/acc": 0.5} for e in (1, 2, 3)]  # fmt: skip
    again = [{**r, "val/acc": r["val/acc"] + 0.01} for r in first[1:]] + [
        {**first[2], "epoch": 4, "trainer/step": 40, "val/acc": 0.45}
    ]
    history = [{**r, "_step": i} for i, r in enumerate(first + again)]

    class FakeRun:
        id = "resumed"
        state = "finished"
        config = compose_dict(["experiment=circles_mlp", "trainer.epochs=4"])
        summary_metrics = {"status": "finished", "epochs_completed": 4, "val/acc": 0.45}

        def scan_history(self, keys):
            return history

        def file(self, name):
            raise FileNotFoundError(name)

    class FakeApi:
        def sweep(self, path):
            return type("Sweep", (), {"runs": [FakeRun()]})()

    curves = load_wandb("team/initbench/abc123", api=FakeApi()).curves
    assert curves["step"].tolist() == [10, 20, 30, 40]
    assert curves["epoch"].tolist() == [1, 2, 3, 4]
    assert curves["val/acc"].tolist() == pytest.approx([0.1, 0.21, 0.31, 0.45])
