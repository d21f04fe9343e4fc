"""Sweep files, their combinations, the local sweep runner and the SLURM launcher config."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import CONF_DIR, ROOT, compose_dict, finish, run_cli, run_train_cli, start
from initbench.build import validate
from initbench.config import check_pack_config
from initbench.inits import list_inits, resolve
from initbench.progress import hms
from initbench.sweep import (
    Combination,
    SweepError,
    build_command,
    combination_name,
    combinations,
    compose_combinations,
    default_out_dir,
    grid_combinations,
    load_sweep,
    read_outcome,
    varying_keys,
)

SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))
MACROS = ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
HAS_DIAGNOSE = (ROOT / "src" / "diagnose.py").exists()


def composed(sweep, combos=None) -> list[tuple[Combination, dict]]:
    """Compose ``combos`` (default: all) of ``sweep``; fail with every error at once."""
    if sweep.program == "src/diagnose.py" and not HAS_DIAGNOSE:
        pytest.skip("src/diagnose.py is not there yet: its sweeps cannot be composed")
    results = list(compose_combinations(sweep, combos or combinations(sweep), root=ROOT))
    errors = [f"{c.label()}: {e}" for c, e in results if isinstance(e, Exception)]
    assert not errors, "\n".join(errors[:10])
    return results


def covering(combos: list[Combination]) -> list[Combination]:
    """The first combination with each value of each parameter: every value, few composes."""
    chosen, seen = [], set()
    for combo in combos:
        new = {(k, str(v)) for k, v in combo.params.items()} - seen
        if new:
            chosen.append(combo)
            seen |= new
    return chosen


def write_sweep(path: Path, parameters: dict, **extra) -> Path:
    spec = {
        "method": "grid",
        "program": "src/train.py",
        "command": MACROS,
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": parameters,
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_script(*args: str, timeout: float = 300):
    return run_cli("scripts/local_sweep.py", *args, timeout=timeout)


# ----------------------------------------------------------------------------- the files


def test_the_expected_sweep_files_exist():
    names = {p.stem for p in SWEEP_FILES}
    assert {
        "grid",
        "fashion_mnist",
        "sigma_grid",
        "circles",
        "depth",
        "signal_propagation",
        "edge_of_chaos",
        "grid_packed",
    } <= names


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_is_a_valid_wandb_grid_for_hydra(path):
    raw = yaml.safe_load(path.read_text())
    assert raw["command"] == MACROS  # a block list, so Hydra receives key=value
    assert "command:\n  - ${env}\n" in path.read_text()
    assert (ROOT / raw["program"]).exists() or raw["program"] == "src/diagnose.py"
    sweep = load_sweep(path)  # checks: no +key, no comma in a value, known distributions
    assert sweep.method == "grid"
    for param in sweep.params:
        assert not param.key.startswith(("+", "~"))
        assert all("," not in str(v) for v in param.grid_values())
    combos = combinations(sweep)
    assert len({c.name for c in combos}) == len(combos)


def check_composed(program: str, cfg: dict) -> None:
    """The checks the program makes of its config before it runs."""
    if program == "src/pack.py":
        check_pack_config(cfg)
    else:
        validate(cfg)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_value_of_every_sweep_file_composes(path):
    sweep = load_sweep(path)
    for _, cfg in composed(sweep, covering(combinations(sweep))):
        if sweep.program in ("src/train.py", "src/pack.py"):
            check_composed(sweep.program, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_combination_of_every_sweep_file_composes(path):
    sweep = load_sweep(path)
    results = composed(sweep)
    assert len(results) == len(combinations(sweep))
    for _, cfg in results:
        check_composed(sweep.program, cfg)


def test_the_packed_grid_trains_the_grids_runs():
    grid = {p.key: p.grid_values() for p in load_sweep(ROOT / "sweeps" / "grid.yaml").params}
    packed = load_sweep(ROOT / "sweeps" / "grid_packed.yaml")
    assert packed.program == "src/pack.py"
    assert {p.key: p.grid_values() for p in packed.params} == {
        "experiment": grid["experiment"],
        "activation": grid["activation"],
    }
    pack = compose_dict(config_name="pack")["pack"]  # every agent run's members: its defaults
    assert pack["inits"] == grid["init"] and pack["seeds"] == grid["seed"]
    assert pack["members"] is None


DEEP_PLAIN = ("scaled_orthogonal", "zero_init", "metainit", "gradinit")
RESIDUAL = ("fixup", "skipinit", "rezero")


def test_grid_covers_every_scheme_architecture_and_activation():
    sweep = load_sweep(ROOT / "sweeps" / "grid.yaml")
    params = {p.key: p.grid_values() for p in sweep.params}
    assert sweep.metric == {"name": "val/acc", "goal": "maximize"}
    # mean_field is a point of the (sigma_w2, sigma_b2) plane that sweeps/edge_of_chaos.yaml
    # walks, not a fixed scheme: its default is tanh's critical point; the schemes made for deep
    # plain networks (TAT's weights, ZerO, MetaInit, GradInit) have their own sweep,
    # sweeps/deep_plain.yaml, with a learning-rate grid and a holdout; the schemes made for
    # residual networks (Fixup, SkipInit, ReZero) theirs, sweeps/residual.yaml
    assert sorted(params["init"]) == sorted(
        set(list_inits()) - {"mean_field", *DEEP_PLAIN, *RESIDUAL}
    )
    assert set(DEEP_PLAIN) <= {resolve(i) for i in sweep_values("deep_plain", "init")}
    assert {*RESIDUAL, "zero_init"} <= set(sweep_values("residual", "init"))
    assert {"fashion_mlp", "cifar_cnn", "cifar_cnn30"} <= set(params["experiment"])
    assert {"relu", "leaky_relu", "tanh", "sigmoid", "selu", "gelu"} <= set(params["activation"])
    assert len(params["seed"]) == 3


def sweep_values(name: str, key: str) -> list:
    """The values parameter ``key`` of ``sweeps/<name>.yaml`` takes."""
    (param,) = [p for p in load_sweep(ROOT / "sweeps" / f"{name}.yaml").params if p.key == key]
    return param.grid_values()


def _settings(name: str, keys) -> set[tuple]:
    """The distinct values of ``keys`` (dotted paths) over a sweep's composed configs."""
    out = set()
    for _, cfg in composed(load_sweep(ROOT / "sweeps" / f"{name}.yaml")):
        row = []
        for key in keys:
            value = cfg
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            row.append(tuple(value) if isinstance(value, list) else value)
        out.add(tuple(row))
    return out


def test_fashion_mnist_sweep_is_the_wandb_comparison():
    got = _settings(
        "fashion_mnist",
        [
            "init.name",
            "dataset.name",
            "optimizer._target_",
            "trainer.epochs",
            "model.width",
            "activation.name",
        ],
    )
    assert {g[0] for g in got} == {
        "zeros",
        "ones",
        "uniform",
        "lecun_uniform",
        "lecun_normal",
        "keras_default",
    }
    assert {g[1:] for g in got} == {("fashion_mnist", "torch.optim.Adam", 10, 256, "relu")}
    uniform = _settings("fashion_mnist", ["init.name", "init.a", "init.b"])
    assert ("uniform", 0.0, 1.0) in uniform


def test_sigma_grid_sweep():
    got = _settings(
        "sigma_grid",
        [
            "init.name",
            "init.std",
            "model.depth",
            "model.width",
            "activation.name",
            "diagnose.dtype",
        ],
    )
    assert {g[1] for g in got} == {1e-5, 1e-3, 1e-2, 1e-1, 0.5}
    assert {(g[0], *g[2:]) for g in got} == {("normal", 8, 10, "relu", "float64")}
    assert load_sweep(ROOT / "sweeps" / "sigma_grid.yaml").program == "src/diagnose.py"


def test_circles_sweep():
    got = _settings("circles", ["init.name", "init.std", "dataset.name", "model.widths"])
    assert {(g[0], g[1]) for g in got} == {
        ("zeros", None),
        ("normal", 10.0),
        ("kaiming_normal", None),
    }
    assert {g[2:] for g in got} == {("circles", (10, 5))}
    assert sweep_values("circles", "experiment") == ["circles_mlp"]  # one preset; init varies


def test_depth_sweep():
    got = _settings(
        "depth",
        ["model.depth", "init.name", "activation.name", "dataset.name", "optimizer._target_",
         "optimizer.lr", "optimizer.momentum"],
    )  # fmt: skip
    assert {g[:2] for g in got} == {
        (22, "xavier_normal"),
        (22, "kaiming_normal"),
        (30, "xavier_normal"),
        (30, "kaiming_normal"),
    }
    # the plain CNNs' own recipe (conf/optimizer/sgd_cnn.yaml), not a second one in the sweep
    assert {g[2:] for g in got} == {("relu", "cifar10", "torch.optim.SGD", 0.003, 0.9)}
    keys = [p.key for p in load_sweep(ROOT / "sweeps" / "depth.yaml").params]
    assert not [k for k in keys if k.startswith("optimizer")]


def test_signal_propagation_sweep():
    got = _settings(
        "signal_propagation",
        ["activation.name", "init.name", "init.std", "model.depth", "model.width", "model.bias"],
    )
    assert {g[0] for g in got} == {"linear", "tanh", "relu"}
    schemes = {(resolve(g[1]), g[2]) for g in got}
    assert schemes == {
        ("normal", 1.0),
        ("normal", 0.01),
        ("lecun_normal", None),
        ("xavier_uniform", None),
        ("kaiming_normal", None),
    }
    assert {g[3:] for g in got} == {(100, 512, False)}
    assert sweep_values("signal_propagation", "experiment") == ["signal_prop"]
    assert len(got) == 15


def test_edge_of_chaos_sweep_spans_both_phases_and_depths_past_6_xi_c():
    from initbench.theory import critical_sigma_w2, mean_field

    sweep = load_sweep(ROOT / "sweeps" / "edge_of_chaos.yaml")
    assert len(combinations(sweep)) >= 30 and sweep.program == "src/train.py"
    fixed = {p.key: p.grid_values() for p in sweep.params}
    assert fixed["init"] == ["mean_field"] and fixed["activation"] == ["tanh"]
    assert fixed["init.sigma_b2"] == [0.05] and fixed["experiment"] == ["fashion_mlp"]
    assert fixed["trainer.epochs"] == [1]  # a short, CPU-sized budget
    sigma_w2, depths = fixed["init.sigma_w2"], fixed["model.depth"]
    crit = critical_sigma_w2("tanh", 0.05)
    assert min(sigma_w2) < crit < max(sigma_w2)  # ordered and chaotic phases
    for edge in (min(sigma_w2), max(sigma_w2)):  # deep enough to cross 6 xi_c on both sides
        assert max(depths) > 6 * mean_field("tanh", edge, 0.05).xi_c


# ----------------------------------------------------------------------------- semantics


def test_grid_is_the_product_in_wandbs_order_and_names_keep_file_order(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path / "s.yaml",
            {
                "init": {"values": ["zeros", "xavier", "zeros"]},
                "seed": {"min": 0, "max": 2},
                "init.bias": {"value": "zeros"},
                "optimizer.lr": {"distribution": "q_uniform", "min": 0.1, "max": 0.3, "q": 0.1},
            },
        )
    )
    combos = combinations(sweep)
    assert len(combos) == 2 * 3 * 2  # "zeros" twice runs once; q_uniform excludes max (as W&B)
    assert combos[0].params == {
        "init": "zeros",
        "seed": 0,
        "init.bias": "zeros",
        "optimizer.lr": 0.1,
    }
    # W&B sorts the names (init, init.bias, optimizer.lr, seed): seed, the last, varies fastest
    assert [c.params["seed"] for c in combos[:4]] == [0, 1, 2, 0]
    assert combos[3].params["optimizer.lr"] == pytest.approx(0.2)
    assert list(combos[3].params) == ["init", "seed", "init.bias", "optimizer.lr"]  # file order
    assert combos[0].args == ["init=zeros", "seed=0", "init.bias=zeros", "optimizer.lr=0.1"]
    assert combos[0].name == "init-zeros__seed-0__init.bias-zeros__optimizer.lr-0.1"
    odd = combination_name({"x": "a/b c"})
    assert odd.startswith("x-a_b_c-") and odd != combination_name({"x": "a_b_c"})


def test_long_or_unsafe_names_get_a_hash_of_the_values_and_stay_short():
    long = combination_name({"k": "v" * 148})  # "k-" + 148: exactly 150, kept as it is
    assert long == "k-" + "v" * 148
    longer = combination_name({"k": "v" * 149})  # 151: cut to 140 characters + "-" + 8 hex
    assert len(longer) == 149 and longer.startswith("k-" + "v" * 138 + "-")
    assert re.fullmatch(r"[0-9a-f]{8}", longer[-8:])
    assert longer != combination_name({"k": "v" * 149 + "w"})  # the hash is of the values
    assert combination_name({"x": "a/b"}) != combination_name({"x": "a b"})  # both "x-a_b"
    # YAML reads 2024-01-02 as a date: the hash takes any value (str), not only JSON's types
    dated = combination_name({"day": datetime.date(2024, 1, 2), "x": "a/b"})
    assert dated.startswith("day-2024-01-02__x-a_b-")


def test_grid_keeps_every_value_after_a_duplicate_and_count_takes_its_head(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path / "s.yaml",
            {"init": {"values": ["zeros", "zeros", "xavier"]}, "seed": {"values": [0, 1]}},
        )
    )
    combos = combinations(sweep)
    assert [(c.params["init"], c.params["seed"]) for c in combos] == [
        ("zeros", 0),
        ("zeros", 1),
        ("xavier", 0),
        ("xavier", 1),
    ]
    assert [c.index for c in combos] == [0, 1, 2, 3]
    assert [c.params for c in combinations(sweep, count=3)] == [c.params for c in combos[:3]]
    assert len(combinations(sweep, count=100)) == 4
    for bad in (0, -1, True, 2.5, "3"):
        with pytest.raises(SweepError, match="integer >= 1"):
            combinations(sweep, count=bad)


def test_varying_keys_and_labels_show_what_differs():
    a = Combination(0, {"init": "zeros", "seed": 0, "lr": 0.1}, "a")
    b = Combination(1, {"init": "zeros", "seed": 1, "lr": 0.2}, "b")
    assert varying_keys([a, b]) == ["seed", "lr"]  # in file order
    assert varying_keys([a]) == ["init", "seed", "lr"]  # nothing varies: all of them
    assert varying_keys([]) == []
    assert a.label() == "init=zeros seed=0 lr=0.1"
    assert b.label(["lr", "missing", "seed"]) == "lr=0.2 seed=1"


@pytest.mark.parametrize(
    "name, folder",
    [("../../x", "x"), ("/tmp/x", "tmp_x"), ("..", "unnamed"), (".a/../../x", "a_.._.._x")],
)
def test_a_sweep_name_cannot_move_its_folder_out_of_outputs(tmp_path, name, folder):
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {"seed": {"values": [1]}}, name=name))
    out = default_out_dir(sweep)
    assert out == Path("outputs/local-sweeps") / folder
    assert (Path("/base") / out).resolve().parent == Path("/base/outputs/local-sweeps")


@pytest.mark.parametrize("value", ["..", "../../x", ".x", "/"])
def test_combination_folders_are_one_component(value):
    name = combination_name({"run_name": value})
    assert "/" not in name and not name.startswith(".") and name not in (".", "..")


def test_command_is_the_agents_plus_a_fixed_run_dir(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {"seed": {"values": [1]}}))
    combo = combinations(sweep)[0]
    cmd = build_command(sweep, combo, tmp_path / "run", interpreter="python3")
    assert cmd == [
        "/usr/bin/env",
        "python3",
        "src/train.py",
        "seed=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]


def test_random_draws_are_reproducible_bounded_and_extendable(tmp_path):
    params = {
        "optimizer.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "init": {"values": ["zeros", "kaiming"], "probabilities": [0.2, 0.8]},
        "seed": {"distribution": "int_uniform", "min": 0, "max": 4},
        "init.std": {"distribution": "q_normal", "mu": 1.0, "sigma": 0.5, "q": 0.25},
    }
    sweep = load_sweep(write_sweep(tmp_path / "r.yaml", params, method="random"))
    draws = combinations(sweep, count=400, seed=3)
    assert [c.params for c in draws] == [c.params for c in combinations(sweep, count=400, seed=3)]
    assert [c.params for c in combinations(sweep, count=5, seed=3)] == [
        c.params for c in draws[:5]
    ]  # a larger --count extends, so the first runs are found done
    assert draws[0].params != combinations(sweep, count=1, seed=4)[0].params
    lr = np.array([c.params["optimizer.lr"] for c in draws])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1
    assert 0.35 < np.mean(np.log10(lr) < -2.5) < 0.65  # uniform in log space
    assert 0.7 < np.mean([c.params["init"] == "kaiming" for c in draws]) < 0.9
    assert {c.params["seed"] for c in draws} == {0, 1, 2, 3, 4}
    assert all(
        abs(c.params["init.std"] / 0.25 - round(c.params["init.std"] / 0.25)) < 1e-9 for c in draws
    )
    assert len({c.name for c in draws}) == len(draws)
    with pytest.raises(SweepError, match="--count"):
        combinations(sweep)  # a random sweep needs a count (or run_cap) to end
    capped = load_sweep(write_sweep(tmp_path / "c.yaml", params, method="random", run_cap=7))
    assert len(combinations(capped)) == 7
    assert [c.index for c in draws[:3]] == [0, 1, 2]
    assert [c.params for c in combinations(sweep, count=3)] == [
        c.params for c in combinations(sweep, count=3, seed=0)
    ]  # the default seed is 0, so a run without --seed draws what a --seed 0 run did
    # draws that repeat a point still get a folder each: the draw's number starts the name
    same = load_sweep(write_sweep(tmp_path / "s.yaml", {"seed": {"value": 1}}, method="random"))
    names = [c.name for c in combinations(same, count=3)]
    assert names == ["0000__seed-1", "0001__seed-1", "0002__seed-1"]


@pytest.mark.parametrize(
    "params, extra, message",
    [
        ({"+init.foo": {"value": 1}}, {}, "no \\+/~ prefix"),
        ({"model.widths": {"values": ["[10,5]"]}}, {}, "comma"),
        ({"init": {"parameters": {"std": {"value": 1}}}}, {}, "nested"),
        ({"init.std": {"min": 0.1, "max": 1.0}}, {}, "cannot be gridded"),
        ({"seed": {"values": [0]}}, {"method": "bayes"}, "needs the W&B server"),
        ({"seed": {"values": [0]}}, {"program": None}, "program is missing"),
        ({"seed": {"distribution": "poisson"}}, {}, "valid: constant"),
    ],
)
def test_bad_sweep_files_are_refused_with_the_reason(tmp_path, params, extra, message):
    path = write_sweep(tmp_path / "bad.yaml", params, **extra)
    with pytest.raises(SweepError, match=message):
        combinations(load_sweep(path))


def test_a_key_missing_from_the_config_does_not_compose(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path / "s.yaml",
            {"init": {"values": ["zeros", "normal"]}, "init.std": {"value": 0.1}},
        )
    )
    results = dict(
        (c.params["init"], r) for c, r in compose_combinations(sweep, combinations(sweep), ROOT)
    )
    assert isinstance(results["zeros"], Exception)  # zeros has no std: no silent +key
    assert results["normal"]["init"]["std"] == 0.1


def test_outcome_comes_from_summary_or_the_exit_code(tmp_path):
    combo = Combination(0, {"seed": 0}, "seed-0")
    assert read_outcome(combo, tmp_path).status == "pending"
    (tmp_path / "local_sweep.json").write_text(json.dumps({"returncode": 0}))
    assert read_outcome(combo, tmp_path).status == "finished"  # diagnose.py writes no summary
    (tmp_path / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    assert read_outcome(combo, tmp_path).status == "interrupted"


# ----------------------------------------------------------------------------- running


def test_local_sweep_dry_run_lists_every_combination(tmp_path):
    proc = run_script("sweeps/circles.yaml", "--dry-run", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("  ")]
    assert len(lines) == 9 and lines[0].split() == ["1", "init=zeros", "seed=0"]
    assert "9 combinations" in proc.stdout
    assert "src/train.py experiment=circles_mlp init=zeros seed=0 hydra.run.dir=" in proc.stdout
    assert not (tmp_path / "out").exists()  # nothing run, nothing written
    path = write_sweep(tmp_path / "r.yaml", {"seed": {"min": 0, "max": 1000}}, method="random")
    first = run_script(str(path), "--dry-run", "--count", "4", "--out", str(tmp_path / "r"))
    again = run_script(str(path), "--dry-run", "--count", "4", "--out", str(tmp_path / "r"))
    assert first.returncode == 0 and first.stdout == again.stdout
    assert len([ln for ln in first.stdout.splitlines() if ln.startswith("  ")]) == 4
    bad = run_script(str(write_sweep(tmp_path / "b.yaml", {"x": {"values": ["a,b"]}})), "--dry-run")
    assert bad.returncode == 2 and "local_sweep: error:" in bad.stderr and "comma" in bad.stderr


def test_dry_run_warns_about_missing_data_and_estimates_the_wall_time(tmp_path):
    """Per dataset not on disk: how many combinations, the absolute folder and the fix; the
    wall time of what is left from a bench's results (initbench.walltime, as the bench's own
    grid estimate)."""
    path = write_sweep(
        tmp_path / "mixed.yaml",
        {
            "experiment": {"values": ["cifar_cnn", "circles_mlp", "fashion_mlp"]},
            "seed": {"values": [0, 1]},
            "data_dir": {"value": str(tmp_path / "empty")},
        },
    )
    results = {
        "meta": {"quick": False, "device": "cpu", "device_name": "x86_64"},
        "mlp_epoch_speedup_vs_dataloader": {"ratio": 2.0, "epoch_s_ours": 6.0,
                                            "train_examples": 60_000},
        "cnn30_speedup_fast_path": {"ratio": 1.5, "batch_size": 500, "step_ms_cnn10_fast": 10.0,
                                    "step_ms_fast": 30.0},
    }  # fmt: skip
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(results))
    out = tmp_path / "out"
    proc = run_script(str(path), "--dry-run", "--out", str(out), "--bench", str(bench))
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stdout.splitlines() if ln.startswith("warning:")]
    cifar = [w for w in warnings if " use cifar10," in w]
    assert len(cifar) == 1 and cifar[0].startswith("warning: 2 of 6 combinations to run use")
    assert f"not in {tmp_path / 'empty'}" in cifar[0] and "data_dir=" in cifar[0]
    assert "$INITBENCH_DATA_DIR" in cifar[0] and "dataset=circles" in cifar[0]
    assert not any("circles," in w for w in warnings)  # generated: never missing
    epochs = {p: compose_dict([f"experiment={p}"])["trainer"]["epochs"]
              for p in ("cifar_cnn", "fashion_mlp")}  # fmt: skip
    epoch_s = {"cifar_cnn": 100 * 10.0 / 1e3, "fashion_mlp": 6.0}
    seconds = 2 * sum(epochs[p] * epoch_s[p] * 1.07 for p in epoch_s)
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("estimated wall time")]
    assert f"({seconds / 3600:.1f} h) for 4 of the 6 combinations" in line
    assert f"measured in {bench}" in line and "not estimated" in line and "2 x circles_mlp" in line
    missing = run_script(str(path), "--dry-run", "--out", str(out), "--bench", str(tmp_path / "x"))
    assert "wall time: not estimated (no results in" in missing.stdout
    assert "python scripts/bench.py" in missing.stdout
    # --pack: each preset's epochs at its measured pack speedup (the CNNs at cnn30's)
    no_pack = run_script(str(path), "--dry-run", "--pack", "--out", str(out), "--bench", str(bench))
    assert "(no packed_speedup in" in no_pack.stdout
    bench.write_text(json.dumps({**results, "packed_speedup": {"ratio": 4.0, "cnn30_ratio": 2.0}}))
    packed = run_script(str(path), "--dry-run", "--pack", "--out", str(out), "--bench", str(bench))
    (line,) = [ln for ln in packed.stdout.splitlines() if ln.startswith("estimated wall time")]
    seconds = 2 * 1.07 * (epochs["cifar_cnn"] * epoch_s["cifar_cnn"] / 2
                          + epochs["fashion_mlp"] * epoch_s["fashion_mlp"] / 4)  # fmt: skip
    assert (
        f"{hms(seconds)} ({seconds / 3600:.1f} h) for 4 of the 6 combinations to run, packed"
        in line
    )
    assert not out.exists()


def test_real_local_sweep_runs_in_parallel_keeps_divergence_as_data_and_resumes(tmp_path):
    """Four circles runs, two at a time, W&B offline: std 1e30 diverges at step 0, the sweep
    goes on; a re-run skips what is done (an interrupted run would be continued)."""
    path = write_sweep(
        tmp_path / "tiny.yaml",
        {
            "experiment": {"value": "circles_mlp"},
            "init": {"value": "normal"},
            "init.std": {"values": [1.0e30, 0.5]},
            "seed": {"values": [0, 1]},
            "trainer.epochs": {"value": 4},
            "trainer.device": {"value": "cpu"},
            "telemetry.enabled": {"value": False},
        },
    )
    out = tmp_path / "out"
    proc = run_script(str(path), "--parallel", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 to run, 2 at a time, W&B offline" in proc.stdout
    assert "[done 4/4]" in proc.stdout and "elapsed" in proc.stdout
    # after each run: done/total, the rate and the ETA (progress.py), last at 0:00:00
    progress = [ln for ln in proc.stdout.splitlines() if ln.startswith("sweep tiny: ")]
    assert len(progress) == 4 and progress[0].startswith("sweep tiny: 1/4 runs (25%), ")
    assert "ETA 0:00:00" in progress[-1] and "failed" not in progress[-1]
    lines = proc.stdout.splitlines()
    first_done = next(i for i, ln in enumerate(lines) if ln.startswith("[done"))
    assert sum(ln.startswith("[started") for ln in lines[:first_done]) == 2  # two at a time
    statuses = {}
    for run_dir in out.iterdir():
        if run_dir.is_dir():
            summary = json.loads((run_dir / "summary.json").read_text())
            statuses[run_dir.name] = summary["status"]
            assert json.loads((run_dir / "local_sweep.json").read_text())["returncode"] == 0
            assert list((run_dir / "wandb").glob("offline-run-*"))  # W&B offline, per run
    assert sorted(statuses.values()) == ["diverged", "diverged", "finished", "finished"]
    table = proc.stdout.split("best_val_acc")[1]
    assert table.index("finished") < table.index("diverged")  # best first
    assert "2 diverged, 2 finished" in proc.stdout

    again = run_script(str(path), "--parallel", "2", "--out", str(out))
    assert again.returncode == 0
    assert "4 already done, 0 to run" in again.stdout and "[started" not in again.stdout

    name = next(n for n, s in statuses.items() if s == "finished")
    summary_path = out / name / "summary.json"
    summary_path.write_text(
        json.dumps({**json.loads(summary_path.read_text()), "status": "interrupted"})
    )
    listed = run_script(str(path), "--dry-run", "--out", str(out))
    assert "[interrupted]" in listed.stdout and listed.stdout.count("[diverged]") == 2
    assert listed.stdout.count("[finished]") == 1  # a re-run would continue only that one


def processes_with(marker: str) -> list[int]:
    """The live processes (zombies left out) whose command line contains ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if marker in command and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_killing_the_local_runner_stops_its_combination_and_a_rerun_resumes_it(tmp_path):
    """``kill -9`` of the runner: its running combination gets SIGTERM, saves and exits at
    once, so running the sweep again continues it rather than training it a second time."""

    def sweep_file(epochs: int) -> Path:  # epochs in the command: the same combination folder
        params = {
            "dataset": {"value": "circles"},
            "dataset.n_train": {"value": 2000},
            "trainer.batch_size": {"value": 32},
            "trainer.device": {"value": "cpu"},
            "logger": {"value": "tensorboard"},
            "telemetry.enabled": {"value": False},
        }
        return write_sweep(
            tmp_path / "one.yaml", params, command=[*MACROS, f"trainer.epochs={epochs}"]
        )

    path = sweep_file(epochs=200)
    out = tmp_path / "out"
    run_dir = out / combinations(load_sweep(path))[0].name
    marker = f"hydra.run.dir={run_dir}"
    runner = start(["scripts/local_sweep.py", str(path), "--out", str(out)])
    try:
        while not (run_dir / "checkpoint.pt").exists():  # an epoch done: it trains
            if runner.poll() is not None:
                pytest.fail(f"the runner ended first: {finish(runner, timeout=10).stdout}")
            time.sleep(0.1)
        assert len(processes_with(marker)) == 1
        runner.kill()
        finish(runner, timeout=30)
        deadline = time.monotonic() + 15
        while processes_with(marker):
            assert time.monotonic() < deadline, "the combination still trains without its runner"
            time.sleep(0.2)
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"  # it saved on the way out
    again = run_script(str(sweep_file(epochs=3)), "--out", str(out))  # ask for less: ends soon
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 already done, 1 to run" in again.stdout
    assert "resuming" in (run_dir / "local_sweep.log").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


# ----------------------------------------------------------------------------- scaling out


def test_slurm_launcher_config_extends_submitit():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.timeout_min > 0
    assert launcher.max_num_timeout >= 1  # requeued on timeout/preemption; the run resumes


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_multirun(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_train_cli(
        *[
            "-m",
            "hydra/launcher=submitit_local",
            "experiment=circles_mlp",
            "init=zeros,kaiming",
            "trainer.epochs=2",
            "trainer.device=cpu",
            "logger=tensorboard",
            f"hydra.sweep.dir={tmp_path}",
        ],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == 2
    assert {json.loads(p.read_text())["status"] for p in summaries} == {"finished"}
    assert list(tmp_path.glob(".submitit/*"))  # submitit's job folders


def test_check_names_a_combination_that_does_not_compose(tmp_path):
    path = write_sweep(
        tmp_path / "s.yaml",
        {"experiment": {"value": "circles_mlp"}, "init": {"values": ["zeros", "no_such_init"]}},
    )
    proc = run_script(str(path), "--dry-run", "--check", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("does not compose:")]
    assert len(lines) == 1 and "init=no_such_init" in lines[0], proc.stdout
    assert "1 of 2 combinations compose" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_slurm_launcher_has_the_documented_values():
    """docs/sweeps.md, SLURM: one GPU, 8 CPUs, 32 GB, 4 h, requeued up to 3 times; partition and
    account on the command line; one job per folder multirun/<date>/<time>/<n>-<run name>."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "experiment=circles_mlp"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["gpus_per_node"] == 1
    assert launcher["cpus_per_task"] == 8
    assert launcher["mem_gb"] == 32
    assert launcher["timeout_min"] == 4 * 60
    assert launcher["max_num_timeout"] == 3
    assert launcher["tasks_per_node"] == 1 and launcher["nodes"] == 1
    assert launcher["partition"] == "gpu" and launcher["account"] is None
    sweep = OmegaConf.to_container(cfg.hydra.sweep)  # unresolved: hydra.job.num is set per job
    assert sweep["dir"].startswith("multirun/")
    assert sweep["subdir"] == "${hydra.job.num}-${safe:${run_name}}"
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


def test_a_sweep_reruns_from_the_copy_it_saved(tmp_path):
    """``local_sweep <out>/sweep.yaml --out <out>``: the copy is its own source (it was a
    shutil.SameFileError traceback)."""
    from initbench.sweep.local import write_index

    sweep = load_sweep(ROOT / "sweeps" / "circles.yaml")
    write_index(sweep, combinations(sweep), tmp_path)
    saved = (tmp_path / "sweep.yaml").read_text()
    assert saved == (ROOT / "sweeps" / "circles.yaml").read_text()
    again = load_sweep(tmp_path / "sweep.yaml")
    write_index(again, combinations(again), tmp_path)
    assert (tmp_path / "sweep.yaml").read_text() == saved
    assert json.loads((tmp_path / "combinations.json").read_text())["sweep"] == "circles"


def test_a_grid_runs_in_the_order_wandbs_own_grid_engine_hands_it_out():
    """tests/data/wandb_grid_order.json: the first runs of every grid sweep file, computed once
    with W&B's grid engine (``sweeps.grid_search.grid_search_next_runs``; the ``sweeps``
    package pins numpy < 2, so it is kept out of the install): it sorts the parameter names
    and varies the last fastest. ``local_sweep --count N`` must run W&B's first N."""
    data = json.loads((ROOT / "tests" / "data" / "wandb_grid_order.json").read_text())
    grid_files = {p.name for p in (ROOT / "sweeps").glob("*.yaml")
                  if load_sweep(p).method == "grid"}  # fmt: skip
    assert set(data["files"]) == grid_files  # every grid file pinned (regenerate if one is added)
    for name, expected in data["files"].items():
        got = grid_combinations(load_sweep(ROOT / "sweeps" / name), limit=len(expected))
        assert [c.params for c in got] == expected, name
