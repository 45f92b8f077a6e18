"""GUI tests: the session the dock hands its sections (shared state, signals, the dock's choices)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.gui.layers import unwrap
from napari_unet_loop.gui.session import DockCalls, Session
from napari_unet_loop.gui.widget import UNetLoopWidget

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


def _calls(**over) -> DockCalls:
    calls = {name: (lambda *a, **k: None) for name in DockCalls.__dataclass_fields__}
    calls.update(over)
    return DockCalls(**calls)


def test_session_state_and_signals_without_a_dock(qtbot):
    session = Session(viewer=None)
    with pytest.raises(RuntimeError, match="no dock"):
        session.image_layer()
    busy, training, models = [], [], []
    session.busy_changed.connect(busy.append)
    session.training_changed.connect(training.append)
    session.model_changed.connect(models.append)

    session.worker = worker = object()
    session.worker = worker  # still busy: no second signal
    assert session.busy and session.worker is worker
    session.worker = None
    assert busy == [True, False] and not session.busy

    session.set_training(True)
    session.set_training(True)
    session.set_training(False)
    assert training == [True, False] and not session.training

    session.note_model("a")
    session.note_model("a")
    session.note_model("b")
    assert models == ["a", "b"]

    pp = PostprocessConfig(fg_threshold=0.3)
    session.register(_calls(postprocess_config=lambda: pp, device_choice=lambda: "cpu"))
    assert session.postprocess_config().fg_threshold == 0.3
    assert str(session.device()) == "cpu"


def test_kept_maps_of_a_layer(qtbot):
    class Layer:  # a stand-in for a labels layer: weakly referenced
        pass

    session = Session(viewer=None)
    layer = Layer()
    assert session.maps_of(layer) == {}
    session.maps[layer] = {(): ("fg", "dist", 1.0)}
    assert session.maps_of(layer)[()][0] == "fg"


@pytest.fixture
def viewer_widget(make_napari_viewer_proxy, tiny_model_path):
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    viewer.window.add_dock_widget(w, name="U-Net Loop")
    assert w.add_model_file(tiny_model_path) is not None
    return viewer, w


def test_sections_get_the_session_not_the_widget(viewer_widget):
    viewer, w = viewer_widget
    session = w.session
    for section in (w.correct_section, w.finetune_section):
        assert section.session is session and not hasattr(section, "main")
    assert w.tracker is session.tracker is w.finetune_section.tracker
    assert w._maps is session.maps
    assert w.autosaver.tracker is session.tracker
    # the dock's choices, read when asked
    image = viewer.add_image(np.zeros((2, 32, 32), np.float32), name="cells")
    assert unwrap(session.image_layer()) is unwrap(w.image_layer()) is unwrap(image)
    assert session.model_name() == w.model_combo.currentText()
    assert session.current_model() is w.current_model()
    assert session.device_choice() == w.device_combo.value
    assert session.postprocess_config() == w.postprocess_config()
    w.tile_combo.value = w.tile_combo.choices[1]
    assert session.tile_size() == w.tile_size() == w.tile_combo.value
    assert session.channel_axis() is None
    w.channel_axis_combo.setCurrentIndex(w.channel_axis_combo.findData(0))
    assert session.channel_axis() == 0
    assert session.image_layout(image) == w.image_layout(image)


def test_training_disables_and_restores_the_segment_buttons(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(np.zeros((3, 32, 32), np.float32), name="stack")
    buttons = (w.segment_btn, w.segment_stack_btn, w.rethreshold_btn)
    assert all(b.isEnabled() for b in buttons)
    w.session.set_training(True)
    assert not any(b.isEnabled() for b in buttons)
    w.session.set_training(False)
    assert all(b.isEnabled() for b in buttons)


def test_busy_and_model_signals_of_the_dock(qtbot, viewer_widget, discs, tiny_model_path):
    viewer, w = viewer_widget
    viewer.add_image(discs[0], name="cells")
    busy, models = [], []
    w.session.busy_changed.connect(busy.append)
    w.session.model_changed.connect(models.append)
    assert w.session.segment() is not None
    assert w.session.busy and w._worker is w.session.worker
    qtbot.waitUntil(lambda: not w.session.busy, timeout=TIMEOUT)
    assert busy == [True, False]
    assert w.session.maps_of(viewer.layers["cells labels"])  # the maps of the result are kept

    assert w.import_model_file(tiny_model_path, name="tiny-copy") == "tiny-copy"
    w.session.select_model("tiny")
    w.session.select_model("tiny")  # the same model: no signal
    assert models == ["tiny-copy", "tiny"]
    assert w.model_combo.currentText() == "tiny"
