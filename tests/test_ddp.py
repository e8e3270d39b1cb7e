import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


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
