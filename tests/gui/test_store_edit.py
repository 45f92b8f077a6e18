"""GUI tests: labels in an OME-Zarr store corrected a window at a time and written back chunk by chunk."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from napari_unet_loop.gui import autosave, store_edit
from napari_unet_loop.gui.autosave import Autosaver
from napari_unet_loop.gui.layers import LabelsTracker
from napari_unet_loop.gui.session import DockCalls, Session
from napari_unet_loop.gui.store_edit import StoreCorrections, store_window
from napari_unet_loop.io import readers
from napari_unet_loop.io.chunked import LabelsStore
from napari_unet_loop.io.readers import read_ome_zarr
from napari_unet_loop.io.store_edits import StoreWindow

pytestmark = pytest.mark.gui
SHAPE = (300, 420)
BLOCK = 128


def _labels() -> np.ndarray:
    full = np.zeros(SHAPE, np.uint32)
    k = 0
    for y in range(10, SHAPE[0] - 30, 50):
        for x in range(10, SHAPE[1] - 30, 50):
            k += 1
            full[y : y + 24, x : x + 24] = k
    return full


def _store(path, full):
    cols, rows = -(-SHAPE[1] // BLOCK), -(-SHAPE[0] // BLOCK)
    store = LabelsStore.create(
        path, job={"input": "a.tif"}, shape=SHAPE, block=BLOCK, region=BLOCK, n_blocks=rows * cols, scale=(0.5, 0.5)
    )
    for i in range(rows * cols):
        y0, x0 = (i // cols) * BLOCK, (i % cols) * BLOCK
        store.write_core((y0, x0), full[y0 : y0 + BLOCK, x0 : x0 + BLOCK], i)
    return store.finish({"max_label": int(full.max())})


def _on_disk(path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")["labels"]["labels"]["0"])


@pytest.fixture
def setup(make_napari_viewer_proxy, tmp_path, monkeypatch, qtbot):
    errors: list[str] = []
    for module in (store_edit, autosave):
        monkeypatch.setattr(module, "show_error", lambda m: errors.append(str(m)))
        monkeypatch.setattr(module, "show_info", lambda m: None, raising=False)
    monkeypatch.setattr(readers, "LAZY_LABELS_BYTES", 0)  # the store opens lazy, as a large one would
    full = _labels()
    path = _store(tmp_path / "slide.zarr", full)
    viewer = make_napari_viewer_proxy()
    ((data, kwargs, _kind),) = read_ome_zarr(path)
    lazy = viewer.add_labels(data, **{**kwargs, "translate": (10.0, 20.0)})
    assert lazy.multiscale and not lazy.editable  # napari does not paint on it
    saver, row = _row(viewer, tmp_path, qtbot)
    yield viewer, lazy, row, saver, path, full, errors
    saver.timer.stop()


def _row(viewer, tmp_path, qtbot) -> tuple[Autosaver, StoreCorrections]:
    """The dock's store row (Region: Inside the rectangle) and the autosave it writes back through."""
    calls = {name: (lambda *a, **k: None) for name in DockCalls.__dataclass_fields__}
    calls["region_choice"] = lambda: "rectangle"
    session = Session(viewer)
    session.register(DockCalls(**calls))
    saver = Autosaver(viewer, session.tracker, folder=tmp_path / "autosave")
    row = StoreCorrections(session, saver.write_back_now)
    qtbot.addWidget(row)
    return saver, row


def _tick(saver: Autosaver) -> None:
    """An autosave tick, then its background write-backs waited for."""
    saver.save_dirty()
    saver.finish_write_backs()


def _no_space(*_args):
    """A write-back into a full disk."""
    raise OSError(28, "No space left on device")


def _rectangle(viewer, lazy, y0, y1, x0, x1):
    """A rectangle over pixels y0:y1, x0:x1 of the lazy layer, drawn in world coordinates."""
    corners = np.array([[y0, x0], [y0, x1 - 1], [y1 - 1, x1 - 1], [y1 - 1, x0]], float)
    world = corners * np.asarray(lazy.scale) + np.asarray(lazy.translate)
    viewer.add_shapes([world], shape_type="rectangle", name="box")
    viewer.layers.selection.active = lazy


def test_a_window_is_corrected_and_written_back_at_the_autosave(setup):
    viewer, lazy, row, saver, path, full, errors = setup
    _rectangle(viewer, lazy, 40, 200, 100, 300)
    win_layer = row.open_window()
    assert win_layer is not None, errors
    np.testing.assert_array_equal(win_layer.data, full[40:200, 100:300])
    np.testing.assert_allclose(win_layer.translate, (10 + 40 * 0.5, 20 + 100 * 0.5))  # over the store's pixels
    assert win_layer.selected_label == full.max() + 1  # a new object gets an id the store does not hold
    target = int(win_layer.data[30, 30])
    assert target
    win_layer.data_setitem(np.nonzero(win_layer.data == target), 0)  # erase an object, as the eraser does
    win_layer.paint((100, 150), win_layer.selected_label)  # draw a new one
    written = saver.save_dirty()  # the write-back runs in a thread: the viewer stays responsive
    saver.finish_write_backs()
    assert written == [] and not list((path.parent / "autosave").glob("*.tif"))  # the store is the autosave
    expected = full.copy()
    expected[40:200, 100:300] = win_layer.data
    np.testing.assert_array_equal(_on_disk(path), expected)
    np.testing.assert_array_equal(np.asarray(lazy.data[0]), expected)  # the store's layer shows the correction
    assert errors == []


def test_a_window_on_a_store_of_another_tool_opens_without_reading_the_whole_store(setup, monkeypatch):
    """No recorded largest id: the brush takes the window's largest + 1 at once; the write-back finds a free id."""
    from napari_unet_loop.io.store_edits import StoreEditor

    viewer, lazy, row, saver, path, full, errors = setup
    root = zarr.open_group(str(path), mode="r+")
    root.attrs["napari_unet_loop"] = {k: v for k, v in dict(root.attrs)["napari_unet_loop"].items() if k != "max_label"}
    scans = []
    real = StoreEditor.max_label
    monkeypatch.setattr(StoreEditor, "max_label", lambda self: scans.append(1) or real(self))
    _rectangle(viewer, lazy, 40, 200, 100, 300)
    win_layer = row.open_window()
    assert win_layer is not None, errors
    assert scans == []  # not a pass over every chunk of the store on the GUI thread
    assert win_layer.selected_label == full[40:200, 100:300].max() + 1 <= full.max()
    win_layer.paint((100, 150), win_layer.selected_label)
    _tick(saver)
    assert _on_disk(path)[40 + 100, 100 + 150] == full.max() + 1  # an id no other object of the store has
    assert errors == []


def test_write_back_button_writes_the_corrections(setup):
    viewer, lazy, row, _saver, path, full, errors = setup
    _rectangle(viewer, lazy, 0, 128, 0, 128)
    win_layer = row.open_window()
    one = int(win_layer.data[15, 15])
    win_layer.paint((60, 60), one)
    (report,) = row.write_all()
    assert report.pixels > 0 and report.chunks == [(0, 0)]
    assert _on_disk(path)[60, 60] == one
    assert row.write_all() == []  # nothing left to write
    assert errors == []


def test_an_undo_after_a_write_back_is_written_back_too(setup):
    viewer, lazy, row, saver, path, full, _errors = setup
    _rectangle(viewer, lazy, 0, 100, 0, 100)
    win_layer = row.open_window()
    win_layer.paint((70, 70), 1)
    _tick(saver)
    assert _on_disk(path)[70, 70] == 1
    win_layer.undo()  # napari sends no edit event for it
    _tick(saver)
    assert _on_disk(path)[70, 70] == full[70, 70]


def test_edits_made_while_a_write_back_runs_are_written_at_the_next_tick(setup, monkeypatch):
    import threading

    viewer, lazy, row, saver, path, full, errors = setup
    _rectangle(viewer, lazy, 0, 100, 0, 100)
    win_layer = row.open_window()
    one = int(win_layer.data[15, 15])
    win_layer.paint((40, 40), one)
    release = threading.Event()
    real = StoreWindow.write_back

    def slow(self, data=None):
        release.wait(30)
        return real(self, data)

    monkeypatch.setattr(StoreWindow, "write_back", slow)
    saver.save_dirty()  # returns at once: the write-back waits in its thread
    assert saver._jobs and _on_disk(path)[40, 40] == full[40, 40]
    win_layer.paint((60, 60), one)  # the user goes on meanwhile
    saver.save_dirty()  # a tick while it runs: no second write-back of the same window
    assert len(saver._jobs) == 1
    release.set()
    saver.finish_write_backs()
    assert _on_disk(path)[40, 40] == one and _on_disk(path)[60, 60] == full[60, 60]  # as copied at the tick
    _tick(saver)
    assert _on_disk(path)[60, 60] == one and errors == []


def test_a_store_that_cannot_be_written_keeps_the_corrections_in_an_autosave(setup, monkeypatch):
    viewer, lazy, row, saver, path, full, errors = setup
    _rectangle(viewer, lazy, 0, 100, 0, 100)
    win_layer = row.open_window()
    one = int(win_layer.data[15, 15])
    win_layer.paint((50, 50), one)

    with monkeypatch.context() as m:
        m.setattr(StoreWindow, "write_back", _no_space)
        _tick(saver)
        assert len(list(saver.folder.glob("*.tif"))) == 1  # nothing lost meanwhile: a TIFF autosave at once
        _tick(saver)  # the next tick tries the store again
    assert len([e for e in errors if "back to its OME-Zarr store failed" in e]) == 1  # said once
    assert _on_disk(path)[50, 50] == full[50, 50]
    _tick(saver)  # the store takes them again
    assert _on_disk(path)[50, 50] == one
    assert not list(saver.folder.glob("*.tif"))  # the older TIFF copy goes: a crash must not offer it


def test_write_back_button_on_a_store_that_refuses_keeps_an_autosave_and_says_so(setup, monkeypatch):
    """The button writes as the autosave tick does: refused, the corrections are autosaved at once."""
    viewer, lazy, row, saver, path, full, errors = setup
    _rectangle(viewer, lazy, 0, 100, 0, 100)
    win_layer = row.open_window()
    win_layer.paint((50, 50), 2)

    with monkeypatch.context() as m:
        m.setattr(autosave, "write_back", _no_space)
        assert row.write_all() == [] and row.write_all() == []
    assert "Not written back" in row.status.text()
    assert len([e for e in errors if "back to its OME-Zarr store failed" in e]) == 1  # said once
    assert len(list(saver.folder.glob("*.tif"))) == 1 and _on_disk(path)[50, 50] == full[50, 50]
    (report,) = row.write_all()  # the store takes them again: the TIFF copy goes
    assert report.pixels and _on_disk(path)[50, 50] == 2 and not list(saver.folder.glob("*.tif"))
    assert row.status.text().startswith("Wrote ")


@pytest.mark.parametrize("how", ["close", "quit"])
def test_corrections_the_store_refuses_at_close_or_quit_are_kept_as_an_autosave(setup, monkeypatch, how):
    viewer, lazy, row, saver, path, full, errors = setup
    _rectangle(viewer, lazy, 0, 100, 0, 100)
    win_layer = row.open_window()
    win_layer.paint((50, 50), 2)

    monkeypatch.setattr(autosave, "write_back", _no_space)
    if how == "close":
        viewer.layers.remove(win_layer)
    saver.discard_session()  # what napari's quit runs
    assert _on_disk(path)[50, 50] == full[50, 50]
    assert any("kept as an autosave" in e for e in errors)
    later = Autosaver(viewer, LabelsTracker(), folder=saver.folder)  # napari started again
    (note,) = later.pending()
    assert note["layer"] == win_layer.name
    later.timer.stop()


def test_quit_when_neither_the_store_nor_the_autosave_takes_the_last_changes_keeps_the_earlier_one(setup, monkeypatch):
    """The message says what is kept: an earlier tick's autosave, not the newest corrections."""
    viewer, lazy, row, saver, path, full, errors = setup
    _rectangle(viewer, lazy, 0, 100, 0, 100)
    win_layer = row.open_window()
    win_layer.paint((50, 50), 2)
    monkeypatch.setattr(StoreWindow, "write_back", _no_space)  # the tick's write-back...
    monkeypatch.setattr(autosave, "write_back", _no_space)  # ... and quit's: the store refuses
    _tick(saver)  # a TIFF autosave of the window as it is now
    (tif,) = saver.folder.glob("*.tif")
    win_layer.paint((70, 70), 3)  # newer corrections...
    monkeypatch.setattr(Autosaver, "_write", _no_space)  # ... that the disk refuses as well
    saver.discard_session()
    assert tif.exists() and _on_disk(path)[70, 70] == full[70, 70]
    assert not any("kept as an autosave" in e for e in errors)  # that would claim the newest corrections
    assert any("latest corrections could not be written back nor autosaved; an earlier autosave" in e for e in errors)
    later = Autosaver(viewer, LabelsTracker(), folder=saver.folder)  # napari started again
    (note,) = later.pending()  # the earlier autosave is offered
    assert note["layer"] == win_layer.name
    later.timer.stop()


def test_closing_a_window_and_quitting_write_the_last_changes_back(setup):
    viewer, lazy, row, saver, path, full, errors = setup
    _rectangle(viewer, lazy, 0, 100, 0, 100)
    first = row.open_window()
    one = int(first.data[15, 15])  # an object of the window
    first.paint((40, 40), one)
    viewer.layers.remove(first)  # closed before any autosave tick
    assert _on_disk(path)[40, 40] == one
    second = row.open_window()
    second.paint((45, 45), one)
    saver.discard_session()  # quit before any autosave tick
    assert _on_disk(path)[45, 45] == one
    assert not list(saver.folder.glob("*.tif")) and errors == []


def test_revert_puts_the_segmentation_back_and_reads_the_open_windows_again(setup, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    viewer, lazy, row, saver, path, full, errors = setup
    _rectangle(viewer, lazy, 0, 100, 0, 100)
    win_layer = row.open_window()
    win_layer.paint((50, 50), 2)
    row.write_all()
    win_layer.paint((80, 20), 3)  # not written back yet
    assert _on_disk(path)[50, 50] == 2
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.StandardButton.No)
    assert row.revert_store() is None and _on_disk(path)[50, 50] == 2  # asked, and the user said no
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.StandardButton.Yes)
    viewer.layers.selection.active = win_layer  # a window names its store too
    assert row.revert_store() >= 1
    np.testing.assert_array_equal(_on_disk(path), full)
    np.testing.assert_array_equal(win_layer.data, full[:100, :100])  # the window shows the store again
    assert not store_window(win_layer).dirty(win_layer.data)
    assert row.revert_store(confirm=False) == 0 and "Nothing to revert" in row.status.text()
    assert errors == []


def test_correct_region_needs_a_store_layer_and_a_small_enough_region(setup, monkeypatch):
    viewer, lazy, row, _saver, _path, _full, errors = setup
    viewer.layers.selection.active = lazy
    monkeypatch.setattr(store_edit, "MAX_WINDOW_PIXELS", 100)
    _rectangle(viewer, lazy, 0, 100, 0, 100)
    assert row.open_window() is None and "zoom in" in errors[-1]
    plain = viewer.add_labels(np.zeros((10, 10), np.uint32))
    viewer.layers.remove(lazy)
    viewer.layers.selection.active = plain
    assert row.open_window() is None and "labels layer of an OME-Zarr store" in errors[-1]
    assert store_window(plain) is None


def test_a_read_only_store_is_refused_with_a_clear_message(setup, monkeypatch):
    viewer, lazy, row, _saver, path, _full, errors = setup
    from napari_unet_loop.io import store_edits

    real = os.access
    monkeypatch.setattr(store_edits.os, "access", lambda p, mode: False if str(p) == str(path) else real(p, mode))
    _rectangle(viewer, lazy, 0, 50, 0, 50)
    assert row.open_window() is None and "read-only" in errors[-1]


def test_a_z_stack_store_is_corrected_in_a_window_of_the_planes_around_the_one_on_screen(
    make_napari_viewer_proxy, tmp_path, monkeypatch, qtbot
):
    errors: list[str] = []
    monkeypatch.setattr(store_edit, "show_error", lambda m: errors.append(str(m)))
    monkeypatch.setattr(readers, "LAZY_LABELS_BYTES", 0)
    full = np.zeros((7, 120, 160), np.uint32)
    for z in range(7):
        full[z, 20:50, 30:70] = 1
        full[z, 70:100, 90:140] = 2
    store = LabelsStore.create(
        tmp_path / "stack.zarr", job={"input": "s.tif"}, shape=full.shape, block=64, region=0, n_blocks=0
    )
    for z, plane in enumerate(full):
        store.write_plane(z, plane, final=True, record={})
    path = store.finish({"max_label": 2})
    viewer = make_napari_viewer_proxy()
    ((data, kwargs, _kind),) = read_ome_zarr(path)
    lazy = viewer.add_labels(data, **kwargs)
    assert lazy.ndim == 3 and not lazy.editable
    saver, row = _row(viewer, tmp_path, qtbot)
    box = [[5, 10, 20], [5, 10, 149], [5, 109, 149], [5, 109, 20]]  # drawn on plane 5, as napari draws on a stack
    viewer.add_shapes([box], shape_type="rectangle", name="box")
    viewer.layers.selection.active = lazy
    viewer.dims.set_current_step(0, 5)
    monkeypatch.setattr(store_edit, "MAX_WINDOW_PIXELS", 100 * 130 * 3)  # three planes of the rectangle fit
    win_layer = row.open_window()
    assert win_layer is not None, errors
    assert store_window(win_layer).bounds == (4, 7, 10, 110, 20, 150)  # around plane 5, kept inside the stack
    np.testing.assert_allclose(win_layer.translate, (4, 10, 20))
    win_layer.data_setitem((np.array([1]), np.array([60]), np.array([60])), 2)  # plane 5
    (report,) = row.write_all()
    assert report.chunks == [(5, 1, 1)]  # plane 5, row and column of 64 px chunks
    expected = full.copy()
    expected[5, 70, 80] = 2
    np.testing.assert_array_equal(np.asarray(zarr.open_group(str(path), mode="r")["labels"]["labels"]["0"]), expected)
    saver.timer.stop()
    assert not errors


def test_a_window_of_the_second_labels_group_shows_and_writes_that_group(make_napari_viewer_proxy, tmp_path, qtbot):
    """The window of the selected 'cells' layer showed and wrote back the store's first group, 'nuclei'."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image, write_labels

    from napari_unet_loop.io.store_edits import StoreEditor

    path = tmp_path / "two.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(np.zeros((64, 64), np.uint8), root, scale_factors=(), fmt=FormatV04(), axes=["y", "x"])
    for name, value in (("nuclei", 1), ("cells", 5)):
        labels = np.full((64, 64), value, np.uint32)
        write_labels(labels, root, name=name, fmt=FormatV04(), axes=["y", "x"], scale_factors=())
    viewer = make_napari_viewer_proxy()
    for data, kwargs, kind in read_ome_zarr(path):
        if kind == "labels":
            viewer.add_labels(data, **kwargs)
    cells = viewer.layers["cells"]
    assert cells.metadata["labels_group"] == "cells"
    saver, row = _row(viewer, tmp_path, qtbot)
    _rectangle(viewer, cells, 0, 32, 0, 32)
    window = row.open_window()
    assert np.unique(window.data).tolist() == [5]
    window.data_setitem((np.array([3]), np.array([3])), 0)
    row.write_all()
    assert StoreEditor(path, name="cells").read(3, 4, 3, 4)[0, 0] == 0
    assert StoreEditor(path, name="nuclei").read(3, 4, 3, 4)[0, 0] == 1
    saver.timer.stop()


def test_exporting_the_store_layer_writes_the_open_windows_corrections_first(setup, monkeypatch, tmp_path, qtbot):
    """The store's layer is read from the store: the windows' corrections not yet written back go in first, and
    when the store refuses them nothing is exported (an export without them would look complete)."""
    from napari_unet_loop.gui import export_section
    from napari_unet_loop.gui.export_section import ExportSection

    viewer, lazy, row, saver, path, full, errors = setup
    monkeypatch.setattr(export_section, "show_error", lambda m: errors.append(str(m)))
    _rectangle(viewer, lazy, 0, 128, 0, 128)
    win_layer = row.open_window()
    one = int(win_layer.data[15, 15])
    win_layer.paint((60, 60), one)  # not written back yet: the autosave's tick has not come
    section = ExportSection(viewer, tracker=None, write_back=saver.write_back_now)
    qtbot.addWidget(section)
    section.reset_choices()
    section.layer_combo.setCurrentText(lazy.name)
    for key, box in section.format_checks.items():
        box.setChecked(key == "tif")
    section.folder_edit.setText(str(tmp_path / "out"))

    with monkeypatch.context() as m:
        m.setattr(StoreWindow, "write_back", _no_space)
        assert section.export() is None
    assert "could not be written into the store" in section.status.text()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    assert section.export() is not None
    qtbot.waitUntil(lambda: section._worker is None, timeout=60_000)
    (tif,) = (tmp_path / "out").glob("*.tif")
    import tifffile

    assert tifffile.imread(tif)[60, 60] == one == _on_disk(path)[60, 60]
