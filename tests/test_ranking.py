"""report/ranking.py on small hand-made tables, in milliseconds: the score, the target and the
epochs to it, the bootstrap interval, ties and the leaderboards' order and columns. (The same
through whole reports: tests/test_report.py.)"""

import math

import numpy as np
import pandas as pd
import pytest

from initbench.report.ranking import (
    LEADERBOARD_COLUMNS,
    TARGET_FRACTION,
    _tied,
    bootstrap_ci,
    leaderboard_table,
    leaderboards,
    pick_schemes,
    score,
    set_target,
)
from initbench.report.runset import RunSet

NAN = float("nan")


def test_the_score_is_the_best_accuracy_else_chance_else_zero():
    assert score(pd.Series({"best_val_acc": 0.7, "chance_acc": 0.1})) == 0.7
    assert score(pd.Series({"best_val_acc": NAN, "chance_acc": 0.1})) == 0.1
    assert score(pd.Series({"best_val_acc": NAN, "chance_acc": NAN})) == 0.0
    assert isinstance(score(pd.Series({"best_val_acc": 1, "chance_acc": 0.5})), float)


def runset(runs: list[dict], curves: dict[str, list[float]]) -> RunSet:
    rows = [{"run_id": r, "epoch": e, "val/acc": a} for r, accs in curves.items()
            for e, a in enumerate(accs, 1)]  # fmt: skip
    table = pd.DataFrame(runs).assign(target_acc=NAN, epochs_to_target=NAN)  # as assemble has them
    return RunSet("test", table, pd.DataFrame(rows), pd.DataFrame())


def test_the_target_defaults_to_nine_tenths_of_each_architectures_best():
    assert TARGET_FRACTION == 0.9
    rs = runset(
        [{"run_id": "a", "architecture": "wide", "best_val_acc": 0.8},
         {"run_id": "b", "architecture": "wide", "best_val_acc": 0.5},
         {"run_id": "c", "architecture": "thin", "best_val_acc": 0.61234},
         {"run_id": "d", "architecture": "none", "best_val_acc": NAN}],
        {"a": [0.3, 0.72, 0.8], "b": [0.5, 0.5], "c": [0.5, 0.551, 0.6], "d": [0.9]},
    )  # fmt: skip
    set_target(rs, None)
    runs = rs.runs.set_index("run_id")
    assert runs.loc["a", "target_acc"] == 0.72 and runs.loc["b", "target_acc"] == 0.72
    assert runs.loc["c", "target_acc"] == round(0.9 * 0.61234, 4) == 0.5511
    assert math.isnan(runs.loc["d", "target_acc"])  # no best: no target, no epochs
    assert runs.loc["a", "epochs_to_target"] == 2  # 0.72 reaches 0.72: >= counts
    assert pd.isna(runs.loc["b", "epochs_to_target"]) and pd.isna(runs.loc["d", "epochs_to_target"])
    assert runs.loc["c", "epochs_to_target"] == 3  # 0.551 < 0.5511
    assert str(rs.runs["epochs_to_target"].dtype) == "Int64"


def test_a_given_target_applies_to_every_run_and_counts_the_first_epoch_reaching_it():
    rs = runset(
        [{"run_id": "a", "architecture": "wide", "best_val_acc": 0.8},
         {"run_id": "b", "architecture": "thin", "best_val_acc": 0.3}],
        {"a": [0.1, 0.5, 0.4, 0.8], "b": [0.2, 0.3]},
    )  # fmt: skip
    set_target(rs, 0.5)
    runs = rs.runs.set_index("run_id")
    assert list(runs["target_acc"]) == [0.5, 0.5]
    assert runs.loc["a", "epochs_to_target"] == 2 and pd.isna(runs.loc["b", "epochs_to_target"])
    set_target(rs, 0.0)  # a target of 0 is a target, reached at the first epoch
    assert list(rs.runs["epochs_to_target"]) == [1, 1]


def test_the_bootstrap_interval_of_two_values_is_exact():
    # resampling [0, 1]: the mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], level=0.4) == (0.5, 0.5)  # the 30% and 70% quantiles
    assert bootstrap_ci([0.0, 1.0], level=0.4, resamples=4000, seed=5) == (0.5, 0.5)
    lo, hi = bootstrap_ci([2.0, 2.0, 2.0])
    assert lo == hi == 2.0
    assert all(math.isnan(v) for v in bootstrap_ci([])) and all(
        math.isnan(v) for v in bootstrap_ci([1.0])
    )


def test_the_bootstrap_uses_its_seed_and_resamples():
    x = np.random.default_rng(1).normal(0.8, 0.05, size=6)
    assert bootstrap_ci(x) == bootstrap_ci(x, seed=0, resamples=10_000, level=0.95)
    assert bootstrap_ci(x, seed=1) != bootstrap_ci(x)
    lo, hi = bootstrap_ci(x, resamples=1)  # one resample: both ends are its mean
    assert lo == hi and x.min() <= lo <= x.max()
    narrow, wide = bootstrap_ci(x, level=0.5), bootstrap_ci(x, level=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_tied_means_the_interval_reaches_the_best_ones_lower_end():
    board = pd.DataFrame({"ci_low": [0.80, 0.70, 0.60, NAN, 0.5],
                          "ci_high": [0.90, 0.80, 0.79, NAN, NAN]})  # fmt: skip
    assert _tied(board) == [True, True, False, None, None]  # 0.80 >= 0.80: tied
    assert _tied(board.assign(ci_low=[NAN, 0.7, 0.6, 0.5, 0.4])) == [True, None, None, None, None]


def run(arch, act, variant, best, *, status="finished", seed=0, final=None, to_target=None,
        stalled=False, chance=0.1):  # fmt: skip
    return {
        "architecture": arch, "activation": act, "variant": variant, "seed": seed,
        "status": status, "best_val_acc": best, "chance_acc": chance,
        "final_val_acc": best if final is None else final,
        "epochs_to_target": pd.NA if to_target is None else to_target, "stalled": stalled,
    }  # fmt: skip


def test_leaderboards_rank_by_mean_then_spread_then_name():
    runs = pd.DataFrame(
        [run("mlp", "relu", "b", 0.8, seed=0), run("mlp", "relu", "b", 0.8, seed=1),
         run("mlp", "relu", "a", 0.7, seed=0), run("mlp", "relu", "a", 0.9, seed=1),
         run("mlp", "relu", "c", 0.8, seed=0), run("mlp", "relu", "c", 0.8, seed=1),
         run("mlp", "relu", "d", 0.95, seed=0, status="running"),  # not a result
         run("mlp", "relu", "e", 0.2, seed=0, status="interrupted"),
         run("mlp", "relu", "f", NAN, seed=0, status="diverged"),  # never evaluated: chance
         run("mlp", "relu", "g", NAN, seed=0, status="diverged", chance=NAN)]  # zero
    ).astype({"epochs_to_target": "Int64"})  # fmt: skip
    ((key, board),) = leaderboards(runs).items()
    assert key == ("mlp", "relu")
    # b and c: same mean (0.8) and spread (0): by name; a: same mean, larger spread, after them
    assert list(board["scheme"]) == ["b", "c", "a", "f", "g"]
    assert list(board["rank"]) == [1, 2, 3, 4, 5] and list(board.index) == [0, 1, 2, 3, 4]
    by = board.set_index("scheme")
    assert by.loc["a", "best_val_acc_mean"] == pytest.approx(0.8)
    assert by.loc["a", "best_val_acc_std"] == pytest.approx(math.sqrt(0.02))  # ddof 1
    assert by.loc["f", "best_val_acc_mean"] == 0.1 and by.loc["f", "best_val_acc_std"] == 0.0
    assert by.loc["g", "best_val_acc_mean"] == 0.0
    assert list(by["runs"]) == [2, 2, 2, 1, 1] and list(by["diverged"]) == [0, 0, 0, 1, 1]
    assert board.columns.get_loc("tied_with_best") == board.columns.get_loc("ci_high") + 1
    assert list(board["tied_with_best"]) == _tied(board.drop(columns="tied_with_best"))
    # c [0.8, 0.8] and a [0.7, 0.9] reach b's lower end (0.8); one run: no interval, unknown
    assert list(board["tied_with_best"]) == [True, True, True, None, None]
    assert list(board.columns[:2]) == ["rank", "scheme"]


def test_leaderboard_columns_count_and_average_what_they_say():
    runs = pd.DataFrame(
        [run("cnn", "tanh", "x", 0.6, seed=0, final=0.5, to_target=2),
         run("cnn", "tanh", "x", 0.8, seed=1, final=0.7, to_target=4, stalled=True),
         run("cnn", "tanh", "x", 0.7, seed=2, final=0.6),
         run("cnn", "relu", "x", 0.3, seed=0, stalled=True),
         run("mlp", "tanh", "x", 0.3, seed=0, status="diverged")]
    ).astype({"epochs_to_target": "Int64"})  # fmt: skip
    boards = leaderboards(runs)
    assert list(boards) == [("cnn", "relu"), ("cnn", "tanh"), ("mlp", "tanh")]  # sorted cells
    row = boards["cnn", "tanh"].iloc[0]
    assert row["runs"] == 3 and row["best_val_acc_mean"] == pytest.approx(0.7)
    assert row["final_val_acc_mean"] == pytest.approx(0.6)
    assert row["epochs_to_target"] == 3.0 and row["reached_target"] == 2  # mean of those reached
    assert row["stalled"] == 1 and row["diverged"] == 0
    lo, hi = bootstrap_ci([0.6, 0.8, 0.7])
    assert (row["ci_low"], row["ci_high"]) == (lo, hi)
    assert boards["mlp", "tanh"].iloc[0]["diverged"] == 1
    assert bool(boards["cnn", "relu"].iloc[0]["stalled"] == 1)
    assert leaderboards(pd.DataFrame([run("m", "r", "x", 0.5, status="running")])) == {}


def test_the_leaderboard_table_holds_every_board_in_its_columns():
    runs = pd.DataFrame(
        [run("cnn", "tanh", "x", 0.6), run("cnn", "tanh", "y", 0.5), run("mlp", "relu", "x", 0.9)]
    ).astype({"epochs_to_target": "Int64"})
    table = leaderboard_table(leaderboards(runs))
    assert list(table.columns) == LEADERBOARD_COLUMNS
    assert list(zip(table["architecture"], table["activation"], table["scheme"], table["rank"],
                    strict=True)) == [("cnn", "tanh", "x", 1), ("cnn", "tanh", "y", 2),
                                      ("mlp", "relu", "x", 1)]  # fmt: skip
    assert list(table.index) == [0, 1, 2]  # one table, not the boards' indexes side by side
    empty = leaderboard_table({})
    assert empty.empty and list(empty.columns) == LEADERBOARD_COLUMNS


@pytest.mark.parametrize(
    "count, n, picked",
    [(3, 4, [0, 1, 2]), (4, 4, [0, 1, 2, 3]), (5, 3, [0, 2, 4]), (5, 2, [0, 4]),
     (10, 4, [0, 3, 6, 9]), (6, 4, [0, 2, 3, 5])],
)  # fmt: skip
def test_picked_schemes_spread_from_best_to_worst(count, n, picked):
    board = pd.DataFrame({"scheme": [f"s{i}" for i in range(count)]})
    assert pick_schemes(board, n) == [f"s{i}" for i in picked]
