"""An LR range test that sweeps one multiplier over fixed per-group ratios, then restores the model."""

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule

from smalldata_pl.callbacks.staged_unfreezing import StagedUnfreezing
from smalldata_pl.tasks.base import TransferModule
from smalldata_pl.tasks.optimization import named_param_groups


@dataclass
class LRFinderResult:
    """The sweep: head LRs tried, smoothed losses, per-group LRs of every step, and the suggested head LR."""

    lrs: list[float]
    losses: list[float]
    group_lrs: list[dict[str, float]] = field(default_factory=list)
    suggestion: float = math.nan

    def figure(self) -> object:
        """Loss against head LR, with the suggestion marked."""
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(5, 3.5))
        axis.plot(self.lrs, self.losses)
        axis.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"suggested {self.suggestion:.2e}")
        axis.set(xscale="log", xlabel="head learning rate (other groups keep their ratios)", ylabel="smoothed loss")
        axis.legend()
        figure.tight_layout()
        return figure


def find_lr(
    module: TransferModule,
    datamodule: LightningDataModule,
    unfreezing: StagedUnfreezing | None = None,
    epoch: int = 0,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_steps: int = 60,
    divergence: float = 4.0,
) -> LRFinderResult:
    """Sweep the head LR geometrically from ``min_lr`` to ``max_lr``, every group at its fixed ratio.

    The groups that train in ``epoch`` of the unfreezing plan train; the others stay frozen (with BatchNorm in
    eval mode), exactly as in that stage of the real run. Weights, trainable flags and module modes are
    restored afterwards, so the finder leaves no trace.

    Args:
        module: The model (its optimizer factory and named groups are used).
        datamodule: Supplies training batches.
        unfreezing: The staged-unfreezing plan; ``None`` trains every group with ratio 1.
        epoch: Which stage of the plan to probe (0 = frozen backbone).
        min_lr: First head LR.
        max_lr: Last head LR.
        num_steps: Optimizer steps of the sweep.
        divergence: Stop once the smoothed loss exceeds this multiple of the best loss.

    Returns:
        The sweep and a suggestion: the LR of steepest loss descent.
    """
    names = module.param_group_names
    if unfreezing is not None:
        unfreezing.resolve_plan(names)
        scales, trainable = unfreezing.lr_scales, set(unfreezing.trainable_groups(epoch))
    else:
        scales, trainable = {n: 1.0 for n in names}, set(names)
    saved_state = copy.deepcopy(module.state_dict())
    saved_flags = {n: p.requires_grad for n, p in module.named_parameters()}
    saved_modes = {n: m.training for n, m in module.named_modules()}
    try:
        module.train()
        for name in names:
            for param in module.parameters_of([name]):
                param.requires_grad_(name in trainable)
        _freeze_batchnorm(module, trainable)
        optimizer = module.optimizer_factory(named_param_groups(module, module.param_groups))
        datamodule.setup("fit")
        batches = itertools.cycle(datamodule.train_dataloader())
        ratio = (max_lr / min_lr) ** (1 / max(num_steps - 1, 1))
        result = LRFinderResult([], [])
        smoothed, best = 0.0, math.inf
        for step in range(num_steps):
            head_lr = min_lr * ratio**step
            for group in optimizer.param_groups:
                group["lr"] = head_lr * scales[group["name"]]
            optimizer.zero_grad()
            loss = module.training_loss(next(batches))
            loss.backward()
            optimizer.step()
            smoothed = 0.9 * smoothed + 0.1 * float(loss) if step else float(loss)
            debiased = smoothed / (1 - 0.9 ** (step + 1))
            result.lrs.append(head_lr)
            result.losses.append(debiased)
            result.group_lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})
            best = min(best, debiased)
            if not math.isfinite(debiased) or debiased > divergence * best:
                break
        result.suggestion = _steepest(result.lrs, result.losses)
        return result
    finally:
        module.load_state_dict(saved_state)
        for name, param in module.named_parameters():
            param.requires_grad_(saved_flags[name])
        for name, sub in module.named_modules():
            sub.train(saved_modes[name])


def _freeze_batchnorm(module: TransferModule, trainable: set[str]) -> None:
    owner = {p: g for g, params in module.param_groups.items() for p in params}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm) and owner.get(f"{name}.weight") not in trainable:
            sub.eval()


def _steepest(lrs: list[float], losses: list[float]) -> float:
    """LR where the loss falls fastest per log-LR, ignoring the noisy ends of the sweep."""
    if len(lrs) < 5:
        return lrs[int(np.argmin(losses))] if lrs else math.nan
    slope = np.gradient(np.asarray(losses), np.log(np.asarray(lrs)))
    trim = max(1, len(lrs) // 10)
    index = trim + int(np.argmin(slope[trim:-trim]))
    return float(lrs[index])


def log_lr_curve(result: LRFinderResult, log_dir: Path) -> None:
    """Write the sweep to TensorBoard: loss and head LR per step, and the curve figure."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        for step, (lr, loss) in enumerate(zip(result.lrs, result.losses, strict=True)):
            writer.add_scalar("lr_find/loss", loss, step)
            writer.add_scalar("lr_find/head_lr", lr, step)
        writer.add_figure("lr_find/curve", result.figure())
