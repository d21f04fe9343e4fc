"""The Hydra config: every option of every group composes, bad values fail early, and names
that become paths stay inside the output folders."""

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from helpers import CONF_DIR, ROOT, compose_dict, group_options, run_cli, run_train_cli
from initbench.build import validate
from initbench.config import yaml_fields
from initbench.data import list_datasets
from initbench.errors import UserError
from initbench.inits import list_aliases, list_inits, resolve
from initbench.io import MAX_NAME, UNSAFE_CHAR, safe_name
from initbench.models import list_activations

GROUPS = ["model", "dataset", "init", "activation", "optimizer", "logger", "experiment"]


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_group_option_composes_and_validates(group, option):
    cfg = compose_dict([f"{group}={option}", "trainer.device=cpu"])
    assert cfg["run_name"] == (
        f"{cfg['init']['name']}-{cfg['activation']['name']}-{cfg['model']['name']}-s0"
    )
    if group == "experiment":  # a preset names its experiment and chooses model + data + budget
        assert cfg["experiment_name"] == option
        assert cfg["init"] == compose_dict()["init"], f"{option} chooses the init"
    if (group, option) == ("model", "custom"):  # a template: the user names their network
        with pytest.raises(UserError, match=r"model\._target_ must be the dotted path"):
            validate(cfg)
        cfg["model"]["_target_"] = "initbench.models.MLP"
    validate(cfg)  # every shipped option is valid as composed


def test_groups_mirror_the_registries():
    assert set(group_options("activation")) == set(list_activations())
    assert set(group_options("dataset")) == set(list_datasets())
    named = set(list_inits()) | set(list_aliases())
    assert named <= set(group_options("init"))
    for variant in set(group_options("init")) - named:  # options that pin a scheme's hparams
        assert resolve(compose_dict([f"init={variant}"])["init"]["name"]) in list_inits()
    assert {"mlp", "cnn", "cnn22", "cnn30"} <= set(group_options("model"))
    assert {"fashion_mlp", "cifar_cnn30"} <= set(group_options("experiment"))


def run_name_in_a_hydra_run(overrides: list[str]) -> str:
    """``run_name`` as it resolves inside a Hydra run, where Hydra has set its HydraConfig."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        return cfg.run_name
    finally:
        HydraConfig.instance().cfg = previous


def test_run_names_tell_init_variants_apart():
    assert run_name_in_a_hydra_run(["init=normal_std10"]) == "normal_std10-relu-mlp-s0"
    assert run_name_in_a_hydra_run(["init=normal_std1"]) == "normal_std1-relu-mlp-s0"
    assert run_name_in_a_hydra_run(["init=kaiming", "seed=3"]) == "kaiming-relu-mlp-s3"
    assert compose_dict(["init=normal_std10"])["run_name"] == "normal-relu-mlp-s0"  # no Hydra run


def test_defaults_are_the_fashion_mnist_mlp_with_both_loggers():
    cfg = compose_dict()
    assert cfg["model"]["name"] == "mlp" and cfg["dataset"]["name"] == "fashion_mnist"
    assert set(cfg["logger"]) == {"wandb", "tensorboard"}
    assert cfg["optimizer"]["_target_"] == "torch.optim.Adam"
    assert cfg["optimizer"]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("model", ["cnn", "cnn22", "cnn30"])
def test_the_plain_cnns_bring_their_optimizer_recipe_which_overrides_still_change(model):
    # SGD momentum 0.9 lr 0.003: Kaiming trains and Xavier stalls at 30 layers (docs/results.md)
    for overrides, config_name in [([f"model={model}"], "train"), ([f"model={model}"], "pack"),
                                   ([f"experiment=cifar_{model}"], "train")]:  # fmt: skip
        opt = compose_dict(overrides, config_name)["optimizer"]
        assert (opt["_target_"], opt["lr"], opt["momentum"]) == ("torch.optim.SGD", 0.003, 0.9)
    assert compose_dict([f"model={model}", "optimizer=adam"])["optimizer"]["lr"] == 1e-3
    assert compose_dict(["optimizer=adam", f"model={model}"])["optimizer"]["lr"] == 1e-3
    assert compose_dict([f"model={model}", "optimizer.lr=0.01"])["optimizer"]["lr"] == 0.01
    assert compose_dict([f"model={model}", "optimizer=sgd"])["optimizer"]["lr"] == 0.01
    assert compose_dict(["model=mlp"])["optimizer"]["_target_"] == "torch.optim.Adam"


def test_presets_set_depth_and_loggers_switch_off():
    assert compose_dict(["model=cnn30"])["model"]["depth"] == 30
    assert compose_dict(["model=cnn22"])["model"]["depth"] == 22
    cfg = compose_dict(["experiment=cifar_cnn30"])
    assert (cfg["model"]["name"], cfg["dataset"]["name"]) == ("cnn30", "cifar10")
    assert set(compose_dict(["logger=tensorboard"])["logger"]) == {"tensorboard"}
    assert not compose_dict(["logger=[]"]).get("logger")


def test_every_yaml_field_has_a_comment():
    for path in CONF_DIR.rglob("*.yaml"):
        block_indent = None  # inside a "key: |" text block, its lines are text, not fields
        for line in path.read_text().splitlines():
            stripped = line.strip()
            indent = len(line) - len(line.lstrip())
            if block_indent is not None and (not stripped or indent > block_indent):
                continue
            block_indent = indent if stripped.endswith("|") else None
            is_field = ":" in stripped and not stripped.startswith(("#", "-"))
            opens_block = stripped.endswith(":") or stripped.endswith("|")
            if is_field and not opens_block and not stripped.startswith(("_target_", "_partial_")):
                assert "#" in stripped, f"{path.relative_to(ROOT)}: {line!r} has no comment"


@pytest.mark.parametrize(
    "override, field",
    [
        ("model.depth=0", "model.depth"),
        ("model.width=0", "model.width"),
        ("model.widths=[]", "model.widths"),
        ("model.dropout=1.0", "model.dropout"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("trainer.epochs=0", "trainer.epochs"),
        ("trainer.device=tpu", "trainer.device"),
        ("trainer.device=cuda:7", "trainer.device"),
        ("trainer.precision=fp8", "trainer.precision"),
        ("init.name=nonsense", "nonsense"),
        ("activation.name=swish", "swish"),
        ("dataset.name=imagenet", "imagenet"),
    ],
)
def test_bad_values_name_the_field(override, field):
    cfg = compose_dict([override])
    with pytest.raises(UserError, match=field):
        validate(cfg)


def test_cli_help_lists_groups_and_options():
    out = run_train_cli("--help").stdout
    for text in (
        "model: cnn, cnn22, cnn30, custom, mlp",
        "experiment:",
        "init:",
        "activation:",
        "logger:",
    ):
        assert text in out


@pytest.mark.parametrize("script", ["src/train.py", "src/diagnose.py"])
def test_cli_help_lists_every_field_with_its_comment_and_range(script):
    out = run_cli(script, "--help").stdout
    lines = {line.split(" = ")[0].strip(): line for line in out.splitlines() if " = " in line}
    cfg = compose_dict()
    fields = yaml_fields(CONF_DIR / "train.yaml") + yaml_fields(
        CONF_DIR / "model" / "mlp.yaml", prefix="model."
    )
    for key, _, comment in fields:
        node = cfg
        for part in key.split("."):
            node = node[part]  # every listed field is a real config field
        assert key in lines and lines[key].endswith(f"# {comment}"), key
    assert "# passes over the training split (>= 1)" in lines["trainer.epochs"]
    assert "= 64" in lines["telemetry.bins"] and "1..512" in lines["telemetry.bins"]
    assert "= 0.2" in lines["model.dropout"] and "in [0, 1)" in lines["model.dropout"]
    assert "${oc.env:INITBENCH_DATA_DIR,data}" in lines["data_dir"]
    assert "logger.wandb.project" in lines and "optimizer.lr" in lines
    assert "defaults" not in lines and not any(k.startswith("hydra") for k in lines)


def test_pack_help_lists_the_pack_fields_after_the_run_fields():
    out = run_cli("src/pack.py", "--help").stdout
    lines = {line.split(" = ")[0].strip(): line for line in out.splitlines() if " = " in line}
    pack = compose_dict(config_name="pack")["pack"]
    for key, _, comment in yaml_fields(CONF_DIR / "pack.yaml"):
        if key.startswith("pack."):
            assert key.split(".")[1] in pack
        assert key in lines and lines[key].endswith(f"# {comment}"), key
    assert "every init x seed is one member" in lines["pack.seeds"]
    assert "trainer.epochs" in lines  # the members' fields, as train.py's --help lists them
    assert out.index("trainer.epochs") < out.index("pack.yaml's own fields")


def test_cli_bad_value_is_one_clear_line_not_a_traceback(tmp_path):
    proc = run_train_cli("model.depth=0", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert "initbench: error: model.depth must be an integer >= 1 (got 0)" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["init=kaiming_norml"],
            "initbench: error: init=kaiming_norml is not an option of init; "
            "did you mean init=kaiming_normal or ",
        ),
        (["model=resnet11"], "did you mean model=resnet110 or model=resnet"),
        (
            ["epochs=3"],
            "initbench: error: epochs is not a config field; did you mean trainer.epochs? ",
        ),
        (
            ["--epochs", "3"],
            "initbench: error: --epochs is not an option: settings are key=value "
            "overrides (as an override: trainer.epochs=...)",
        ),
        (["init=qqqq"], "init=qqqq is not an option of init; valid: constant, "),
    ],
)
def test_cli_typos_get_one_line_with_what_was_meant(tmp_path, args, line):
    proc = run_train_cli(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and line in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- the schema


@pytest.mark.parametrize(
    "override, message",
    [
        ("+trainer.epoch=3", "trainer.epoch is not a config field; did you mean trainer.epochs?"),
        ("+model.widht=64", "model.widht is not a config field; did you mean model.width?"),
        ("+sed=1", "sed is not a config field; did you mean seed?"),
        ("+init.gian=2", "init.gian is not a config field; did you mean init.gain?"),
        ("+dataset.nois=0.1", "dataset.nois is not a config field; did you mean dataset.noise?"),
        ("+optimizer.moment=0.9", "optimizer.moment is not a config field"),
        ("+logger.wandb.projct=x", "did you mean logger.wandb.project?"),
        ("+telemetry.bogus=1", "telemetry.bogus is not a config field; valid fields of telemetry:"),
        ("+model.channels=8", "model.channels is not a config field"),  # a CNN field on the MLP
    ],
)
def test_unknown_keys_are_refused_with_the_nearest_name(override, message):
    base = {
        "+init.gian=2": ["init=xavier_uniform"],
        "+dataset.nois=0.1": ["dataset=circles"],
    }.get(override, [])
    cfg = compose_dict([*base, override])
    with pytest.raises(UserError) as err:
        validate(cfg)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "override", ["+trainer.epoch=3", "+model.widht=64", "trainer.epoch=3", "model.widht=64"]
)
def test_cli_refuses_an_unknown_key_in_one_line(tmp_path, override):
    """With or without +, before Hydra creates the run directory."""
    run_dir = tmp_path / "run"
    proc = run_train_cli(override, f"hydra.run.dir={run_dir}", timeout=120)
    assert proc.returncode == 2
    key = override.lstrip("+").split("=")[0]
    assert proc.stderr.startswith(f"initbench: error: {key} is not a config field; did you mean")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not run_dir.exists(), "a refused config left a run directory"


def test_a_bad_value_leaves_no_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train_cli("model.depth=0", f"hydra.run.dir={run_dir}", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "initbench: error: model.depth must be an integer >= 1 (got 0)\n"
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["trainer"].pop("epochs"), "trainer is missing trainer.epochs"),
        (lambda c: c.pop("seed"), "the config is missing seed"),
        (lambda c: c["trainer"].update(epochs=2.5), "trainer.epochs must be an integer >= 1"),
        (lambda c: c["trainer"].update(compile="yes"), "trainer.compile must be true or false"),
        (lambda c: c["trainer"].update(channels_last=1), "trainer.channels_last must be one of"),
        (
            lambda c: c["telemetry"].update(bins=513),
            "telemetry.bins must be an integer in [1, 512]",
        ),
        (lambda c: c["diagnose"].update(dtype="float16"), "diagnose.dtype must be one of float32"),
        (
            lambda c: c["trainer"].update(memory_limit_gb=0),
            "trainer.memory_limit_gb must be a finite number > 0 or null",
        ),
        (lambda c: c["optimizer"].update(lr=float("nan")), "optimizer.lr must be a finite number"),
        (
            lambda c: c["model"].update(_target_="nowhere.Net"),
            "model._target_=nowhere.Net cannot be imported",
        ),
        (lambda c: c["activation"].update(name="swish"), "activation.name must be one of relu"),
        (
            lambda c: c["telemetry"].update(every_n_steps=None, every_n_epochs=None),
            "telemetry.every_n_steps or telemetry.every_n_epochs must be set",
        ),
    ],
)
def test_types_ranges_and_missing_keys_are_checked_in_one_style(change, message):
    cfg = compose_dict()
    change(cfg)
    with pytest.raises(UserError) as err:
        validate(cfg)
    assert message in str(err.value)
    if "must be" in message:
        assert "(got " in str(err.value)


def test_optional_and_nullable_fields_are_accepted():
    cfg = compose_dict(["logger=[]", "trainer.num_threads=1", "model.widths=[8,4]"])
    assert "logger" not in cfg  # logger=[] composes no logger node at all
    validate(cfg)
    cfg["telemetry"].update(every_n_steps=None, every_n_epochs=2)
    validate(cfg)
    cfg["trainer"]["memory_limit_gb"] = 0.5
    validate(cfg)


# ----------------------------------------------------------------------------- names -> paths

ODD_NAMES = [
    "", ".", "..", "...", "../../x", "/etc/passwd", "a/../../b", ".hidden", "-", "__", "x/",
    "a b,c=d+e", "naïve-ünïcode", "C:\\x", "~", "a" * 500, "../" * 100, "relu-mlp-s0",
]  # fmt: skip


@pytest.mark.parametrize("name", ODD_NAMES)
def test_safe_name_is_one_readable_path_component(tmp_path, name):
    safe = safe_name(name)
    assert safe and safe not in (".", "..") and not safe.startswith(".")
    assert "/" not in safe and os.sep not in safe and not UNSAFE_CHAR.search(safe)
    assert len(safe) <= MAX_NAME
    assert safe_name(safe) == safe  # idempotent
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()


def test_safe_name_keeps_names_readable_and_distinct():
    assert safe_name("kaiming_normal-relu-cnn30-s2") == "kaiming_normal-relu-cnn30-s2"
    assert safe_name("../../x") == "x" and safe_name("lr=0.1, wd") == "lr_0.1__wd"
    assert safe_name("a" * 200 + "1") != safe_name("a" * 200 + "2")


def composed_hydra(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True).hydra


@pytest.mark.parametrize("config_name, root", [("train", "outputs"), ("diagnose", "outputs")])
def test_a_run_name_cannot_move_the_run_directory_out(config_name, root):
    hydra = composed_hydra(config_name, ["run_name=../../../../../x", "hydra.job.num=0"])
    for folder, inside in ((hydra.run.dir, root), (hydra.sweep.subdir, ".")):
        resolved = (Path("/base") / folder).resolve()
        assert resolved.is_relative_to(Path("/base") / inside), folder
        assert resolved.name.endswith("x")


def test_cli_run_name_with_dots_writes_inside_outputs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli(
        str(ROOT / "src" / "train.py"),
        "run_name=../../../../../escaped",
        "dataset=circles",
        "trainer.epochs=1",
        "trainer.device=cpu",
        "logger=tensorboard",
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["work"]
    assert [p.name for p in work.iterdir()] == ["outputs"]
    (summary,) = work.glob("outputs/*/*/summary.json")
    assert summary.parent.name.endswith("-escaped")


def test_summary_records_the_init_option_as_chosen(tmp_path):
    proc = run_train_cli(
        "init=normal_std10", "dataset=circles", "trainer.epochs=1", "logger=[]",
        "trainer.device=cpu", f"hydra.run.dir={tmp_path}", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["choices"]["init"], summary["init_scheme"]) == ("normal_std10", "normal")


@pytest.mark.parametrize(
    "args, message",
    [
        (["trainer.epochs=0"], "initbench: error: trainer.epochs must be an integer >= 1 (got 0)"),
        (["init=nonexistent"], "init=nonexistent is not an option of init;"),
        (["-m", "dataset=circles", "trainer.epochs=0"], "trainer.epochs must be an integer >= 1"),
        (["-m", "seed=0,1", "trainer.epochs=3,0"], "trainer.epochs must be an integer >= 1 (got 0"),
        (["--multirun", "init=xavier,nonexistent"], "init=nonexistent is not an option of init;"),
    ],
)
def test_a_refused_command_leaves_no_outputs_folder(tmp_path, args, message):
    """From a fresh directory, with the default run and sweep folders (outputs/, multirun/)."""
    proc = run_cli(str(ROOT / "src" / "train.py"), *args, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == [], "a refused command left a folder behind"
