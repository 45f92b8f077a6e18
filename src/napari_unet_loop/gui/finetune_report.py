"""What the Fine-tune section tells the user: the evidence of a run and the re-segmentation report.

Plain text from arrays, no napari layers and no widgets: the section shows what these return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.edits import labelled_region
from ..core.metrics import correction_agreement, score

if TYPE_CHECKING:
    from ..core.finetune import Scaled
    from ..core.model_files import Model
    from ..core.retune import Retuned

NEAR_MARKED = " near the objects you marked"  # the report, when the labels mark only some objects


MIN_VAL_OBJECTS = 20  # fewer validation objects cannot tell a real gain from chance


def evidence_note(n_objects: int | None) -> str:
    """How much a validation score rests on, for the fine-tune report.

    With ``n`` objects, AP@0.5 moves in steps of about ``1 / n``: under
    :data:`MIN_VAL_OBJECTS` a change is as likely chance as progress.

    Returns
    -------
    str
        `` on N validation objects`` plus a warning when they are too few (empty when unknown).
    """
    if n_objects is None:
        return ""
    n = int(n_objects)
    note = f" on {n} validation object(s)"
    if n < MIN_VAL_OBJECTS:
        note += (
            " (too few to tell a real gain from chance: annotate more, or judge by the re-segmented image"
            " and the report on your corrections)"
        )
    return note


def thresholds_note(tuned: Retuned | None) -> str:
    """What the re-tune after a fine-tune changed, for its report (empty when it changed nothing).

    Thresholds kept on the validation tiles were chosen there: their score on those tiles is not a
    gain measured on unseen data, and the note says so. A kept reach (``by_reach``, or chosen on the
    training images: ``by_training``) names the one setting it moved; thresholds turned down on the
    training images, or not checked there to the end (the user stopped the check), say why
    (``Retuned.verdict``).
    """
    if tuned is None:
        return ""
    if tuned.kept and tuned.by_training:
        a, r = tuned.on_training["start"], tuned.on_training["reach"]
        return (
            f" Foreground threshold moved to {r['fg_threshold']:g} (was {tuned.start.fg_threshold:g}): the masks fit "
            f"your annotations of the training images better (SEG {a['seg']:.3f} -> {r['seg']:.3f}; measured on the "
            "images trained on, not an independent measure of a gain)"
            + ("; the thresholds chosen on the validation tiles segmented them worse." if tuned.vetoed else ".")
        )
    if tuned.kept and tuned.by_reach:
        return (
            f" Foreground threshold moved to {tuned.reach.fg_threshold:g} (was {tuned.start.fg_threshold:g}): the "
            f"masks fit the validation tiles' annotations better (SEG {tuned.seg_before:.3f} -> "
            f"{tuned.reach_seg:.3f}; chosen on those tiles, not an independent measure of a gain)."
        )
    if tuned.kept:
        return " Thresholds re-tuned on the same validation tiles (not an independent measure of a gain)."
    if tuned.vetoed or tuned.check_stopped:  # did worse on the images trained on, or not checked on them to the end
        verdict = tuned.verdict()
        return f" {verdict[0].upper()}{verdict[1:]}."
    return ""


def size_note(scaled: Scaled, model: Model) -> str:
    """``; objects 62 px, shown at 0.32x`` when the training images are rescaled."""
    if scaled.diameter is None or scaled.factor == 1.0:
        return ""
    net = model.card.diameter
    return f"; objects {scaled.diameter:.0f} px, shown to the network at {scaled.factor:.2g}x ({net:.0f} px)"


def resegment_report(
    corrected: Any,
    new: Any,
    corrections: Mapping[tuple[int, ...], tuple[np.ndarray, np.ndarray]],
    some: bool = False,
    name: str = "your labels",
) -> str:
    """How well the new model's labels agree with the user's, and how the old model's did.

    Parameters
    ----------
    corrected : array-like
        The user's labels (a layer's data: a plane or a stack of them).
    new : array-like
        The new model's labels of the same image, the same shape.
    corrections : mapping
        ``{plane index: (labels as the plugin wrote them, labels now)}`` for every plane the user
        corrected (``LayerTracker.corrections``; empty: labels drawn from nothing, judged whole).
    some : bool
        The labels mark only some objects: judged near the marked ones, and an erased object is
        not read as "no object here".
    name : str
        What to call the labels when nothing was corrected.

    Returns
    -------
    str
        The report's parts, ``; ``-separated.
    """
    parts = []
    planes = list(corrections) or [()]

    def away(plane) -> np.ndarray | None:
        return ~labelled_region(np.asarray(corrected[plane])) if some else None

    after = [score(np.asarray(corrected[i]), np.asarray(new[i]), away(i)) for i in planes]
    n_true = sum(s.n_true for s in after)
    n_pred = sum(s.n_pred for s in after)
    ap_after = np.average([s.ap50 for s in after], weights=[max(s.n_true, 1) for s in after])
    near = NEAR_MARKED if some else ""
    if corrections:
        # judged on what the user changed: the whole plane started as the old model's output
        new_ag = [correction_agreement(o, c, np.asarray(new[i])) for i, (o, c) in corrections.items()]
        old_ag = [correction_agreement(o, c, o) for o, c in corrections.values()]
        n_fixed = sum(a.n_fixed for a in new_ag)
        n_removed = sum(a.n_removed for a in new_ag)
        if n_fixed:
            parts.append(
                f"of the {n_fixed} object(s) you drew or reshaped, the new model gets "
                f"{sum(a.n_fixed_found for a in new_ag)} right (the old one "
                f"{sum(a.n_fixed_found for a in old_ag)})"
            )
        if n_removed and not some:
            parts.append(
                f"of the {n_removed} object(s) you erased, it still finds "
                f"{sum(a.n_removed_found for a in new_ag)} (the old one {sum(a.n_removed_found for a in old_ag)})"
            )
        parts.append(f"agreement with your labels{near} (AP@0.5) {ap_after:.3f}")
    else:
        parts.append(f"agreement with '{name}'{near} (AP@0.5) {ap_after:.3f}")
    parts.append(f"{n_pred} objects found{near}, {n_true} in your labels")
    return "; ".join(parts)
