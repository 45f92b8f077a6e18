"""The npe2 manifest, the package layout, and the headless core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "napari_unet_loop"


def test_top_level_manifest_is_the_package_manifest():
    assert (ROOT / "napari.yaml").read_text() == (PKG / "napari.yaml").read_text()


def test_manifest_validates_with_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-unet-loop")
    assert manifest.name == "napari-unet-loop"
    manifest.validate_imports()
    ids = {c.id for c in manifest.contributions.commands}
    assert all(i.startswith("napari-unet-loop.") for i in ids)
    menus = manifest.contributions.menus
    assert any(item.command == "napari-unet-loop.make_widget" for item in menus["napari/layers/segment"])


def test_npe2_validate_cli():
    exe = Path(sys.executable).with_name("npe2")
    if not exe.exists():
        pytest.skip("npe2 command not installed beside this Python")
    res = subprocess.run([str(exe), "validate", "napari-unet-loop", "--imports"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("package", ["core", "io", "parallel"])
def test_headless_packages_import_neither_napari_nor_qt(package):
    code = (
        "import importlib, pkgutil, sys\n"
        f"import napari_unet_loop.{package} as pkg\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy'})\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"{package} imported {res.stdout.strip()}"
