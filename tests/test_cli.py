import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from smalldata_pl.cli import SmallDataCLI, main

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


def scalar_tags(run_dir: Path) -> set[str]:
    tags: set[str] = set()
    for event_file in run_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"]) | {f"image:{t}" for t in accumulator.Tags()["images"]}
    return tags


def test_fit_then_validate_end_to_end(tmp_path):
    main(["fit", "-c", SMOKE])
    run = tmp_path / "lightning_logs" / "smoke" / "version_0"
    tags = scalar_tags(run)
    expected = {"train/loss_step", "train/loss_epoch", "val/loss", "val/acc", "val/f1", "train/acc", "train/f1"}
    assert expected <= tags, tags
    assert any(t.startswith("lr-AdamW/") for t in tags) and "lr-AdamW/head" in tags and "lr-AdamW/stem" in tags
    assert "image:inputs/train_samples" in tags
    assert (run / "config.yaml").is_file()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["class_path"] == "smalldata_pl.datamodules.SyntheticGrains"
    assert yaml.safe_load((run / "hparams.yaml").read_text())["num_classes"] == 4
    assert config["seed_everything"] == 0
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    main(["validate", "-c", SMOKE, "--ckpt_path", str(checkpoint)])
    assert (tmp_path / "lightning_logs" / "smoke" / "version_1").is_dir()


def test_cli_optimizer_flag_is_refused_because_it_flattens_groups():
    with pytest.raises(ValueError, match="model.init_args.optimizer"):
        SmallDataCLI(args=["fit", "-c", SMOKE, "--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.1"])


def test_help_runs_in_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "smalldata_pl", "--help"], capture_output=True, text=True, check=True
    )
    assert "fit" in result.stdout and "cv-report" in result.stdout
    fit_help = subprocess.run(
        [sys.executable, "-m", "smalldata_pl", "fit", "--help"], capture_output=True, text=True, check=True
    )
    assert "--data" in fit_help.stdout and "--checkpoint.monitor" in fit_help.stdout


@pytest.mark.parametrize(
    "config", sorted(str(p) for p in (REPO / "configs").rglob("*.yaml")), ids=lambda p: Path(p).name
)
def test_every_config_parses_and_instantiates(config, monkeypatch):
    monkeypatch.chdir(REPO)  # configs point at ../shared/data relative to the repository
    text = Path(config).read_text()
    if "../shared/data" in text and not (REPO.parent / "shared" / "data").is_dir():
        pytest.skip("needs the shared real data")
    offline = ["--model.init_args.pretrained=false"] if "pretrained: true" in text else []  # hub weights need internet
    cli = SmallDataCLI(args=["-c", config, "--trainer.logger=false", *offline], run=False)
    assert cli.model is not None and cli.datamodule is not None


def test_print_config_shows_linked_values(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "-c", SMOKE, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == "smalldata_pl.datamodules.SyntheticGrains"
