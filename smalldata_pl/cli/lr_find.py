"""``smalldata lr-find``: LR range test that keeps the discriminative ratios of the config's unfreezing plan."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from smalldata_pl.callbacks.staged_unfreezing import StagedUnfreezing
from smalldata_pl.cli.options import training_command
from smalldata_pl.tuning.lr_finder import LRFinderResult, find_lr, log_lr_curve


@dataclass
class LRFindOptions:
    """Options of ``smalldata lr-find``; model, data and plan come from ``smalldata fit`` options.

    Prints the suggested head LR, logs the curve to TensorBoard and can write a tuned copy of the config.

    Args:
        epoch: Stage of the plan to probe (0: frozen backbone).
        min_lr: First head LR of the sweep.
        max_lr: Last head LR of the sweep.
        steps: Optimizer steps of the sweep.
        write: Write the config with the suggested LR to this file.
    """

    epoch: int = 0
    min_lr: float = 1e-6
    max_lr: float = 1.0
    steps: int = 60
    write: str | None = None


def lr_find_command(argv: Sequence[str]) -> LRFinderResult:
    """``smalldata lr-find -c config.yaml [--epoch 0] [--write tuned.yaml]``."""
    cli, _ = training_command(argv, LRFindOptions)
    o = cli.options
    plan = next((c for c in cli.trainer.callbacks if isinstance(c, StagedUnfreezing)), None)  # type: ignore[attr-defined]
    result = find_lr(cli.model, cli.datamodule, plan, o.epoch, o.min_lr, o.max_lr, o.steps)
    log_dir = Path(cli.trainer.default_root_dir) / "lightning_logs" / "lr_find"
    log_lr_curve(result, log_dir)
    print(f"suggested head LR: {result.suggestion:.3e} (TensorBoard: {log_dir})")
    if o.write is not None:
        config = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
        for field in ("epoch", "min_lr", "max_lr", "steps", "write"):  # the tuned file is a `fit` config
            config.pop(field, None)
        optimizer = config["model"]["init_args"].setdefault("optimizer", {"class_path": "torch.optim.AdamW"})
        optimizer.setdefault("init_args", {})["lr"] = float(f"{result.suggestion:.3g}")
        Path(o.write).write_text(yaml.safe_dump(config, sort_keys=False))
        print(f"wrote {o.write} with model.optimizer lr = {result.suggestion:.3g}")
    return result
