"""``SmallDataCLI``: LightningCLI with the framework's defaults, also the run factory of the own commands."""

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from smalldata_pl.callbacks import GradCamGrid, HParamsSummary, InputSampleGrid, LastAndBestCheckpoint, PredictionWriter
from smalldata_pl.tasks.base import TransferModule

DESCRIPTION = """smalldata_pl: deep learning on small materials-science image data.

Lightning subcommands (each takes -c CONFIG.yaml, repeatable; later files override earlier ones):
  fit, validate, test, predict
The framework's own commands (run `smalldata COMMAND --help`):
  apply       a trained checkpoint on new micrographs (no config): predictions, masks, reports
  calibrate   temperature scaling on labelled images the model was not trained on (ECE before/after)
  export      a trained checkpoint as ONNX or TorchScript with its preprocessing embedded
  cv          every cross-validation fold with a fresh model, plus a mean +- std summary
  cv-report   aggregate fold runs that ran as separate jobs
  nested-cv   choose among candidate recipes on inner folds; report the chosen one's outer score
  measure     grain statistics (count, area, Heyn intercept, ASTM G) and phase fractions from label masks
  audit       find the same micrograph (flipped, rotated, cropped, re-exposed) across train/validation
  augment     write augmented copies plus a manifest that keeps each copy's group
  synth       write procedural micrographs with labels in the real-data layout
  realism     score generator settings: can a classifier tell their images from real ones?
  export-encoder  save a checkpoint's backbone as a weights file for `pretrained:`
  average-weights  a fine-tune averaged with the checkpoint it started from (WiSE-FT), for 1-2 real images
  lr-find     LR range test that keeps the per-group ratios of the unfreezing plan
  study       learning curves: score vs labelled images per class for several strategies
"""


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help with the description's line breaks kept."""


class SmallDataCLI(LightningCLI):
    """LightningCLI with the framework's defaults: TensorBoard under ``lightning_logs/``, linked data/model sizes.

    ``data.num_classes``, ``data.class_names`` and ``data.in_chans`` are linked into the model, so a config
    names them once. Models and data are chosen by ``class_path`` so users' own subclasses plug in.

    Args:
        args: Command-line arguments; ``None`` reads ``sys.argv``.
        run: Run the subcommand (``fit`` …); ``False`` only builds model, data and trainer from the arguments.
        options: A dataclass of a command's own options, added at the top level of the parser (so they can
            also sit in a ``-c`` YAML file); their values end up in :attr:`options`.
        **kwargs: Further LightningCLI arguments.
    """

    def __init__(
        self, args: Sequence[str] | None = None, run: bool = True, options: type | None = None, **kwargs: Any
    ) -> None:
        self.options_class = options
        self.options: Any = None
        trainer_defaults = {
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "lightning_logs", "name": "smalldata", "default_hp_metric": False},
            },
            # Instances, not configs: LightningCLI appends these after the configured callbacks.
            "callbacks": [
                LearningRateMonitor(logging_interval="step"),
                InputSampleGrid(),
                PredictionWriter(),
                HParamsSummary(),
                GradCamGrid(),
            ],
            "log_every_n_steps": 10,
        }
        super().__init__(
            model_class=TransferModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=trainer_defaults,
            parser_kwargs={"description": DESCRIPTION, "formatter_class": _HelpFormatter},
            args=list(args) if args is not None else None,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link data properties into the model and add a configurable checkpoint callback."""
        for name in ("num_classes", "class_names", "in_chans"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        if self.options_class is not None:
            parser.add_class_arguments(self.options_class, nested_key=None, as_group=True, instantiate=False)
        parser.add_lightning_class_args(LastAndBestCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        if self.auto_configure_optimizers and self._get(self.config_init, "optimizer") is not None:
            raise ValueError(
                "--optimizer/--lr_scheduler build one flat parameter group and would erase the named layer groups "
                "(and their discriminative learning rates); set model.init_args.optimizer and "
                "model.init_args.scheduler instead, e.g. --model.init_args.optimizer torch.optim.SGD "
                "--model.init_args.optimizer.lr 0.01"
            )
        super()._add_configure_optimizers_method_to_model(subcommand)

    def before_instantiate_classes(self) -> None:
        """Collect the command's own options before the model, data and trainer are built."""
        if self.options_class is not None:
            config = self.config if self.subcommand is None else self.config[self.subcommand]
            self.options = self.options_class(
                **{f.name: config[f.name] for f in dataclasses.fields(self.options_class)}
            )
