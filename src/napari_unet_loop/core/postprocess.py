"""Network outputs -> instance labels, by a seeded watershed.

The network gives, per pixel, probabilities of background / interior / boundary
and a normalised distance to the object border (1 at object centres). Pixels with
foreground probability above ``fg_threshold`` form the mask; connected regions
where the distance exceeds ``seed_threshold`` are the seeds (one per object);
a watershed on the negated distance grows the seeds to the mask, so touching
objects split where the distance dips. Foreground regions without a seed become
objects of their own, and objects smaller than ``min_size`` pixels are dropped.

This runs without the network: changing the thresholds only re-runs this step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed

from .config import Settings


@dataclass(frozen=True)
class PostprocessConfig(Settings):
    """Thresholds of the instance post-processing.

    Parameters
    ----------
    fg_threshold : float
        Foreground probability above which a pixel belongs to an object.
    seed_threshold : float
        Normalised distance above which a pixel seeds an object; higher splits less.
    min_size : int
        Objects with fewer pixels are removed.
    dist_sigma : float
        Gaussian smoothing (pixels) of the distance map before seeding; damps
        spurious splits of large objects (0: none).
    """

    _what = "post-processing"

    fg_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_size: int = 8
    dist_sigma: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.fg_threshold < 1 or not 0 < self.seed_threshold < 1:
            raise ValueError("thresholds must lie strictly between 0 and 1")
        if self.min_size < 0:
            raise ValueError("min_size must be >= 0")
        if self.dist_sigma < 0:
            raise ValueError("dist_sigma must be >= 0")


@dataclass(frozen=True)
class Tuned:
    """What a threshold search found, and the evidence to judge it by (what :func:`tune` returns).

    Attributes
    ----------
    config : PostprocessConfig
        The thresholds found: the best pooled AP@0.5, then, among those within one standard error
        of it, the best SEG.
    ap50, seg : float
        Pooled AP@0.5 and SEG (mean IoU of the true objects, CTC) with ``config``.
    start_ap50, start_seg : float
        The same with the starting thresholds.
    seg_gain_se : float
        One standard error of the SEG gain over the start, from the per-object differences of the
        same objects (paired); ``inf`` with fewer than two objects.
    n_objects : int
        True objects scored.
    by_ap50 : PostprocessConfig
        What the search by AP@0.5 alone found, before SEG chose within its noise.
    evaluated : int
        Settings scored.
    reach : PostprocessConfig or None
        The starting thresholds with only the foreground threshold moved, to the best SEG that
        keeps the start's AP@0.5: the masks' reach changed, the objects found not searched.
    reach_seg, reach_seg_se : float
        Its SEG, and one standard error of its SEG gain over the start (paired, as ``seg_gain_se``).
    """

    config: PostprocessConfig
    ap50: float
    seg: float
    start_ap50: float
    start_seg: float
    seg_gain_se: float
    n_objects: int
    by_ap50: PostprocessConfig
    evaluated: int
    reach: PostprocessConfig | None = None
    reach_seg: float = math.nan
    reach_seg_se: float = math.inf


def _object_seg(true: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None, ids: np.ndarray) -> np.ndarray:
    """Per true object, its CTC SEG score (IoU with the predicted object covering over half of it, else 0).

    The same objects whatever the prediction: ``ids``, those that scores count
    (:func:`~napari_unet_loop.core.metrics.scored_ids`), in order. One that the scores leave out
    with its match (a match lying mostly in ``ignore``,
    :func:`~napari_unet_loop.core.metrics.drop_ignored`) is NaN: the arrays of two settings then
    still pair object by object (:func:`paired_gain_se`).
    """
    from .metrics import drop_ignored, overlap

    if ignore is not None and ignore.any():
        true, pred = drop_ignored(true, pred, ignore)
    ti, _, inter, iou, area_t, _ = overlap(true, pred)
    scored = np.zeros(len(area_t))
    covers = inter * 2 > area_t[ti]
    scored[ti[covers]] = iou[covers]
    out = np.full(ids.size, np.nan)
    out[np.searchsorted(ids, np.unique(true[true != 0]))] = scored
    return out


# the values :func:`tune` tries for each setting (at the network's scale)
FG_THRESHOLDS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)
SEED_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIN_SIZES = (0, 8, 16, 24, 32, 48, 64, 96)
DIST_SIGMAS = (0.0, 1.0, 2.0, 3.0)


class SettingScores:
    """How :func:`tune` scores thresholds on given maps: pooled AP@0.5, SEG and per-object SEG.

    Calling it with a :class:`PostprocessConfig` returns ``(AP@0.5, SEG, per-object SEG)``, the
    true objects scored in order (NaN: one left out with its match, :func:`_object_seg`). Each
    setting is scored once, each seed smoothing computed once.

    Parameters
    ----------
    maps : list of tuple
        ``(foreground probability, distance map)`` per image.
    truths : list of numpy.ndarray
        True labels per image.
    ignores : list of numpy.ndarray, optional
        Per image, the unreviewed pixels (objects mostly inside are not scored).
    """

    def __init__(
        self,
        maps: list[tuple[np.ndarray, np.ndarray]],
        truths: list[np.ndarray],
        ignores: list[np.ndarray | None] | None = None,
    ) -> None:
        from .metrics import scored_ids

        self.maps, self.truths = maps, truths
        self.ignores = ignores or [None] * len(truths)
        self._ids = [scored_ids(t, ig) for t, ig in zip(truths, self.ignores)]  # the same under every setting
        self._smoothed: dict[float, list] = {}
        self._cache: dict[PostprocessConfig, tuple[float, float, np.ndarray]] = {}

    @property
    def evaluated(self) -> int:
        """Settings scored so far."""
        return len(self._cache)

    def __call__(self, cfg: PostprocessConfig) -> tuple[float, float, np.ndarray]:
        """Pooled AP@0.5, SEG and per-object SEG of ``cfg`` on the maps."""
        from .metrics import drop_ignored, matching, pool

        if cfg not in self._cache:
            if cfg.dist_sigma not in self._smoothed:
                self._smoothed[cfg.dist_sigma] = [
                    (f, ndi.gaussian_filter(d.astype(np.float32), cfg.dist_sigma) if cfg.dist_sigma else d)
                    for f, d in self.maps
                ]
            plain = PostprocessConfig(cfg.fg_threshold, cfg.seed_threshold, cfg.min_size, 0.0)
            counts, per_object = [], []
            for (f, d), t, ig, ids in zip(self._smoothed[cfg.dist_sigma], self.truths, self.ignores, self._ids):
                pred = instances_from_maps(f, d, plain)
                if ig is not None and ig.any():  # once for both scores (each would leave them out alike)
                    t, pred = drop_ignored(t, pred, ig)
                counts.append(matching(t, pred))
                per_object.append(_object_seg(t, pred, None, ids))
            pooled = pool(counts)
            self._cache[cfg] = (pooled.ap50, pooled.seg, np.concatenate(per_object) if per_object else np.zeros(0))
        return self._cache[cfg]


def paired_gain_se(after: np.ndarray, before: np.ndarray) -> float:
    """One standard error of the mean per-object gain ``after - before``.

    The same objects scored both ways (paired; an object NaN on either side, left out there with
    its match, is not counted); ``inf`` with fewer than two objects.
    """
    diff = after - before
    diff = diff[np.isfinite(diff)]
    return float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else math.inf


def tuning_noise(ap50: float, n_objects: int) -> float:
    """One standard error of an AP@0.5 measured on ``n_objects`` objects: ``sqrt(p (1 - p) / n)``.

    ``p`` is held within [0.1, 0.9], so a near-perfect or near-zero score still has some noise.

    Examples
    --------
    >>> round(tuning_noise(0.5, 100), 3)
    0.05
    """
    if n_objects <= 0:
        return math.inf
    p = min(max(float(ap50), 0.1), 0.9)
    return math.sqrt(p * (1.0 - p) / n_objects)


def tune(
    maps: list[tuple[np.ndarray, np.ndarray]],
    truths: list[np.ndarray],
    start: PostprocessConfig = PostprocessConfig(),
    fg_thresholds=FG_THRESHOLDS,
    seed_thresholds=SEED_THRESHOLDS,
    min_sizes=MIN_SIZES,
    dist_sigmas=DIST_SIGMAS,
    rounds: int = 3,
    ignores: list[np.ndarray | None] | None = None,
) -> Tuned:
    """Choose the thresholds that maximise pooled AP@0.5 on annotated images, then their SEG.

    Coordinate ascent from two starts: each setting in turn is set to its best value
    with the others fixed, for a few rounds (well under a tenth of a full grid search).
    AP@0.5 counts objects found; many settings score alike on it, and they differ in how far
    each mask reaches. So from the best by AP@0.5 a second ascent maximises SEG (mean IoU of
    the true objects) among the settings whose AP@0.5 is within one standard error of the best
    on that many objects (:func:`tuning_noise`): masks drawn the size the annotations
    are. One object less costs about ``1 / n`` of AP@0.5, more than that error while
    ``p (1 - p) < 1 / n``: on under 11 objects at a best of 0.9 or more only the best AP@0.5
    qualifies, as it did for every search until 2026-12-06, but at a best of 0.5 only on under 4
    (on 9 the floor lies 0.17 below it: one object fewer or two). On a few dozen, settings that
    find one or two objects fewer qualify, where exact ties are rare.
    Only the post-processing runs (the network outputs are given), so it is quick.

    Parameters
    ----------
    maps : list of tuple
        ``(foreground probability, distance map)`` per image.
    truths : list of numpy.ndarray
        True labels per image.
    start : PostprocessConfig
        Where the search starts (e.g. the model's current thresholds).
    fg_thresholds, seed_thresholds, min_sizes, dist_sigmas : sequences
        Candidate values of each setting.
    rounds : int
        Passes over the settings (stops early when a pass changes nothing).
    ignores : list of numpy.ndarray, optional
        Per image, the unreviewed pixels (objects mostly inside are not scored).

    Returns
    -------
    Tuned
        The thresholds found, their scores and the start's; ``start`` is always scored.
    """
    scores = SettingScores(maps, truths, ignores)
    space = {
        "fg_threshold": fg_thresholds,
        "seed_threshold": seed_thresholds,
        "min_size": min_sizes,
        "dist_sigma": dist_sigmas,
    }

    def ascend(first: PostprocessConfig, key) -> PostprocessConfig:
        best = first
        for _ in range(rounds):
            before = best
            for name, values in space.items():
                candidates = [PostprocessConfig(**{**best.to_dict(), name: v}) for v in values]
                best = max([best, *candidates], key=lambda c: (key(c), c == best))  # ties: stay
            if best == before:
                break
        return best

    def ap50(cfg: PostprocessConfig) -> float:
        return scores(cfg)[0]

    # two starts (the given settings, and smoothed seeds) guard against a poor local optimum; the second
    # keeps the given value of any setting whose candidates leave out its own (a narrowed search stays narrow)
    smoothed = {"fg_threshold": 0.6, "seed_threshold": 0.5, "min_size": 24, "dist_sigma": 2.0}
    second = PostprocessConfig(**{k: v if v in space[k] else getattr(start, k) for k, v in smoothed.items()})
    found = [ascend(first, ap50) for first in dict.fromkeys([start, second])]
    by_ap50 = max(found, key=ap50)
    # the SEG step may give up what the objects cannot tell apart: AP@0.5 within one standard error of
    # the best on that many objects
    best_ap50, _, best_objects = scores(by_ap50)
    floor = best_ap50 - tuning_noise(best_ap50, best_objects.size)

    def seg_keeping_ap50(cfg: PostprocessConfig) -> tuple[bool, float]:
        a, s, _ = scores(cfg)
        return (a >= floor, s if a >= floor else a)

    best = ascend(by_ap50, seg_keeping_ap50)
    (a0, s0, o0), (a1, s1, o1) = scores(start), scores(best)

    # the masks' reach alone: the start with its foreground threshold moved, the start's AP@0.5 kept;
    # no post-processing runs for it: the first ascent from the start scored these settings first
    reach = foreground_reach(scores, start, fg_thresholds)
    _, reach_seg, reach_objects = scores(reach)
    return Tuned(
        best, a1, s1, a0, s0, paired_gain_se(o1, o0), int(o0.size), by_ap50, scores.evaluated,
        reach, reach_seg, paired_gain_se(reach_objects, o0),
    )  # fmt: skip


def foreground_reach(
    scores: SettingScores, start: PostprocessConfig, fg_thresholds: Sequence[float]
) -> PostprocessConfig:
    """The start with only its foreground threshold moved to the best SEG at no loss of the start's AP@0.5.

    The masks drawn further or less far, the objects found not searched (:func:`tune`'s reach, and
    the training images' in :func:`~napari_unet_loop.core.retune.reach_on_training`). The start
    wins ties; among other equals, the first of ``fg_thresholds``.
    """
    a0 = scores(start)[0]
    reaches = [start, *(PostprocessConfig(**{**start.to_dict(), "fg_threshold": v}) for v in fg_thresholds)]
    return max(reaches, key=lambda c: (scores(c)[0] >= a0, scores(c)[1], c == start))


def foreground_probability(probs: np.ndarray) -> np.ndarray:
    """Foreground probability (1 - background) from ``(C, H, W)`` network outputs."""
    return 1.0 - probs[0]


def instances(probs: np.ndarray, config: PostprocessConfig = PostprocessConfig(), n_classes: int = 3) -> np.ndarray:
    """Turn network outputs into instance labels.

    Parameters
    ----------
    probs : numpy.ndarray
        ``(n_classes + 1, H, W)``: class probabilities (background first), then the
        normalised distance map (as :func:`napari_unet_loop.core.predict.predict` returns).
    config : PostprocessConfig
        Thresholds.
    n_classes : int
        Number of class channels before the distance map.

    Returns
    -------
    numpy.ndarray
        ``int32`` labels, 0 background, objects numbered 1..N.
    """
    if probs.ndim != 3 or probs.shape[0] < n_classes + 1:
        raise ValueError(f"expected ({n_classes + 1}, H, W) network outputs, got shape {probs.shape}")
    return instances_from_maps(foreground_probability(probs), probs[n_classes], config)


def instances_from_maps(
    fg_prob: np.ndarray, dist: np.ndarray, config: PostprocessConfig = PostprocessConfig()
) -> np.ndarray:
    """Seeded watershed from a foreground probability and a distance map.

    Parameters
    ----------
    fg_prob : numpy.ndarray
        ``(H, W)`` foreground probability.
    dist : numpy.ndarray
        ``(H, W)`` normalised distance to the object border (1 at centres).
    config : PostprocessConfig
        Thresholds.

    Returns
    -------
    numpy.ndarray
        ``int32`` labels, 0 background, objects numbered 1..N.
    """
    fg = np.asarray(fg_prob) > config.fg_threshold
    dist = np.asarray(dist, dtype=np.float32)
    if config.dist_sigma > 0:
        dist = ndi.gaussian_filter(dist, config.dist_sigma)
    seeds = (dist > config.seed_threshold) & fg
    markers, n = ndi.label(seeds)
    labels = watershed(-dist, markers, mask=fg)
    # foreground regions that hold no seed: keep them as objects of their own
    orphans, n_orphans = ndi.label(fg & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + n, labels)
    if config.min_size > 1:
        sizes = np.bincount(labels.ravel())
        small = sizes < config.min_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
    labels, _, _ = relabel_sequential(labels.astype(np.int32, copy=False))
    return labels.astype(np.int32, copy=False)
