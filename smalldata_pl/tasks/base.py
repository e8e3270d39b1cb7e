"""Shared LightningModule machinery: named layer groups, the optimizer built once over all of them, TTA views."""

import dataclasses
import logging
import random
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import LRSchedulerConfigType, OptimizerLRSchedulerConfig
from typing_extensions import override

from smalldata_pl.models.checkpoint_files import plain_hyperparameters
from smalldata_pl.models.network_weights import load_network_weights
from smalldata_pl.tasks.optimization import cosine_schedule, named_param_groups, scale_group_lrs
from smalldata_pl.transforms.views import IDENTITY, View, views_from_invariances

log = logging.getLogger(__name__)


def default_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """``class_names`` as a list, or ``"0"`` … ``"num_classes - 1"`` when none are given."""
    return list(class_names) if class_names else [str(i) for i in range(num_classes)]


class TransferModule(LightningModule):
    """A pretrained backbone plus new layers, exposing named parameter groups ordered input to output.

    Subclasses fill :attr:`param_groups` (``{name: [parameter names]}``) once in ``__init__``; the optimizer
    then holds every group from the first step, each with a ``name``, so schedulers, checkpoints, LR logging and
    staged unfreezing always see the same structure.

    Tasks offering test-time augmentation set :attr:`tta` from their own ``tta`` argument; :meth:`setup` then
    resolves :attr:`eval_views` from the DataModule's declared ``invariances`` (the identity alone otherwise),
    and the task averages its validation, test and predict outputs over them.

    Args:
        optimizer: Optimizer factory called with the named param groups; its own ``lr`` is the head's LR.
        scheduler: LR scheduler factory; ``None`` is cosine decay to zero over the whole run, stepped per batch.
        scheduler_interval: When a configured scheduler steps: ``step`` or ``epoch``.
        scheduler_monitor: Metric a ReduceLROnPlateau scheduler watches.
        warmup_steps: Linear warm-up steps of the default cosine schedule.
        optimize: ``all`` puts every named group into the optimizer from step 0 (what :class:`StagedUnfreezing`
            expects); ``trainable`` only the parameters trainable when the optimizer is built, for Lightning's
            ``BaseFinetuning`` callbacks, which freeze before and add the rest as new groups later.
        init_weights: A trained checkpoint of the same task and backbone whose whole network (backbone, decoder,
            head) starts this one, e.g. a segmenter trained on synthetic micrographs to be fine-tuned on a few
            real ones. Tensors of another shape (a head for another class count) keep their fresh
            initialisation. Applied once, when the Trainer first sets the model up; a run given a checkpoint (a
            resume, ``--ckpt_path``) then restores that checkpoint over it (the file must still exist there, as a
            ``pretrained`` file must), and a model loaded from a checkpoint never reads it.
    """

    # Overridden per instance by tasks that take a ``tta`` argument; the others never augment.
    tta: bool = False

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str = "val/loss",
        warmup_steps: int = 0,
        optimize: str = "all",
        init_weights: str | None = None,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        if optimize not in ("all", "trainable"):
            raise ValueError(f"optimize must be 'all' or 'trainable', got {optimize!r}")
        self.optimize = optimize
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.warmup_steps = warmup_steps
        self.param_groups: dict[str, list[str]] = {}
        # Relative LR of each group (1 = the optimizer's lr); set by StagedUnfreezing before the optimizer exists.
        self.group_lr_scales: dict[str, float] = {}
        self.eval_views: list[View] = [IDENTITY]  # resolved from the DataModule in setup
        # Loaded in setup, not here: rebuilding a trained model from its checkpoint must not need this file.
        self.init_weights, self._initialised = init_weights, False

    @override
    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None)
        self.eval_views = views_from_invariances(getattr(data, "invariances", None)) if self.tta else [IDENTITY]
        if self.init_weights and not self._initialised:
            submodules = {name.split(".", 1)[0] for names in self.param_groups.values() for name in names}
            log.info("%s", load_network_weights(self, self.init_weights, submodules))
            self._initialised = True

    def training_loss(self, batch: dict) -> torch.Tensor:
        """The training loss of one batch, without logging (used by the LR finder outside the Trainer)."""
        raise NotImplementedError(f"{type(self).__name__} does not define training_loss")

    def log_loss(self, split: str, loss: torch.Tensor, batch_size: int) -> None:
        """Log ``{split}/loss``: per step and epoch in training, per epoch otherwise.

        Averaged over DDP ranks, so every rank (and the checkpoint monitor) sees the same value.
        """
        on_step = split == "train"
        self.log(
            f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=True
        )

    @property
    def param_group_names(self) -> list[str]:
        """Group names ordered from input (``stem``) to output (``head``)."""
        return list(self.param_groups)

    def parameters_of(self, names: Iterable[str]) -> list[torch.nn.Parameter]:
        """The parameters of the named groups."""
        params = dict(self.named_parameters())
        return [params[p] for name in names for p in self.param_groups[name]]

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not checkpoint the global RNGs; without them dropout draws differ after a resume.
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # Plain types only: checkpoints load with weights_only=True.
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "python": random.getstate(),
        }
        checkpoint["preprocessing"] = self.preprocessing()
        # Arguments given from Python (a Path, a mix_in DataModule) would otherwise be pickled as objects.
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint[key] = plain_hyperparameters(checkpoint[key])

    def preprocessing(self) -> dict[str, Any]:
        """What applying this model to a new image needs, taken from the training DataModule.

        The task class, class names, channels, normalisation, input size or crop, tiling, the physical scale
        (``target_pixel_size`` in µm per pixel and whether the data bar is cropped) and declared invariances.
        Stored in every checkpoint, so a checkpoint alone can be applied (see ``smalldata apply``).
        """
        info: dict[str, Any] = {"task": f"{type(self).__module__}.{type(self).__qualname__}"}
        if getattr(self, "class_names", None) is not None:
            info["class_names"] = list(self.class_names)  # type: ignore[arg-type]
        data = getattr(self._trainer, "datamodule", None)
        keys = ("in_chans", "image_size", "resize", "crop_size", "tile_size", "tile_stride")
        for key in (*keys, "target_pixel_size", "crop_data_bar"):
            value = getattr(data, key, None)
            if value is not None:
                info[key] = value
        # A zoom that resizes each crop makes the network see another side than the crop cut from the image.
        trained_crop = getattr(data, "trained_crop_size", None)
        if trained_crop is not None:
            info["crop_size"] = trained_crop
        for key in ("mean", "std"):
            if getattr(data, key, None) is not None:
                info[key] = [float(v) for v in getattr(data, key)]
        invariances = getattr(data, "invariances", None)
        if dataclasses.is_dataclass(invariances) and not isinstance(invariances, type):
            info["invariances"] = dataclasses.asdict(invariances)
        return info

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_class_names(checkpoint.get("hyper_parameters", {}).get("class_names"))
        # The checkpoint's weights are the model now: a later setup must not put init_weights over them.
        self._initialised = True
        states = checkpoint.get("rng_states")
        # Only a resumed fit continues the run's random stream; loading weights for inference leaves the
        # caller's generators alone.
        resuming = self._trainer is not None and self.trainer.state.fn == "fit"
        if states and resuming:
            torch.set_rng_state(states["torch"])
            cuda_states = states.get("cuda") or []
            if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
            np.random.set_state(_plain_to_numpy_state(states["numpy"]))
            random.setstate(states["python"])

    def _check_class_names(self, saved: Sequence[str] | None) -> None:
        """Stop when the checkpoint's classes differ from the data's: indices would silently mean other classes."""
        current = getattr(self, "class_names", None)
        if saved is None or current is None or list(saved) == list(current):
            return
        hint = (
            "the same classes in another order: list data.class_names in the checkpoint's order"
            if sorted(saved) == sorted(current)
            else "evaluate on data with the checkpoint's classes, or train a new model for these classes"
        )
        raise ValueError(
            f"the checkpoint was trained on classes {list(saved)} but the data has {list(current)}; {hint}"
        )

    @override
    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        groups = self.param_groups
        if self.optimize == "trainable":
            trainable = {name for name, p in self.named_parameters() if p.requires_grad}
            groups = {g: [p for p in names if p in trainable] for g, names in groups.items()}
            groups = {g: names for g, names in groups.items() if names}
            if not groups:
                raise ValueError("optimize='trainable' but no parameter is trainable when the optimizer is built")
        optimizer = self.optimizer_factory(named_param_groups(self, groups))
        scheduler: Any
        if self.scheduler_factory is None:
            total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
            scheduler = cosine_schedule(optimizer, total, self.warmup_steps)
            interval = "step"
        else:
            scheduler = self.scheduler_factory(optimizer)
            interval = self.scheduler_interval
        scale_group_lrs(optimizer, scheduler, self.group_lr_scales)
        config: LRSchedulerConfigType = {
            "scheduler": scheduler,
            "interval": interval,
            "monitor": self.scheduler_monitor,
        }
        return {"optimizer": optimizer, "lr_scheduler": config}


def _numpy_state_to_plain(state: Any) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _plain_to_numpy_state(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached
