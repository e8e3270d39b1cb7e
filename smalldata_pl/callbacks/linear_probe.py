"""LinearProbe: a logistic-regression head fitted on cached frozen features at fit start (the probe, or LP-FT)."""

import copy
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from smalldata_pl.models.features import FEATURE_CACHE, FeatureCache, pooled_features
from smalldata_pl.models.probe import DEFAULT_C, DEFAULT_CS, ProbeSolution, fit_probe, write_linear
from smalldata_pl.transforms.views import IDENTITY, View, allowed_views


class LinearProbe(Callback):
    """Fit the model's linear classifier as a logistic regression on frozen-backbone features when fit starts.

    Every training image goes once through the evaluation pipeline (no random augmentation; the geometry
    validation and ``apply`` use) and the frozen backbone, optionally under every D4 view the DataModule's
    invariances allow. The pooled features are cached for the process, so the next fit on the same images (a
    cross-validation fold, a study point) reuses them. A scikit-learn ``LogisticRegression`` on standardised
    features is fitted to convergence and written into the head's last ``nn.Linear`` with the standardisation
    folded into its weight and bias. Its regularisation is a fixed ``C`` (default 1) or ``C: cv``: chosen by an
    inner group-aware cross-validation on the training images only (never on the validation fold).

    Two uses:

    - ``probe_only: true`` (the probe strategy): the fit validates and checkpoints the probe and stops. Lightning
      needs one training batch to enter its loop; that batch runs with the backbone frozen and every weight it
      touches is restored afterwards, so the checkpoint holds exactly the probe.
    - ``probe_only: false`` (LP-FT, Kumar et al. 2022): the probe is the head that fine-tuning, e.g.
      :class:`~smalldata_pl.callbacks.StagedUnfreezing`, starts from, so unfreezing does not begin from a random
      head whose large gradients would disturb the pretrained features.

    The model needs a ``backbone`` that returns pooled features and a ``head`` ending in an ``nn.Linear``
    (:class:`~smalldata_pl.tasks.MicrographClassifier`); the DataModule a training set of records with a
    ``pipeline`` (:class:`~smalldata_pl.datamodules.MicrographFolder` and its subclasses). A fit resumed from a
    checkpoint keeps the checkpoint's head and fits nothing.

    Example:
        >>> LinearProbe(probe_only=True, C="cv")  # doctest: +ELLIPSIS
        <...LinearProbe object at ...>

    Args:
        probe_only: End the fit after validating the probe (see above).
        C: Inverse L2 strength on standardised features, or ``cv`` to choose it from ``Cs``.
        Cs: Candidates for ``C: cv`` (lowest inner cross-validated log-loss wins).
        inner_folds: Folds of the inner group-stratified split of ``C: cv``.
        views: ``identity`` (each image as it is) or ``invariances`` (also every rotation/mirror the DataModule
            declares label-preserving: up to 8 feature rows per image, like training-time augmentation).
        batch_size: Images per backbone forward pass.
        cache: Share the process-wide feature cache; ``False`` recomputes the features in every fit.
    """

    def __init__(
        self,
        probe_only: bool = False,
        C: float | Literal["cv"] = DEFAULT_C,
        Cs: Sequence[float] = DEFAULT_CS,
        inner_folds: int = 5,
        views: Literal["identity", "invariances"] = "identity",
        batch_size: int = 32,
        cache: bool = True,
    ) -> None:
        if views not in ("identity", "invariances"):
            raise ValueError(f"views must be 'identity' or 'invariances', got {views!r}")
        if C != "cv" and not (isinstance(C, int | float) and C > 0):
            raise ValueError(f"C must be a positive number or 'cv', got {C!r}")
        self.probe_only = probe_only
        self.C = C
        self.Cs = list(Cs)
        self.inner_folds = inner_folds
        self.views = views
        self.batch_size = batch_size
        self.cache: FeatureCache | None = FEATURE_CACHE if cache else None
        self.solution: ProbeSolution | None = None
        self.summary: dict[str, float] = {}
        # What the last probe saw, for inspection and tests: [rows, F] features and the rows' labels and groups.
        self.features: Any = None
        self.labels: list[int] = []
        self.groups: list[str] = []
        self._snapshot: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        head_linear(pl_module)  # fail before any work when the model has no place for the probe
        if self.probe_only:
            if (trainer.fit_loop.min_epochs or 0) > 1 or (trainer.fit_loop.min_steps or 0) > 1:
                raise ValueError("LinearProbe(probe_only=True) stops after the first epoch; unset trainer.min_epochs")
            if trainer.check_val_every_n_epoch not in (None, 1):
                raise ValueError(
                    "LinearProbe(probe_only=True) validates the probe after the first epoch; set "
                    f"trainer.check_val_every_n_epoch=1 (it is {trainer.check_val_every_n_epoch})"
                )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path:
            # The checkpoint's weights were loaded before this hook: a resumed run keeps its own head.
            rank_zero_info(f"LinearProbe: resuming from {trainer.ckpt_path}, keeping its head")
            return
        start = time.perf_counter()
        features, labels, groups = self.training_features(trainer, pl_module)
        self.features, self.labels, self.groups = features, labels, groups
        solution = fit_probe(
            features,
            labels,
            groups,
            head_linear(pl_module).out_features,
            self.C,
            self.Cs,
            self.inner_folds,
            seed=int(getattr(getattr(trainer, "datamodule", None), "seed", 0)),
        )
        write_linear(head_linear(pl_module), solution)
        self.solution = solution
        self.summary = {
            "probe/C": solution.C,
            "probe/train_acc": solution.train_accuracy,
            "probe/rows": float(len(labels)),
            "probe/seconds": time.perf_counter() - start,
        }
        if solution.inner_accuracy is not None:
            self.summary["probe/inner_acc"] = solution.inner_accuracy
        if trainer.logger is not None:
            trainer.logger.log_metrics(self.summary, step=trainer.global_step)
        inner = f", inner CV accuracy {solution.inner_accuracy:.3f}" if solution.inner_accuracy is not None else ""
        rank_zero_info(
            f"LinearProbe: logistic regression on {len(labels)} feature rows ({features.shape[1]} features), "
            f"C={solution.C:g}, training accuracy {solution.train_accuracy:.3f}{inner}, "
            f"{self.summary['probe/seconds']:.1f} s"
        )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.probe_only:
            # Set here, after Lightning's check for modules in eval mode; the one batch then costs a forward pass.
            backbone: nn.Module = pl_module.backbone  # type: ignore[assignment]
            backbone.requires_grad_(False)
            backbone.eval()

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.probe_only:
            self._snapshot = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.probe_only and self._snapshot is not None:
            # Undo the step (weights, optimizer-free buffers alike), then stop: Lightning validates and
            # checkpoints when a stop is requested.
            pl_module.load_state_dict(self._snapshot)
            self._snapshot = None
            trainer.should_stop = True
            rank_zero_info("LinearProbe: probe_only, so the fit stops after validating and checkpointing the probe")

    @override
    def state_dict(self) -> dict[str, Any]:
        return dict(self.summary) or {"probe/fitted": 0.0}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.summary = dict(state_dict)

    # --------------------------------------------------------------------------------------------- features
    def training_features(self, trainer: Trainer, pl_module: LightningModule) -> tuple[Any, list[int], list[str]]:
        """Frozen features of every training image (and view) with their labels and groups, rows view-major.

        Raises:
            ValueError: If the DataModule's training set has no records and pipeline to evaluate them with.
        """
        datamodule: Any = getattr(trainer, "datamodule", None)
        train = getattr(datamodule, "train_dataset", None)
        records = getattr(train, "records", None)
        if train is None or records is None or not hasattr(train, "pipeline") or not hasattr(datamodule, "pipeline"):
            raise ValueError(
                f"LinearProbe needs a DataModule whose train_dataset lists records and has a pipeline "
                f"(MicrographFolder and its subclasses); {type(datamodule).__name__} does not"
            )
        dataset = copy.copy(train)
        dataset.pipeline = datamodule.pipeline(None)  # the evaluation geometry, no random augmentation
        views = self._views(datamodule)
        features = pooled_features(
            pl_module.backbone,  # type: ignore[arg-type]
            dataset,
            views,
            # The physical-scale step runs in the dataset, before the pipeline: both define a feature.
            (_pipeline_key(dataset.pipeline), getattr(dataset, "scale", None)),
            [_record_key(r) for r in records],
            self.cache,
            self.batch_size,
            int(getattr(datamodule, "num_workers", 0)),
            pl_module.device,
        )
        labels = [int(r.label) for r in records] * len(views)
        groups = [str(r.group) for r in records] * len(views)
        return features.reshape(-1, features.shape[-1]), labels, groups

    def _views(self, datamodule: Any) -> list[View]:
        if self.views == "identity":
            return [IDENTITY]
        invariances = getattr(datamodule, "invariances", None)
        return allowed_views(bool(getattr(invariances, "rotation", False)), bool(getattr(invariances, "mirror", False)))


def head_linear(pl_module: LightningModule) -> nn.Linear:
    """The last ``nn.Linear`` of ``pl_module.head``: where the probe is written.

    Raises:
        ValueError: If the model has no ``backbone`` or no ``head`` with a linear layer.
    """
    head = getattr(pl_module, "head", None)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if isinstance(head, nn.Module) else []
    if not linears or not isinstance(getattr(pl_module, "backbone", None), nn.Module):
        raise ValueError(
            f"LinearProbe needs a model with a `backbone` returning pooled features and a `head` ending in an "
            f"nn.Linear (MicrographClassifier); {type(pl_module).__name__} has none"
        )
    return linears[-1]


def _record_key(record: Any) -> Hashable:
    """A sample's identity for the cache: file, modification time, tile and physical scale."""
    path = Path(record.path)
    modified = path.stat().st_mtime_ns if path.exists() else None
    scale = (getattr(record, "pixel_size", None), getattr(record, "data_bar", 0))
    return (str(path), modified, getattr(record, "tile", None), scale)


def _pipeline_key(pipeline: Any) -> Hashable:
    """The evaluation preprocessing as text (channels, resize, normalisation), part of every cache key."""
    return (type(pipeline).__name__, getattr(pipeline, "in_chans", None), repr(getattr(pipeline, "finish", pipeline)))
