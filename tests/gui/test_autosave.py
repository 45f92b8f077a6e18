"""Crash-safe corrections: autosave and restore."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_unet_loop.gui.autosave import Autosaver
from napari_unet_loop.gui.layers import LabelsTracker
from napari_unet_loop.gui.restore_bar import RestoreBar
from napari_unet_loop.io import export as export_mod
from napari_unet_loop.io.export import export_labels

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _nothing_exported_yet(monkeypatch):
    """What this process exported is remembered by content: each test starts with nothing exported."""
    monkeypatch.setattr(export_mod, "_WRITTEN", type(export_mod._WRITTEN)())


def crash(saver):
    """What a crash leaves behind: the autosaves, and a session that no longer runs."""
    saver.timer.stop()
    saver._release_lock()


def test_edited_layer_is_autosaved_and_restored_in_a_new_session(make_napari_viewer_proxy, tmp_path):
    viewer = make_napari_viewer_proxy()
    tracker = LabelsTracker()
    saver = Autosaver(viewer, tracker, folder=tmp_path)
    layer = viewer.add_labels(np.zeros((40, 40), np.int32), name="cells labels", scale=(0.5, 0.5))
    assert saver.save_dirty() == []  # nothing edited yet
    layer.paint((10, 10), 3)
    written = saver.save_dirty()
    assert len(written) == 1
    assert saver.save_dirty() == []  # saved once per change
    edited = np.asarray(layer.data).copy()
    crash(saver)

    # napari crashed; a new session finds the autosave
    viewer2 = make_napari_viewer_proxy()
    saver2 = Autosaver(viewer2, LabelsTracker(), folder=tmp_path)
    bar = RestoreBar(saver2)
    assert bar.isVisibleTo(None) or saver2.pending()
    assert [n["layer"] for n in saver2.pending()] == ["cells labels"]
    bar.restore_all()
    restored = viewer2.layers["cells labels (restored)"]
    np.testing.assert_array_equal(restored.data, edited)
    np.testing.assert_allclose(restored.scale, (0.5, 0.5))
    assert saver2.pending() == []
    saver2.timer.stop()


def test_discard(make_napari_viewer_proxy, tmp_path):
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(np.zeros((20, 20), np.int32), name="x")
    layer.paint((5, 5), 1)
    saver.save_dirty()
    crash(saver)
    other = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    bar = RestoreBar(other)
    bar.discard_all()
    assert other.pending() == []
    assert list(tmp_path.iterdir()) == []
    other.timer.stop()


def test_autosave_failure_is_reported_not_raised(make_napari_viewer_proxy, tmp_path, monkeypatch):
    from napari_unet_loop.gui import autosave as mod

    errors = []
    monkeypatch.setattr(mod, "show_error", errors.append)
    viewer = make_napari_viewer_proxy()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    saver = Autosaver(viewer, LabelsTracker(), folder=blocker / "sub")
    layer = viewer.add_labels(np.zeros((20, 20), np.int32), name="x")
    layer.paint((5, 5), 1)
    assert saver.save_dirty() == []
    assert "Autosave" in errors[0]
    saver.timer.stop()


def test_clean_exit_leaves_nothing_to_restore_and_restore_keeps_a_copy(make_napari_viewer_proxy, tmp_path):
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    a = viewer.add_labels(np.zeros((20, 20), np.int32), name="a b")
    b = viewer.add_labels(np.zeros((20, 20), np.int32), name="a_b")  # same file-safe name
    a.paint((5, 5), 1)
    b.paint((10, 10), 2)
    assert len(saver.save_dirty()) == 2  # no collision
    crash(saver)
    # a new session restores one: the restored layer is saved by that session first
    other = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    first, second = other.pending()
    other.restore(first)
    assert any(p.name.startswith(other.session) for p in tmp_path.glob("*.tif"))
    assert not (tmp_path / first["file"]).exists()
    assert [n["file"] for n in other.pending()] == [second["file"]]
    restored = viewer.layers[f"{first['layer']} (restored)"]
    export_labels(np.asarray(restored.data), tmp_path / "out", "tif", name="restored")  # on disk: nothing to keep
    other.discard_session()  # a clean exit removes only that session's autosaves
    assert not any(p.name.startswith(other.session) for p in tmp_path.iterdir())
    third = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    (note,) = third.pending()
    third.discard(note)  # the last autosave of the crashed session: nothing of it is left
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the export only
    third.timer.stop()


# ---- reliability holes (each reproduced with a real viewer) ------------------------------------


def test_undo_after_an_autosave_is_saved_too(make_napari_viewer_proxy, tmp_path):
    import tifffile

    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(np.zeros((20, 20), np.int32), name="x")
    layer.paint((5, 5), 1)
    assert len(saver.save_dirty()) == 1
    layer.refresh()
    assert saver.save_dirty() == []  # a redraw changes nothing: no rewrite
    layer.undo()  # napari sends no paint event for an undo
    written = saver.save_dirty()
    assert len(written) == 1
    assert not tifffile.imread(written[0]).any()
    layer.visible = False
    assert saver.save_dirty() == []
    layer.redo()  # a hidden layer is not even redrawn
    written = saver.save_dirty()
    assert len(written) == 1
    assert tifffile.imread(written[0]).max() == 1
    saver.timer.stop()


def test_live_session_of_another_viewer_is_neither_offered_nor_deleted(make_napari_viewer_proxy, tmp_path):
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(np.zeros((20, 20), np.int32), name="x")
    layer.paint((5, 5), 1)
    (tif,) = saver.save_dirty()
    viewer2 = make_napari_viewer_proxy()  # a second window of the same napari
    saver2 = Autosaver(viewer2, LabelsTracker(), folder=tmp_path)
    bar = RestoreBar(saver2)
    assert saver2.pending() == []
    assert not bar.isVisibleTo(None)
    bar.discard_all()
    assert tif.exists()
    crash(saver)  # once the first one is gone, its autosave is offered
    assert [n["layer"] for n in saver2.pending()] == ["x"]
    saver2.timer.stop()


@pytest.mark.skipif(sys.platform == "win32", reason="the other process holds a POSIX lock")
def test_live_session_of_another_process_is_not_offered(make_napari_viewer_proxy, tmp_path):
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(np.zeros((20, 20), np.int32), name="x")
    layer.paint((5, 5), 1)
    saver.save_dirty()
    crash(saver)
    # another napari process still runs that session: it holds the session's lock
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / f"{saver.session}.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        other = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
        assert other.pending() == []
    finally:
        holder.kill()
        holder.wait()
    assert [n["layer"] for n in other.pending()] == ["x"]  # that process died
    other.timer.stop()


_HOLD = """
import fcntl, sys, time
fh = open(sys.argv[1], "a+b")
fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_a_tiff_without_its_note_is_still_offered(make_napari_viewer_proxy, tmp_path):
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(np.zeros((20, 20), np.int32), name="cells labels")
    layer.paint((5, 5), 4)
    (tif,) = saver.save_dirty()
    edited = np.asarray(layer.data).copy()
    crash(saver)
    tif.with_suffix(".json").unlink()  # the crash came between the TIFF and its note
    other = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    (note,) = other.pending()
    assert note["file"] == tif.name
    restored = other.restore(note)
    np.testing.assert_array_equal(restored.data, edited)
    assert not tif.exists()
    other.timer.stop()


def test_a_layer_that_cannot_be_saved_does_not_stop_the_others(make_napari_viewer_proxy, tmp_path, monkeypatch):
    from napari_unet_loop.gui import autosave as mod

    errors = []
    monkeypatch.setattr(mod, "show_error", errors.append)
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    big = viewer.add_labels(np.zeros((20, 20), np.int64), name="big ids")
    ok = viewer.add_labels(np.zeros((20, 20), np.int32), name="ok")
    big.paint((5, 5), 2**40)  # beyond what a TIFF label file holds
    ok.paint((5, 5), 1)
    written = saver.save_dirty()
    assert len(written) == 1 and written[0].name.endswith("-ok.tif")
    assert len(errors) == 1 and "big ids" in errors[0]
    ok.paint((10, 10), 2)
    assert len(saver.save_dirty()) == 1
    assert len(errors) == 1  # said once, not every minute
    saver.timer.stop()


def test_restore_keeps_the_old_autosave_until_it_is_saved_again(make_napari_viewer_proxy, tmp_path, monkeypatch):
    from napari_unet_loop.gui import autosave as mod

    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(np.zeros((20, 20), np.int32), name="x")
    layer.paint((5, 5), 1)
    (tif,) = saver.save_dirty()
    crash(saver)

    errors = []
    monkeypatch.setattr(mod, "show_error", errors.append)
    write_tiff = mod.write_tiff

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(mod, "write_tiff", full_disk)
    other = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    (note,) = other.pending()
    other.restore(note)
    assert errors
    assert tif.exists() and tif.with_suffix(".json").exists()  # the only copy stays
    assert other.pending() == []  # not offered twice
    monkeypatch.setattr(mod, "write_tiff", write_tiff)  # space again: the next tick saves it
    assert len(other.save_dirty()) == 1
    assert not tif.exists() and not tif.with_suffix(".json").exists()
    other.timer.stop()


def test_restore_keeps_ids_beyond_int32(make_napari_viewer_proxy, tmp_path):
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(np.zeros((20, 20), np.uint32), name="x")
    layer.paint((5, 5), 3_000_000_000)
    saver.save_dirty()
    crash(saver)
    other = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    restored = other.restore(other.pending()[0])
    assert restored.data.max() == 3_000_000_000
    other.timer.stop()


def test_a_removed_layer_is_not_offered_back(make_napari_viewer_proxy, tmp_path, qtbot, monkeypatch):
    """Removing a labels layer removes its autosave: a crash later does not bring back what the user deleted."""
    from napari_unet_loop.gui import autosave as mod

    monkeypatch.setattr(mod, "CLOSE_GRACE_MS", 50)  # napari ran on after the layer was closed
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    kept = viewer.add_labels(np.zeros((20, 20), np.int32), name="kept")
    gone = viewer.add_labels(np.zeros((20, 20), np.int32), name="gone")
    kept.paint((5, 5), 2)
    gone.paint((5, 5), 3)
    assert len(saver.save_dirty()) == 2
    viewer.layers.remove(gone)
    qtbot.waitUntil(lambda: not saver._closing, timeout=5000)
    crash(saver)
    other = Autosaver(make_napari_viewer_proxy(), LabelsTracker(), folder=tmp_path)
    assert [n["layer"] for n in other.pending()] == ["kept"]


def offered_alone(make_viewer, folder, name, data):
    """A new session offers one autosave, of the layer ``name``, and restores ``data``."""
    other = Autosaver(make_viewer(), LabelsTracker(), folder=folder)
    (note,) = other.pending()
    assert note["layer"] == name
    np.testing.assert_array_equal(other.restore(note).data, data)
    other.timer.stop()


def quit_napari(viewer, saver):
    """What quitting napari does: every layer removed (``Viewer.close``), then ``aboutToQuit``."""
    viewer.layers.clear()
    saver.discard_session()


def test_a_clean_quit_keeps_corrections_never_exported(make_napari_viewer_proxy, tmp_path, qtbot):
    """napari quits without asking about unsaved layers: corrections not exported are offered in the next session,
    the last ones too (made after the last autosave)."""
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(np.zeros((30, 30), np.int32), name="cells labels", scale=(0.5, 0.5))
    viewer.add_labels(np.ones((30, 30), np.int32), name="never edited")
    layer.paint((5, 5), 2)
    saver.save_dirty()
    layer.paint((20, 20), 7)  # after the last tick
    edited = np.asarray(layer.data).copy()
    quit_napari(viewer, saver)
    qtbot.wait(50)
    offered_alone(make_napari_viewer_proxy, tmp_path, "cells labels", edited)


def test_a_clean_quit_drops_corrections_exported_as_they_are(make_napari_viewer_proxy, tmp_path):
    """Exported as it is: nothing kept. Edited after its export: kept."""
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    done = viewer.add_labels(np.zeros((30, 30), np.int32), name="done")
    later = viewer.add_labels(np.zeros((30, 30), np.int32), name="edited later")
    done.paint((5, 5), 2)
    later.paint((5, 5), 3)
    saver.save_dirty()
    for layer in (done, later):
        export_labels(np.asarray(layer.data), tmp_path / "out", "tif", name=layer.name.replace(" ", "_"))
    later.paint((15, 15), 4)
    quit_napari(viewer, saver)
    other = Autosaver(make_napari_viewer_proxy(), LabelsTracker(), folder=tmp_path)
    assert [n["layer"] for n in other.pending()] == ["edited later"]
    other.timer.stop()


def test_a_viewer_closed_while_napari_runs_on_keeps_its_corrections(make_napari_viewer_proxy, tmp_path, qtbot):
    """Another window (or a notebook) keeps napari running: the closed viewer's corrections not exported stay,
    the last strokes included, for the other viewers to restore; its layers removed later delete nothing."""
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(np.zeros((30, 30), np.int32), name="cells labels")
    done = viewer.add_labels(np.zeros((30, 30), np.int32), name="done")
    layer.paint((5, 5), 2)
    done.paint((5, 5), 3)
    saver.save_dirty()
    export_labels(np.asarray(done.data), tmp_path / "out", "zarr", name="done")
    layer.paint((20, 20), 8)  # after the last tick
    edited = np.asarray(layer.data).copy()
    saver.timer.deleteLater()  # the window closed: the dock, and the autosave's timer, go
    qtbot.waitUntil(lambda: saver._ended, timeout=5000)
    viewer.layers.clear()  # then Viewer.close, or quit_app closing every viewer, removes the layers
    qtbot.wait(50)
    offered_alone(make_napari_viewer_proxy, tmp_path, "cells labels", edited)


def test_a_removed_layer_is_not_saved_when_a_new_one_takes_its_name(make_napari_viewer_proxy, tmp_path):
    """Edited, removed before its autosave, then a new layer of the same name: the removed one's edits are not
    saved (they were, and offered back after a crash, by the name they shared)."""
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    gone = viewer.add_labels(np.zeros((20, 20), np.int32), name="cells labels")
    gone.paint((5, 5), 99)
    viewer.layers.remove(gone)
    new = viewer.add_labels(np.zeros((20, 20), np.int32), name="cells labels")
    assert saver.save_dirty() == []
    new.paint((8, 8), 4)
    (saved,) = saver.save_dirty()
    import tifffile

    data = tifffile.imread(saved)
    assert data[8, 8] == 4 and not (data == 99).any()


def test_file_save_records_the_edit_history_of_the_last_autosave(make_napari_viewer_proxy, tmp_path):
    """The autosave keeps the edit history in the layer's metadata, so File > Save (napari's writer) records it."""
    import json

    from napari_unet_loop.io.writers import write_labels_tif  # the writer File > Save uses

    viewer = make_napari_viewer_proxy()
    tracker = LabelsTracker()
    saver = Autosaver(viewer, tracker, folder=tmp_path / "auto")
    layer = viewer.add_labels(np.zeros((40, 40), np.int32), name="cells")
    tracker.record_output(layer, (), np.asarray(layer.data))  # as if the plugin had segmented it
    layer.paint((10, 10), 7)  # the user adds an object
    saver.save_dirty()
    edits = layer.metadata["napari_unet_loop"]["edits"]
    assert edits["source"] == "napari-unet-loop" and edits["edited"] is True and edits["objects_added"] == 1
    write_labels_tif(str(tmp_path / "saved.tif"), layer.data, {"name": layer.name, "metadata": layer.metadata})
    record = json.loads((tmp_path / "saved.tif.json").read_text())
    assert record["provenance"]["edits"]["objects_added"] == 1


def test_restore_keeps_the_provenance_units_and_axes(make_napari_viewer_proxy, tmp_path):
    """A restored layer exported later says which model made it, in which units, with Z joined or not."""
    viewer = make_napari_viewer_proxy()
    saver = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    layer = viewer.add_labels(
        np.zeros((3, 20, 20), np.int32),
        name="x",
        scale=(2.0, 0.5, 0.5),
        units=("um", "um", "um"),
        axis_labels=("z", "y", "x"),
    )
    layer.metadata["napari_unet_loop"] = {"model_name": "dsb2018-nuclei", "objects_3d": {"iou": 0.5}}
    layer.paint((1, 5, 5), 1)
    saver.save_dirty()
    crash(saver)
    other = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    restored = other.restore(other.pending()[0])
    record = restored.metadata["napari_unet_loop"]
    assert record["model_name"] == "dsb2018-nuclei" and record["objects_3d"] == {"iou": 0.5}
    assert [str(u) for u in restored.units] == ["micrometer"] * 3
    assert tuple(restored.axis_labels) == ("z", "y", "x")
    np.testing.assert_allclose(restored.scale, (2.0, 0.5, 0.5))
    other.timer.stop()
