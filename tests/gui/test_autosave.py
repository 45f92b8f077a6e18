"""Crash-safe corrections: autosave and restore."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_loop.gui.autosave import Autosaver, RestoreBar
from napari_unet_loop.gui.layers import LabelsTracker

pytestmark = pytest.mark.gui


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
    saver.timer.stop()

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
    saver.timer.stop()
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
    # a new session restores one: the restored layer is saved by that session first
    other = Autosaver(viewer, LabelsTracker(), folder=tmp_path)
    note = other.pending()[0]
    other.restore(note)
    assert any(p.name.startswith(other.session) for p in tmp_path.glob("*.tif"))
    saver.discard_session()  # the first session exits cleanly
    assert not any(p.name.startswith(saver.session) for p in tmp_path.iterdir())
    assert other.pending() == []  # only its own (current) autosave is left
    other.discard_session()
    assert list(tmp_path.iterdir()) == []
