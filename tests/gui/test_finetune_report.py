"""The Fine-tune section's report text (``gui.finetune_report``): plain arrays, no viewer."""

import numpy as np

from napari_unet_loop.gui.finetune_report import MIN_VAL_OBJECTS, evidence_note, resegment_report, thresholds_note


def test_evidence_note_warns_when_validation_rests_on_few_objects():
    assert evidence_note(None) == ""
    few = evidence_note(3)
    assert "on 3 validation object(s)" in few and "too few to tell" in few
    enough = evidence_note(MIN_VAL_OBJECTS)
    assert "too few" not in enough and f"on {MIN_VAL_OBJECTS} validation" in enough


def test_the_thresholds_note_says_what_the_re_tune_kept_and_on_what():
    """A kept reach names the foreground threshold it moved; a vetoed one says why; a refused one says nothing."""
    from napari_unet_loop.core.postprocess import PostprocessConfig
    from napari_unet_loop.core.retune import Retuned

    start, reach = PostprocessConfig(0.85, 0.5, 24), PostprocessConfig(0.6, 0.5, 24)
    t = Retuned(start, 1.0, 1.0, 0.1, False, 6, found=start, seg_before=0.8, seg_after=0.8, reach=reach,
                reach_seg=0.85, reach_seg_noise=0.01, start=start)  # fmt: skip
    assert thresholds_note(None) == thresholds_note(t) == ""  # nothing kept, nothing turned down
    t.postprocess, t.kept, t.by_reach = reach, True, True
    note = thresholds_note(t)
    assert "Foreground threshold moved to 0.6 (was 0.85)" in note and "SEG 0.800 -> 0.850" in note
    assert "not an independent measure" in note
    t.by_training, t.on_training = True, {"images": 3, "start": {"ap50": 0.9, "seg": 0.8}}  # the training images'
    t.on_training["reach"] = {"fg_threshold": 0.65, "ap50": 0.9, "seg": 0.86, "gain": 0.06, "noise": 0.01}
    assert thresholds_note(t) == (
        " Foreground threshold moved to 0.65 (was 0.85): the masks fit your annotations of the training images "
        "better (SEG 0.800 -> 0.860; measured on the images trained on, not an independent measure of a gain)."
    )
    t.by_training, t.on_training = False, None
    t.by_reach = False  # the search's thresholds
    assert thresholds_note(t).startswith(" Thresholds re-tuned on the same validation tiles")
    t.postprocess, t.kept, t.vetoed, t.by_reach = start, False, True, True
    t.on_training = {"images": 2, "start": {"ap50": 0.9, "seg": 0.8}, "found": {"ap50": 0.8, "seg": 0.7}}
    assert thresholds_note(t) == (
        " Kept the starting thresholds: the starting ones with the foreground threshold at 0.6 (was 0.85; "
        "validation SEG 0.800 -> 0.850) segment the 2 training images worse (AP50 0.900 -> 0.800, SEG 0.800 -> 0.700)."
    )
    t.vetoed, t.check_stopped = False, True  # the user stopped the check: what was not checked is named
    assert thresholds_note(t).startswith(" Kept the starting thresholds: the starting ones with the foreground")
    assert thresholds_note(t).endswith("were not checked on the training images to the end (stopped).")


def _squares(*corners: tuple[int, int], shape=(80, 80), size=12) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(corners, 1):
        labels[y : y + size, x : x + size] = i
    return labels


def test_the_report_judges_the_new_labels_on_what_the_user_changed():
    """Drawn objects the new model gets right, erased ones it still finds, old and new side by side."""
    old = _squares((5, 5), (5, 40), (40, 5))  # the old model's output
    corrected = old.copy()
    corrected[corrected == 3] = 0  # erased: not a cell
    corrected[40:52, 40:52] = 4  # drawn: a cell the old model missed
    new = corrected.copy()  # the new model learnt both
    report = resegment_report(corrected, new, {(): (old, corrected)})
    assert "of the 1 object(s) you drew or reshaped, the new model gets 1 right (the old one 0)" in report
    assert "of the 1 object(s) you erased, it still finds 0 (the old one 1)" in report
    assert "agreement with your labels (AP@0.5) 1.000" in report and "3 objects found, 3 in your labels" in report
    assert "still finds 1" in resegment_report(corrected, old, {(): (old, corrected)})


def test_labels_of_some_objects_are_judged_near_them_and_erasing_says_nothing():
    marked = _squares((5, 5), (5, 60))
    found = _squares((5, 5), (5, 60), (60, 30))  # and one far from both: maybe a cell nobody marked
    whole = resegment_report(marked, found, {}, name="cells labels")
    assert "agreement with 'cells labels' (AP@0.5) 0.667" in whole
    near = resegment_report(marked, found, {}, some=True, name="cells labels")
    assert "near the objects you marked (AP@0.5) 1.000" in near and "2 objects found near" in near
    old = _squares((5, 5), (5, 60), (60, 30))
    assert "erased" not in resegment_report(marked, found, {(): (old, marked)}, some=True)


def test_a_stack_is_judged_on_its_corrected_planes():
    plane = _squares((5, 5), (5, 40))
    corrected = np.stack([plane, np.zeros_like(plane), plane])
    new = np.stack([plane, plane, np.zeros_like(plane)])
    assert "(AP@0.5) 1.000" in resegment_report(corrected, new, {(0,): (plane, plane)})
    assert "(AP@0.5) 0.000" in resegment_report(corrected, new, {(2,): (plane, plane)})
    assert "(AP@0.5) 0.500" in resegment_report(corrected, new, {(0,): (plane, plane), (2,): (plane, plane)})
