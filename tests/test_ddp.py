import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DistributedSampler

from smalldata_pl.datamodules import SyntheticGrains
from smalldata_pl.datasets.sampling import DistributedEpochSampler, EpochSampler


@pytest.mark.slow
def test_unfrozen_stages_stay_synchronised_across_two_ddp_ranks(tmp_path):
    script = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=env, timeout=300, cwd=tmp_path)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for name, tensor in rank0["state"].items():
        assert torch.equal(tensor, rank1["state"][name]), name
    # Stages unfrozen mid-run did train (and so were synchronised, not just left alone).
    assert not torch.equal(
        rank0["state"]["backbone.layer4.0.conv1.weight"], rank0["initial"]["backbone.layer4.0.conv1.weight"]
    )
    assert not torch.equal(
        rank0["state"]["backbone.layer3.0.conv1.weight"], rank0["initial"]["backbone.layer3.0.conv1.weight"]
    )
    assert torch.equal(
        rank0["state"]["backbone.layer1.0.conv1.weight"], rank0["initial"]["backbone.layer1.0.conv1.weight"]
    )
    assert rank0["losses"][-1] < rank0["losses"][0]


@pytest.mark.slow
def test_mid_epoch_resume_under_ddp_equals_uninterrupted_run_on_both_ranks(tmp_path):
    script = Path(__file__).with_name("ddp_resume_worker.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=env, timeout=300, cwd=tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for rank in ranks:
        # The resumed run trains exactly the batches the interrupted one had left, and ends bit-identical.
        assert rank["interrupted_batches"] + rank["resumed_batches"] == rank["reference_batches"]
        assert 0 < len(rank["resumed_batches"]) < len(rank["reference_batches"])
        for name, tensor in rank["uninterrupted"].items():
            assert torch.equal(tensor, rank["resumed"][name]), name
    for name, tensor in ranks[0]["resumed"].items():
        assert torch.equal(tensor, ranks[1]["resumed"][name]), name
    # Each rank trains its own share of an epoch: together they cover every sample, the shares padded to equal size.
    for epoch in range(3):
        shares = [[g for e, _, groups in rank["reference_batches"] if e == epoch for g in groups] for rank in ranks]
        assert len(shares[0]) == len(shares[1]) == 8
        assert len(set(shares[0]) | set(shares[1])) == 15


@pytest.mark.parametrize(("length", "min_samples"), [(15, None), (6, 16)], ids=["padded", "three_passes"])
def test_ranks_share_one_epoch_order_and_resume_their_share_exactly(length, min_samples):
    whole = EpochSampler(length, seed=3, min_samples=min_samples)
    whole.set_epoch(2)
    order = list(whole)

    def sampler(rank):
        shard = DistributedEpochSampler(length, 2, rank, seed=3, min_samples=min_samples)
        shard.set_epoch(2)
        return shard

    shares = [list(sampler(rank)) for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(sampler(0))
    # Interleaved, the shares are the single-process order, padded with its first draw to an even length.
    assert [draw for pair in zip(*shares, strict=True) for draw in pair] == order + order[: len(order) % 2]
    for rank in (0, 1):
        resumed = sampler(rank)
        resumed.resume_from = (2, 2 * 2 * 2)  # both ranks trained 2 batches of 2
        assert list(resumed) == shares[rank][4:]
        assert list(resumed) == shares[rank]  # the resume position is used once


def test_train_loader_shards_itself_under_a_distributed_strategy_and_counts_all_ranks():
    data = SyntheticGrains(train_size=15, val_size=4, image_size=32, batch_size=4)
    data.setup("fit")
    data.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": 1})
    train = data.train_dataloader().sampler
    # A DistributedSampler is left alone by Lightning; evaluation loaders stay for Lightning to shard.
    assert isinstance(train, DistributedEpochSampler) and isinstance(train, DistributedSampler)
    assert (train.num_replicas, train.rank, len(train)) == (2, 1, 8)
    assert not isinstance(data.val_dataloader().sampler, DistributedSampler)
    data.load_state_dict({"epoch": 1, "batches": 1, "batch_size": 4, "replicas": 2})
    assert data.train_dataloader().sampler.resume_from == (1, 8)
    data.load_state_dict({"epoch": 1, "batches": 1, "batch_size": 4})  # a checkpoint from before "replicas"
    assert data._resume_from == (1, 4)
