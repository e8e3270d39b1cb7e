"""Every notebook runs top to bottom in its small-settings mode."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_small_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLDATA_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("SMALLDATA_REPO", str(path.parents[1]))
    monkeypatch.setenv("SMALLDATA_WORK", str(tmp_path / "work"))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert os.environ["SMALLDATA_NOTEBOOK_SMALL"] == "1"
