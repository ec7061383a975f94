"""The documentation's code runs: the quick start's Python block, verbatim, and the example."""

from __future__ import annotations

import ast
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from metavae.data.mnist import files_ok

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("METAVAE_DATA", REPO / "data")).resolve()
needs_mnist = pytest.mark.skipif(not files_ok(DATA), reason="needs the real MNIST (make data)")


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_the_quick_start_is_at_most_20_lines_and_uses_only_top_level_imports():
    (code,) = python_blocks(REPO / "docs" / "quickstart.md")
    assert len(code.strip().splitlines()) <= 20
    imports = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.ImportFrom)]
    assert imports and all(n.module in ("metavae", None) or not n.module.startswith("metavae") for n in imports)


@needs_mnist
def test_the_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    """Executes the page's code block unchanged (in a scratch folder; MNIST from the data root)."""
    (code,) = python_blocks(REPO / "docs" / "quickstart.md")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAVAE_DATA", str(DATA))
    exec(compile(code, "docs/quickstart.md", "exec"), {"__name__": "__quickstart__"})
    printed = capsys.readouterr().out
    accuracy = float(re.search(r"mean held-out probe accuracy: ([0-9.]+)", printed).group(1))
    # measured 0.84 (probe of the untrained network: 0.54; chance 0.1): the digit stays readable off the
    # codes of the unseen noise levels, and training is what makes it so
    assert accuracy > 0.7
    assert (tmp_path / "runs" / "quickstart" / "checkpoints" / "best.pt").is_file()


def test_the_example_uses_only_top_level_imports():
    tree = ast.parse((REPO / "examples" / "byo_family.py").read_text(encoding="utf-8"))
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert "metavae" in modules
    assert not [m for m in modules if m and m.startswith("metavae.")]


@needs_mnist
def test_the_example_trains_on_its_own_family_and_probes_held_out_members(tmp_path, capsys):
    module = runpy.run_path(str(REPO / "examples" / "byo_family.py"))
    result = module["main"](["--steps", "600", "--per-distribution", "3000", "--probe-examples", "2000",
                             "--data-dir", str(DATA), "--out", str(tmp_path / "run")])
    assert set(result["per_distribution"]) == {"scanner 2", "scanner 5"}  # the held-out scanners
    assert result["mean_accuracy"] > 0.6  # measured 0.68; the untrained network's codes give 0.47, chance 0.1
    assert "mean held-out probe accuracy" in capsys.readouterr().out


def test_the_documentation_builds_without_warnings_when_mkdocs_is_installed(tmp_path):
    pytest.importorskip("mkdocstrings")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
