"""GUI tests of the Fine-tune section: the whole loop in a real viewer, and its bad inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet_loop.core import kind_weights, model_files
from napari_unet_loop.gui import finetune_section as ft_mod
from napari_unet_loop.gui import segment_output, training_data
from napari_unet_loop.gui import widget as widget_mod
from napari_unet_loop.gui.finetune_section import REGION_EDITED, REGION_LABELLED, REGION_SHAPES, START_SCRATCH
from napari_unet_loop.gui.widget import UNetLoopWidget

pytestmark = pytest.mark.gui
TIMEOUT = 180_000


@pytest.fixture
def messages(monkeypatch):
    seen = {"error": [], "warning": [], "info": []}
    for mod in (ft_mod, widget_mod, training_data, segment_output):  # the sections and their mixins
        for kind in seen:
            if hasattr(mod, f"show_{kind}"):
                monkeypatch.setattr(mod, f"show_{kind}", lambda m, kind=kind: seen[kind].append(str(m)))
    return seen


@pytest.fixture
def setup(make_napari_viewer_proxy, tiny_model_path, discs):
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    viewer.window.add_dock_widget(w, name="U-Net Loop")
    w.add_model_file(tiny_model_path)
    image = np.tile(discs[0], (2, 2))
    viewer.add_image(image, name="cells")
    ft = w.finetune_section
    ft.steps_override = 3
    ft.val_every_override = 0.0
    return viewer, w, ft


def fake_validation(monkeypatch, *ap50, **extra):
    """Validation scores in this order (the start's first), the last one again after them."""
    scores = iter(ap50)
    monkeypatch.setattr(
        "napari_unet_loop.core.train.validate",
        lambda *a, **k: {"ap50": next(scores, ap50[-1]), "loss": 1.0, **extra},
    )


def segment(qtbot, w):
    assert w.segment() is not None
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)


def starting_weights(monkeypatch) -> list[dict]:
    """The weights each fine-tune's network starts from, as the worker receives them."""
    started = []
    real = ft_mod.train_in_worker

    def spy(net, *args, **kwargs):  # a generator, as the worker needs
        started.append({k: v.clone() for k, v in net.state_dict().items()})
        return (yield from real(net, *args, **kwargs))

    monkeypatch.setattr(ft_mod, "train_in_worker", spy)
    return started


def segmented_with(qtbot, tmp_path, w, model, monkeypatch) -> None:
    """``model`` saved, chosen and run on the image; fine-tunes then validate 0.1 -> 0.5, no re-segmenting."""
    path = tmp_path / f"{model.name}.safetensors"
    model_files.save(model, path)
    w.add_model_file(str(path))
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.1, 0.5)
    w.finetune_section.resegment_check.value = False


def finetune(qtbot, ft):
    worker = ft.start()
    assert worker is not None
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
    return worker


def test_whole_loop_segment_correct_finetune_resegment(qtbot, setup, messages, monkeypatch):
    viewer, w, ft = setup
    segment(qtbot, w)
    corrected = viewer.layers["cells labels"]
    # the user paints a correction: a new object, then one more stroke
    corrected.paint((20, 20), 77)
    corrected.paint((150, 200), 78)
    qtbot.waitUntil(lambda: "corrected" in ft.corrections_label.text() and "no" not in ft.corrections_label.text())
    # the objects the strokes drew, and those of the model's they trimmed: the ones the comparison judges
    from napari_unet_loop.core.metrics import correction_agreement

    ((original, current),) = ft.tracker.corrections(corrected).values()
    judged = correction_agreement(original, current, current)
    assert judged.n_fixed >= 2
    assert ft.corrections_label.text().startswith(f"{judged.n_fixed + judged.n_removed} object")
    before = corrected.data.copy()
    # the tiny test model improves or not at random: make validation say it improved
    fake_validation(monkeypatch, 0.1, 0.5)
    ft.name_edit.setText("my-finetune")
    finetune(qtbot, ft)
    assert not any("None of these labels was changed" in m for m in messages["warning"])  # corrected
    assert "my-finetune" in model_files.list_models()
    assert w.model_combo.currentText() == "my-finetune"
    qtbot.waitUntil(lambda: w._worker is None and "cells labels (my-finetune)" in viewer.layers, timeout=TIMEOUT)
    new = viewer.layers["cells labels (my-finetune)"]
    assert new.data.shape == before.shape
    np.testing.assert_array_equal(corrected.data, before)  # the corrected layer is unchanged
    qtbot.waitUntil(lambda: "Re-segmented" in ft.result_label.text(), timeout=TIMEOUT)
    # judged on the objects the user painted, not on the whole plane
    text = ft.result_label.text()
    assert re.search(
        r"of the \d+ object\(s\) you drew or reshaped, the new model gets \d+ right \(the old one \d+\)", text
    )
    loaded = model_files.load("my-finetune")
    assert loaded.card.parent == "tiny"
    assert loaded.card.metrics["validation"]["ap50"] == 0.5
    assert loaded.card.training["steps"] == 3
    # the same record as the command line's train writes (core.finetune.training_record)
    assert {"data", "config", "device", "steps", "seconds", "validated", "modality"} <= set(loaded.card.training)
    assert {"n_train", "n_val", "train_names", "val_names"} <= set(loaded.card.training["data"])
    assert len(ft.plot.losses) == 3
    ft.revert()
    assert w.model_combo.currentText() == "tiny"


def test_worse_model_is_not_used_unless_asked(qtbot, setup, messages, monkeypatch):
    viewer, w, ft = setup
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.8, 0.3)
    finetune(qtbot, ft)
    assert w.model_combo.currentText() == "tiny"
    assert ft.use_anyway_btn.isVisibleTo(ft)
    # the labels are the model's own, unchanged: said as the run starts
    assert messages["warning"][0].startswith("None of these labels was changed since the model made them")
    assert "not better" in messages["warning"][1]
    assert "validation AP@0.5 0.800 -> 0.300" in messages["warning"][1]  # the run's own best, offered
    n_models = len(model_files.list_models())
    tiny = {k: v.clone() for k, v in w.current_model().net.state_dict().items()}
    ft.resegment_check.value = False
    ft.use_anyway()
    assert len(model_files.list_models()) == n_models + 1
    assert w.model_combo.currentText() != "tiny"
    # the fine-tuned weights, not the starting ones under a new name
    saved = model_files.load(w.model_combo.currentText())
    assert any(not np.array_equal(v.numpy(), tiny[k].numpy()) for k, v in saved.net.state_dict().items())
    assert saved.card.metrics["validation"]["ap50"] == 0.3 and saved.card.metrics["validation_start"]["ap50"] == 0.8


def test_a_failed_threshold_search_keeps_the_trained_model(qtbot, setup, messages, monkeypatch):
    from napari_unet_loop.gui import _train_worker

    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast")

    viewer, w, ft = setup
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.1, 0.5)
    monkeypatch.setattr(_train_worker, "retune", broken)
    ft.resegment_check.value = False
    ft.name_edit.setText("searched-badly")
    finetune(qtbot, ft)
    assert any("Choosing thresholds for the new weights failed (ValueError" in m for m in messages["warning"])
    assert w.model_combo.currentText() == "searched-badly"  # trained, saved and selected all the same
    assert model_files.load("searched-badly").card.postprocess == ft._run.parent.card.postprocess


def test_the_name_of_a_model_opened_from_a_file_is_taken(qtbot, setup, messages, monkeypatch):
    """Save as 'tiny' (a model opened from a file): saved under another name, and Revert gives tiny back."""
    import torch

    viewer, w, ft = setup
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.1, 0.5)
    ft.resegment_check.value = False
    parent = {k: v.clone() for k, v in w.current_model().net.state_dict().items()}
    ft.name_edit.setText("TINY")  # one file with tiny on macOS and Windows
    finetune(qtbot, ft)
    assert any("A model named 'TINY' exists; saving as" in m for m in messages["info"])
    assert w.model_combo.currentText().startswith("tiny-ft-")
    ft.revert()
    assert w.model_combo.currentText() == "tiny"
    now = w.current_model().net.state_dict()
    assert all(torch.equal(v, now[k]) for k, v in parent.items())  # the parent's weights, not the new ones


def test_a_failed_save_keeps_the_trained_model_to_save_again(qtbot, setup, messages, monkeypatch):
    """A full disk at the end of a fine-tune: the error is shown, the previous model stays, a retry saves it."""
    import errno

    viewer, w, ft = setup
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.1, 0.5)
    ft.resegment_check.value = False
    real = model_files.save_user_model

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_files, "save_user_model", full)
    ft.name_edit.setText("kept-unsaved")
    finetune(qtbot, ft)
    assert "Could not save the fine-tuned model" in messages["error"][-1]
    assert w.model_combo.currentText() == "tiny" and "kept-unsaved" not in model_files.list_models()
    assert ft.use_anyway_btn.isVisibleTo(ft) and ft.use_anyway_btn.text() == "Save it again"
    assert "press 'Save it again'" in ft.result_label.text()
    monkeypatch.setattr(model_files, "save_user_model", real)  # space freed
    ft.use_anyway()
    assert "kept-unsaved" in model_files.list_models() and w.model_combo.currentText() == "kept-unsaved"
    assert model_files.load("kept-unsaved").card.metrics["validation"]["ap50"] == 0.5
    assert "Saved as 'kept-unsaved'" in ft.result_label.text() and not ft.use_anyway_btn.isVisibleTo(ft)


def test_an_unusable_device_is_a_message_not_a_traceback(qtbot, setup, messages, monkeypatch):
    from napari_unet_loop.core.device import DeviceError

    viewer, w, ft = setup
    segment(qtbot, w)

    def gone():
        raise DeviceError("cuda:0 is not usable here (driver error); choose the device cpu or auto")

    monkeypatch.setattr(w.session, "device", gone)
    assert ft.start() is None
    assert "not usable here" in messages["error"][-1] and ft.result_label.text().startswith("Not started")


def test_painting_on_while_it_trains_changes_nothing_it_reads(qtbot, setup, discs):
    """The samples hold a copy of the labels: also of an int64 layer, whose data would otherwise be shared."""
    viewer, w, ft = setup
    layer = viewer.add_labels(np.tile(discs[1], (2, 2)).astype(np.int64), name="cells labels")
    samples, _ = ft.build_samples(w.current_model())
    before = samples[0].labels.copy()
    layer.data[:] = 0  # the user erases everything while training runs
    np.testing.assert_array_equal(samples[0].labels, before)
    assert before.any()


def test_labels_with_negative_ids_are_refused_with_the_layers_name(qtbot, setup, messages, discs):
    viewer, w, ft = setup
    labels = np.tile(discs[1], (2, 2)).astype(np.int32)
    labels[0, 0] = -1
    viewer.add_labels(labels, name="cells labels")
    assert ft.start() is None
    assert "labels layer 'cells labels' holds negative values (down to -1)" in messages["error"][-1]


def test_a_labels_layer_painted_with_one_id_trains_on_its_separate_pieces(setup, messages, discs):
    """Every nucleus painted with label 1 was one object to train on (its distance map spread over all)."""
    viewer, w, ft = setup
    mask = (np.tile(discs[1], (2, 2)) > 0).astype(np.int32)
    viewer.add_labels(mask, name="cells labels")
    samples, _ = ft.build_samples(w.current_model())
    pieces = ndi.label(mask, np.ones((3, 3), bool))[1]
    assert pieces > 1 and samples[0].labels.max() == pieces
    assert "marks its objects with one id" in messages["info"][-1]


def test_stop_keeps_best_so_far(qtbot, setup, messages):
    viewer, w, ft = setup
    segment(qtbot, w)
    ft.steps_override = 10_000
    ft.resegment_check.value = False
    worker = ft.start()
    qtbot.waitUntil(lambda: len(ft.plot.losses) >= 2, timeout=TIMEOUT)
    ft.stop()
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
    assert worker is not None
    assert "stopped" in ft.result_label.text()


def test_stop_right_at_the_start(qtbot, setup, messages):
    viewer, w, ft = setup
    segment(qtbot, w)
    ft.steps_override = 10_000
    ft.resegment_check.value = False
    assert ft.start() is not None
    ft.stop()
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
    assert "Training stopped" in ft.result_label.text() or "not better" in ft.result_label.text()


def test_two_finetunes_at_once_are_refused(qtbot, setup, messages):
    viewer, w, ft = setup
    segment(qtbot, w)
    ft.steps_override = 10_000
    ft.resegment_check.value = False
    assert ft.start() is not None
    assert ft.start() is None
    assert "already running" in messages["warning"][-1]
    ft.stop()
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)


def test_image_removed_while_training(qtbot, setup, messages, monkeypatch):
    viewer, w, ft = setup
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.1, 0.5)
    ft.steps_override = 30
    assert ft.start() is not None
    viewer.layers.remove("cells")
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
    assert any("removed" in m for m in messages["warning"])
    assert "Saved as" in ft.result_label.text()


def test_nan_loss_leaves_model_unchanged(qtbot, setup, messages, monkeypatch):
    import torch

    viewer, w, ft = setup
    segment(qtbot, w)
    real = ft_mod.train_in_worker.__globals__["iter_train"].__globals__["loss_terms"]

    def nan_loss(*a, **k):
        cls_loss, dist_loss = real(*a, **k)
        return cls_loss * torch.tensor(float("nan")), dist_loss

    monkeypatch.setattr("napari_unet_loop.core.train.loss_terms", nan_loss)
    n_models = len(model_files.list_models())
    finetune(qtbot, ft)
    assert "not a number" in messages["error"][0]
    assert len(model_files.list_models()) == n_models
    assert w.model_combo.currentText() == "tiny"


# ---------------------------------------------------------------- bad input
def test_no_labels_layer(setup, messages):
    viewer, w, ft = setup
    assert ft.start() is None
    assert "no training data" in messages["error"][0]


def test_labels_of_another_shape_are_not_offered(setup, messages):
    viewer, w, ft = setup
    viewer.add_labels(np.ones((10, 10), np.int32), name="cells labels")
    assert ft.find_pairs() == []
    assert ft.start() is None


def test_labels_all_background(setup, messages):
    viewer, w, ft = setup
    viewer.add_labels(np.zeros(viewer.layers["cells"].data.shape, np.int32), name="cells labels")
    assert ft.start() is None
    assert "no objects" in messages["error"][0]


def test_only_a_few_pixels_annotated(setup, messages):
    viewer, w, ft = setup
    shape = viewer.layers["cells"].data.shape
    viewer.add_labels(
        np.where(np.arange(shape[1]) < 3, 1, 0)[None].repeat(shape[0], 0).astype(np.int32), name="cells labels"
    )
    viewer.add_shapes([np.array([[0, 0], [0, 5], [5, 5], [5, 0]])], shape_type="rectangle", name="reviewed")
    ft.reset_choices()
    ft.region_combo.setCurrentText(REGION_SHAPES + "reviewed")
    ft.reset_choices()  # the choice is kept, by its item data
    assert ft.region_combo.currentData() == ("shapes", "reviewed")
    assert ft.start() is None
    assert "pixels are annotated" in messages["error"][0]


def test_edited_region_needs_edits(qtbot, setup, messages):
    viewer, w, ft = setup
    segment(qtbot, w)
    ft.region_combo.setCurrentText(REGION_EDITED)
    assert ft.start() is None
    assert "no plane is reviewed" in messages["error"][0]
    layer = viewer.layers["cells labels"]
    known = np.zeros(layer.data.shape, np.int32)
    known[10:30, 10:30] = 1
    known[100:130, 150:180] = 2
    with w.tracker.writing(layer):
        layer.data = known  # as if the model had found these two objects
    w.tracker.record_output(layer, (), known)
    layer.paint((20, 20), 50)  # correct the first one
    model = w.current_model()
    samples, _ = ft.build_samples(model)
    reviewed = ~samples[0].ignore
    assert reviewed[20, 20] and not reviewed[115, 165]  # the edited object is reviewed, the other not
    assert 0 < reviewed.mean() < 0.2


def test_labels_that_mark_only_some_objects_train_around_them(setup):
    """*Reviewed: around the labelled objects*: an unmarked cell far from the marked ones is not background."""
    viewer, w, ft = setup
    shape = viewer.layers["cells"].data.shape
    marked = np.zeros(shape, np.int32)
    marked[10:30, 10:30] = 1
    marked[100:130, 150:180] = 2
    viewer.add_labels(marked, name="cells labels")
    ft.reset_choices()
    ft.region_combo.setCurrentText(REGION_LABELLED)
    assert ft.region_combo.currentData() == ("labelled", None)
    samples, _ = ft.build_samples(w.current_model())
    trusted = ~samples[0].ignore
    assert trusted[marked > 0].all() and trusted[20, 35]  # the objects and a ring around them
    assert not trusted[70, 90] and not trusted[shape[0] - 1, 0]  # far from both: left out
    # the report after re-segmenting: a cell found far from the marked ones is not counted as invented
    found = marked.copy()
    found[60:80, 80:100] = 3
    new = viewer.add_labels(found, name="new")
    report = ft.compare(viewer.layers["cells labels"], new)
    assert "near the objects you marked (AP@0.5) 1.000" in report and "2 objects found near" in report
    ft.region_combo.setCurrentIndex(0)  # the whole image: every pixel counts
    assert ft.build_samples(w.current_model())[0][0].ignore is None
    assert "(AP@0.5) 0.667" in ft.compare(viewer.layers["cells labels"], new)


def test_a_folder_of_cell_tracking_challenge_gold_truth_trains_near_its_marked_cells(tmp_path, setup, messages):
    """man_segNNN files may mark only some cells: the dock says so and reads them as train does."""
    import tifffile
    from qtpy.QtCore import Qt

    viewer, w, ft = setup
    (tmp_path / "01").mkdir()
    (tmp_path / "SEG").mkdir()
    yy, xx = np.mgrid[:96, :96]
    for t in range(2):
        frame = np.random.default_rng(t).normal(10, 2, (96, 96)).astype(np.float32)
        lab = np.zeros((96, 96), np.uint16)
        for cy, cx in ((25, 25), (75, 70)):
            frame[(yy - cy) ** 2 + (xx - cx) ** 2 <= 100] += 100
        lab[(yy - 25) ** 2 + (xx - 25) ** 2 <= 100] = 1  # the other cell is not marked
        tifffile.imwrite(tmp_path / "01" / f"t00{t}.tif", frame)
        tifffile.imwrite(tmp_path / "SEG" / f"man_seg00{t}.tif", lab)
    tifffile.imwrite(tmp_path / "01" / "t002.tif", frame)  # a frame without gold truth: left out, and said
    assert ft.add_folders(tmp_path / "01", tmp_path / "SEG")
    assert ft.region_combo.currentData() == ("labelled", None)
    assert "may mark only some cells" in messages["info"][-1]
    assert (
        "1 image(s) in" in messages["info"][-1]
        and "have no label file and are left out: t002.tif" in messages["info"][-1]
    )
    for i in range(ft.pairs_list.count()):  # the folder only
        item = ft.pairs_list.item(i)
        item.setCheckState(Qt.Checked if item.data(Qt.UserRole)[0] == "folder" else Qt.Unchecked)
    samples, described = ft.build_samples(w.current_model())
    assert len(samples) == 2 and all(s.ignore[75, 70] and not s.ignore[25, 25] for s in samples)
    assert "trained near their labelled objects" in described["sources"][0]
    ft.region_combo.setCurrentIndex(0)  # the user says they mark every cell
    assert all(s.ignore is None for s in ft.build_samples(w.current_model())[0])


def test_a_folder_of_z_stacks_trains_on_its_annotated_planes(tmp_path, setup, messages):
    """*Add folders...* reads files as ``train`` does: a Z stack gives one sample per annotated plane."""
    import tifffile
    from qtpy.QtCore import Qt

    viewer, w, ft = setup
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    yy, xx = np.mgrid[:64, :64]
    stack = np.random.default_rng(0).normal(10, 2, (3, 64, 64)).astype(np.float32)
    labels = np.zeros((3, 64, 64), np.uint16)
    for z in (0, 2):
        disc = (yy - 20 - 10 * z) ** 2 + (xx - 30) ** 2 <= 100
        stack[z][disc] += 100
        labels[z][disc] = 1
    tifffile.imwrite(tmp_path / "img" / "s.tif", stack, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "lab" / "s.tif", labels)
    assert ft.add_folders(tmp_path / "img", tmp_path / "lab")
    for i in range(ft.pairs_list.count()):  # the folder only
        item = ft.pairs_list.item(i)
        item.setCheckState(Qt.Checked if item.data(Qt.UserRole)[0] == "folder" else Qt.Unchecked)
    samples, described = ft.build_samples(w.current_model())
    assert [s.name for s in samples] == ["s[0]", "s[2]"]
    assert described["sources"] == [f"folder {tmp_path / 'img'} (2 image(s) or plane(s))"]


def test_float_labels_from_a_folder(tmp_path, setup, messages):
    import imageio.v3 as iio
    import tifffile

    viewer, w, ft = setup
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    iio.imwrite(tmp_path / "img" / "a.png", (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "lab" / "a.tif", np.full((64, 64), 0.5, np.float32))
    assert ft.add_folders(tmp_path / "img", tmp_path / "lab")
    assert ft.start() is None
    assert "whole numbers" in messages["error"][0]


def test_a_folder_of_masks_trains_on_their_pieces_and_says_so(tmp_path, setup, messages, discs):
    import imageio.v3 as iio
    import tifffile

    viewer, w, ft = setup
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    image, labels = discs
    iio.imwrite(tmp_path / "img" / "a.png", (image / image.max() * 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "lab" / "a.tif", ((labels > 0) * 255).astype(np.uint8))  # one id for all
    assert ft.add_folders(tmp_path / "img", tmp_path / "lab")
    (sample,), _ = ft.build_samples(w.current_model())
    assert sample.labels.max() > 1
    assert any("lab: a.tif is a mask (one id in separate pieces)" in m for m in messages["info"])
    said = len(messages["info"])
    ft.build_samples(w.current_model(), say=False)  # read again for another start: not said twice
    assert len(messages["info"]) == said


def test_train_from_scratch_on_a_folder(qtbot, tmp_path, setup, messages, discs):
    import imageio.v3 as iio

    viewer, w, ft = setup
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    iio.imwrite(tmp_path / "img" / "a.png", discs[0].clip(0, 255).astype(np.uint8))
    iio.imwrite(tmp_path / "lab" / "a.png", discs[1].astype(np.uint16))
    ft.add_folders(tmp_path / "img", tmp_path / "lab")
    ft.start_combo.value = "scratch"
    assert ft.start_combo.current_choice == START_SCRATCH  # shown as its text
    ft.resegment_check.value = False
    ft.layers_combo.value = "last"  # random weights: nothing to recalibrate, refused with the reason
    assert ft.start() is None
    said = messages["error"][-1]
    assert said.startswith("'Train: Only the last layer' recalibrates what a trained model makes of what it sees")
    assert said.endswith("a trained model, not from scratch")
    ft.layers_combo.value = "auto"  # from scratch: every layer
    messages["error"].clear()
    finetune(qtbot, ft)
    assert "Training done" in ft.result_label.text() or "not better" in ft.result_label.text()


def test_augmentation_preview(qtbot, setup, messages):
    viewer, w, ft = setup
    segment(qtbot, w)
    ft.preview_augmentation(n=4)
    assert viewer.layers["augmentation preview"].data.shape == (4, 128, 128)


def test_augmentation_preview_of_colour_patches_is_in_colour(qtbot, tmp_path, setup, messages):
    from napari_unet_loop.core.unet import UNetConfig

    viewer, w, ft = setup
    colour = model_files.new_model(UNetConfig(depth=2, base_width=4, in_channels=3), name="rgb")
    path = model_files.save(colour, tmp_path / "rgb.safetensors")
    w.add_model_file(str(path))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (128, 128, 3)).astype(np.uint8)
    labels = np.zeros((128, 128), np.int32)
    labels[30:60, 30:60] = 1
    viewer.add_image(image, name="stained", rgb=True)
    viewer.add_labels(labels, name="stained labels")
    ft.reset_choices()
    ft.preview_augmentation(n=3)
    preview = viewer.layers["augmentation preview"]
    assert preview.rgb and preview.data.shape == (3, 128, 128, 3)
    assert 0 <= preview.data.min() and preview.data.max() <= 1


def test_save_as_an_existing_name_never_overwrites(qtbot, setup, messages, monkeypatch):
    viewer, w, ft = setup
    segment(qtbot, w)
    # baseline, then one validation per step (3 steps), twice
    fake_validation(monkeypatch, 0.1, 0.5, 0.5, 0.5, 0.1, 0.5, 0.5, 0.5)
    ft.resegment_check.value = False
    ft.name_edit.setText("lab-nuclei")
    finetune(qtbot, ft)
    first = model_files.load("lab-nuclei")
    finetune(qtbot, ft)  # round two of the loop, same name typed, starting from lab-nuclei
    again = model_files.load("lab-nuclei")
    import torch

    for k, v in first.net.state_dict().items():
        assert torch.equal(v, again.net.state_dict()[k])
    assert any("exists; saving as" in m for m in messages["info"])
    assert w.model_combo.currentText().startswith("lab-nuclei-ft-")


def test_a_shipped_models_name_typed_saves_under_an_automatic_name(qtbot, setup, messages, monkeypatch):
    viewer, w, ft = setup
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.1, 0.5)
    ft.resegment_check.value = False
    ft.name_edit.setText("default")
    n_models = len(model_files.list_models())
    finetune(qtbot, ft)
    assert any("shipped default model's name" in m and "automatic name" in m for m in messages["error"])
    assert len(model_files.list_models()) == n_models + 1 and ft._rejected is None  # saved, not offered again
    assert w.model_combo.currentText().startswith("tiny-ft-")


def test_channel_axis_image_pairs_and_trains(qtbot, make_napari_viewer_proxy, tiny_model_path, discs, messages):
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    w.add_model_file(tiny_model_path)
    viewer.add_image(np.stack([np.zeros_like(discs[0]), discs[0]]), name="two")
    w.channel_axis_combo.setCurrentIndex(w.channel_axis_combo.findData(0))
    w.channel_combo.setCurrentIndex(w.channel_combo.findData(1))
    segment(qtbot, w)
    assert w.channel_axis_combo.currentData() == 0 and w.channel_combo.currentData() == 1  # kept after the run
    ft = w.finetune_section
    assert ("two", "two labels") in ft.find_pairs()
    samples, _ = ft.build_samples(w.current_model())
    assert samples[0].image.shape[-2:] == discs[0].shape


def test_the_planes_of_a_z_stack_train_with_the_stacks_normalisation(
    qtbot, make_napari_viewer_proxy, tiny_model_path, discs, messages
):
    from napari_unet_loop.core.image import intensity_limits, prepare_input

    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    w.add_model_file(tiny_model_path)
    image, labels = discs
    stack = np.stack([2 * image, image]).astype(np.float32)  # a brighter plane (not annotated), then this one
    viewer.add_image(stack, name="z")
    viewer.add_labels(np.stack([np.zeros_like(labels), labels]), name="z labels")
    ft = w.finetune_section
    model = w.current_model()
    norm = model.card.normalization
    (sample,), _ = ft.build_samples(model)  # the annotated plane (the empty one is not trained on)
    limits = [intensity_limits(stack, norm)]  # over the stack, as segmenting it takes them
    together, alone = prepare_input(stack[1], 1, norm, limits=limits), prepare_input(stack[1], 1, norm)
    assert np.abs(together - alone).max() > 0.05
    np.testing.assert_allclose(sample.image, together, rtol=1e-5)
    viewer.layers["z"].axis_labels = ("t", "y", "x")  # time points: each plane by its own percentiles
    (sample,), _ = ft.build_samples(model)
    np.testing.assert_allclose(sample.image, alone, rtol=1e-5)


def test_helper_and_resegmented_layers_are_not_training_data(qtbot, setup, messages):
    viewer, w, ft = setup
    segment(qtbot, w)
    ft.preview_augmentation(n=2)
    assert all("augmentation preview" not in pair[1] for pair in ft.find_pairs())
    assert w.image_combo.currentText() == "cells"  # the preview did not become the input
    layer = w._add_labels(
        "cells labels (x)",
        np.zeros(viewer.layers["cells"].data.shape, np.int32),
        metadata={"napari_unet_loop": {"role": "resegmented"}},
    )
    ft.reset_choices()
    from qtpy.QtCore import Qt

    items = {
        ft.pairs_list.item(i).data(Qt.UserRole)[1]: ft.pairs_list.item(i).checkState()
        for i in range(ft.pairs_list.count())
    }
    assert items[layer.name] == Qt.Unchecked  # listed, not ticked
    assert items["cells labels"] == Qt.Checked
    # in a narrow dock the two rows keep apart: the end of each name shows, the whole one in the tooltip
    assert ft.pairs_list.textElideMode() == Qt.ElideMiddle
    assert ft.pairs_list.horizontalScrollBarPolicy() == Qt.ScrollBarAlwaysOff
    tips = {ft.pairs_list.item(i).toolTip() for i in range(ft.pairs_list.count())}
    assert f"image: cells\nlabels: {layer.name}" in tips


def test_stack_trains_only_on_corrected_planes(qtbot, make_napari_viewer_proxy, tiny_model_path, discs, messages):
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    w.add_model_file(tiny_model_path)
    viewer.add_image(np.stack([discs[0]] * 3), name="st")
    assert w.segment(stack=True) is not None
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    layer = viewer.layers["st labels"]
    ft = w.finetune_section
    from napari_unet_loop.gui.layers import layout

    assert ft._planes(layer, layout(viewer.layers["st"])) == []  # nothing reviewed yet
    layer.data_setitem((np.array([1]), np.array([5]), np.array([5])), 42)
    assert ft._planes(layer, layout(viewer.layers["st"])) == [(1,)]


def test_training_samples_get_the_segmentation_input(qtbot, setup, messages, monkeypatch):
    from napari_unet_loop.core.image import prepare_input

    viewer, w, ft = setup
    segment(qtbot, w)
    model = w.current_model()
    image = viewer.layers["cells"].data
    card = model.card
    (sample,), _ = ft.build_samples(model)
    assert ft.training_modality(model) == card.modality == "none"  # the tiny model takes grey as is
    np.testing.assert_allclose(sample.image, prepare_input(image, 1, card.normalization))
    w.modality_combo.setCurrentIndex(w.modality_combo.findData("brightfield"))
    (sample,), _ = ft.build_samples(model)
    np.testing.assert_allclose(sample.image, prepare_input(image, 1, card.normalization, modality="brightfield"))
    w.modality_combo.setCurrentIndex(w.modality_combo.findData("auto"))
    monkeypatch.setattr(card, "modality", "auto")  # a model that detects: the discs are fluorescence
    assert ft.training_modality(model) == "auto"
    (sample,), _ = ft.build_samples(model)
    np.testing.assert_allclose(sample.image, prepare_input(image, 1, card.normalization, modality="fluorescence"))


def test_finetuned_card_keeps_the_conversion_it_was_trained_with(qtbot, setup, messages, monkeypatch):
    viewer, w, ft = setup
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.1, 0.5)
    ft.resegment_check.value = False
    ft.name_edit.setText("bf-nuclei")
    w.modality_combo.setCurrentIndex(w.modality_combo.findData("brightfield"))
    finetune(qtbot, ft)
    card = model_files.load("bf-nuclei").card
    assert card.training["modality"] == "brightfield"
    assert card.modality == "auto"  # trained on converted images: detect and convert each image


def test_a_fine_tune_starts_from_the_models_own_weights_for_its_images_kind(
    qtbot, tmp_path, setup, messages, monkeypatch
):
    """On an image of a kind the model has its own weights for, the dock fine-tunes those weights."""
    import torch

    from napari_unet_loop.core.postprocess import PostprocessConfig
    from napari_unet_loop.core.unet import UNetConfig

    viewer, w, ft = setup
    base = model_files.new_model(UNetConfig(depth=2, base_width=4), name="base", modality="auto")
    own_pp = PostprocessConfig(0.6, 0.45, 12, 1.0)
    own = model_files.new_model(UNetConfig(depth=2, base_width=4), seed=3, modality="auto", postprocess=own_pp)
    kind_weights.add_kind_weights(base, "brightfield", own)
    path = tmp_path / "by-kind.safetensors"
    model_files.save(base, path)
    w.add_model_file(str(path))
    assert "own weights for brightfield images" in w.model_info.text()
    w.modality_combo.setCurrentIndex(w.modality_combo.findData("brightfield"))
    assert "own weights and thresholds for brightfield images" in w.update_detected()
    assert w.postprocess_config() == own_pp
    segment(qtbot, w)
    started = starting_weights(monkeypatch)
    ft.resegment_check.value = False
    ft.name_edit.setText("from-own-weights")
    worker = ft.start()
    assert "Fine-tuning base (its own weights for brightfield images)" in ft.result_label.text()
    from napari_unet_loop.core.train import training_precision

    assert f"on cpu ({training_precision('cpu')}):" in ft.result_label.text()  # what it computes in, as train logs
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
    assert worker is not None and started
    assert all(torch.equal(started[0][k], v) for k, v in own.net.state_dict().items())
    assert not messages["error"]
    child = model_files.load("from-own-weights")
    assert child.card.training["start_weights"] == "brightfield" and child.nets_by_kind == {}


def test_a_fine_tune_on_he_images_trains_the_models_colour_network_for_them(
    qtbot, tmp_path, setup, messages, monkeypatch, discs
):
    """A grey model with a colour network for H&E: the dock fine-tunes it on R, G and B, as a model or as the kind's."""
    from dataclasses import replace

    import torch

    from napari_unet_loop.core.unet import UNetConfig

    viewer, w, ft = setup
    tiny = UNetConfig(depth=2, base_width=4)
    base = model_files.new_model(tiny, name="base", modality="auto")
    colour = model_files.new_model(replace(tiny, in_channels=3), seed=3, modality="none")
    kind_weights.add_kind_weights(base, "he", colour)
    path = tmp_path / "colour-he.safetensors"
    model_files.save(base, path)
    w.add_model_file(str(path))
    nuclei = (np.tile(discs[1], (2, 2)) > 0)[..., None]
    noise = np.random.default_rng(0).normal(0, 6, (*nuclei.shape[:2], 3))
    stained = np.clip(np.array([235, 190, 215]) * ~nuclei + np.array([90, 50, 140]) * nuclei + noise, 0, 255)
    stained = stained.astype(np.uint8)
    viewer.add_image(stained, name="stained", rgb=True)
    assert "own weights and thresholds for H&E / stained tissue images (they read the image's R, G and B)" in (
        w.update_detected()
    )
    segment(qtbot, w)
    assert not messages["error"]
    samples = ft.build_samples(w.current_model())[0]
    assert {(s.kind, s.image.shape[0]) for s in samples} == {("he", 3)}  # R, G and B, as they reach the net
    started = starting_weights(monkeypatch)
    ft.resegment_check.value = False
    ft.name_edit.setText("he-colour-child")
    finetune(qtbot, ft)
    assert not messages["error"]
    assert all(torch.equal(started[0][k], v) for k, v in colour.net.state_dict().items())
    child = model_files.load("he-colour-child")
    assert child.card.architecture.in_channels == 3 and child.card.modality == "none" and child.nets_by_kind == {}
    assert child.card.training["start_weights"] == "he"
    # only for images of this kind: the trained colour network joins the model again
    w.add_model_file(str(path))  # selects it again
    ft.name_edit.setText("colour-he-again")
    ft.kind_only_check.value = True
    finetune(qtbot, ft)
    assert not messages["error"]
    joined = model_files.load("colour-he-again")
    assert joined.input_channels("he") == 3 and joined.input_channels("fluorescence") == 1


def test_weights_for_this_kind_only_join_the_model_and_leave_its_other_weights(
    qtbot, tmp_path, setup, messages, monkeypatch
):
    """*Only for images of this kind*: the new model is the parent plus weights of its own for the kind."""
    import torch

    from napari_unet_loop.core.unet import UNetConfig

    viewer, w, ft = setup
    base = model_files.new_model(UNetConfig(depth=2, base_width=4), name="base", modality="auto", seed=5)
    base.card.diameter = 12.0
    base.card.metrics = {"test": {"ap50": 0.93}}
    segmented_with(qtbot, tmp_path, w, base, monkeypatch)
    ft.name_edit.setText("base-own-fluo")
    ft.kind_only_check.value = True
    assert {s.kind for s in ft.build_samples(w.current_model())[0]} == {"fluorescence"}  # as they reach the net
    worker = ft.start()
    assert worker is not None, messages["error"]
    assert "for fluorescence images only" in ft.result_label.text()
    assert ft._run.scaled.diameter == 12.0  # the model's object size, not the labels' measure
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
    assert not messages["error"]
    assert "answer for fluorescence images only; other images keep base's" in ft.result_label.text()
    joined = model_files.load("base-own-fluo")
    assert joined.card.parent == "base" and joined.card.modality == "auto"
    assert set(joined.card.weights_by_kind) == {"fluorescence"} and "fluorescence" in joined.card.postprocess_by_kind
    assert joined.card.diameter == 12.0 and joined.card.default_diameter is None
    general = joined.net.state_dict()
    assert all(torch.equal(general[k], v) for k, v in base.net.state_dict().items())  # the others keep base's
    own = joined.nets_by_kind["fluorescence"].state_dict()
    assert not all(torch.equal(own[k], v) for k, v in base.net.state_dict().items())  # trained
    assert w.model_combo.currentText() == "base-own-fluo"  # selected
    # the base's scores are not the joined model's: the model text gives the kind's own validation score
    assert joined.card.metrics == {}
    ap50 = joined.card.weights_by_kind["fluorescence"]["metrics"]["validation"]["ap50"]
    assert f"own weights for fluorescence images (AP@0.5 {ap50:.2f}, validation)" in w.model_info.text()
    assert "0.93" not in w.model_info.text()


def test_a_fine_tune_into_a_model_of_its_own_says_which_weights_it_leaves_behind(
    qtbot, tmp_path, setup, messages, monkeypatch
):
    """Fluorescence images, a model with its own weights for H&E: the child has one network, and it says so."""
    from napari_unet_loop.core.unet import UNetConfig

    viewer, w, ft = setup
    base = model_files.new_model(UNetConfig(depth=2, base_width=4), name="base", modality="auto", seed=5)
    kind_weights.add_kind_weights(
        base, "brightfield", model_files.new_model(UNetConfig(depth=2, base_width=4), modality="auto")
    )
    segmented_with(qtbot, tmp_path, w, base, monkeypatch)
    ft.name_edit.setText("base-ft")
    worker = ft.start()
    assert worker is not None, messages["error"]
    said = ft.result_label.text()
    assert "The new model is one network: base's own weights for brightfield images stay in base" in said
    assert "('Only for images of this kind' keeps them)" in said and "of the images trained on" not in said
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
    assert model_files.load("base-ft").card.weights_by_kind == {}
    ft.kind_only_check.value = True  # weights for this kind inside a copy: nothing is left behind
    ft.name_edit.setText("base-own")
    assert ft.start() is not None
    assert "one network" not in ft.result_label.text()
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)


def test_weights_for_this_kind_only_are_refused_for_a_model_that_does_not_detect_kinds(qtbot, setup, messages):
    viewer, w, ft = setup  # the tiny model takes images as they are (imaging "none")
    segment(qtbot, w)
    ft.kind_only_check.value = True
    assert ft.start() is None
    assert "does not detect each image's kind" in messages["error"][-1]
    assert "Not started" in ft.result_label.text()
    ft.start_combo.value = "scratch"
    assert ft.start() is None
    assert "adds weights to a trained model" in messages["error"][-1]


def test_fine_tune_report_says_what_the_score_rests_on(qtbot, setup, messages, monkeypatch):
    viewer, w, ft = setup
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.1, 0.5, n_true=4)
    finetune(qtbot, ft)
    text = ft.result_label.text()
    assert "on 4 validation object(s)" in text and "too few to tell" in text
    assert "AP@0.5 0.100 -> 0.500" in text


def test_dock_finetune_equals_train_from_for_the_same_seed(qtbot, tmp_path, setup, messages):
    """The dock's Fine-tune and ``train --from`` run one policy: same data in, same model out."""
    import imageio.v3 as iio
    import tifffile
    import torch

    from napari_unet_loop.cli import main
    from napari_unet_loop.core.unet import UNetConfig

    viewer, w, ft = setup
    parent = model_files.new_model(UNetConfig(depth=2, base_width=4), name="sized", seed=1, diameter=10.0)
    path = model_files.save(parent, tmp_path / "sized.safetensors")
    w.add_model_file(path)
    assert w.model_combo.currentText() == "sized"
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    yy, xx = np.mgrid[:160, :160]
    for i in range(2):
        lab = np.zeros((160, 160), np.uint16)
        for k, (cy, cx) in enumerate([(35, 35), (40, 120), (120, 50), (125, 125)]):
            lab[(yy - cy - 3 * i) ** 2 + (xx - cx) ** 2 <= 14**2] = k + 1  # 28 px across: rescaled 0.36x
        iio.imwrite(images / f"c{i}.png", (lab > 0).astype(np.uint8) * 180 + 30)
        tifffile.imwrite(labels / f"c{i}.tif", lab)
    assert ft.add_folders(images, labels)
    ft.resegment_check.value = False
    ft.name_edit.setText("dock-ft")
    finetune(qtbot, ft)
    dock = ft._rejected if ft._rejected is not None else model_files.load("dock-ft")
    out = tmp_path / "cli.safetensors"
    args = ["train", str(images), str(labels), "--from", str(path), "--out", str(out), "--steps", "3"]
    assert main([*args, "--val-every", "0", "--seed", "0"]) == 0
    cli = model_files.load(out)
    assert dock.card.training["rescaled_by"] == cli.card.training["rescaled_by"] < 0.4
    assert dock.card.default_diameter == cli.card.default_diameter and dock.card.diameter == 10.0
    assert dock.card.postprocess == cli.card.postprocess
    for key, value in cli.net.state_dict().items():
        torch.testing.assert_close(dock.net.state_dict()[key], value, msg=key)


@pytest.mark.parametrize("shown", ["he", "fluorescence"])
def test_dock_finetune_equals_train_from_on_he_images_with_colour_weights(qtbot, tmp_path, setup, messages, shown):
    """On H&E images, a model's colour weights for them: the dock and ``train --from`` train the same colour child.

    Also with a fluorescence image shown in the dock: the run starts from the weights for the kind
    most of the ticked data is, as ``train --from`` does, not from those of the image shown.
    """
    from dataclasses import replace

    import imageio.v3 as iio
    import tifffile
    import torch

    from napari_unet_loop.cli import main
    from napari_unet_loop.core.unet import UNetConfig

    viewer, w, ft = setup
    tiny = UNetConfig(depth=2, base_width=4)
    parent = model_files.new_model(tiny, name="greyhe", seed=1, modality="auto")
    kind_weights.add_kind_weights(parent, "he", model_files.new_model(replace(tiny, in_channels=3), seed=2))
    # objects of 20 px, a network of 10 px whose H&E weights learnt 15-30 px unscaled: both train them as they are
    parent.card.diameter = parent.card.default_diameter = 10.0
    parent.card.weights_by_kind["he"]["native_diameters"] = [15.0, 30.0]
    path = model_files.save(parent, tmp_path / "greyhe.safetensors")
    w.add_model_file(path)
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    yy, xx = np.mgrid[:128, :128]
    rng = np.random.default_rng(0)
    for i in range(2):
        lab = np.zeros((128, 128), np.uint16)
        for k, (cy, cx) in enumerate([(30, 30), (34, 96), (96, 40), (100, 100)]):
            lab[(yy - cy - 3 * i) ** 2 + (xx - cx) ** 2 <= 10**2] = k + 1
        nuclei = (lab > 0)[..., None]
        rgb = np.array([235, 190, 215]) * ~nuclei + np.array([90, 50, 140]) * nuclei + rng.normal(0, 6, (128, 128, 3))
        iio.imwrite(images / f"s{i}.png", np.clip(rgb, 0, 255).astype(np.uint8))
        tifffile.imwrite(labels / f"s{i}.tif", lab)
    if shown == "he":
        viewer.add_image(iio.imread(images / "s0.png"), name="s0", rgb=True)
        assert "H&E" in w.update_detected()  # what the dock's detection timer does
    else:  # a dark image of bright nuclei, not among the training data
        viewer.add_image((np.hypot(yy - 64, xx - 64) < 20) * 200.0 + 10, name="grey")
        assert "fluorescence" in w.update_detected()
    assert ft.add_folders(images, labels)
    ft.resegment_check.value = False
    ft.name_edit.setText("dock-he")
    if shown != "he":  # weights for the kind shown, trained on another kind's images: refused, with the reason
        ft.kind_only_check.value = True
        assert ft.start() is None
        assert "trains weights for the kind of the image shown (fluorescence)" in messages["error"][-1]
        assert "most of the ticked images are H&E / stained tissue images" in messages["error"][-1]
        ft.kind_only_check.value = False
        messages["error"].clear()
    if shown != "he":  # the dock's thresholds are the fluorescence image's, edited: not the run's
        w.fg_spin.value = 0.61
    assert ft.start() is not None
    # Train: Automatic: the model's own H&E weights train their last layer only
    assert ft._run.config.head_only and "last layer (chosen automatically" in ft.result_label.text()
    ft.freeze_check.value = True  # the expanding path asked for: automatic layers train it
    assert not ft.config(True, own_weights=True).head_only and ft.config(True, own_weights=True).freeze_encoder
    ft.freeze_check.value = False
    assert ft._run.pp == (parent.for_kind("he").card.postprocess if shown != "he" else w.postprocess_config())
    told = "starting from its weights and thresholds for H&E / stained tissue images (most of the ticked images"
    assert (told in ft.result_label.text()) == (shown != "he"), ft.result_label.text()
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
    assert not messages["error"]
    dock = ft._rejected if ft._rejected is not None else model_files.load("dock-he")
    out = tmp_path / "cli.safetensors"
    args = ["train", str(images), str(labels), "--from", str(path), "--out", str(out), "--steps", "3"]
    assert main([*args, "--val-every", "0", "--seed", "0"]) == 0
    cli = model_files.load(out)
    assert dock.card.architecture.in_channels == cli.card.architecture.in_channels == 3
    assert dock.card.training["start_weights"] == cli.card.training["start_weights"] == "he"
    assert dock.card.postprocess == cli.card.postprocess
    assert dock.card.native_diameters == cli.card.native_diameters == (15.0, 30.0)
    assert dock.card.training["rescaled_by"] == cli.card.training["rescaled_by"] == 1.0
    assert dock.card.training["config"]["head_only"] is cli.card.training["config"]["head_only"] is True
    for key, value in cli.net.state_dict().items():
        torch.testing.assert_close(dock.net.state_dict()[key], value, msg=key)
    if shown == "he":  # Train: Every layer, as train --layers all
        ft.layers_combo.value = "all"
        ft.name_edit.setText("dock-he-all")
        w.model_combo.setCurrentText("greyhe")  # from the same parent again, not from the child just made
        assert ft.start() is not None and not ft._run.config.head_only
        assert "only the network's last layer" not in ft.result_label.text()
        qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
        assert main([*args, "--val-every", "0", "--seed", "0", "--layers", "all", "--overwrite"]) == 0
        whole = ft._rejected if ft._rejected is not None else model_files.load("dock-he-all")
        assert whole.card.training["config"]["head_only"] is False
        for key, value in model_files.load(out).net.state_dict().items():
            torch.testing.assert_close(whole.net.state_dict()[key], value, msg=key)


def test_frames_in_doubt_train_alike_and_the_child_reads_them_so(qtbot, tmp_path, setup, messages, phase_like):
    """Phase-contrast-like frames on either side of the fluorescence/brightfield line: one kind for all."""
    from napari_unet_loop.core.unet import UNetConfig

    viewer, w, ft = setup
    model = model_files.new_model(UNetConfig(depth=2, base_width=4), name="detects", modality="auto")
    path = tmp_path / "detects.safetensors"
    model_files.save(model, path)
    w.add_model_file(str(path))
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    for n, background in enumerate((0.33, 0.41)):
        image, labels = phase_like(background, seed=n)
        viewer.add_image(np.tile(image, (2, 2)), name=f"frame{n}")
        viewer.add_labels(np.tile(labels, (2, 2)), name=f"frame{n} labels")
    ft.reset_choices()
    assert len(ft.chosen_pairs()) == 2
    samples, info = ft.build_samples(w.current_model())
    assert [s.kind for s in samples] == ["brightfield", "brightfield"]  # not one each side of the line
    assert info["kind_in_doubt"] == "brightfield"
    ft.resegment_check.value = False
    ft.name_edit.setText("phase")
    worker = ft.start()
    assert "2 of 2 training images lie between fluorescence and brightfield" in ft.result_label.text()
    qtbot.waitUntil(lambda: ft._worker is None, timeout=TIMEOUT)
    assert worker is not None and not messages["error"]
    assert model_files.load("phase").card.kind_in_doubt == "brightfield"
    w.select_model("phase")
    info = w.model_info.text()
    assert "grey images in between read as brightfield" in info and ", fine-tuned in napari. AP@0.5" in info
    w.image_combo.setCurrentIndex(w.image_combo.findText("frame0"))  # 0.33: fluorescence by the line alone
    assert "this model reads it as brightfield" in w.update_detected()


@pytest.mark.parametrize("fine_tune", [True, False])
def test_the_elastic_check_box_changes_the_presets_augmentation_and_nothing_else(setup, fine_tune):
    """The dock's settings are ``train``'s preset with the check boxes applied (blur, stain mix kept)."""
    from dataclasses import replace

    from napari_unet_loop.core.finetune import preset

    _, _, ft = setup
    own = preset(fine_tune).augment
    ft.elastic_check.value = True
    assert ft.config(fine_tune).augment == own
    ft.elastic_check.value = False
    assert ft.config(fine_tune).augment == replace(own, elastic_sigma=0.0)


def test_retuned_thresholds_are_checked_on_the_whole_training_images(qtbot, setup, messages, monkeypatch):
    """After a fine-tune the thresholds a search finds are checked on the images trained on, stripes and all."""
    from napari_unet_loop.gui import _train_worker

    viewer, w, ft = setup
    segment(qtbot, w)
    fake_validation(monkeypatch, 0.1, 0.5)
    ft.resegment_check.value = False
    seen, real = [], _train_worker.retune

    def spy(net, val, *args, **kwargs):
        seen.append((val, args[-1]))
        return real(net, val, *args, **kwargs)

    monkeypatch.setattr(_train_worker, "retune", spy)
    finetune(qtbot, ft)
    ((val, whole),) = seen
    ((v,), (s,)) = val, whole
    assert s.labels.shape == viewer.layers["cells labels"].data.shape  # the image whole, at the network's scale
    assert s.ignore is None or not s.ignore.any()
    assert (s.labels > 0).sum() > (v.labels > 0).sum() > 0  # not the validation stripe alone
