"""GUI tests: the dock widget in a real napari viewer (run under Xvfb in CI)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_loop.gui import input_section, model_manager, segment_output
from napari_unet_loop.gui import widget as widget_mod
from napari_unet_loop.gui.segment_output import IF_EDITED_NEW, IF_EDITED_REPLACE
from napari_unet_loop.gui.widget import UNetLoopWidget

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


@pytest.fixture
def messages(monkeypatch):
    """Collect the notifications the widget shows."""
    seen = {"error": [], "warning": [], "info": []}
    for mod in (widget_mod, model_manager, input_section, segment_output):  # the dock and its mixins
        for kind in seen:
            if hasattr(mod, f"show_{kind}"):
                monkeypatch.setattr(mod, f"show_{kind}", lambda m, kind=kind: seen[kind].append(str(m)))
    return seen


@pytest.fixture
def viewer_widget(make_napari_viewer_proxy, tiny_model_path):
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    viewer.window.add_dock_widget(w, name="U-Net Loop")
    assert w.add_model_file(tiny_model_path) is not None
    return viewer, w


def wait(qtbot, w):
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)


def run(qtbot, w, **kwargs):
    worker = w.segment(**kwargs)
    assert worker is not None
    wait(qtbot, w)
    return worker


def test_plugin_docks_through_npe2(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-loop", "U-Net Loop")
    assert isinstance(widget, UNetLoopWidget)


def test_idle_state_and_tile_size_from_item_data(viewer_widget):
    viewer, w = viewer_widget
    assert w._run.kind == "idle" and w._run.target is None  # no job yet
    assert w.tile_size() is None  # "auto"
    w.tile_combo.value = w.tile_combo.choices[1]
    assert w.tile_size() == w.tile_combo.value == int(w.tile_combo.current_choice)


def test_segment_creates_labels_layer_with_scale(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    image, _ = discs
    viewer.add_image(image, name="cells", scale=(0.5, 0.25), translate=(10, 20))
    run(qtbot, w)
    out = viewer.layers["cells labels"]
    assert out.data.shape == image.shape
    assert out.data.dtype == np.int32
    np.testing.assert_allclose(out.scale, (0.5, 0.25))
    np.testing.assert_allclose(out.translate, (10, 20))
    assert out.metadata["napari_unet_loop"]["model_name"] == "tiny"
    assert w.status.text().startswith("Done")


def test_replace_into_a_narrow_layer_goes_to_a_new_layer_when_ids_do_not_fit(
    qtbot, viewer_widget, discs, messages, monkeypatch
):
    from napari_unet_loop.gui import _segment_worker

    viewer, w = viewer_widget
    viewer.add_image(discs[0], name="cells")
    mask = viewer.add_labels(np.zeros(discs[0].shape, np.uint8), name="cells labels")  # e.g. an 8-bit mask file
    mask.data[:4, :4] = 3
    w.if_edited_combo.setCurrentText(IF_EDITED_REPLACE)
    real = _segment_worker.segment_planes

    def many_ids(*args, **kwargs):  # as if the image held over 255 objects
        result = yield from (
            _segment_worker.PlaneResult(r.index, np.where(r.labels > 0, r.labels + 300, 0), r.fg, r.dist, r.seconds)
            if isinstance(r, _segment_worker.PlaneResult)
            else r
            for r in real(*args, **kwargs)
        )
        return result

    monkeypatch.setattr(widget_mod, "segment_planes", many_ids)
    run(qtbot, w)
    assert mask.data.dtype == np.uint8 and mask.data[:4, :4].max() == 3 and mask.data[4:].max() == 0  # untouched
    assert [layer.name for layer in viewer.layers] == ["cells", "cells labels", "cells labels [1]"]
    new = viewer.layers["cells labels [1]"]
    assert new.data.dtype == np.int32 and new.data.max() > 300
    assert "cannot hold ids" in messages["warning"][-1]


def test_rerun_replaces_unedited_layer_undoably(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    viewer.add_image(discs[0], name="cells")
    run(qtbot, w)
    out = viewer.layers["cells labels"]
    first = out.data.copy()
    w.fg_spin.value = 0.3
    run(qtbot, w)
    assert len([lyr for lyr in viewer.layers if lyr.name.startswith("cells labels")]) == 1
    second = out.data.copy()
    if not np.array_equal(first, second):
        out.undo()
        np.testing.assert_array_equal(out.data, first)


def test_rerun_never_overwrites_edited_layer(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    viewer.add_image(discs[0], name="cells")
    run(qtbot, w)
    out = viewer.layers["cells labels"]
    # the user paints a correction with napari's own tools
    out.paint((40, 40), 99)
    edited = out.data.copy()
    assert w.tracker.is_edited(out)
    w.if_edited_combo.setCurrentText(IF_EDITED_NEW)
    run(qtbot, w)
    np.testing.assert_array_equal(out.data, edited)
    new = [lyr for lyr in viewer.layers if lyr.name.startswith("cells labels") and lyr.name != out.name]
    assert len(new) == 1


def test_replace_edited_layer_when_chosen_and_undo(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    viewer.add_image(discs[0], name="cells")
    run(qtbot, w)
    out = viewer.layers["cells labels"]
    out.paint((40, 40), 99)
    edited = out.data.copy()
    w.if_edited_combo.setCurrentText(IF_EDITED_REPLACE)
    run(qtbot, w)
    assert len([lyr for lyr in viewer.layers if lyr.name.startswith("cells labels")]) == 1
    assert not np.array_equal(out.data, edited)
    out.undo()
    np.testing.assert_array_equal(out.data, edited)


def test_replacing_an_edited_stack_is_one_undo_step(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    viewer.add_image(np.stack([discs[0], discs[0][::-1], discs[0][:, ::-1]]), name="z")
    run(qtbot, w, stack=True)
    out = viewer.layers["z labels"]
    for z in range(3):
        out.paint((z, 40, 40), 99)  # the user's edits in every plane
    edited = out.data.copy()
    w.if_edited_combo.setCurrentText(IF_EDITED_REPLACE)
    run(qtbot, w, stack=True)
    assert (out.data != 99).all()  # every plane replaced
    out.undo()  # the whole stack, not its last plane
    np.testing.assert_array_equal(out.data, edited)


def test_a_channel_axis_chosen_for_one_image_is_not_carried_to_another(viewer_widget):
    """A Z stack chosen after a 3-channel image was segmented as channels (its plane 0 only)."""
    viewer, w = viewer_widget
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((3, 64, 64)).astype(np.float32), name="channels")
    w.image_combo.setCurrentText("channels")
    w.channel_axis_combo.setCurrentIndex(w.channel_axis_combo.findData(0))
    assert w.image_layout(viewer.layers["channels"]).channel_axis == 0
    stack = viewer.add_image(rng.random((5, 64, 64)).astype(np.float32), name="zstack")
    viewer.layers.selection.active = stack
    assert w.image_combo.currentText() == "zstack"
    assert w.channel_axis_combo.currentData() is None and w.segment_stack_btn.isEnabled()
    assert "5 planes" in w.shape_label.text()


def test_renaming_the_chosen_image_keeps_it_chosen(viewer_widget):
    viewer, w = viewer_widget
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((64, 64)).astype(np.float32), name="first")
    second = viewer.add_image(rng.random((80, 80)).astype(np.float32), name="second")
    viewer.layers.selection.active = second
    second.name = "second renamed"
    assert w.image_combo.currentText() == "second renamed"
    assert w.image_layer().name == "second renamed"  # it fell back to "first"


def test_an_unreadable_model_file_keeps_the_model_chosen_before(viewer_widget, tmp_path, messages):
    """Picking a damaged file from "Other model file..." jumped to the first model, with the old one's thresholds."""
    viewer, w = viewer_widget
    assert w.model_combo.currentText() == "tiny"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    w.model_combo.blockSignals(True)  # where the combo sits while the file dialog is open
    w.model_combo.setCurrentIndex(w.model_combo.findData(model_manager.OTHER_KEY))
    w.model_combo.blockSignals(False)
    assert w.add_model_file(bad) is None
    assert "corrupt" in messages["error"][-1]
    assert w.model_combo.currentText() == "tiny" and w.current_model().name == "tiny"


def test_rethreshold_without_network(qtbot, viewer_widget, discs, monkeypatch):
    viewer, w = viewer_widget
    viewer.add_image(discs[0], name="cells")
    run(qtbot, w)
    out = viewer.layers["cells labels"]
    fg, dist, _ = w._maps[out.__wrapped__ if hasattr(out, "__wrapped__") else out][()]

    def no_network(*a, **k):
        raise AssertionError("re-thresholding must not run the network")

    monkeypatch.setattr(widget_mod, "segment_planes", no_network)
    w.fg_spin.value = 0.05
    w.seed_spin.value = 0.95
    w.min_size_spin.value = 0
    assert w.rethreshold() is not None
    wait(qtbot, w)
    from napari_unet_loop.core.postprocess import instances_from_maps

    expected = instances_from_maps(fg.astype(np.float32), dist.astype(np.float32), w.postprocess_config())
    np.testing.assert_array_equal(out.data, expected)


def test_stack_current_slice_then_whole_stack(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    stack = np.stack([discs[0], discs[0][::-1], discs[0][:, ::-1]])
    viewer.add_image(stack, name="zstack")
    viewer.dims.set_current_step(0, 1)
    assert w.segment_stack_btn.isEnabled()
    run(qtbot, w)
    out = viewer.layers["zstack labels"]
    assert out.data.shape == stack.shape
    assert out.data[0].max() == 0 and out.data[2].max() == 0  # only the slice on screen
    run(qtbot, w, stack=True)
    assert out.data.shape == stack.shape


def test_blank_plane_in_a_stack_gets_no_objects_and_the_rest_is_segmented(qtbot, viewer_widget, discs, messages):
    viewer, w = viewer_widget
    stack = np.stack([discs[0], np.zeros_like(discs[0]), discs[0][::-1]])
    viewer.add_image(stack, name="gappy")
    run(qtbot, w, stack=True)
    out = viewer.layers["gappy labels"]
    assert out.data[1].max() == 0
    assert out.data[0].max() > 0 and out.data[2].max() > 0
    assert "1 blank plane(s)" in messages["info"][-1]
    assert not messages["error"]


def test_cancel_in_the_middle_of_a_stack_keeps_finished_planes(qtbot, viewer_widget, discs):
    from napari_unet_loop.gui._segment_worker import PlaneResult

    viewer, w = viewer_widget
    plane = np.tile(discs[0], (3, 3))
    n = 16
    viewer.add_image(np.stack([plane] * n), name="long")
    worker = w.segment(stack=True)
    worker.yielded.connect(lambda item: w.cancel() if isinstance(item, PlaneResult) else None)
    wait(qtbot, w)
    done = w._run.done
    assert 1 <= done < n
    out = viewer.layers["long labels"]
    assert "Cancelled" in w.status.text()
    assert out.data[-1].max() == 0  # planes not reached are untouched
    assert worker.abort_requested


def test_multichannel_with_channel_axis(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    image = np.stack([np.zeros_like(discs[0]), discs[0]])  # (C, Y, X)
    viewer.add_image(image, name="two channels")
    w.channel_axis_combo.setCurrentIndex(w.channel_axis_combo.findData(0))
    w.channel_combo.setCurrentIndex(w.channel_combo.findData(1))
    run(qtbot, w)
    assert viewer.layers["two channels labels"].data.shape == discs[0].shape


def test_rgba_sample_image(qtbot, viewer_widget):
    from napari_unet_loop.sample_data import nuclei_small

    viewer, w = viewer_widget
    data, kwargs, _ = nuclei_small()[0]
    viewer.add_image(data, **kwargs)
    assert viewer.layers["nuclei_small"].rgb
    run(qtbot, w)
    assert viewer.layers["nuclei_small labels"].data.shape == data.shape[:2]


# ---------------------------------------------------------------- bad input
def test_no_image_layer(viewer_widget, messages):
    viewer, w = viewer_widget
    assert w.segment() is None
    assert "no image layer" in messages["error"][0]


@pytest.mark.parametrize("kind", ["labels", "shapes"])
def test_annotation_layer_as_input(viewer_widget, messages, kind):
    viewer, w = viewer_widget
    layer = viewer.add_labels(np.zeros((32, 32), np.int32)) if kind == "labels" else viewer.add_shapes()
    assert w.segment(layer=layer) is None
    assert "choose an Image layer" in messages["error"][0]


@pytest.mark.parametrize("shape", [(1, 1), (1, 500), (5, 300)])
def test_tiny_or_empty_image(viewer_widget, messages, shape):
    viewer, w = viewer_widget
    viewer.add_image(np.ones(shape, np.float32), name="tiny", contrast_limits=(0, 1))
    assert w.segment() is None
    assert "need at least" in messages["error"][0]


@pytest.mark.parametrize(
    "image, words",
    [
        (np.where(np.eye(64, dtype=bool), np.nan, 1.0).astype(np.float32), "NaN or infinite"),
        (np.where(np.eye(64, dtype=bool), np.inf, 1.0).astype(np.float32), "NaN or infinite"),
    ],
)
def test_unusable_pixels_fail_with_clear_message(qtbot, viewer_widget, messages, image, words):
    viewer, w = viewer_widget
    viewer.add_image(image, name="bad")
    assert w.segment() is not None
    wait(qtbot, w)
    assert words in messages["error"][0]
    assert words in w.status.text()
    assert "bad labels" not in viewer.layers


def test_corrupt_model_file(viewer_widget, messages, tmp_path):
    viewer, w = viewer_widget
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model at all")
    assert w.add_model_file(bad) is None
    assert "corrupt" in messages["error"][0]


def test_model_for_other_channel_count(qtbot, viewer_widget, messages, tmp_path, discs):
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    viewer, w = viewer_widget
    path = model_files.save(
        model_files.new_model(UNetConfig(in_channels=2, depth=2, base_width=4), name="two"), tmp_path / "two"
    )
    w.add_model_file(path)
    viewer.add_image(discs[0], name="grey")
    worker = w.segment()
    wait(qtbot, w)
    assert worker is not None
    assert "expects 2 channels" in messages["error"][0]
    assert "grey labels" not in viewer.layers


def test_device_that_is_not_there(viewer_widget, messages, discs, monkeypatch):
    from napari_unet_loop.core.device import DeviceError

    viewer, w = viewer_widget
    viewer.add_image(discs[0], name="cells")

    def missing(name):
        raise DeviceError("CUDA was requested but no CUDA GPU is usable here")

    monkeypatch.setattr(widget_mod, "resolve_device", missing)
    assert w.segment() is None
    assert "CUDA" in messages["error"][0]


def test_second_segment_while_running_is_refused(qtbot, viewer_widget, discs, messages):
    viewer, w = viewer_widget
    viewer.add_image(np.stack([discs[0]] * 4), name="s")
    assert w.segment(stack=True) is not None
    assert w.segment() is None
    assert "already running" in messages["warning"][0]
    wait(qtbot, w)


def test_model_files_import_rename_export_delete(viewer_widget, messages, tmp_path, tiny_model_path):
    from napari_unet_loop.core import model_files

    viewer, w = viewer_widget
    assert w.import_model_file(tiny_model_path, name="mine") == "mine"
    assert "mine" in model_files.list_models()
    assert w.import_model_file(tiny_model_path, name="mine") is None  # the dock has no "allow overwriting"
    assert "hold one named 'mine' already" in messages["error"][-1]
    assert w.import_model_file(tiny_model_path, name="mine", overwrite=True) == "mine"  # the dialog asked
    assert w.rename_model("mine-v2")
    assert "mine-v2" in model_files.list_models() and "mine" not in model_files.list_models()
    assert w.model_combo.currentText() == "mine-v2"
    out = w.export_model_file(tmp_path / "shared.safetensors")
    assert model_files.load(out).name == "mine-v2"
    assert w.delete_model()
    assert "mine-v2" not in model_files.list_models()


def test_a_model_file_opened_twice_is_one_entry_and_shipped_names_stay_the_shipped_models(
    viewer_widget, messages, tmp_path, tiny_model_path
):
    from napari_unet_loop.core import model_files

    viewer, w = viewer_widget
    items = [w.model_combo.itemText(i) for i in range(w.model_combo.count())]
    assert w.add_model_file(tiny_model_path) is not None  # opened again (the fixture opened it)
    assert [w.model_combo.itemText(i) for i in range(w.model_combo.count())] == items
    assert w.model_combo.currentText() == "tiny"
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(tiny_model_path.read_bytes())
    assert w.add_model_file(copy) is not None  # another file with the same model name: an entry of its own
    assert w.model_combo.currentText() == "tiny (copy.safetensors)"
    shipped = tmp_path / f"{model_files.DEFAULT_MODEL}.safetensors"
    shipped.write_bytes(tiny_model_path.read_bytes())
    assert w.import_model_file(shipped) is None  # it would hide the shipped default
    assert "is the shipped default model's name" in messages["error"][-1]
    assert model_files.DEFAULT_MODEL not in {p.stem for p in model_files.user_dir().glob("*.safetensors")}


def test_shipped_model_cannot_be_deleted(viewer_widget, messages):
    viewer, w = viewer_widget
    w.refresh_models(select="tiny")  # opened from a file, not in the user folder
    assert not w.delete_model()
    assert "cannot be changed" in messages["error"][0]


def test_probability_maps_and_uncertainty_layers(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    viewer.add_image(np.stack([discs[0], discs[0]]), name="st")
    w.show_maps_check.value = True
    run(qtbot, w)
    fg = viewer.layers["st labels foreground probability"]
    assert fg.data.shape == (2, *discs[0].shape)
    assert "st labels distance map" in viewer.layers
    plane = int(np.nonzero(fg.data.reshape(2, -1).any(1))[0][0])
    assert 0 <= fg.data[plane].min() and fg.data[plane].max() <= 1
    sec = w.correct_section
    sec.layer_combo.setCurrentText("st labels")
    sec.uncertainty_check.setChecked(True)
    unc = viewer.layers["st labels uncertainty"].data
    np.testing.assert_allclose(unc[plane], 1 - np.abs(2 * fg.data[plane] - 1), atol=1e-3)


def test_channel_axis_must_be_first(viewer_widget, messages, discs):
    viewer, w = viewer_widget
    viewer.add_image(np.stack([np.stack([discs[0], discs[0]])] * 2), name="zcyx")  # (Z, C, Y, X)
    w.channel_axis_combo.setCurrentIndex(w.channel_axis_combo.findData(1))
    assert w.segment() is None
    assert "must be the first axis" in messages["error"][0]


def test_cancelled_model_file_dialog_keeps_the_model(viewer_widget, monkeypatch):
    viewer, w = viewer_widget
    assert w.model_combo.currentText() == "tiny"
    monkeypatch.setattr(model_manager.QFileDialog, "getOpenFileName", lambda *a, **k: ("", ""))
    w.model_combo.setCurrentText(model_manager.OTHER_MODEL)
    w._on_model_chosen(w.model_combo.currentIndex())
    assert w.model_combo.currentText() == "tiny"


def test_undoing_a_replaced_result_is_not_a_correction(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    viewer.add_image(discs[0], name="cells")
    run(qtbot, w)
    out = viewer.layers["cells labels"]
    w.fg_spin.value = 0.3
    w.seed_spin.value = 0.9
    run(qtbot, w)  # replaces the unedited layer in place, one undo step
    out.undo()  # back to the first result: the user corrected nothing
    ((original, current),) = w.tracker.corrections(out).values()
    np.testing.assert_array_equal(original, current)
    out.paint((40, 40), 77)  # a real correction counts
    ((original, current),) = w.tracker.corrections(out).values()
    assert (original != current).any()


# ---------------------------------------------------------------- imaging modality
def blobs(bright_background: bool) -> np.ndarray:
    """64 x 64 grey image: a few round nuclei, dark on a bright field or bright on a dark one."""
    yy, xx = np.mgrid[:64, :64]
    nuclei = np.zeros((64, 64), bool)
    for cy, cx in [(16, 16), (16, 46), (46, 20), (44, 48)]:
        nuclei |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 7**2
    noise = np.random.default_rng(0).normal(0, 4, (64, 64))
    background, nucleus = (200.0, 40.0) if bright_background else (20.0, 200.0)
    return (np.where(nuclei, nucleus, background) + noise).astype(np.float32)


def stained_blobs() -> np.ndarray:
    """64 x 64 RGB image: purple nuclei on light pink tissue (H&E-like)."""
    mask = blobs(True) < 120
    rgb = np.empty((64, 64, 3), np.uint8)
    rgb[:] = (235, 190, 215)
    rgb[mask] = (90, 50, 140)
    return rgb


def auto_model(tmp_path) -> str:
    """A tiny model whose card detects each image's kind (as new shipped models do)."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    path = tmp_path / "tiny-auto.safetensors"
    model_files.save(model_files.new_model(UNetConfig(depth=2, base_width=4), name="tiny-auto", modality="auto"), path)
    return str(path)


def test_imaging_defaults_to_auto_and_shows_what_was_detected(viewer_widget, tmp_path):
    viewer, w = viewer_widget
    assert w.modality_combo.currentData() == "auto" and w.modality_choice() is None
    assert [w.modality_combo.itemData(i) for i in range(w.modality_combo.count())] == [
        "auto",
        "fluorescence",
        "brightfield",
        "he",
        "none",
    ]
    assert w.modality_label.text() == ""  # no image yet
    viewer.add_image(blobs(bright_background=True), name="bf")
    text = w.update_detected()
    assert text.startswith("Detected: brightfield (bright background") and w.modality_label.text() == text
    assert "as it is" in text  # the tiny test model predates modalities: it takes grey images unchanged
    viewer.add_image(blobs(bright_background=False), name="fluo")  # selecting it makes it the input
    assert w.image_combo.currentText() == "fluo"
    assert w.update_detected().startswith("Detected: fluorescence (dark background")
    viewer.add_image(stained_blobs(), name="he")
    assert w.update_detected().startswith("Detected: H&E / stained tissue (bright background")
    w.add_model_file(auto_model(tmp_path))
    assert w.update_detected().startswith("Detected: H&E / stained tissue") and "as it is" not in w.update_detected()
    w.modality_combo.setCurrentIndex(w.modality_combo.findData("brightfield"))
    assert w.update_detected().endswith("using brightfield (your choice).")


def test_thresholds_follow_the_imaging_kind_unless_changed(viewer_widget, tmp_path):
    """The Instances thresholds are the model's for the kind shown under Imaging, until the user sets them."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.postprocess import PostprocessConfig

    viewer, w = viewer_widget
    model = model_files.load(auto_model(tmp_path))
    bright = PostprocessConfig(0.85, 0.45, 24, 1.0)
    model.card.postprocess_by_kind = {"brightfield": bright}
    path = tmp_path / "by-kind.safetensors"
    model_files.save(model, path)
    w.add_model_file(str(path))
    general = model.card.postprocess
    viewer.add_image(blobs(bright_background=False), name="fluo")
    w.update_detected()
    assert w.postprocess_config() == general
    viewer.add_image(blobs(bright_background=True), name="bf")
    assert "thresholds for brightfield images" in w.update_detected()
    assert w.postprocess_config() == bright
    w.modality_combo.setCurrentIndex(w.modality_combo.findData("fluorescence"))  # the user's choice counts
    w.update_detected()
    assert w.postprocess_config() == general
    w.modality_combo.setCurrentIndex(w.modality_combo.findData("auto"))
    w.update_detected()
    w.fg_spin.value = 0.6  # set by hand: kept when the kind changes
    viewer.layers.selection.active = viewer.layers["fluo"]
    w.update_detected()
    assert w.postprocess_config().fg_threshold == 0.6
    w.defaults_btn.click()  # Model defaults: the fluorescence image's
    assert w.postprocess_config() == general


def test_detection_follows_the_selected_layer_by_itself(qtbot, viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(blobs(bright_background=False), name="fluo")
    viewer.add_image(blobs(bright_background=True), name="bf")
    qtbot.waitUntil(lambda: "brightfield" in w.modality_label.text(), timeout=5000)
    viewer.layers.selection.active = viewer.layers["fluo"]
    qtbot.waitUntil(lambda: "fluorescence" in w.modality_label.text(), timeout=5000)


def test_detection_reads_the_plane_on_screen_of_a_stack(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(np.stack([blobs(False), blobs(True)]), name="st")
    viewer.dims.set_current_step(0, 0)
    assert w.detect_modality().modality == "fluorescence"
    viewer.dims.set_current_step(0, 1)
    assert w.detect_modality().modality == "brightfield"


def test_explicit_imaging_choice_reaches_the_segmentation_and_is_recorded(qtbot, viewer_widget, monkeypatch):
    from napari_unet_loop.core import planes as planes_mod

    seen = []
    real = planes_mod.iter_segment

    def spy(*args, **kwargs):
        seen.append(kwargs.get("modality"))
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(planes_mod, "iter_segment", spy)
    viewer, w = viewer_widget
    viewer.add_image(blobs(bright_background=False), name="cells")  # looks like fluorescence
    w.modality_combo.setCurrentIndex(w.modality_combo.findData("brightfield"))
    run(qtbot, w)
    assert seen == ["brightfield"]
    meta = viewer.layers["cells labels"].metadata["napari_unet_loop"]
    assert meta["modality"] == "brightfield" and meta["modality_setting"] == "brightfield"
    assert "Imaging: brightfield" in w.status.text()
    w.modality_combo.setCurrentIndex(w.modality_combo.findData("auto"))
    run(qtbot, w)
    assert seen[-1] is None  # Auto: the model's own setting
    meta = viewer.layers["cells labels"].metadata["napari_unet_loop"]
    assert meta["modality"] == "none" and meta["modality_setting"] == "auto"  # the tiny model takes grey as is
    assert "as it is" in w.status.text()


def test_auto_model_segments_with_the_detected_modality(qtbot, viewer_widget, tmp_path):
    viewer, w = viewer_widget
    w.add_model_file(auto_model(tmp_path))
    viewer.add_image(blobs(bright_background=True), name="cells")
    run(qtbot, w)
    meta = viewer.layers["cells labels"].metadata["napari_unet_loop"]
    assert meta["modality"] == "brightfield" and meta["model_card"]["modality"] == "auto"
    assert "Imaging: brightfield" in w.status.text()
    assert w.modality_label.text().startswith("Detected: brightfield")


def test_the_shipped_model_enlarges_small_nuclei_and_says_so(qtbot, viewer_widget):
    from napari_unet_loop.core import model_files

    viewer, w = viewer_widget
    w.add_model_file(str(model_files.load("default").path))
    yy, xx = np.mgrid[:128, :128]
    nuclei = np.zeros((128, 128), bool)
    for cy in range(12, 128, 20):
        for cx in range(12, 128, 20):
            nuclei |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 4**2  # 9 px across: the model knows ~20 px
    noise = np.random.default_rng(0).normal(0, 4, nuclei.shape)
    viewer.add_image((np.where(nuclei, 200.0, 20.0) + noise).astype(np.float32), name="small")
    run(qtbot, w)
    meta = viewer.layers["small labels"].metadata["napari_unet_loop"]
    assert meta["diameter_setting"] == "model" and meta["diameter"] < 13  # segmented for its small nuclei
    assert "Small objects (about" in w.status.text() and "segmented enlarged" in w.status.text()
    assert viewer.layers["small labels"].data.max() >= 30  # 36 nuclei


def test_auto_in_a_stack_of_different_planes_records_each(qtbot, viewer_widget, tmp_path):
    viewer, w = viewer_widget
    w.add_model_file(auto_model(tmp_path))
    viewer.add_image(np.stack([blobs(False), blobs(True)]), name="st", axis_labels=("t", "y", "x"))  # time points
    run(qtbot, w, stack=True)
    meta = viewer.layers["st labels"].metadata["napari_unet_loop"]
    assert meta["modality"] == "mixed"
    assert meta["modality_planes"] == [[[0], "fluorescence"], [[1], "brightfield"]]
    assert "fluorescence (1 planes), brightfield (1 planes)" in w.status.text()


def test_the_planes_of_a_z_stack_are_normalised_together_time_points_apart(qtbot, viewer_widget, discs, monkeypatch):
    from napari_unet_loop.core import segment as core_segment

    seen = []  # the normalisation limits each plane is prepared with (None: its own percentiles)
    prepare = core_segment.prepare_input
    monkeypatch.setattr(
        core_segment, "prepare_input", lambda image, *a, **kw: seen.append(a[4]) or prepare(image, *a, **kw)
    )
    viewer, w = viewer_widget
    noise = np.random.default_rng(0).normal(20, 5, discs[0].shape)
    data = np.stack([noise, noise + 100 * (discs[0] > 0)]).astype(np.float32)  # a plane of noise, one of nuclei
    viewer.add_image(data, name="t", axis_labels=("t", "y", "x"))
    run(qtbot, w, stack=True, layer=viewer.layers["t"])
    assert seen == [None, None]  # time points: each by its own percentiles
    viewer.add_image(data, name="z")  # no axis names: the stacked axis is Z
    run(qtbot, w, stack=True, layer=viewer.layers["z"])
    from napari_unet_loop.core.planes import SegmentSettings, stack_settings

    ((lo, hi),) = seen[2]
    assert seen[3] == seen[2] and hi > np.percentile(noise, 99.8) + 50  # the stack's limits, for every plane
    in_memory = stack_settings(w.current_model(), lambda i: data[i[0]], [(0,), (1,)], SegmentSettings())
    assert list(in_memory.limits) == seen[2]  # the dock reads strided samples: the limits the CLI finds
    run(qtbot, w, layer=viewer.layers["z"], indices=[(0,)], new_layer_name="z0")  # the noise plane alone
    assert seen[4] == seen[2]  # still the stack's


@pytest.mark.parametrize("image", [np.zeros((64, 64), np.uint8), np.full((64, 64), 7, np.uint16)])
def test_a_blank_image_gets_an_empty_labels_layer_and_a_note(qtbot, viewer_widget, messages, image):
    """A blank field of view is not an error: an empty labels layer and a note, as the CLI does."""
    viewer, w = viewer_widget
    viewer.add_image(image, name="blank")
    assert w.segment() is not None
    wait(qtbot, w)
    assert not messages["error"]
    assert "blank" in messages["info"][-1]
    assert "blank labels" in viewer.layers and not viewer.layers["blank labels"].data.any()


def test_tools_follow_the_new_layer_of_apply_thresholds(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    viewer.add_image(discs[0], name="cells")
    run(qtbot, w)
    out = viewer.layers["cells labels"]
    out.paint((40, 40), 99)  # edited: new thresholds go to a new layer
    w.if_edited_combo.setCurrentText(IF_EDITED_NEW)
    assert w.rethreshold() is not None
    wait(qtbot, w)
    assert "cells labels [1]" in viewer.layers
    assert w.correct_section.labels_layer().name == "cells labels [1]"
    assert w.export_section.layer_combo.currentText() == "cells labels [1]"
    viewer.layers.selection.active = out  # the user goes back to the edited layer
    assert w.correct_section.labels_layer().name == "cells labels"
    assert w.export_section.layer_combo.currentText() == "cells labels"


def test_join_planes_into_3d_objects_after_segment_stack(qtbot, viewer_widget, discs):
    viewer, w = viewer_widget
    stack = np.stack([discs[0]] * 3)  # the same nuclei in every plane
    viewer.add_image(stack, name="z")
    w.stitch_check.setChecked(True)
    run(qtbot, w, stack=True)
    out = viewer.layers["z labels"]
    assert out.metadata["napari_unet_loop"]["objects_3d"] == {"iou": 0.5}
    np.testing.assert_array_equal(out.data[0], out.data[2])  # one id per object through the planes
    assert "3D object(s)" in w.status.text()
    w.fg_spin.value = w.fg_spin.value  # Apply thresholds: the planes are joined again, as after Segment stack
    assert w.rethreshold() is not None
    wait(qtbot, w)
    assert out.metadata["napari_unet_loop"]["objects_3d"] == {"iou": 0.5}
    np.testing.assert_array_equal(out.data[0], out.data[2])
    w.stitch_check.setChecked(False)
    run(qtbot, w, stack=True)  # planes with ids of their own again: the export must not measure them in 3D
    assert "objects_3d" not in out.metadata["napari_unet_loop"]


def test_stitch_stack_is_one_undoable_step(viewer_widget, discs):
    viewer, w = viewer_widget
    _, labels = discs
    per_plane = np.stack([labels, np.where(labels > 0, 6 - labels, 0), labels]).astype(np.int32)
    layer = viewer.add_labels(per_plane.copy(), name="planes")
    assert w.stitch_stack(layer) == 5
    assert len(np.unique(layer.data)) == 6
    np.testing.assert_array_equal(layer.data[1], layer.data[0])
    layer.undo()
    np.testing.assert_array_equal(layer.data, per_plane)


def test_the_dock_keeps_only_a_few_models_in_memory(viewer_widget, tmp_path):
    """Each fine-tune adds a model: only the most recently used stay loaded, the rest reload from file."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig
    from napari_unet_loop.gui.model_manager import MAX_LOADED

    viewer, w = viewer_widget
    for i in range(MAX_LOADED + 3):
        path = model_files.save(
            model_files.new_model(UNetConfig(depth=2, base_width=4), name=f"m{i}"), tmp_path / f"m{i}"
        )
        assert w.add_model_file(path) is not None
    assert len(w._models) == MAX_LOADED
    assert w.model_combo.currentText() in w._models
    w.refresh_models(select="m0")  # dropped from memory, loaded again from its file
    assert w.current_model().name == "m0" and len(w._models) == MAX_LOADED


def test_one_tab_per_job_each_fitting_a_narrow_dock(viewer_widget):
    """Segment | Correct | Fine-tune | Export: each tab's content fits the dock's width (no clipping)."""
    viewer, w = viewer_widget
    titles = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert titles == ["Segment", "Correct", "Fine-tune", "Export"]
    for i, title in enumerate(titles):
        w.show_tab(title)
        assert w.tabs.currentIndex() == i
        content = w.tabs.widget(i).widget()
        assert content.minimumSizeHint().width() <= 480, (title, content.minimumSizeHint().width())
        assert content.minimumSizeHint().width() < w.minimumWidth()  # the dock is never narrower
    with pytest.raises(KeyError):
        w.show_tab("Nothing")
