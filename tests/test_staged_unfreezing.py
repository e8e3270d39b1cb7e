import math
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.nn.modules.batchnorm import _BatchNorm

from smalldata_pl.callbacks import Stage, StagedUnfreezing
from smalldata_pl.datamodules import SyntheticGrains
from smalldata_pl.tasks import MicrographClassifier


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


def test_groups_unfreeze_top_down_with_frozen_batchnorm(tmp_path):
    model, data = make()
    probe = Probe()
    unfreeze = StagedUnfreezing(unfreeze_at=[1, 2], lr_decay=0.5)
    trainer(3, [unfreeze, probe], tmp_path).fit(model, data)
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
    # Discriminative ratios: each deeper group 0.5x the one above.
    lrs = e2["lr"]
    assert lrs["stage4"] / lrs["head"] == pytest.approx(0.5)
    assert lrs["stage3"] / lrs["head"] == pytest.approx(0.25)
    assert lrs["stem"] / lrs["head"] == pytest.approx(0.5**5)


def test_train_bn_keeps_batchnorm_training_in_frozen_groups(tmp_path):
    model, data = make()
    probe = Probe()
    trainer(1, [StagedUnfreezing(unfreeze_at=[], train_bn=True), probe], tmp_path).fit(model, data)
    snapshot = probe.epochs[0]
    assert snapshot["bn_train"]["stage2"] == {True}
    assert True in snapshot["grad"]["stage2"] and False in snapshot["grad"]["stage2"]  # BN affine only


def test_explicit_stages_with_lr_multiplier(tmp_path):
    model, data = make()
    probe = Probe()
    plan = [Stage(epoch=1, groups=["stage4", "stage3"], lr_scale=0.1), Stage(epoch=2, groups=["backbone"])]
    trainer(3, [StagedUnfreezing(stages=plan, lr_decay=1.0), probe], tmp_path).fit(model, data)
    assert probe.epochs[1]["grad"]["stage3"] == {True} and probe.epochs[1]["grad"]["stage2"] == {False}
    assert probe.epochs[2]["grad"]["stem"] == {True}
    lrs = probe.epochs[2]["lr"]
    assert lrs["stage3"] / lrs["head"] == pytest.approx(0.1) and lrs["stem"] == pytest.approx(lrs["head"])


SCHEDULERS = {
    "cosine_default": (None, "step"),
    "onecycle": (partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01, total_steps=8), "step"),
    "step": (partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5), "epoch"),
    "plateau": (partial(torch.optim.lr_scheduler.ReduceLROnPlateau, factor=0.5, patience=0), "epoch"),
    "linear_warmup": (partial(torch.optim.lr_scheduler.LinearLR, start_factor=0.1, total_iters=4), "step"),
    "lambda": (partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda s: 0.9**s), "step"),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_keeps_the_ratios_through_an_unfreeze(name, tmp_path):
    scheduler, interval = SCHEDULERS[name]
    model, data = make(scheduler, interval)
    probe = Probe()
    trainer(3, [StagedUnfreezing(unfreeze_at=[1, 2], lr_decay=0.3), probe], tmp_path).fit(model, data)
    for epoch in (0, 1, 2, "end"):
        lrs = probe.epochs[epoch]["lr"]
        if epoch == "end" and lrs["head"] == 0:  # cosine ends at zero
            continue
        assert lrs["head"] > 0
        assert lrs["stage4"] / lrs["head"] == pytest.approx(0.3, rel=1e-6), (epoch, lrs)
        assert lrs["stem"] / lrs["head"] == pytest.approx(0.3**5, rel=1e-6), (epoch, lrs)


def test_frozen_parameters_get_no_decay_and_no_optimizer_state(tmp_path):
    model, data = make()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit = trainer(1, [StagedUnfreezing(unfreeze_at=[])], tmp_path)
    fit.fit(model, data)
    for name in model.param_groups["stage2"]:
        assert torch.equal(before[name], dict(model.named_parameters())[name]), name
    frozen = {id(p) for p in model.parameters_of(["stage2"])}
    assert not any(id(p) in frozen for p in fit.optimizers[0].state)


def test_mask_mode_freezes_without_touching_requires_grad(tmp_path):
    model, data = make()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer(2, [StagedUnfreezing(unfreeze_at=[1], freeze_mode="mask")], tmp_path).fit(model, data)
    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())
    assert all(torch.equal(before[n], params[n]) for n in model.param_groups["stage3"])
    assert not all(torch.equal(before[n], params[n]) for n in model.param_groups["stage4"])


def test_warmup_ramps_a_newly_unfrozen_group():
    callback = StagedUnfreezing(unfreeze_at=[1], warmup_steps=4)
    callback.resolve_plan(["stem", "stage1", "head"])
    callback.started_at_step = {"head": 0, "stage1": 10}
    assert [callback.warmup_factor("stage1", s) for s in (10, 11, 13, 20)] == [0.25, 0.5, 1.0, 1.0]
    assert callback.warmup_factor("head", 3) == 1.0


class StopAfter(Callback):
    """Interrupts a run at the end of an epoch, as a killed job would after its last checkpoint."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch + 1 == self.epochs:
            trainer.should_stop = True


def weights_after(tmp_path, stop_at, total, resume=True):
    """Train `total` epochs; optionally stop after `stop_at` and resume from the checkpoint."""

    def callbacks():
        return [StagedUnfreezing(unfreeze_at=[1, 2], warmup_steps=3), ModelCheckpoint(tmp_path / "ck", save_last=True)]

    model, data = make(partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.7), "epoch")
    if not resume:
        trainer(total, callbacks(), tmp_path).fit(model, data)
        return model
    trainer(total, [*callbacks(), StopAfter(stop_at)], tmp_path).fit(model, data)
    model, data = make(partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.7), "epoch")
    resumed = trainer(total, callbacks(), tmp_path)
    probe = Probe()
    resumed.callbacks.append(probe)
    resumed.fit(model, data, ckpt_path=tmp_path / "ck" / "last.ckpt")
    return model


@pytest.mark.parametrize("stop_at", [1, 2, 3], ids=["before_second_unfreeze", "at_unfreeze", "after_unfreezes"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, stop_at):
    reference = weights_after(tmp_path / "ref", stop_at, 4, resume=False)
    resumed = weights_after(tmp_path / "res", stop_at, 4)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    flags = {n: p.requires_grad for n, p in resumed.named_parameters()}
    assert flags == {n: p.requires_grad for n, p in reference.named_parameters()}


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


def test_lr_decay_must_be_a_fraction():
    with pytest.raises(ValueError, match="lr_decay"):
        StagedUnfreezing(lr_decay=1.5)
    assert math.isclose(0.5**2, 0.25)


def test_lr_finder_keeps_ratios_and_leaves_weights_unchanged():
    from smalldata_pl.tuning.lr_finder import find_lr

    model, data = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    plan = StagedUnfreezing(unfreeze_at=[1, 2], lr_decay=0.5)
    result = find_lr(model, data, plan, epoch=1, num_steps=12, max_lr=0.1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    for lrs in result.group_lrs:
        assert lrs["stage4"] / lrs["head"] == pytest.approx(0.5)
        assert lrs["stem"] / lrs["head"] == pytest.approx(0.5**5)
    assert result.lrs[0] < result.suggestion < 0.1 or result.suggestion == pytest.approx(result.lrs[0])
    assert len(result.losses) == len(result.lrs) > 4


def test_lr_find_command_writes_a_tuned_config(tmp_path):
    from smalldata_pl.cli import main

    config = tmp_path / "tuned.yaml"
    smoke = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
    main(["lr-find", "--steps", "8", "--write", str(config), "-c", smoke])
    import yaml

    tuned = yaml.safe_load(config.read_text())
    assert tuned["model"]["init_args"]["optimizer"]["init_args"]["lr"] > 0


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


@pytest.mark.parametrize("step", [3, 6], ids=["mid_epoch_before_unfreeze", "mid_epoch_after_unfreeze"])
def test_mid_epoch_resume_equals_uninterrupted_run(tmp_path, step):
    def run(callbacks, ckpt_path=None):
        seed_everything(0)
        model = MicrographClassifier("test_resnet", num_classes=4, optimizer=partial(torch.optim.AdamW, lr=0.01))
        data = SyntheticGrains(train_size=32, val_size=8, image_size=32, batch_size=8)  # 4 batches per epoch
        unfreeze = StagedUnfreezing(unfreeze_at=[1], warmup_steps=3)
        trainer(3, [unfreeze, *callbacks], tmp_path).fit(model, data, ckpt_path=ckpt_path)
        return model

    reference = run([])
    path = tmp_path / "mid.ckpt"
    with pytest.raises(Interrupted):
        run([SaveAndStopMidEpoch(step, path)])
    resumed = run([], ckpt_path=path)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


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
