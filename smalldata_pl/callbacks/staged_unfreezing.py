"""StagedUnfreezing: head first on a frozen backbone, then stage by stage with discriminative learning rates."""

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

_BACKBONE_GROUP = re.compile(r"^(stem|stage\d+)$")
NEVER = 2**31 - 1  # unfreeze epoch of groups the plan leaves frozen


@dataclass
class Stage:
    """One step of an explicit unfreezing plan.

    Args:
        epoch: First epoch in which the groups train.
        groups: Group names to unfreeze; ``backbone`` means every backbone group still frozen.
        lr_scale: Extra LR multiplier for these groups on top of the discriminative decay.
    """

    epoch: int
    groups: list[str] = field(default_factory=lambda: ["backbone"])
    lr_scale: float = 1.0


class StagedUnfreezing(Callback):
    """Train the new layers on a frozen backbone, then unfreeze backbone groups from the top down.

    Every parameter group sits in the optimizer from the first step; a stage changes only ``requires_grad``
    (or, under DDP, masks gradients so the reducer keeps every parameter), BatchNorm modes and a warm-up
    multiplier applied around each optimizer step. The discriminative ratios (``lr_decay``) are written into
    the groups before any scheduler exists, so cosine, OneCycle, step, plateau and warm-up schedules keep them.

    Example:
        >>> StagedUnfreezing(unfreeze_at=[2, 4, 6], lr_decay=0.3)  # doctest: +ELLIPSIS
        <...StagedUnfreezing object at ...>

    Args:
        unfreeze_at: Simple plan: at each epoch one more backbone group unfreezes, from the top down.
        stages: Explicit plan (instead of ``unfreeze_at``): per stage an epoch, group names and an LR multiplier.
        lr_decay: Each deeper group's LR is ``lr_decay`` times the LR of the group above it (head = 1).
        warmup_steps: Optimizer steps over which a newly unfrozen group's LR rises linearly from 0.
        train_bn: Let BatchNorm layers of frozen groups train (affine parameters and running statistics);
            by default they stay in eval mode with their statistics untouched.
        keep_bn_eval: Keep BatchNorm layers in eval mode (pretrained running statistics) even after their group
            unfreezes; their affine parameters still train. Steadier with batches of a few micrographs, and with
            one or two training images, whose statistics do not stand for the images the model will see.
            BatchNorm in freshly initialised layers (a new U-Net decoder) still learns its statistics: frozen at
            their initial zero mean and unit variance they would normalise nothing. Layers count as fresh
            unless they are backbone groups or the model starts from ``init_weights``.
        freeze_mode: ``requires_grad`` (saves compute), ``mask`` (parameters stay registered with DDP's reducer;
            frozen gradients are dropped before the optimizer step) or ``auto`` (``mask`` when distributed).
    """

    def __init__(
        self,
        unfreeze_at: Sequence[int] | None = None,
        stages: Sequence[Stage] | None = None,
        lr_decay: float = 0.5,
        warmup_steps: int = 0,
        train_bn: bool = False,
        keep_bn_eval: bool = False,
        freeze_mode: Literal["auto", "requires_grad", "mask"] = "auto",
    ) -> None:
        if unfreeze_at is not None and stages is not None:
            raise ValueError("give either unfreeze_at or stages, not both")
        if not 0 < lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
        self.unfreeze_at = list(unfreeze_at) if unfreeze_at is not None else None
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in stages] if stages is not None else None
        epochs = self.unfreeze_at if self.unfreeze_at is not None else [s.epoch for s in self.stages or []]
        if any(b <= a for a, b in itertools.pairwise(epochs)) or any(e < 0 for e in epochs):
            raise ValueError(f"unfreeze epochs must be non-negative and strictly increasing, got {epochs}")
        self.lr_decay = lr_decay
        self.warmup_steps = warmup_steps
        self.train_bn = train_bn
        self.keep_bn_eval = keep_bn_eval
        self.freeze_mode = freeze_mode
        # Resolved in setup(): group -> first trainable epoch (0 for the new layers), group -> LR scale.
        self.unfreeze_epoch: dict[str, int] = {}
        self.lr_scales: dict[str, float] = {}
        # group -> global step at which it started training; checkpointed, drives the warm-up after resume.
        self.started_at_step: dict[str, int] = {}
        self._masking = False
        self._hooks: list[RemovableHandle] = []
        self._saved_lrs: list[float] | None = None
        self._bn_groups: dict[str, list[_BatchNorm]] = {}
        self._fresh_groups: set[str] = set()

    # ----------------------------------------------------------------------------------------------- the plan
    def resolve_plan(self, group_names: Sequence[str], max_epochs: int | None = None) -> None:
        """Turn the configured plan into a first-trainable epoch and an LR scale per group.

        Raises:
            ValueError: On unknown group names, a group named twice, or an epoch beyond ``max_epochs``.
        """
        if not group_names:
            raise ValueError("the model exposes no parameter groups; StagedUnfreezing needs a TransferModule")
        backbone = [g for g in group_names if _BACKBONE_GROUP.match(g)]
        if not backbone:
            raise ValueError(f"no backbone groups (stem, stage1, …) among the model's groups {list(group_names)}")
        top_down = backbone[::-1]
        depth = {g: 0 for g in group_names if g not in backbone}
        depth.update({g: i + 1 for i, g in enumerate(top_down)})
        self.lr_scales = {g: self.lr_decay ** depth[g] for g in group_names}
        self.unfreeze_epoch = {g: 0 for g in group_names if g not in backbone}
        if self.unfreeze_at is not None:
            if len(self.unfreeze_at) > len(top_down):
                raise ValueError(f"{len(self.unfreeze_at)} milestones for only {len(top_down)} backbone groups")
            self.unfreeze_epoch.update(dict(zip(top_down, self.unfreeze_at, strict=False)))
        for stage in self.stages or []:
            for name in stage.groups:
                names = [g for g in top_down if g not in self.unfreeze_epoch] if name == "backbone" else [name]
                for group in names:
                    if group not in group_names:
                        raise ValueError(f"unknown group {group!r} in the unfreezing plan; groups: {list(group_names)}")
                    if group in self.unfreeze_epoch:
                        raise ValueError(f"group {group!r} is unfrozen twice in the plan")
                    self.unfreeze_epoch[group] = stage.epoch
                    self.lr_scales[group] *= stage.lr_scale
        planned = list(self.unfreeze_epoch.values())
        self.unfreeze_epoch.update({g: NEVER for g in group_names if g not in self.unfreeze_epoch})
        self.unfreeze_epoch = {g: self.unfreeze_epoch[g] for g in group_names}
        last = max(planned)
        if max_epochs is not None and max_epochs >= 0 and last >= max_epochs:
            raise ValueError(f"the plan unfreezes at epoch {last} but training stops after max_epochs={max_epochs}")

    def trainable_groups(self, epoch: int) -> list[str]:
        """Groups that train in ``epoch``."""
        return [g for g, start in self.unfreeze_epoch.items() if start <= epoch]

    # ------------------------------------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        names = list(getattr(pl_module, "param_group_names", []))
        self.resolve_plan(names, trainer.max_epochs)
        # Written before configure_optimizers runs, so the scheduler is created with the ratios in place.
        pl_module.group_lr_scales = dict(self.lr_scales)  # type: ignore[assignment]
        self._masking = self.freeze_mode == "mask" or (self.freeze_mode == "auto" and trainer.world_size > 1)
        self._bn_groups = _batchnorms_by_group(pl_module)
        self._fresh_groups = _fresh_groups(pl_module, names)
        # Trainable flags before DDP wraps the module (in mask mode nothing is ever unregistered). BatchNorm
        # modes follow in on_train_start, after Lightning's check for modules left in eval mode.
        self._apply(pl_module, epoch=0, batchnorm=False)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        names = [g.get("name") for g in optimizer.param_groups]
        if names != list(self.unfreeze_epoch):
            raise ValueError(
                f"the optimizer's param groups {names} are not the model's named groups "
                f"{list(self.unfreeze_epoch)}: configure the optimizer with model.init_args.optimizer (e.g. "
                "--model.init_args.optimizer torch.optim.SGD), not the CLI's --optimizer, which builds one flat group, "
                "and keep model.init_args.optimize='all'"
            )
        # Runs after the update itself, before any scheduler reads the LRs.
        self._hooks = [optimizer.register_step_post_hook(self._after_step)]

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._enter_epoch(trainer, pl_module)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._enter_epoch(trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        optimizer = trainer.optimizers[0]
        effective = self.effective_lrs(optimizer, trainer.current_epoch, trainer.global_step)
        pl_module.log_dict({f"lr_effective/{k}": v for k, v in effective.items()}, on_step=True, on_epoch=False)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"started_at_step": dict(self.started_at_step)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.started_at_step = dict(state_dict.get("started_at_step", {}))

    # ------------------------------------------------------------------------------------------- mechanics
    def _enter_epoch(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        newly = [g for g in self.trainable_groups(epoch) if g not in self.started_at_step]
        for group in newly:
            self.started_at_step[group] = trainer.global_step
        self._apply(pl_module, epoch)
        trainable = sum(p.numel() for p in pl_module.parameters_of(self.trainable_groups(epoch)))  # type: ignore[operator]
        if newly and epoch > 0:
            rank_zero_info(f"epoch {epoch}: unfreezing {', '.join(newly)} ({trainable:,} trainable parameters)")
        counts = {
            "unfreezing/trainable_params": float(trainable),
            "unfreezing/stage": float(len(set(self.unfreeze_epoch.values()) & set(range(epoch + 1))) - 1),
        }
        if trainer.logger is not None:
            trainer.logger.log_metrics(counts, step=trainer.global_step)

    def _apply(self, pl_module: LightningModule, epoch: int, batchnorm: bool = True) -> None:
        """Set ``requires_grad`` and BatchNorm modes for ``epoch``; idempotent, so it is re-run freely."""
        trainable = set(self.trainable_groups(epoch))
        bn_params = {id(p) for bns in self._bn_groups.values() for bn in bns for p in bn.parameters()}
        for group in self.unfreeze_epoch:
            train = group in trainable
            for param in pl_module.parameters_of([group]):  # type: ignore[operator]
                keep_bn = self.train_bn and id(param) in bn_params
                param.requires_grad_(train or keep_bn or self._masking)
            keep_statistics = self.keep_bn_eval and group not in self._fresh_groups
            for bn in self._bn_groups.get(group, []) if batchnorm else []:
                bn.train((train and not keep_statistics) or self.train_bn)

    def warmup_factor(self, group: str, step: int) -> float:
        """Linear warm-up multiplier of a trainable group at global ``step``."""
        if self.warmup_steps <= 0 or self.unfreeze_epoch.get(group, 0) == 0:
            return 1.0
        started = self.started_at_step.get(group, step)
        return min(1.0, (step - started + 1) / self.warmup_steps)

    def effective_lrs(self, optimizer: Optimizer, epoch: int, step: int) -> dict[str, float]:
        """The LR each group actually trains with: scheduled LR x warm-up, 0 while frozen."""
        trainable = set(self.trainable_groups(epoch))
        return {
            g["name"]: g["lr"] * self.warmup_factor(g["name"], step) if g["name"] in trainable else 0.0
            for g in optimizer.param_groups
        }

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        # Lightning calls this after backward (inside the optimizer's closure) and before the update.
        epoch, step = trainer.current_epoch, trainer.global_step
        trainable = set(self.trainable_groups(epoch))
        self._saved_lrs = [g["lr"] for g in optimizer.param_groups]
        for group in optimizer.param_groups:
            name = group["name"]
            if name not in trainable:
                # A missing gradient makes torch optimizers skip the tensor: no update, no weight decay, no momentum.
                for param in group["params"]:
                    if not (self.train_bn and getattr(param, "_smalldata_bn", False)):
                        param.grad = None
            else:
                group["lr"] = group["lr"] * self.warmup_factor(name, step)

    def _after_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        # Restore the scheduled LRs so chainable schedulers (step, plateau) never see the warm-up multiplier.
        if self._saved_lrs is not None:
            for group, lr in zip(optimizer.param_groups, self._saved_lrs, strict=True):
                group["lr"] = lr
            self._saved_lrs = None


def _fresh_groups(pl_module: LightningModule, group_names: Sequence[str]) -> set[str]:
    """Groups that start from random initialisation: the new layers, unless ``init_weights`` starts them too.

    Decided from the configuration alone, so a resumed run treats every group as the interrupted one did.
    """
    if getattr(pl_module, "init_weights", None):
        return set()
    return {g for g in group_names if not _BACKBONE_GROUP.match(g)}


def _batchnorms_by_group(pl_module: LightningModule) -> dict[str, list[_BatchNorm]]:
    """BatchNorm modules keyed by the parameter group holding their weights; marks their parameters."""
    groups: dict[str, list[str]] = getattr(pl_module, "param_groups", {})
    owner = {p: group for group, names in groups.items() for p in names}
    result: dict[str, list[_BatchNorm]] = {}
    for name, module in pl_module.named_modules():
        if isinstance(module, _BatchNorm):
            key = f"{name}.weight" if module.affine else None
            group = owner.get(key) if key else _group_by_prefix(owner, name)
            if group is not None:
                result.setdefault(group, []).append(module)
                for param in module.parameters():
                    param._smalldata_bn = True  # type: ignore[attr-defined]
    return result


def _group_by_prefix(owner: dict[str, str], module_name: str) -> str | None:
    """Group of the nearest parameter under the same parent module (for BatchNorm without affine parameters)."""
    parent = module_name.rsplit(".", 1)[0]
    for param_name, group in owner.items():
        if param_name.startswith(parent + "."):
            return group
    return None
