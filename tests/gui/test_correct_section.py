"""GUI tests of the Correct section: every tool in a real viewer, and one undo restores the labels."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from napari_unet_loop.core import proofread as pr
from napari_unet_loop.gui import correct_section as cs_mod
from napari_unet_loop.gui.widget import UNetLoopWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def messages(monkeypatch):
    seen = {"error": [], "info": []}
    for kind in seen:
        monkeypatch.setattr(cs_mod, f"show_{kind}", lambda m, kind=kind: seen[kind].append(str(m)))
    return seen


@pytest.fixture
def setup(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    viewer.window.add_dock_widget(w)
    lab = np.zeros((120, 160), np.int32)
    lab[disk((30, 30), 12)] = 1
    lab[disk((30, 80), 12)] = 2
    lab[disk((80, 60), 14)] = 3
    lab[disk((80, 86), 14)] = 3
    lab[disk((85, 130), 15)] = 4
    lab[84:87, 129:132] = 0
    lab[5:8, 150:153] = 5
    viewer.add_image(np.zeros(lab.shape, np.float32), name="cells")
    layer = viewer.add_labels(lab, name="cells labels")
    sec = w.correct_section
    sec.reset_choices()
    assert sec.labels_layer().name == "cells labels"
    return viewer, w, sec, layer


def check_undo(layer, before):
    assert not np.array_equal(layer.data, before)
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


@pytest.mark.parametrize(
    "tool, point, check",
    [
        ("delete", (30, 30), lambda out: 1 not in out),
        ("fill", (85, 120), lambda out: (out[84:87, 129:132] == 4).all()),
        ("grow", (30, 30), lambda out: (out == 1).sum() > 437),
        ("shrink", (30, 30), lambda out: 0 < (out == 1).sum() < 437),
    ],
)
def test_single_object_tools_and_undo(setup, messages, tool, point, check):
    viewer, w, sec, layer = setup
    before = layer.data.copy()
    assert sec.run_tool(tool, point=point) is not None
    assert check(np.asarray(layer.data))
    check_undo(layer, before)


def test_remove_small_and_relabel_say_how_many_pixels_changed(setup, messages):
    """A whole-plane edit of a 2D layer said "(0 px)": it counted after writing into the data it compared with."""
    viewer, w, sec, layer = setup
    sec.min_size_spin.setValue(20)
    sec.run_tool("remove_small")
    assert sec.status.text() == "Removed 1 object(s) under 20 px (9 px). Ctrl+Z undoes it."
    layer.data = np.where(layer.data > 0, layer.data.astype(np.uint32) + 3_000_000_000, 0).astype(np.uint32)  # huge ids
    sec.run_tool("relabel")
    assert sorted(np.unique(layer.data).tolist()) == [0, 1, 2, 3, 4]
    assert sec.status.text().startswith("Renumbered 4 objects 1..4 (")
    assert "(0 px)" not in sec.status.text()


def test_merge_picked_objects(setup, messages):
    viewer, w, sec, layer = setup
    before = layer.data.copy()
    sec.run_tool("pick", point=(30, 30))
    sec.run_tool("pick", point=(30, 80))
    assert len(viewer.layers["proofreading picks"].data) == 2
    sec.run_tool("merge", point=(0, 0))
    assert 2 not in layer.data
    assert sec.picks == []
    check_undo(layer, before)


def test_split_with_seeds_and_cut(setup, messages):
    viewer, w, sec, layer = setup
    before = layer.data.copy()
    sec.run_tool("seed", point=(80, 55))
    sec.run_tool("seed", point=(78, 92))
    sec.run_tool("split", point=(0, 0))
    assert layer.data[80, 86] == 6 and layer.data[80, 60] == 3
    check_undo(layer, before)
    sec.run_tool("cut", point=(60, 73))
    assert np.array_equal(layer.data, before)  # one point does nothing yet
    sec.run_tool("cut", point=(100, 73))
    assert layer.data[80, 86] not in (0, 3)
    check_undo(layer, before)


def test_split_and_cut_in_a_stack_give_ids_free_in_every_plane(make_napari_viewer_proxy, messages):
    """Ids of a stack's 3D objects span planes: a part split off in plane 0 gets an id no plane uses (it got
    plane 0's next id, 2, the id of another nucleus in planes 1-2, and the two became one 3D object)."""
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    lab = np.zeros((3, 120, 160), np.int32)
    for z in range(3):
        lab[z][disk((40, 40), 14)] = 1
    lab[0][disk((40, 62), 14)] = 1  # plane 0: nucleus 1 merged with a neighbour
    for z in (1, 2):
        lab[z][disk((90, 120), 12)] = 2
    viewer.add_image(np.zeros(lab.shape, np.float32), name="cells")
    layer = viewer.add_labels(lab, name="cells labels")
    sec = w.correct_section
    sec.reset_choices()
    sec.run_tool("seed", point=(40, 36), plane=(0,))
    sec.run_tool("seed", point=(40, 68), plane=(0,))
    sec.run_tool("split", point=(0, 0), plane=(0,))
    assert set(np.unique(layer.data[0])) == {0, 1, 3}
    sec.run_tool("cut", point=(20, 51), plane=(0,))
    sec.run_tool("cut", point=(60, 51), plane=(0,))
    assert 4 in layer.data[0] and 2 not in layer.data[0]


def test_8_bit_labels_full_up_to_255_are_refused_with_a_message(make_napari_viewer_proxy, messages):
    """A 0/255 mask opened as labels: no id above 255 fits, so Split, Cut and New object say so and change
    nothing (Split raised OverflowError, New object napari's error; Add wrapped 256 to 0 and said 'added')."""
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    lab = np.zeros((120, 160), np.uint8)
    lab[disk((40, 40), 14)] = 255
    lab[disk((40, 62), 14)] = 255
    viewer.add_image(np.zeros(lab.shape, np.float32), name="cells")
    layer = viewer.add_labels(lab, name="cells labels")
    sec = w.correct_section
    sec.reset_choices()
    before = layer.data.copy()
    sec.run_tool("seed", point=(40, 36))
    sec.run_tool("seed", point=(40, 68))
    sec.run_tool("split", point=(0, 0))
    sec.run_tool("new", point=(0, 0))
    np.testing.assert_array_equal(layer.data, before)
    assert len(messages["error"]) == 2 and all("does not fit these uint8 labels" in m for m in messages["error"])
    faint = np.zeros(lab.shape, np.float32)
    faint[disk((95, 120), 8)] = 0.9
    with pytest.raises(pr.ProofreadError, match="does not fit"):
        pr.add_object(lab, (95, 120), faint)


def test_whole_plane_tools(setup, messages):
    viewer, w, sec, layer = setup
    before = layer.data.copy()
    sec.min_size_spin.setValue(20)
    sec.run_tool("remove_small", point=(0, 0))
    assert 5 not in layer.data
    check_undo(layer, before)
    layer.data_setitem(np.nonzero(layer.data == 2), 9)
    before = layer.data.copy()
    sec.run_tool("relabel", point=(0, 0))
    assert sorted(np.unique(layer.data)) == [0, 1, 2, 3, 4, 5]
    check_undo(layer, before)


def test_new_object_selects_next_free_label(setup, messages):
    viewer, w, sec, layer = setup
    sec.run_tool("new", point=(0, 0))
    assert layer.selected_label == 6 and layer.mode == "paint"


def test_keyboard_shortcut_acts_under_the_cursor(setup, messages):
    viewer, w, sec, layer = setup
    viewer.cursor.position = (30, 80)
    sec.run_tool("delete", layer=layer)  # what the D key binding calls
    assert 2 not in layer.data
    keymap = {str(k): v for k, v in cs_mod.unwrap(layer).keymap.items()}
    assert any("D" in k for k in keymap)


def test_click_action(setup, messages):
    viewer, w, sec, layer = setup
    sec.click_combo.setCurrentText("delete")
    assert layer.mode == "pan_zoom"

    class Event:
        type = "mouse_press"
        position = (30, 30)

    sec._on_click(cs_mod.unwrap(layer), Event())
    assert 1 not in layer.data


def test_review_queue_and_accept(setup, messages):
    viewer, w, sec, layer = setup
    table = sec.rank()
    assert table["label"][0] == 3 and sec.queue_list.count() == 5
    assert sec.run_tool("next", point=(0, 0)) == 3
    np.testing.assert_allclose(viewer.camera.center[-2:], (80, 73), atol=1)
    assert layer.selected_label == 3
    assert sec.run_tool("accept", point=(0, 0)) == 3
    assert [list(x) for x in layer.metadata["napari_unet_loop"]["reviewed"]] == [[[], 3]]
    assert "(accepted)" in sec.queue_list.item(0).text()


# ---------------------------------------------------------------- bad input
def test_background_clicks_change_nothing(setup, messages):
    viewer, w, sec, layer = setup
    before = layer.data.copy()
    assert sec.run_tool("delete", point=(0, 0)) is None
    assert "background" in messages["error"][-1]
    sec.run_tool("seed", point=(0, 0))
    assert "no object" in messages["error"][-1]
    np.testing.assert_array_equal(layer.data, before)


def test_merge_with_fewer_than_two(setup, messages):
    viewer, w, sec, layer = setup
    sec.run_tool("merge", point=(0, 0))
    assert "pick at least two" in messages["error"][-1]
    sec.run_tool("pick", point=(30, 30))
    sec.run_tool("merge", point=(0, 0))
    assert "at least two different" in messages["error"][-1]


def test_split_seeds_in_different_objects(setup, messages):
    viewer, w, sec, layer = setup
    before = layer.data.copy()
    sec.run_tool("seed", point=(30, 30))
    sec.run_tool("seed", point=(30, 80))
    sec.run_tool("split", point=(0, 0))
    assert "different objects" in messages["error"][-1]
    np.testing.assert_array_equal(layer.data, before)


def test_no_labels_layer(make_napari_viewer_proxy, messages):
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    assert w.correct_section.run_tool("delete", point=(1, 1)) is None
    assert "no labels layer" in messages["error"][0]


def test_labels_of_another_shape(setup, messages):
    viewer, w, sec, layer = setup
    viewer.layers.remove("cells")
    viewer.add_image(np.zeros((50, 50), np.float32), name="cells")
    w.image_combo.setCurrentText("cells")
    assert sec.run_tool("delete", point=(30, 30)) is None
    assert "shape" in messages["error"][-1]


def test_layer_edited_while_the_tool_runs(setup, messages, monkeypatch):
    viewer, w, sec, layer = setup
    real = pr.delete

    def delete_then_user_paints(labels, point):
        edit = real(labels, point)
        layer.data_setitem((np.array([30]), np.array([25])), 7)  # the user paints meanwhile
        return edit

    monkeypatch.setattr(cs_mod.pr, "delete", delete_then_user_paints)
    sec.run_tool("delete", point=(30, 30))
    assert "changed while the tool ran" in messages["error"][-1]
    assert (layer.data == 1).sum() > 0


def test_stack_plane_on_screen(make_napari_viewer_proxy, messages):
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    lab = np.zeros((3, 40, 40), np.int32)
    lab[:, 10:20, 10:20] = 1
    layer = viewer.add_labels(lab, name="st")
    w.correct_section.reset_choices()
    viewer.dims.set_point(0, 1)
    w.correct_section.run_tool("delete", point=(15, 15))
    assert layer.data[1].max() == 0 and layer.data[0].max() == 1 and layer.data[2].max() == 1


def test_review_queue_of_a_removed_layer(setup, messages):
    viewer, w, sec, layer = setup
    sec.rank()
    viewer.layers.remove("cells labels")
    assert sec.run_tool("next", layer=viewer.layers["cells"], point=(0, 0)) is None
    assert "rank again" in messages["error"][-1]


# ---------------------------------------------------------------- tools follow the layers
def test_review_queue_drops_a_deleted_object(setup, messages, qtbot):
    viewer, w, sec, layer = setup
    sec.rank()
    assert sec.run_tool("next", point=(0, 0)) == 3
    sec.run_tool("delete", point=(80, 60))
    assert 3 not in sec.queue["label"] and sec.queue_list.count() == 4
    assert not any(sec.queue_list.item(i).text().startswith("3:") for i in range(4))
    assert sec.run_tool("next", point=(0, 0)) == int(sec.queue["label"][0])  # goes on from where the user was
    layer.paint((100, 20), 7)  # a brush stroke: the queue follows once the user pauses
    qtbot.waitUntil(lambda: 7 in sec.queue["label"], timeout=5_000)
    assert sec.queue_list.count() == 5


def test_review_queue_after_a_change_without_event(setup, messages):
    viewer, w, sec, layer = setup
    sec.rank()
    assert int(sec.queue["label"][0]) == 3
    layer.data[layer.data == 3] = 0  # as napari's undo does: no paint event
    lab = sec.run_tool("next", point=(0, 0))
    assert lab not in (None, 3) and (layer.data == lab).any()
    assert 3 not in sec.queue["label"] and sec.queue_list.count() == 4


def test_picks_layer_removed_after_merge_and_split(setup, messages):
    viewer, w, sec, layer = setup
    sec.run_tool("pick", point=(30, 30))
    sec.run_tool("pick", point=(30, 80))
    assert "proofreading picks" in viewer.layers
    sec.run_tool("merge", point=(0, 0))
    assert "proofreading picks" not in viewer.layers
    assert viewer.layers.selection.active.name == "cells labels"
    sec.run_tool("seed", point=(80, 55))
    sec.run_tool("seed", point=(78, 92))
    sec.run_tool("split", point=(0, 0))
    assert "proofreading picks" not in viewer.layers
    sec.run_tool("cut", point=(60, 73))
    sec.run_tool("cut", point=(100, 73))
    assert "proofreading picks" not in viewer.layers


def test_picks_belong_to_one_layer(setup, messages):
    viewer, w, sec, layer = setup
    other = viewer.add_labels(np.asarray(layer.data).copy(), name="other")
    sec.run_tool("pick", layer=layer, point=(30, 30))
    sec.run_tool("pick", layer=other, point=(30, 80))
    assert len(sec.picks) == 1  # a pick on another layer starts again
    sec.run_tool("merge", layer=other, point=(0, 0))
    assert "at least two different" in messages["error"][-1]


def test_correct_and_export_follow_the_selected_labels_layer(setup, messages):
    viewer, w, sec, layer = setup
    other = viewer.add_labels(np.zeros((120, 160), np.int32), name="other")
    assert sec.labels_layer().name == "other"
    assert w.export_section.layer_combo.currentText() == "other"
    viewer.layers.selection.active = layer
    assert sec.labels_layer().name == "cells labels"
    assert w.export_section.layer_combo.currentText() == "cells labels"
    viewer.layers.selection.active = other
    sec.uncertainty_check.setChecked(True)  # no maps for user labels: refused, nothing added
    assert not sec.uncertainty_check.isChecked() and len(viewer.layers) == 3


def test_add_at_cursor_grows_a_missed_object_from_the_kept_maps(setup, messages):
    """Click inside a missed nucleus: it is added from the model's foreground map, as one undoable step."""
    from napari_unet_loop.gui.layers import unwrap

    viewer, w, sec, layer = setup
    before = layer.data.copy()
    assert sec.run_tool("add", point=(100, 20), plane=()) is None  # no maps kept for this layer yet
    assert "segment it with the plugin first" in messages["error"][-1]
    fg = np.zeros(layer.data.shape, np.float16)
    missed = np.zeros(layer.data.shape, bool)
    missed[disk((100, 20), 9)] = True
    fg[missed] = 0.3  # the model saw it, below the usual threshold
    w._maps[unwrap(layer)] = {(): (fg, np.zeros_like(fg), 1.0)}
    edit = sec.run_tool("add", point=(100, 20), plane=())
    assert edit is not None
    new = int(before.max()) + 1
    assert ((layer.data == new) == missed).all()
    check_undo(layer, before)
