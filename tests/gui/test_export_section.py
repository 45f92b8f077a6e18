"""GUI tests of the Export section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_unet_loop.gui import export_section as section_mod
from napari_unet_loop.gui.export_section import ALL_LAYERS, ExportSection, label_axes

pytestmark = pytest.mark.gui


@pytest.fixture
def messages(monkeypatch):
    seen = {"error": [], "info": [], "warning": []}
    for kind in seen:
        monkeypatch.setattr(section_mod, f"show_{kind}", lambda m, kind=kind: seen[kind].append(str(m)))
    return seen


@pytest.fixture
def viewer_section(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    sec = ExportSection(viewer)
    viewer.window.add_dock_widget(sec)
    for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
        event.connect(sec.reset_choices)
    return viewer, sec


def run(qtbot, sec):
    worker = sec.export()
    assert worker is not None
    qtbot.waitUntil(lambda: sec._worker is None, timeout=60_000)


def test_export_layer_with_image_and_provenance(qtbot, viewer_section, tmp_path, messages):
    viewer, sec = viewer_section
    image = np.random.default_rng(0).integers(0, 255, (40, 50)).astype(np.uint8)
    labels = np.zeros((40, 50), np.int32)
    labels[5:15, 5:15] = 1
    labels[20:30, 20:35] = 2
    viewer.add_image(image, name="cells", scale=(0.5, 0.5))
    layer = viewer.add_labels(labels, name="cells labels", scale=(0.5, 0.5))
    layer.metadata["napari_unet_loop"] = {"model_name": "m", "thresholds": {"fg_threshold": 0.5}}
    sec.layer_combo.setCurrentText("cells labels")
    for key, box in sec.format_checks.items():
        box.setChecked(key in ("tif", "csv"))
    sec.folder_edit.setText(str(tmp_path))
    run(qtbot, sec)
    with tifffile.TiffFile(tmp_path / "cells_labels.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), labels)
        assert tif.is_imagej
    header = (tmp_path / "cells_labels.csv").read_text().splitlines()[0]
    assert "mean_intensity" in header
    side = json.loads((tmp_path / "cells_labels.tif.json").read_text())
    assert side["provenance"]["model_name"] == "m"
    assert "Wrote" in sec.status.text()


def test_existing_file_is_not_overwritten(qtbot, viewer_section, tmp_path, messages):
    viewer, sec = viewer_section
    viewer.add_labels(np.ones((20, 20), np.int32), name="a")
    (tmp_path / "a.tif").write_bytes(b"keep me")
    sec.folder_edit.setText(str(tmp_path))
    for key, box in sec.format_checks.items():
        box.setChecked(key == "tif")
    run(qtbot, sec)
    assert (tmp_path / "a.tif").read_bytes() == b"keep me"
    assert "exists" in messages["error"][0]
    sec.overwrite_check.setChecked(True)
    run(qtbot, sec)
    assert tifffile.imread(tmp_path / "a.tif").max() == 1


def test_all_layers_and_no_layers(qtbot, viewer_section, tmp_path, messages):
    viewer, sec = viewer_section
    assert sec.export() is None
    assert "no labels layer" in messages["error"][0]
    viewer.add_labels(np.ones((20, 20), np.int32), name="a")
    viewer.add_labels(np.ones((3, 20, 20), np.int32) * 2, name="b")
    sec.layer_combo.setCurrentText(ALL_LAYERS)
    sec.folder_edit.setText(str(tmp_path))
    for key, box in sec.format_checks.items():
        box.setChecked(key == "tif")
    run(qtbot, sec)
    assert tifffile.imread(tmp_path / "b.tif").shape == (3, 20, 20)
    assert (tmp_path / "a.tif").exists()


def test_png_of_a_stack_writes_one_file_per_plane(qtbot, viewer_section, tmp_path, messages):
    viewer, sec = viewer_section
    layer = viewer.add_labels(np.ones((2, 16, 16), np.int32), name="st")
    assert label_axes(layer) == "ZYX"
    sec.folder_edit.setText(str(tmp_path))
    for key, box in sec.format_checks.items():
        box.setChecked(key == "png")
    run(qtbot, sec)
    assert len(list(tmp_path.glob("st*.png"))) == 2


def test_no_format_ticked(viewer_section, messages):
    viewer, sec = viewer_section
    viewer.add_labels(np.ones((20, 20), np.int32), name="a")
    for box in sec.format_checks.values():
        box.setChecked(False)
    assert sec.export() is None
    assert "format" in messages["error"][0]


def test_layers_whose_file_names_collide_are_refused(viewer_section, tmp_path, messages):
    """Layers "a b" and "a_b" would both be written as a_b.*: refused before anything is written."""
    viewer, sec = viewer_section
    viewer.add_labels(np.ones((20, 20), np.int32), name="a b")
    viewer.add_labels(np.full((20, 20), 2, np.int32), name="a_b")
    sec.reset_choices()
    sec.layer_combo.setCurrentText(ALL_LAYERS)
    sec.folder_edit.setText(str(tmp_path))
    sec.overwrite_check.setChecked(True)
    assert sec.export() is None
    assert "would collide" in messages["error"][0] and "rename the layers" in messages["error"][0]
    assert not any(tmp_path.iterdir())
