"""GUI tests of the Export section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_unet_loop.gui import export_section as section_mod
from napari_unet_loop.gui.export_section import ALL_LAYERS, ExportSection, layer_attributes
from napari_unet_loop.io.conventions import export_arguments

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
    assert export_arguments(layer_attributes(layer), 3).axes == "ZYX"  # napari's default axis labels: a Z stack
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


def test_a_layer_named_like_the_all_choice_is_one_layer(qtbot, viewer_section, tmp_path, messages):
    """The "all labels layers" choice is told by its item data, not its text: a layer of that name is one layer."""
    viewer, sec = viewer_section
    viewer.add_labels(np.ones((20, 20), np.int32), name=ALL_LAYERS)
    viewer.add_labels(np.full((20, 20), 2, np.int32), name="b")
    sec.layer_combo.setCurrentIndex(sec.layer_combo.count() - 1)  # the "all" entry comes last
    assert sec._all_chosen()
    viewer.add_labels(np.ones((20, 20), np.int32), name="c")  # the list is rebuilt: the choice is kept
    assert sec._all_chosen()
    sec.layer_combo.setCurrentText(ALL_LAYERS)  # the first item of that text: the layer
    assert not sec._all_chosen()
    sec.folder_edit.setText(str(tmp_path))
    for key, box in sec.format_checks.items():
        box.setChecked(key == "tif")
    run(qtbot, sec)
    assert [p.name for p in tmp_path.glob("*.tif")] == ["all_labels_layers.tif"]


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


def test_existing_files_one_message_naming_the_checkbox(qtbot, viewer_section, tmp_path, messages):
    viewer, sec = viewer_section
    viewer.add_labels(np.ones((20, 20), np.int32), name="a")
    for key, box in sec.format_checks.items():
        box.setChecked(key in ("tif", "csv", "roi"))
    sec.folder_edit.setText(str(tmp_path))
    run(qtbot, sec)
    assert not messages["error"]
    run(qtbot, sec)  # again: every file exists
    assert len(messages["error"]) == 1
    text = messages["error"][0]
    assert "Replace existing files" in text and "a.tif" in text
    assert "--overwrite" not in text and "overwrite=True" not in text
    status = sec.status.text()
    assert "Replace existing files" in status and "--overwrite" not in status and len(status) < 120


def test_export_file_names_are_plain(qtbot, viewer_section, tmp_path, messages):
    viewer, sec = viewer_section
    viewer.add_labels(np.ones((20, 20), np.int32), name="cells labels [1]")
    sec.layer_combo.setCurrentText("cells labels [1]")
    sec.folder_edit.setText(str(tmp_path))
    for key, box in sec.format_checks.items():
        box.setChecked(key == "tif")
    run(qtbot, sec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells_labels_1.tif", "cells_labels_1.tif.json"]


def test_provenance_records_the_edits(qtbot, make_napari_viewer_proxy, tmp_path, messages):
    from napari_unet_loop.gui.layers import LabelsTracker

    viewer = make_napari_viewer_proxy()
    tracker = LabelsTracker()
    sec = ExportSection(viewer, tracker=tracker)
    written = np.zeros((40, 50), np.int32)
    written[5:15, 5:15] = 1
    written[20:30, 20:35] = 2
    layer = viewer.add_labels(written.copy(), name="cells labels")
    tracker.state(layer).ours = True
    tracker.record_output(layer, (), written)  # as the plugin wrote it
    assert section_mod.provenance(layer, tracker)["edits"] == {
        "source": "napari-unet-loop",
        "edited": False,
        "objects_added": 0,
        "objects_removed": 0,
        "objects_reshaped": 0,
        "pixels_changed": 0,
        "planes_segmented": 1,
    }
    layer.data_setitem(np.nonzero(written == 1), 0)  # deleted
    layer.data_setitem(tuple(np.mgrid[30:33, 20:35].reshape(2, -1)), 2)  # grown
    layer.data_setitem(tuple(np.mgrid[33:38, 40:45].reshape(2, -1)), 3)  # painted
    layer.metadata["napari_unet_loop"] = {"reviewed": [[[], 2]]}
    sec.reset_choices()
    sec.layer_combo.setCurrentText("cells labels")
    sec.folder_edit.setText(str(tmp_path))
    for key, box in sec.format_checks.items():
        box.setChecked(key == "tif")
    run(qtbot, sec)
    edits = json.loads((tmp_path / "cells_labels.tif.json").read_text())["provenance"]["edits"]
    assert edits["edited"] is True and edits["source"] == "napari-unet-loop"
    assert (edits["objects_added"], edits["objects_removed"], edits["objects_reshaped"]) == (1, 1, 1)
    assert edits["pixels_changed"] == 100 + 45 + 25 and edits["accepted_objects"] == 1
    region = edits["reviewed_region"]
    assert 0 < region["fraction"] <= 1 and region["box_yx"][:2] == [0, 0]
    user = viewer.add_labels(np.ones((20, 20), np.int32), name="mine")
    assert section_mod.provenance(user, tracker)["edits"] == {"source": "user labels"}


def test_file_save_and_the_docks_export_write_the_same_file(qtbot, viewer_section, tmp_path, messages):
    """One rule turns a layer into export arguments: axes from metadata, units per axis, provenance keys."""
    from napari_unet_loop.io.writers import write_labels_tif

    viewer, sec = viewer_section
    labels = np.zeros((3, 24, 24), np.int32)
    labels[:, 4:10, 4:10] = 1
    layer = viewer.add_labels(labels, name="cells labels", scale=(2.0, 0.5, 0.5))
    layer.metadata["axes"] = "TYX"  # what the plugin records for a time series
    layer.metadata["napari_unet_loop"] = {"model_name": "m"}
    layer.units = ("s", "um", "um")
    write_labels_tif(str(tmp_path / "saved.tif"), layer.data, layer_attributes(layer))  # File > Save
    sec.reset_choices()
    sec.layer_combo.setCurrentText("cells labels")
    for key, box in sec.format_checks.items():
        box.setChecked(key == "tif")
    (tmp_path / "dock").mkdir()
    sec.folder_edit.setText(str(tmp_path / "dock"))
    run(qtbot, sec)
    saved = json.loads((tmp_path / "saved.tif.json").read_text())
    docked = json.loads((tmp_path / "dock" / "cells_labels.tif.json").read_text())
    for key in ("scale", "units"):
        assert saved[key] == docked[key], key
    assert saved["labels"]["axes"] == docked["labels"]["axes"] == "TYX"
    assert saved["provenance"]["layer_name"] == docked["provenance"]["layer_name"] == "cells labels"
    assert saved["provenance"]["model_name"] == docked["provenance"]["model_name"] == "m"
    with tifffile.TiffFile(tmp_path / "saved.tif") as a, tifffile.TiffFile(tmp_path / "dock" / "cells_labels.tif") as b:
        np.testing.assert_array_equal(a.asarray(), b.asarray())
        assert a.imagej_metadata.get("unit") == b.imagej_metadata.get("unit")


def test_a_colour_image_is_exported_in_colour(qtbot, viewer_section, tmp_path, messages):
    """The CSV measures each channel, as File > Save does; the image was averaged to grey."""
    viewer, sec = viewer_section
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 10
    labels = np.zeros((30, 40), np.int32)
    labels[5:15, 5:15] = 1
    viewer.add_image(rgb, name="stain", rgb=True)
    viewer.add_labels(labels, name="stain labels")
    sec.layer_combo.setCurrentText("stain labels")
    for key, box in sec.format_checks.items():
        box.setChecked(key == "csv")
    sec.folder_edit.setText(str(tmp_path))
    run(qtbot, sec)
    assert not messages["error"]
    lines = (tmp_path / "stain_labels.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = dict(zip(header, lines[1].split(","), strict=True))
    assert [float(row[f"mean_intensity_c{c}"]) for c in range(3)] == [200.0, 100.0, 10.0]


def test_a_stack_joined_into_3d_objects_is_measured_in_3d(qtbot, viewer_section, tmp_path, messages):
    """After "Join planes into 3D objects" a nucleus through three planes is one row, as in File > Save."""
    from napari_unet_loop.io.writers import write_layers_csv

    viewer, sec = viewer_section
    labels = np.zeros((3, 20, 20), np.int32)
    labels[:, 5:10, 5:10] = 4
    layer = viewer.add_labels(labels, name="z labels")
    layer.metadata["napari_unet_loop"] = {"objects_3d": {"iou": 0.5}}
    sec.layer_combo.setCurrentText("z labels")
    for key, box in sec.format_checks.items():
        box.setChecked(key == "csv")
    sec.folder_edit.setText(str(tmp_path))
    run(qtbot, sec)
    lines = (tmp_path / "z_labels.csv").read_text().splitlines()
    assert len(lines) == 2 and "volume" in lines[0].split(",")
    saved = write_layers_csv(str(tmp_path / "saved.csv"), [(labels, layer_attributes(layer), "labels")])
    lines = open(saved[0]).read().splitlines()
    assert len(lines) == 2 and "volume" in lines[0].split(",")


def test_an_export_that_fails_midway_says_so(qtbot, viewer_section, tmp_path, monkeypatch, messages):
    """An unexpected error in the worker stops the export: the status line says so, and what was written is
    remembered as written (a clean quit keeps no autosave of it), what was not is not."""
    from napari_unet_loop.io import export as export_mod

    monkeypatch.setattr(export_mod, "_WRITTEN", type(export_mod._WRITTEN)())
    viewer, sec = viewer_section
    a = viewer.add_labels(np.full((20, 20), 1, np.int32), name="a")
    b = viewer.add_labels(np.full((20, 20), 2, np.int32), name="b")
    plain = section_mod.export_labels

    def breaks_on_b(labels, folder, fmt, **kw):
        if kw["name"] == "b":
            raise MemoryError("no memory left")
        return plain(labels, folder, fmt, **kw)

    monkeypatch.setattr(section_mod, "export_labels", breaks_on_b)
    sec.reset_choices()
    sec.layer_combo.setCurrentText(ALL_LAYERS)
    sec.folder_edit.setText(str(tmp_path))
    for key, box in sec.format_checks.items():
        box.setChecked(key == "tif")
    with qtbot.capture_exceptions() as raised:  # napari shows the worker's error
        run(qtbot, sec)
    assert MemoryError in [type(e[1]) for e in raised]
    assert "the export stopped: MemoryError" in messages["error"][0] and "failed" in sec.status.text()
    assert export_mod.written_as_they_are(np.asarray(a.data)) and not export_mod.written_as_they_are(np.asarray(b.data))
