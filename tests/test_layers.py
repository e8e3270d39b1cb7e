"""The package's one-way layers: import-linter contracts from pyproject.toml, and torch-free imports at run time."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONTRACTS = {
    c["id"]: c["name"]
    for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `lint-imports` on the package importable from `cwd`, with the pyproject.toml found there."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_contracts_are_kept() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract", "message"),
    [
        # An upward import: a Dataset reaching for the CLI.
        (
            "datasets/folder.py",
            "import smalldata_pl.cli",
            "layers",
            "smalldata_pl.datasets is not allowed to import smalldata_pl.cli",
        ),
        # Allowed by the layers (datasets sit lower) but not by the models contract.
        (
            "models/heads.py",
            "import smalldata_pl.datasets",
            "models-without-data",
            "smalldata_pl.models is not allowed to import smalldata_pl.datasets",
        ),
        (
            "generators/seeds.py",
            "import torch",
            "generators-without-torch",
            "smalldata_pl.generators is not allowed to import torch",
        ),
    ],
)
def test_planted_violation_breaks_its_contract(
    tmp_path: Path, module: str, planted: str, contract: str, message: str
) -> None:
    shutil.copytree(REPO / "smalldata_pl", tmp_path / "smalldata_pl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path = tmp_path / "smalldata_pl" / module
    path.write_text(f"{planted}\n{path.read_text()}")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{CONTRACTS[contract]} BROKEN" in result.stdout
    assert message in result.stdout
    assert f"Contracts: {len(CONTRACTS) - 1} kept, 1 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("smalldata_pl.generators", ("torch", "lightning", "albumentations")),
        ("smalldata_pl.io.images", ("torch", "lightning")),
        # Summarising finished folds needs no training stack (the callbacks would pull it in).
        ("smalldata_pl.evaluation.summary", ("torch", "lightning", "smalldata_pl.callbacks")),
    ],
)
def test_import_does_not_load(module: str, absent: tuple[str, ...]) -> None:
    # Run time, not just the static graph: a dependency of ours importing torch would show up here.
    code = f"import sys, {module}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
