"""Thresholds: chosen on annotated samples, and after a fine-tune searched again and kept past the noise.

:func:`tune_thresholds` runs the network once per sample (:func:`prediction_maps`) and searches the
post-processing settings on its maps (``tune`` and every threshold choice below use it).

The dock's Fine-tune, ``train`` and ``tune`` share this rule. A threshold search on the few objects
of a fine-tune's validation data finds gains that do not carry over to new images, so the
re-tuned thresholds replace the starting ones only when their gain clears a bar: one standard
error of the score on that many objects (:func:`tuning_noise`), raised by how well the starting
model already did there (docs/model.md, *Fine-tuning on new data*).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .postprocess import FG_THRESHOLDS, SettingScores, foreground_reach, paired_gain_se, tune, tuning_noise
from .sampling import Sample, reviewed_box

if TYPE_CHECKING:  # torch and the network load with the first prediction, not with this module
    import torch

    from .postprocess import PostprocessConfig, Tuned
    from .unet import UNet

# the veto segments at most this many training images (spread over them): one prediction each
VETO_IMAGES = 8
# around the reviewed pixels of a training image, the context the veto's prediction keeps (px)
VETO_MARGIN = 64


@dataclass
class Retuned:
    """Thresholds after a training run (what :func:`retune` returns).

    Attributes
    ----------
    postprocess : PostprocessConfig
        The thresholds to keep: the re-tuned ones when their gain cleared the bar, else the
        :attr:`reach` when its SEG gain cleared :attr:`reach_bar`, unless the training images
        turned them down; else :attr:`on_training_reach` when kept (:attr:`by_training`), else
        the start's.
    before, after : float
        Validation AP@0.5 with the starting and with the re-tuned thresholds.
    noise : float
        One standard error of AP@0.5 on the validation objects.
    kept : bool
        Whether thresholds other than the start's were kept: the re-tuned ones, the reach
        (:attr:`by_reach`) or the training images' foreground threshold (:attr:`by_training`).
    n_objects : int
        Validation objects.
    trust : float
        The starting model's validation AP@0.5 before training (``TrainResult.trust``).
    found : PostprocessConfig or None
        The thresholds the search found, kept or not.
    seg_before, seg_after : float
        Validation SEG (mean IoU of the true objects) with the starting and the re-tuned thresholds.
    seg_noise : float
        One standard error of the SEG gain, from the per-object differences (paired).
    by_ap50 : PostprocessConfig or None
        What the search by AP@0.5 alone found, before SEG chose within its noise.
    reach : PostprocessConfig or None
        The starting thresholds with only the foreground threshold moved to the best SEG at the
        start's AP@0.5 (``Tuned.reach``).
    reach_seg, reach_seg_noise : float
        Its validation SEG, and one standard error of its SEG gain (paired).
    by_reach : bool
        Whether the thresholds the validation data kept (then checked, and kept or vetoed) are
        :attr:`reach`: the search's cleared neither bar, the reach's SEG gain cleared
        :attr:`reach_bar`. It stays set when the veto turned the reach down and
        :attr:`by_training` kept another.
    on_training : dict or None
        What the training images, whole, said (``None`` when they were not segmented:
        no training images, or stopped): ``{"images": n, "start": {"ap50", "seg"}}``, the start's
        pooled scores there; ``"found"``: those of the thresholds kept on the validation data, the
        search's or the reach, when :func:`veto` checked them; ``"reach"``: where the start's stayed,
        the foreground threshold they ask for (:func:`reach_on_training`), ``{"fg_threshold",
        "ap50", "seg", "gain", "noise"}`` (``noise`` ``None`` on one object).
    vetoed : bool
        Whether the thresholds kept on the validation data (the re-tuned ones, or the reach) did
        worse on the training images on both AP@0.5 and SEG, so the start's were kept.
    check_stopped : bool
        Whether the user stopped that check before its end: the start's were kept, unchecked ones not trusted.
    on_training_reach : PostprocessConfig or None
        Where the start's thresholds stayed: the start with only the foreground threshold moved to
        the best SEG on the training images at no loss of AP@0.5 there (:func:`reach_on_training`);
        ``None`` when not looked for, or when the start's own was the best there.
    by_training : bool
        Whether :attr:`on_training_reach` was kept: its paired per-object SEG gain on the training
        images beat its standard error.
    start : PostprocessConfig or None
        The thresholds the run started with.
    """

    postprocess: Any
    before: float
    after: float
    noise: float
    kept: bool
    n_objects: int
    trust: float = 0.0
    found: Any = None
    seg_before: float = math.nan
    seg_after: float = math.nan
    seg_noise: float = math.inf
    by_ap50: Any = None
    reach: Any = None
    reach_seg: float = math.nan
    reach_seg_noise: float = math.inf
    on_training: dict[str, Any] | None = None
    vetoed: bool = False
    start: Any = None
    check_stopped: bool = False
    by_reach: bool = False
    on_training_reach: Any = None
    by_training: bool = False

    @property
    def bar(self) -> float:
        """The AP@0.5 gain the re-tuned thresholds had to beat: ``noise x (1 + trust)``."""
        return self.noise * (1.0 + self.trust)

    @property
    def seg_bar(self) -> float:
        """The SEG gain that keeps them without such an AP@0.5 gain: ``seg_noise x (1 + trust)``."""
        return self.seg_noise * (1.0 + self.trust)

    @property
    def for_ap50(self) -> bool:
        """Whether the AP@0.5 gain clears its bar."""
        return self.after - self.before > self.bar

    @property
    def for_seg(self) -> bool:
        """Whether, at no loss of AP@0.5, the SEG gain clears its bar (masks the size of the annotations)."""
        return self.after >= self.before and self.seg_after - self.seg_before > self.seg_bar

    @property
    def reach_bar(self) -> float:
        """The SEG gain that keeps :attr:`reach`: ``reach_seg_noise``, the noise alone.

        Trust (the start's score on these objects before training) says how well the starting
        thresholds find them, not how far the masks of a network trained since should reach; the
        reach moves only that (docs/model.md, *The masks' reach past the noise*).
        """
        return self.reach_seg_noise

    @property
    def for_reach(self) -> bool:
        """Whether the start with only its foreground threshold moved gains SEG past :attr:`reach_bar`."""
        moved = self.reach is not None and self.start is not None and self.reach != self.start
        return moved and self.reach_seg - self.seg_before > self.reach_bar

    def to_dict(self) -> dict[str, Any]:
        """The record for the model card's ``metrics["threshold_tuning"]``."""

        def r4(x: float) -> float | None:
            return round(float(x), 4) if math.isfinite(x) else None

        return {
            "ap50_before": self.before,
            "ap50_after": self.after,
            "noise": r4(self.noise),  # None (not Infinity, which strict JSON refuses) without objects
            "trust": round(self.trust, 4),
            "bar": r4(self.bar),
            "seg_before": r4(self.seg_before),
            "seg_after": r4(self.seg_after),
            "seg_noise": r4(self.seg_noise),
            "seg_bar": r4(self.seg_bar),
            "validation_objects": self.n_objects,
            "kept": self.kept,
            "found": None if self.found is None else self.found.to_dict(),
            "found_by_ap50": None if self.by_ap50 is None else self.by_ap50.to_dict(),
            "found_for_reach": None if self.reach is None else self.reach.to_dict(),
            "reach_seg": r4(self.reach_seg),
            "reach_seg_noise": r4(self.reach_seg_noise),
            "reach_bar": r4(self.reach_bar),
            "by_reach": self.by_reach,
            "on": "training images" if self.by_training else "validation data",
            "on_training_images": self.on_training,
            "vetoed": self.vetoed,
            "check_stopped": self.check_stopped,
            "found_on_training": None if self.on_training_reach is None else self.on_training_reach.to_dict(),
            "by_training": self.by_training,
        }

    def verdict(self) -> str:
        """One line for the user: which thresholds were kept, and why."""
        if self.by_training and self.kept:  # the stripe's verdict, then what the training images said
            stripe = replace(self, postprocess=self.start, kept=False, by_training=False).verdict()
            turned = "the validation data's choice was turned down: " if self.vetoed else ""
            a, r = self.on_training["start"], self.on_training["reach"]
            n = self.on_training["images"]
            return (
                f"kept the starting thresholds with the foreground threshold at {r['fg_threshold']:g} (was "
                f"{self.start.fg_threshold:g}): on the {n} training image{'s' if n != 1 else ''}, whole, the masks fit "
                f"the annotations better (SEG {a['seg']:.3f} -> {r['seg']:.3f}, per-object gain {r['gain']:+.3f} > "
                f"{r['noise']:.3f}; AP50 {a['ap50']:.3f} -> {r['ap50']:.3f}); "
                + (turned or "the validation data alone kept them: ")
                + stripe.removeprefix("kept the starting thresholds: ")
            )
        if self.by_reach:  # the start's, the foreground threshold moved
            what = (
                f"the starting ones with the foreground threshold at {self.reach.fg_threshold:g} (was "
                f"{self.start.fg_threshold:g}; validation SEG {self.seg_before:.3f} -> {self.reach_seg:.3f})"
            )
        else:
            what = f"the re-tuned ones (validation AP50 {self.before:.3f} -> {self.after:.3f})"
        if self.check_stopped:
            return f"kept the starting thresholds: {what} were not checked on the training images to the end (stopped)"
        if self.vetoed and self.on_training is not None:
            n, a, b = self.on_training["images"], self.on_training["start"], self.on_training["found"]
            return (
                f"kept the starting thresholds: {what} segment the {n} training image{'s' if n != 1 else ''} worse "
                f"(AP50 {a['ap50']:.3f} -> {b['ap50']:.3f}, SEG {a['seg']:.3f} -> {b['seg']:.3f})"
            )
        if self.kept and self.by_reach:
            return (
                f"kept the starting thresholds with the foreground threshold at {self.reach.fg_threshold:g} (was "
                f"{self.start.fg_threshold:g}): the masks fit the annotations better (SEG {self.seg_before:.3f} -> "
                f"{self.reach_seg:.3f}, gain > {self.reach_bar:.3f}), no fewer validation objects found"
            )
        if self.kept and self.for_ap50:
            return f"kept the re-tuned thresholds (gain {self.after - self.before:+.3f} > {self.bar:.3f})"
        if self.kept:
            return (
                f"kept the re-tuned thresholds: the masks fit the annotations better (SEG "
                f"{self.seg_before:.3f} -> {self.seg_after:.3f}, gain > {self.seg_bar:.3f}; AP50 "
                f"{self.before:.3f} -> {self.after:.3f})"
            )
        if self.n_objects == 0:
            return "kept the starting thresholds: no validation object to judge a gain by"
        if self.after < self.before:  # the SEG step gave up objects within the noise; no route keeps a loss
            return (
                f"kept the starting thresholds: the re-tuned ones, chosen for their masks (SEG {self.seg_before:.3f} "
                f"-> {self.seg_after:.3f}), find fewer of the {self.n_objects} validation objects (AP50 "
                f"{self.before:.3f} -> {self.after:.3f})"
            )
        why = f"the gain ({self.after - self.before:+.3f}) is within the noise of {self.n_objects} validation objects"
        if self.trust > 0:
            why += (
                f" (+-{self.noise:.3f}, x{1 + self.trust:.2f} because the starting model already scored "
                f"{self.trust:.2f} on them)"
            )
        else:
            why += f" (+-{self.noise:.3f})"
        return "kept the starting thresholds: " + why


def validation_objects(samples: Sequence[Sample]) -> int:
    """Objects in validation samples (those mostly in reviewed pixels, as validation scores them)."""
    from .metrics import scored_ids

    return sum(int(scored_ids(s.labels, s.ignore).size) for s in samples)


def retune(
    net: Any,
    val: Sequence[Sample],
    device: Any,
    start: Any,
    precision: str = "auto",
    trust: float = 0.0,
    whole: Sequence[Sample] | None = None,
    stop: Any = None,
    **search: Any,
) -> Retuned:
    """Re-tune the thresholds on the validation samples; keep them only when the gain clears the bar.

    The dock's Fine-tune and ``train`` both end with this. On a few validation objects a
    threshold search finds gains that do not carry over to new images, so the re-tuned
    thresholds replace the starting ones only when their validation gain exceeds one standard
    error of AP@0.5 on that many objects (:func:`tuning_noise`) times ``1 + trust``: the starting
    thresholds were chosen on many images, and the better the starting model already did on
    these validation objects, the more of that evidence they carry. On a new kind of image
    (trust near 0) the bar is the noise alone, as the anchor's pull is near 0 there. Measured on
    39 fine-tunes (``benchmarks/bench_retune.py``, docs/model.md): mean held-out AP@0.5 0.678 with
    the noise alone as the bar, 0.682 with this one, 0.685 for an oracle. It turned down the
    thresholds of four one-image fine-tunes of kinds the model knew, all of which would have lost
    (0.009 to 0.105), and none of the EM-cell runs, where re-tuning gained 0.14 to 0.26.

    AP@0.5 counts the objects found, not how far their masks reach: among the settings within
    one standard error of the best AP@0.5 the search takes the best SEG (exact ties only until
    2026-12-06: held-out SEG +0.012, AP@0.5 -0.006 on 26 fine-tunes, docs/model.md), and the
    re-tuned thresholds are also kept when, at no loss of AP@0.5, their SEG gain exceeds one
    standard error of the per-object gain times ``1 + trust`` (:attr:`Retuned.seg_bar`). So a
    user whose masks reach further than the model's gets masks of that size, where AP@0.5 on a
    few objects is already at its top. Measured on 38 fine-tunes (``benchmarks/bench_retune.py``):
    held-out AP@0.5 / SEG 0.699 / 0.703 by AP@0.5 alone, 0.702 / 0.707 this way; on small DIC
    frames 0.709 / 0.759 -> 0.727 / 0.768.

    When the search's thresholds clear neither bar, the start's with only the foreground threshold
    moved (:attr:`Retuned.reach`: no fewer validation objects found, the masks drawn further or
    less far) are kept when their paired SEG gain exceeds its standard error alone
    (:attr:`Retuned.reach_bar`), and the veto checks them as it checks the search's. A network
    fine-tuned for thousands of steps draws masks of the annotations' size at another foreground
    threshold than the start's; on few stripe objects the trust factor kept the start's there.
    Chosen on 10 fine-tunes of 3,000 steps holding out no test image (``bench_cells.py
    --heldout-from choice``'s images; docs/model.md, *The masks' reach past the noise*): held-out
    SEG 0.841 -> 0.849 at the same AP@0.5; it changed 2 outcomes (+0.042 SEG each), and on 12 more
    fine-tunes 2 more (+0.035 and +0.047).

    Where the start's thresholds stay (nothing cleared a bar, or the veto turned it down), the
    training images, whole, choose the foreground threshold (:func:`reach_on_training`): they hold
    every annotated object, where the stripe holds a few.

    Parameters
    ----------
    net : UNet
        The trained network.
    val : sequence of Sample
        Validation samples (non-empty).
    device : torch.device or str
        Where to run the network.
    start : PostprocessConfig
        The thresholds the run started with.
    precision : str
        Autocast precision.
    trust : float
        The starting model's validation AP@0.5 before training (``TrainResult.trust``; 0 to
        judge by the noise alone).
    whole : sequence of Sample, optional
        The annotated training images, whole (their validation stripes included), at the
        network's scale: thresholds that clear the bar are checked on them (:func:`veto`), and
        where the start's stay, the foreground threshold is chosen on them
        (:func:`reach_on_training`). ``None``: neither.
    stop : StopFlag, optional
        Asked between the images of that check: when set, the check ends and the starting
        thresholds are kept (:attr:`Retuned.check_stopped` when others had been kept).
    **search
        Candidate values of the settings searched, instead of the defaults
        (:func:`.postprocess.tune`'s ``fg_thresholds``, ``min_sizes``, ...).

    Returns
    -------
    Retuned
        The thresholds to keep and the evidence.
    """
    t = tune_thresholds(net, val, device, start, precision, **search)
    judged = judge(t, validation_objects(val), start, trust)
    if not whole:
        return judged
    scores = training_scores(net, whole, device, precision, stop)
    if scores is None:  # stopped: thresholds not checked to the end are not trusted
        judged.check_stopped = judged.kept
        judged.postprocess, judged.kept = start, False
        return judged
    if judged.kept:
        judged = veto(judged, *scores)
    if not judged.kept:
        judged = reach_on_training(judged, *scores, search.get("fg_thresholds", FG_THRESHOLDS))
    return judged


def training_scores(
    net: Any, whole: Sequence[Sample], device: Any, precision: str = "auto", stop: Any = None
) -> tuple[Any, int] | None:
    """The trained network's maps on the training images, whole, as thresholds are scored on them.

    At most :data:`VETO_IMAGES` images, spread over them, each only its reviewed part
    (:func:`reviewed_part`): one prediction each, as a new image is segmented.

    Parameters
    ----------
    net : UNet
        The trained network.
    whole : sequence of Sample
        The annotated training images, whole, at the network's scale.
    device : torch.device or str
        Where to run the network.
    precision : str
        Autocast precision.
    stop : StopFlag, optional
        Asked before each image.

    Returns
    -------
    tuple or None
        ``(SettingScores, images)``; ``None`` when ``stop`` was set before the last image.
    """
    picks = np.unique(np.linspace(0, len(whole) - 1, min(len(whole), VETO_IMAGES)).round().astype(int))
    maps: tuple[list, list, list] = ([], [], [])
    for i in picks:  # one image at a time: a stop is heard between them
        if stop is not None and stop.is_set():
            return None
        for have, new in zip(maps, prediction_maps(net, [reviewed_part(whole[i])], device, precision)):
            have.extend(new)
    return SettingScores(*maps), int(picks.size)


def _rounded(ap50: float, seg: float) -> dict[str, float]:
    return {"ap50": round(float(ap50), 4), "seg": round(float(seg), 4)}


def reach_on_training(judged: Retuned, scores: Any, images: int, fg_thresholds: Sequence[float]) -> Retuned:
    """Where the start's thresholds stay, the foreground threshold the training images ask for.

    The validation stripe holds a few objects: their evidence often cannot tell a better
    foreground threshold from noise, or the veto turned down the whole search. The training images,
    whole, hold all the annotated objects. The start with only its foreground threshold moved to
    the best SEG there, at no loss of AP@0.5 there, is kept when its paired per-object SEG gain
    beats its standard error (the same test as :attr:`Retuned.reach_bar`, on more objects). A
    network fine-tuned on a new kind of image draws masks of the annotations' size at another
    foreground threshold than the start's: on phase-contrast and DIC children, held-out SEG peaked at
    0.5-0.7 and was lowest at the start's 0.85. Chosen on 8 fresh fine-tunes of 3,000 steps holding
    out no test image (``bench_cells.py``'s choice images; docs/model.md, *The foreground threshold
    the training images ask for*): held-out SEG 0.847 -> 0.859 at the same AP@0.5; it changed 2
    outcomes (+0.048 and +0.044 SEG) and none for the worse. On 17 one-image fine-tunes of kinds
    the model knows (``bench_retune.py``'s loop turns) it fired 3 times, each for the better: mean
    held-out AP@0.5 / SEG 0.806 / 0.776 -> 0.807 / 0.778.

    Parameters
    ----------
    judged : Retuned
        The verdict so far; only one that keeps the start's thresholds is looked at.
    scores : SettingScores
        The trained network's maps on the training images (:func:`training_scores`).
    images : int
        How many training images they hold.
    fg_thresholds : sequence of float
        The foreground thresholds tried.

    Returns
    -------
    Retuned
        ``judged`` with the evidence (``on_training["reach"]``), and the moved threshold when kept.
    """
    start = judged.start
    if judged.kept or start is None:
        return judged
    a0, s0, o0 = scores(start)
    best = foreground_reach(scores, start, sorted({float(v) for v in fg_thresholds}))  # the lowest of equals
    judged.on_training = judged.on_training or {"images": images, "start": _rounded(a0, s0)}
    if best == start:
        return judged

    a1, s1, o1 = scores(best)
    paired = np.isfinite(o1 - o0)
    if not paired.any():  # no object scored both ways: nothing to measure a gain on
        return judged
    gain, noise = float(np.mean((o1 - o0)[paired])), paired_gain_se(o1, o0)
    judged.on_training_reach = best
    judged.on_training["reach"] = {
        "fg_threshold": best.fg_threshold,
        **_rounded(a1, s1),
        "gain": round(gain, 4),
        "noise": round(noise, 4) if math.isfinite(noise) else None,  # one object: no measure (strict JSON)
    }
    if gain > noise:
        judged.postprocess, judged.kept, judged.by_training = best, True, True
    return judged


def veto(judged: Retuned, scores: Any, images: int) -> Retuned:
    """Turn down re-tuned thresholds that segment the training images worse than the start's.

    A search on the few objects of a validation stripe can clear the bar with thresholds that
    suit those fragments and not the images: on small phase-contrast frames it lowered the seed
    threshold and the minimum size, and held-out AP@0.5 fell from 0.93 to 0.68. The trained
    network segments its training images (at most :data:`VETO_IMAGES`, spread over them) whole,
    as a new image is segmented (only their reviewed part, :func:`reviewed_part`), with both sets
    of thresholds; when the re-tuned ones score lower there on both AP@0.5 and SEG, the starting
    ones are kept. Measured on 38 fine-tunes
    (``benchmarks/bench_retune.py``, docs/model.md): mean held-out AP@0.5 / SEG 0.706 / 0.713 ->
    0.708 / 0.715 at 400 steps and 0.731 / 0.739 -> 0.737 / 0.742 at 900 (it fired once and twice,
    on one-image H&E fine-tunes, each time for the better; no group of cases lost), and on the
    phase-contrast frames (reported, not chosen on) it kept 0.911 / 0.844 where the re-tuned
    thresholds gave 0.847 / 0.807.

    Parameters
    ----------
    judged : Retuned
        The bar's verdict (:func:`judge`); only thresholds it kept are checked.
    scores : SettingScores
        The trained network's maps on the training images (:func:`training_scores`).
    images : int
        How many training images they hold.

    Returns
    -------
    Retuned
        ``judged`` with the evidence (``on_training``), and the starting thresholds when vetoed.
    """
    if not judged.kept or judged.start is None:
        return judged
    (a0, s0, _), (a1, s1, _) = scores(judged.start), scores(judged.postprocess)  # the search's, or the reach
    judged.on_training = {"images": images, "start": _rounded(a0, s0), "found": _rounded(a1, s1)}
    if a1 < a0 and s1 < s0:
        judged.postprocess, judged.kept, judged.vetoed = judged.start, False, True
    return judged


def reviewed_part(sample: Sample, margin: int = VETO_MARGIN) -> Sample:
    """The box of a sample's reviewed pixels, with ``margin`` px of context around it (the whole sample if all).

    A correction of a large image reviews a small part of it: the network need not run on the rest.
    """
    box = reviewed_box(sample) if sample.ignore is not None else None
    if box is None:
        return sample
    (y0, y1, x0, x1), (h, w) = box, sample.labels.shape
    ys = slice(max(0, y0 - margin), min(h, y1 + margin))
    xs = slice(max(0, x0 - margin), min(w, x1 + margin))
    if ys == slice(0, h) and xs == slice(0, w):
        return sample
    return Sample(
        sample.image[:, ys, xs], sample.labels[ys, xs], sample.ignore[ys, xs],
        None if sample.weight is None else sample.weight[ys, xs], sample.name, sample.draw, sample.kind,
    )  # fmt: skip


def judge(t: Any, n: int, start: Any, trust: float = 0.0) -> Retuned:
    """Keep what a threshold search found only when its gain clears the bar (the rule of :func:`retune`).

    Parameters
    ----------
    t : Tuned
        What the search on the validation samples found (:func:`.postprocess.tune`).
    n : int
        Validation objects (:func:`validation_objects`).
    start : PostprocessConfig
        The thresholds the run started with.
    trust : float
        The starting model's validation AP@0.5 before training (NaN: 0).

    Returns
    -------
    Retuned
        The thresholds to keep and the evidence.
    """
    trust = min(max(float(trust), 0.0), 1.0) if math.isfinite(trust) else 0.0
    judged = Retuned(
        start, float(t.start_ap50), float(t.ap50), tuning_noise(t.start_ap50, n), False, n, trust, t.config,
        float(t.start_seg), float(t.seg), t.seg_gain_se, t.by_ap50, t.reach, float(t.reach_seg), t.reach_seg_se,
    )  # fmt: skip
    judged.start = start
    if judged.for_ap50 or judged.for_seg:  # the bars' one formula each: Retuned.bar and Retuned.seg_bar
        judged.postprocess, judged.kept = t.config, True
    elif judged.for_reach:  # the search's cleared neither: the masks' reach alone (Retuned.reach_bar)
        judged.postprocess, judged.kept, judged.by_reach = t.reach, True, True
    return judged


def prediction_maps(
    net: UNet,
    samples: Sequence[Sample],
    device: torch.device | str,
    precision: str = "auto",
    tile: int | None = None,
    tta: bool = False,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray], list[np.ndarray | None]]:
    """The network's maps on annotated samples, with their labels: what thresholds are scored on.

    The network runs once per sample (``tile`` and ``tta`` as in :func:`predict`).

    Returns
    -------
    tuple of list
        ``(maps, truths, ignores)``: per sample the ``(foreground probability, distance map)``, the
        true labels and the unreviewed pixels (``None``: all reviewed), as
        :class:`~napari_unet_loop.core.postprocess.SettingScores` takes them.
    """
    from .predict import predict

    maps, truths, ignores = [], [], []
    n_cls = net.config.n_classes
    for s in samples:
        probs = predict(net, s.image, device=device, precision=precision, tile=tile, tta=tta)
        maps.append((1.0 - probs[0], probs[n_cls]))
        truths.append(s.labels)
        ignores.append(s.ignore)  # scored as in validation: objects mostly unreviewed are left out
    return maps, truths, ignores


def tune_thresholds(
    net: UNet,
    samples: Sequence[Sample],
    device: torch.device | str,
    start: PostprocessConfig,
    precision: str = "auto",
    tile: int | None = None,
    tta: bool = False,
    **search: Any,
) -> Tuned:
    """Choose post-processing thresholds for ``net`` on annotated (validation) samples.

    The network runs once per sample (:func:`prediction_maps`); only the post-processing is
    repeated (:func:`~napari_unet_loop.core.postprocess.tune`, which takes ``search``: the
    candidate values of each setting).

    Returns
    -------
    Tuned
        The thresholds found, pooled AP@0.5 and SEG with them and with ``start``.
    """
    maps, truths, ignores = prediction_maps(net, samples, device, precision, tile, tta)
    return tune(maps, truths, start=start, ignores=ignores, **search)
