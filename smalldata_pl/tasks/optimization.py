"""Named parameter groups, the default schedule, and per-group LR scaling that every torch scheduler respects."""

import math
from collections.abc import Iterable, Mapping

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

# Keys under which torch schedulers keep per-group learning rates inside the optimizer's param groups
# (OneCycleLR and CyclicLR store their peaks and floors there).
_GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr", "base_lr")
# Per-group lists that schedulers keep on themselves.
_SCHEDULER_LR_LISTS = ("base_lrs", "min_lrs", "_last_lr", "max_lrs")


def named_param_groups(module: nn.Module, groups: Mapping[str, Iterable[str]]) -> list[dict]:
    """Optimizer param groups, each with a ``name``, built from parameter names (every group present from step 0)."""
    params = dict(module.named_parameters())
    return [{"name": name, "params": [params[p] for p in names]} for name, names in groups.items()]


def scale_group_lrs(optimizer: Optimizer, scheduler: object | None, scales: Mapping[str, float]) -> None:
    """Multiply every LR-like value of each named group by its scale, in the optimizer and in the scheduler.

    Schedulers record per-group LRs when they are created (``base_lrs``, OneCycle's ``max_lr``,
    ReduceLROnPlateau's ``min_lrs``). Scaling all of them by the same factor after creation keeps the ratios
    between groups under any schedule, where setting only ``lr`` would be flattened by the first step.
    """
    for index, group in enumerate(optimizer.param_groups):
        factor = scales.get(group.get("name", ""), 1.0)
        if factor == 1.0:
            continue
        for key in _GROUP_LR_KEYS:
            if key in group and isinstance(group[key], float | int):
                group[key] *= factor
        for each in _schedulers(scheduler):
            for attr in _SCHEDULER_LR_LISTS:
                values = getattr(each, attr, None)
                if isinstance(values, list) and len(values) == len(optimizer.param_groups):
                    values[index] *= factor


def _schedulers(scheduler: object | None) -> list[object]:
    """The scheduler and, for SequentialLR or ChainedScheduler, the ones inside it."""
    if scheduler is None:
        return []
    inner = getattr(scheduler, "_schedulers", [])
    return [scheduler, *[s for child in inner for s in _schedulers(child)]]


def cosine_schedule(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Linear warm-up, then cosine decay to zero over ``total_steps`` optimizer steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
