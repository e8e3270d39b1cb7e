from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn.modules.batchnorm import _BatchNorm

from smalldata_pl.callbacks import Stage, StagedUnfreezing
from smalldata_pl.datamodules import SyntheticGrainBoundaries, SyntheticGrains
from smalldata_pl.tasks import MicrographClassifier, MicrographSegmenter

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


class Probe(Callback):
    """Records trainable flags, BN modes, BN buffers and LRs per group at every train epoch start."""

    def __init__(self):
        self.epochs = {}

    def on_train_epoch_start(self, trainer, module):
        self.epochs[trainer.current_epoch] = self.snapshot(trainer, module)

    def on_train_end(self, trainer, module):
        self.epochs["end"] = self.snapshot(trainer, module)

    @staticmethod
    def snapshot(trainer, module):
        owner = {p: g for g, names in module.param_groups.items() for p in names}
        bn_train, bn_stats = {}, {}
        for name, mod in module.named_modules():
            if isinstance(mod, _BatchNorm):
                group = owner[f"{name}.weight"]
                bn_train.setdefault(group, set()).add(mod.training)
                bn_stats[name] = (mod.running_mean.clone(), mod.running_var.clone())
        params = dict(module.named_parameters())
        return {
            "grad": {g: {params[p].requires_grad for p in names} for g, names in module.param_groups.items()},
            "bn_train": bn_train,
            "bn_stats": bn_stats,
            "lr": {g.get("name", "unnamed"): g["lr"] for g in trainer.optimizers[0].param_groups},
        }


def make(scheduler=None, interval="epoch", backbone="test_resnet"):
    seed_everything(0)
    model = MicrographClassifier(
        backbone,
        num_classes=4,
        in_chans=1,
        optimizer=partial(torch.optim.AdamW, lr=0.01),
        scheduler=scheduler,
        scheduler_interval=interval,
    )
    data = SyntheticGrains(train_size=16, val_size=8, image_size=32, batch_size=8)
    return model, data


def trainer(max_epochs, callbacks, tmp_path, **kwargs):
    return Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        **kwargs,
    )


def expected_ratios(model, lr_decay):
    """Each group's LR relative to the head's: ``lr_decay`` to the power of the group's depth below the head."""
    backbone = [g for g in model.param_group_names if g != "head"]
    return {"head": 1.0} | {g: lr_decay ** (len(backbone) - i) for i, g in enumerate(backbone)}


def ratios(lrs):
    return {g: lr / lrs["head"] for g, lr in lrs.items()}


# ------------------------------------------------------------------------------ fits: what only a Trainer shows
def test_groups_unfreeze_top_down_with_frozen_batchnorm(tmp_path):
    model, data = make()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    probe = Probe()
    unfreeze = StagedUnfreezing(unfreeze_at=[1, 2], lr_decay=0.5)
    fit = trainer(3, [unfreeze, probe], tmp_path)
    fit.fit(model, data)
    e0, e1, e2 = probe.epochs[0], probe.epochs[1], probe.epochs[2]
    assert e0["grad"]["head"] == {True} and e0["grad"]["stage4"] == {False} and e0["grad"]["stem"] == {False}
    assert e1["grad"]["stage4"] == {True} and e1["grad"]["stage3"] == {False}
    assert e2["grad"]["stage3"] == {True} and e2["grad"]["stage2"] == {False}
    assert e0["bn_train"]["stage4"] == {False} and e1["bn_train"]["stage4"] == {True}
    assert probe.epochs["end"]["bn_train"]["stem"] == {False}
    # Frozen BatchNorm statistics are bit-identical after three epochs of training above them.
    for name, (mean, var) in e0["bn_stats"].items():
        if name.startswith("backbone.layer1") or name.startswith("backbone.conv1"):
            end_mean, end_var = probe.epochs["end"]["bn_stats"][name]
            assert torch.equal(mean, end_mean) and torch.equal(var, end_var), name
    # Groups that never unfroze: weights bit-identical (no update, no weight decay) and no optimizer state.
    params = dict(model.named_parameters())
    for name in model.param_groups["stem"] + model.param_groups["stage2"]:
        assert torch.equal(before[name], params[name]), name
    state = fit.optimizers[0].state
    assert not any(p in state for p in model.parameters_of(["stem", "stage1", "stage2"]))
    assert all(p in state for p in model.parameters_of(["stage3", "head"]))
    # The real run's optimizer: each deeper group at 0.5x the LR of the one above, at every epoch.
    for epoch in (0, 1, 2):
        lrs = probe.epochs[epoch]["lr"]
        assert lrs["head"] > 0
        assert ratios(lrs) == pytest.approx(expected_ratios(model, 0.5)), epoch


def test_train_bn_keeps_batchnorm_training_in_frozen_groups(tmp_path):
    model, data = make()
    probe = Probe()
    trainer(1, [StagedUnfreezing(unfreeze_at=[], train_bn=True), probe], tmp_path).fit(model, data)
    snapshot = probe.epochs[0]
    assert snapshot["bn_train"]["stage2"] == {True}
    assert True in snapshot["grad"]["stage2"] and False in snapshot["grad"]["stage2"]  # BN affine only


def test_mask_mode_freezes_without_touching_requires_grad(tmp_path):
    """Every parameter keeps requires_grad (and gets a gradient); the hook Lightning calls before the step drops it."""
    model, data = make()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit = trainer(2, [StagedUnfreezing(unfreeze_at=[1], freeze_mode="mask")], tmp_path)
    fit.fit(model, data)
    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())
    assert all(torch.equal(before[n], params[n]) for n in model.param_groups["stage3"])
    assert not all(torch.equal(before[n], params[n]) for n in model.param_groups["stage4"])
    assert not any(p in fit.optimizers[0].state for p in model.parameters_of(["stem", "stage3"]))


def test_keep_bn_eval_leaves_unfrozen_batchnorm_on_running_statistics(tmp_path):
    model, data = make()
    probe = Probe()
    trainer(2, [StagedUnfreezing(unfreeze_at=[1], keep_bn_eval=True), probe], tmp_path).fit(model, data)
    assert probe.epochs[1]["grad"]["stage4"] == {True}
    assert probe.epochs[1]["bn_train"]["stage4"] == {False}
    for name, (mean, var) in probe.epochs[0]["bn_stats"].items():
        end_mean, end_var = probe.epochs["end"]["bn_stats"][name]
        assert torch.equal(mean, end_mean), name
        assert torch.equal(var, end_var), name


@pytest.mark.parametrize("whole_network", [False, True])
def test_keep_bn_eval_keeps_pretrained_statistics_and_lets_a_fresh_decoder_learn_its_own(tmp_path, whole_network):
    """A new U-Net decoder's BatchNorm would normalise nothing on its initial statistics; a loaded one keeps its."""
    data = SyntheticGrainBoundaries(train_size=4, val_size=2, image_size=32, batch_size=2)
    start = tmp_path / "start.ckpt"
    if whole_network:
        run = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
        run.fit(MicrographSegmenter("test_resnet", num_classes=2), datamodule=data)
        run.save_checkpoint(start)
    model = MicrographSegmenter(
        "test_resnet", num_classes=2, init_weights=str(start) if whole_network else None,
        optimizer=partial(torch.optim.AdamW, lr=0.01),
    )  # fmt: skip
    plan = StagedUnfreezing(stages=[Stage(epoch=0, groups=["backbone"])], lr_decay=1.0, keep_bn_eval=True)
    probe = Probe()  # epoch 0 holds the statistics the fit starts from (after init_weights), "end" the final ones
    trainer(1, [plan, probe], tmp_path, enable_checkpointing=False).fit(model, datamodule=data)
    before, after = probe.epochs[0]["bn_stats"], probe.epochs["end"]["bn_stats"]
    changed = {name for name, (mean, _) in before.items() if not torch.equal(mean, after[name][0])}
    encoder = {name for name in before if name.startswith("encoder.")}
    decoder = {name for name in before if name.startswith("decoder.")}
    assert encoder and decoder
    assert not changed & encoder
    assert changed & decoder == (set() if whole_network else decoder)
    assert all(p.requires_grad for p in model.parameters())  # everything trains; only the statistics stay


# ------------------------------------------------------------------- schedules: the optimizer without a Trainer
SCHEDULERS = {
    "cosine_default": (None, "step"),
    "onecycle": (partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01, total_steps=8), "step"),
    "step": (partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5), "epoch"),
    "plateau": (partial(torch.optim.lr_scheduler.ReduceLROnPlateau, factor=0.5, patience=0), "epoch"),
    "linear_warmup": (partial(torch.optim.lr_scheduler.LinearLR, start_factor=0.1, total_iters=4), "step"),
    "lambda": (partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda s: 0.9**s), "step"),
}


def drive(callback, scheduler="cosine_default", epochs=3, steps_per_epoch=2):
    """What a fit does to the optimizer's LRs, without a Trainer: the callback's hooks around real optimizer steps.

    The callback writes its ratios into the model (``setup``), the model builds its optimizer and scheduler
    (``configure_optimizers``, which scales them), and every step runs backward, the callback's pre-step hook
    (warm-up, dropped gradients), the update with the callback's post-step hook, then the scheduler (per step
    or per epoch; the plateau scheduler sees a loss that keeps rising).

    Returns:
        The model, its optimizer and one record per optimizer step: the epoch, the global step, the scheduled LRs
        before the hooks, the LRs the update used and, at an epoch's last step, the LRs after the scheduler.
    """
    factory, interval = SCHEDULERS[scheduler]
    model, _ = make(factory, interval)
    # Stands in for the Trainer: what the callback and configure_optimizers read from it.
    state = SimpleNamespace(
        max_epochs=epochs,
        world_size=1,
        current_epoch=0,
        global_step=0,
        logger=None,
        estimated_stepping_batches=epochs * steps_per_epoch + 2,  # the default cosine must not reach zero here
    )
    callback.setup(state, model, "fit")
    model.trainer = state
    config = model.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == interval
    state.optimizers = [optimizer]
    callback.on_fit_start(state, model)
    callback.on_train_start(state, model)
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    records = []

    def lrs():
        return {g["name"]: g["lr"] for g in optimizer.param_groups}

    for epoch in range(epochs):
        state.current_epoch = epoch
        callback.on_train_epoch_start(state, model)
        for _ in range(steps_per_epoch):
            optimizer.zero_grad()
            model(images).logsumexp(dim=1).mean().backward()
            scheduled = lrs()
            callback.on_before_optimizer_step(state, model, optimizer)
            applied = lrs()
            optimizer.step()
            assert lrs() == scheduled  # the post-step hook undid the warm-up before any scheduler reads the LRs
            records.append({"epoch": epoch, "step": state.global_step, "scheduled": scheduled, "applied": applied})
            state.global_step += 1
            if interval == "step":
                schedule.step()
        if interval == "epoch":
            schedule.step(float(epoch)) if scheduler == "plateau" else schedule.step()
        records[-1]["after"] = lrs()
    callback.on_fit_end(state, model)
    model.trainer = None
    return model, optimizer, records


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_keeps_the_ratios_through_unfreezes_and_warm_up(name):
    callback = StagedUnfreezing(unfreeze_at=[1, 2], lr_decay=0.3, warmup_steps=2)
    model, _, records = drive(callback, name)
    expected = expected_ratios(model, 0.3)
    assert expected["stem"] == pytest.approx(0.3**5)
    heads = set()
    for record in records:
        for lrs in (record["scheduled"], record.get("after")):
            if lrs is not None:
                assert lrs["head"] > 0, record
                assert ratios(lrs) == pytest.approx(expected, rel=1e-6), record
                heads.add(round(lrs["head"], 12))
        # The update used the scheduled LR, times a linear warm-up over 2 steps for groups unfrozen mid-run.
        for group in callback.trainable_groups(record["epoch"]):
            ramp = (record["step"] - callback.started_at_step[group] + 1) / 2
            factor = min(1.0, ramp) if callback.unfreeze_epoch[group] > 0 else 1.0
            assert record["applied"][group] == pytest.approx(record["scheduled"][group] * factor), (group, record)
        for group in set(expected) - set(callback.trainable_groups(record["epoch"])):
            assert record["applied"][group] == record["scheduled"][group]
    assert callback.started_at_step == {"head": 0, "stage4": 2, "stage3": 4}
    assert len(heads) >= 3  # the schedule really moved the LRs it had to keep in proportion


def test_explicit_stages_with_lr_multiplier():
    plan = [Stage(epoch=1, groups=["stage4", "stage3"], lr_scale=0.1), Stage(epoch=2, groups=["backbone"])]
    callback = StagedUnfreezing(stages=plan, lr_decay=1.0)
    model, _, records = drive(callback, "step")
    assert callback.unfreeze_epoch == {"stem": 2, "stage1": 2, "stage2": 2, "stage3": 1, "stage4": 1, "head": 0}
    expected = {"stem": 1.0, "stage1": 1.0, "stage2": 1.0, "stage3": 0.1, "stage4": 0.1, "head": 1.0}
    for record in records:
        assert ratios(record["scheduled"]) == pytest.approx(expected), record
    assert records[-1]["after"]["head"] == pytest.approx(0.01 * 0.5**3)  # StepLR halved it after each epoch
    assert all(p.requires_grad for p in model.parameters())  # the last stage unfroze the rest


def test_warmup_ramps_a_newly_unfrozen_group():
    callback = StagedUnfreezing(unfreeze_at=[1], warmup_steps=4)
    callback.resolve_plan(["stem", "stage1", "head"])
    callback.started_at_step = {"head": 0, "stage1": 10}
    assert [callback.warmup_factor("stage1", s) for s in (10, 11, 13, 20)] == [0.25, 0.5, 1.0, 1.0]
    assert callback.warmup_factor("head", 3) == 1.0


# ----------------------------------------------------------------------------------------------------- resume
class StopAfter(Callback):
    """Interrupts a run at the end of an epoch, as a killed job would after its last checkpoint."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch + 1 == self.epochs:
            trainer.should_stop = True


def weights_after(tmp_path, total, stop_at=None):
    """Train `total` epochs; with `stop_at`, stop after that many and resume from the last checkpoint."""

    def callbacks():
        return [StagedUnfreezing(unfreeze_at=[1, 2], warmup_steps=3), ModelCheckpoint(tmp_path / "ck", save_last=True)]

    def fresh():
        return make(partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.7), "epoch")

    model, data = fresh()
    if stop_at is None:
        trainer(total, callbacks(), tmp_path).fit(model, data)
        return model
    trainer(total, [*callbacks(), StopAfter(stop_at)], tmp_path).fit(model, data)
    model, data = fresh()
    trainer(total, callbacks(), tmp_path).fit(model, data, ckpt_path=tmp_path / "ck" / "last.ckpt")
    return model


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The 4-epoch reference run, trained once for every resume point."""
    return weights_after(tmp_path_factory.mktemp("reference"), 4)


@pytest.mark.parametrize("stop_at", [1, 2, 3], ids=["before_second_unfreeze", "at_unfreeze", "after_unfreezes"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, stop_at, uninterrupted):
    resumed = weights_after(tmp_path, 4, stop_at)
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    flags = {n: p.requires_grad for n, p in resumed.named_parameters()}
    assert flags == {n: p.requires_grad for n, p in uninterrupted.named_parameters()}


class Interrupted(Exception):
    """Stands in for a killed job."""


class SaveAndStopMidEpoch(Callback):
    """Writes a checkpoint after a given global step and stops, as a job killed mid-epoch after saving would."""

    def __init__(self, step, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            raise Interrupted


def mid_epoch_run(tmp_path, callbacks, ckpt_path=None):
    seed_everything(0)
    model = MicrographClassifier("test_resnet", num_classes=4, optimizer=partial(torch.optim.AdamW, lr=0.01))
    data = SyntheticGrains(train_size=32, val_size=8, image_size=32, batch_size=8)  # 4 batches per epoch
    unfreeze = StagedUnfreezing(unfreeze_at=[1], warmup_steps=3)
    trainer(3, [unfreeze, *callbacks], tmp_path).fit(model, data, ckpt_path=ckpt_path)
    return model


@pytest.fixture(scope="module")
def uninterrupted_mid_epoch(tmp_path_factory):
    return mid_epoch_run(tmp_path_factory.mktemp("reference_mid_epoch"), [])


@pytest.mark.parametrize("step", [3, 6], ids=["mid_epoch_before_unfreeze", "mid_epoch_after_unfreeze"])
def test_mid_epoch_resume_equals_uninterrupted_run(tmp_path, step, uninterrupted_mid_epoch):
    path = tmp_path / "mid.ckpt"
    with pytest.raises(Interrupted):
        mid_epoch_run(tmp_path, [SaveAndStopMidEpoch(step, path)])
    resumed = mid_epoch_run(tmp_path, [], ckpt_path=path)
    for (name, a), b in zip(uninterrupted_mid_epoch.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------------------------- plan and errors
def test_plan_errors_are_clear():
    with pytest.raises(ValueError, match="strictly increasing"):
        StagedUnfreezing(unfreeze_at=[3, 2])
    callback = StagedUnfreezing(stages=[Stage(epoch=1, groups=["stage9"])])
    with pytest.raises(ValueError, match="unknown group 'stage9'"):
        callback.resolve_plan(["stem", "stage1", "head"])
    with pytest.raises(ValueError, match="max_epochs=3"):
        StagedUnfreezing(unfreeze_at=[1, 5]).resolve_plan(["stem", "stage1", "head"], max_epochs=3)
    with pytest.raises(ValueError, match="exposes no parameter groups"):
        StagedUnfreezing(unfreeze_at=[1]).resolve_plan([])
    with pytest.raises(ValueError, match="milestones"):
        StagedUnfreezing(unfreeze_at=[1, 2, 3]).resolve_plan(["stem", "stage1", "head"])


def test_lr_decay_is_a_fraction_and_sets_one_power_per_group_below_the_head():
    for bad in (1.5, 0.0, -0.5):
        with pytest.raises(ValueError, match="lr_decay"):
            StagedUnfreezing(lr_decay=bad)
    names = ["stem", "stage1", "stage2", "neck", "head"]
    callback = StagedUnfreezing(unfreeze_at=[1], lr_decay=0.3)
    callback.resolve_plan(names)
    # New layers (neck, head) train at the full LR from epoch 0; the backbone decays from the top down.
    assert callback.lr_scales == pytest.approx({"head": 1.0, "neck": 1.0, "stage2": 0.3, "stage1": 0.09, "stem": 0.027})
    assert callback.unfreeze_epoch["neck"] == 0 and callback.unfreeze_epoch["stage2"] == 1
    flat = StagedUnfreezing(lr_decay=1.0)
    flat.resolve_plan(names)
    assert set(flat.lr_scales.values()) == {1.0}


def test_optimize_trainable_lets_lightnings_backbone_finetuning_add_the_backbone(tmp_path):
    from lightning.pytorch.callbacks import BackboneFinetuning

    # Per-epoch cosine: the default per-step LambdaLR raises once a group is added mid-run (torch checks lengths).
    model, data = make(partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=2))
    model.optimize = "trainable"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    probe = Probe()
    fit = trainer(2, [BackboneFinetuning(unfreeze_backbone_at_epoch=1), probe], tmp_path)
    fit.fit(model, data)
    params = dict(model.named_parameters())
    conv = params["backbone.conv1.0.weight"]
    # Epoch 0: only what was trainable when the optimizer was built (the head and, by Lightning's freeze(), BN).
    assert probe.epochs[0]["grad"]["stem"] == {False, True} and "unnamed" not in probe.epochs[0]["lr"]
    groups = fit.optimizers[0].param_groups
    assert groups[-1].get("name") is None and any(p is conv for p in groups[-1]["params"])  # appended later
    assert not torch.equal(before["backbone.conv1.0.weight"], conv)


def test_staged_unfreezing_refuses_an_optimizer_of_trainable_parameters_only(tmp_path):
    model, data = make()
    model.optimize = "trainable"
    with pytest.raises(ValueError, match="optimize='all'"):
        trainer(1, [StagedUnfreezing(unfreeze_at=[])], tmp_path).fit(model, data)
    with pytest.raises(ValueError, match="optimize must be"):
        MicrographClassifier("test_resnet", optimize="some")


# -------------------------------------------------------------------------------------------------- LR finder
def steepest_descent(lrs, losses):
    """Index of the fastest loss decrease per log-LR, away from the sweep's first and last tenth."""
    slope = np.gradient(np.asarray(losses), np.log(np.asarray(lrs)))
    trim = max(1, len(lrs) // 10)
    return trim + int(np.argmin(slope[trim:-trim])), slope


def test_lr_finder_keeps_ratios_and_leaves_weights_unchanged():
    from smalldata_pl.tuning.lr_finder import find_lr

    model, data = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    plan = StagedUnfreezing(unfreeze_at=[1, 2], lr_decay=0.5)
    result = find_lr(model, data, plan, epoch=1, min_lr=1e-4, num_steps=20, max_lr=0.5)
    # Nothing of the sweep stays behind: weights, BatchNorm statistics, trainable flags, module modes.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert modes == {n: m.training for n, m in model.named_modules()}
    # A geometric sweep of the head LR from min_lr, every group at its ratio.
    assert len(result.losses) == len(result.lrs) == len(result.group_lrs) > 4
    assert result.lrs[0] == pytest.approx(1e-4)
    steps = np.diff(np.log(result.lrs))
    assert steps == pytest.approx(np.full_like(steps, np.log(0.5 / 1e-4) / 19))
    for lr, lrs in zip(result.lrs, result.group_lrs, strict=True):
        assert lrs["head"] == pytest.approx(lr)
        assert ratios(lrs) == pytest.approx(expected_ratios(model, 0.5))
    # The suggestion lies inside the sweep, where the recorded loss falls fastest.
    assert 1e-4 <= result.suggestion <= 0.5
    index, slope = steepest_descent(result.lrs, result.losses)
    assert result.suggestion == result.lrs[index]
    assert slope[index] < 0


def test_lr_finder_stops_once_the_loss_diverges():
    from smalldata_pl.tuning.lr_finder import find_lr

    model, data = make()
    result = find_lr(model, data, min_lr=1e-3, max_lr=1e4, num_steps=40, divergence=2.0)
    assert len(result.lrs) < 40
    assert not np.isfinite(result.losses[-1]) or result.losses[-1] > 2.0 * min(result.losses)
    assert all(loss <= 2.0 * min(result.losses[:i]) for i, loss in enumerate(result.losses[:-1]) if i)


def test_lr_find_command_writes_a_tuned_config(tmp_path):
    from smalldata_pl.cli import SmallDataCLI
    from smalldata_pl.cli.lr_find import lr_find_command
    from smalldata_pl.tasks.optimization import named_param_groups

    config = tmp_path / "tuned.yaml"
    result = lr_find_command(["-c", SMOKE, "--steps", "12", "--min_lr", "1e-4", "--write", str(config)])
    assert result.lrs[0] == pytest.approx(1e-4) and 4 < len(result.lrs) <= 12
    assert np.diff(np.log(result.lrs)) == pytest.approx(np.full(len(result.lrs) - 1, np.log(1e4) / 11))
    assert 1e-4 <= result.suggestion <= 1.0
    assert result.suggestion == result.lrs[steepest_descent(result.lrs, result.losses)[0]]
    tuned = yaml.safe_load(config.read_text())
    lr = tuned["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    assert lr == float(f"{result.suggestion:.3g}")
    assert not {"epoch", "min_lr", "max_lr", "steps", "write"} & set(tuned)  # a plain `fit` config
    # The curve went to TensorBoard, one point per step.
    (events,) = (tmp_path / "lightning_logs" / "lr_find").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert [e.value for e in accumulator.Scalars("lr_find/head_lr")] == pytest.approx(result.lrs, rel=1e-6)
    # The tuned file configures a run whose optimizer starts at the suggested LR.
    cli = SmallDataCLI(args=["-c", str(config), "--trainer.logger=false"], run=False)
    optimizer = cli.model.optimizer_factory(named_param_groups(cli.model, cli.model.param_groups))
    assert {g["lr"] for g in optimizer.param_groups} == {lr}
