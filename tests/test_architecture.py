"""The layer map of docs/ARCHITECTURE.md holds: ``lint-imports`` keeps every contract in pyproject.toml,
and a planted upward import breaks it (so the check can fail)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("importlinter", reason="the import contract needs import-linter (the dev extra)")


def _lint(root: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, env=env, timeout=300)


def test_import_contracts_are_kept():
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


@pytest.mark.full_suite
def test_a_planted_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = tmp_path / "src" / "clipforge" / "models" / "clip.py"
    planted.write_text(planted.read_text() + "\nfrom ..index import ImageIndex  # planted: models may not see index\n")
    run = _lint(tmp_path)
    assert run.returncode != 0
    assert "clipforge.models.clip -> clipforge.index" in run.stdout
