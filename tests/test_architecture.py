"""The package's layers, as import-linter contracts (pyproject.toml): kept now, and broken when broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_contracts_are_kept():
    res = _lint(ROOT / "src")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 kept, 0 broken" in res.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/segment.py", "import napari", "core, io and parallel import neither napari nor Qt"),
        ("io/readers.py", "from ..gui import widget", "Front ends (gui, cli) on top of parallel"),
        ("core/metrics.py", "from ..io import images", "Front ends (gui, cli) on top of parallel"),
        ("parallel/cluster.py", "import qtpy", "core, io and parallel import neither napari nor Qt"),
        ("io/lazy.py", "from ..parallel import cluster", "Front ends (gui, cli) on top of parallel"),
        ("gui/correct_section.py", "from . import widget", "Dock sections and helpers never import the dock widget"),
        ("io/readers.py", "from . import export", "Readers do not import the writers"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, contract):
    """The contracts fail a build when broken: a copy of the package with one wrong import."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "napari_unet_loop", copy / "napari_unet_loop")
    target = copy / "napari_unet_loop" / module
    target.write_text(target.read_text() + "\n" + line + "\n")
    res = _lint(copy)
    assert res.returncode != 0
    assert f"{contract}" in res.stdout and "BROKEN" in res.stdout


def test_no_module_imports_itself_through_others():
    """No import circle anywhere in the package (imports at run time, function-level ones included)."""
    import grimp

    graph = grimp.build_graph("napari_unet_loop", exclude_type_checking_imports=True)
    circles = set()
    for a in graph.modules:
        for b in graph.find_modules_directly_imported_by(a):
            if a != b and graph.chain_exists(importer=b, imported=a):
                circles.add(tuple(sorted((a, b))))
    assert not circles, sorted(circles)
