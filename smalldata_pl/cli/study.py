"""``smalldata study``: learning curves over labelled images per class x transfer strategies, resumable."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smalldata_pl.cli.options import command_parser, parse_options, training_command
from smalldata_pl.evaluation.study import (
    STAGED_ARGS,
    STRATEGIES,
    finished_points,
    run_study,
    strategy_callbacks,
    write_outputs,
)


@dataclass
class StudyOptions:
    """Options of ``smalldata study``; the rest are ``smalldata fit`` options of a classification DataModule.

    Learning curve: score against labelled images per class for several strategies, with repeated group-aware
    subsampling and K-fold validation at each size. Resumable: finished points are kept. Add
    ``--data.init_args.epoch_samples N`` so small subsets get as many steps per epoch as the full set.

    Args:
        sizes: Images per class, comma-separated; ``all`` = no subsampling.
        strategies: Comma-separated subset of the strategies (scratch, linear_probe, probe, probe_views,
            full_finetune, staged, staged_aug, lpft, synthetic_staged_aug). ``linear_probe`` trains the head by SGD
            on a frozen backbone; ``probe`` fits it by logistic regression on cached features, without training
            epochs; ``probe_views`` fits it on every label-preserving view and validates with test-time
            augmentation; ``lpft`` starts the staged plan from the probe.
        repeats: Random subsamples per size.
        folds: Folds evaluated per subsample; default all.
        plan: ``unfreeze_at`` of the staged strategies.
        staged_args: Other StagedUnfreezing arguments.
        probe_args: LinearProbe arguments of ``probe``, ``probe_views`` and ``lpft``, e.g. ``{"C": "cv"}``.
        shard: Run only every n-th point starting at i (``i/n``): n processes, machines or array tasks share
            one ``out``.
        synthetic_encoder: Encoder file for ``synthetic_staged_aug``.
        out: Study folder.
        report_only: Only write results/curve/summary from the finished points (after parallel or array-job runs).
    """

    sizes: str = "5,10,20,50,all"
    strategies: str = ",".join(STRATEGIES)
    repeats: int = 2
    folds: int | None = None
    plan: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    staged_args: dict = field(default_factory=lambda: json.loads(STAGED_ARGS))
    probe_args: dict = field(default_factory=dict)
    shard: str = "0/1"
    synthetic_encoder: str = ""
    out: str = "lightning_logs/study"
    report_only: bool = False


@dataclass
class StudyReportOptions:
    """Options of ``smalldata study --report_only``.

    Args:
        out: Study folder.
        report_only: Only write the outputs from the finished points.
    """

    out: str = "lightning_logs/study"
    report_only: bool = True


def study_command(argv: Sequence[str]) -> Path:
    """``smalldata study -c config.yaml --sizes 5,10,20,all --strategies staged,staged_aug --out study/``."""
    if any(a == "--report_only" or a.startswith("--report_only=") for a in argv):
        # Reporting needs no training configuration: the finished points hold everything.
        report = parse_options(
            command_parser("smalldata study", "Report a study.", StudyReportOptions), StudyReportOptions, argv
        )
        rows = finished_points(Path(report.out))
        if not rows:
            raise FileNotFoundError(f"no finished points in {Path(report.out) / 'points'}")
        write_outputs(rows, Path(report.out))
        return Path(report.out)
    cli, new_run = training_command(argv, StudyOptions)
    o: StudyOptions = cli.options
    index, _, count = o.shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"--shard must be 'i/n' with 0 <= i < n, got {o.shard!r}")
    strategies = o.strategies.split(",")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    if "synthetic_staged_aug" in strategies and not o.synthetic_encoder:
        raise ValueError("synthetic_staged_aug needs --synthetic_encoder (from `smalldata export-encoder`)")
    sizes = [None if s == "all" else int(s) for s in o.sizes.split(",")]
    callbacks = strategy_callbacks(o.plan, o.staged_args, o.probe_args)
    out = Path(o.out)
    run_study(
        new_run, strategies, sizes, o.repeats, o.folds, callbacks, o.synthetic_encoder, out, (int(index), int(count))
    )
    return out
