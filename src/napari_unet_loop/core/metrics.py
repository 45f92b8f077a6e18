"""Instance segmentation metrics.

* :func:`matching`: one-to-one matching of predicted and true objects by IoU
  (Hungarian assignment, as StarDist's ``matching``), with TP at IoU >= t,
  ``AP(t) = TP / (TP + FP + FN)``, precision, recall, F1 and panoptic quality.
* CTC SEG: for each true object, the IoU with the predicted object covering more
  than half of it (else 0), averaged over true objects.

* :func:`error_kinds`: what went wrong, object by object: true objects missed, merged
  with a neighbour, split, or found with an outline too far off; predicted objects
  invented where there is none, or extra pieces of a true one.

Counts are returned so results can be pooled over images (:func:`pool`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

THRESHOLDS = (0.5, 0.75)


@dataclass
class MatchCounts:
    """Counts at one IoU threshold, poolable over images.

    Attributes
    ----------
    threshold : float
        The IoU threshold.
    tp, fp, fn : int
        True positives, false positives, false negatives.
    sum_iou : float
        Sum of the IoUs of the true positives (for panoptic quality).
    """

    threshold: float
    tp: int = 0
    fp: int = 0
    fn: int = 0
    sum_iou: float = 0.0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        if other.threshold != self.threshold:
            raise ValueError("cannot pool counts at different thresholds")
        return MatchCounts(
            self.threshold,
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.sum_iou + other.sum_iou,
        )

    @property
    def ap(self) -> float:
        """Average precision as in the DSB2018 and StarDist papers: TP / (TP + FP + FN)."""
        d = self.tp + self.fp + self.fn
        return self.tp / d if d else 1.0

    @property
    def precision(self) -> float:
        """TP / (TP + FP)."""
        d = self.tp + self.fp
        return self.tp / d if d else 1.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN)."""
        d = self.tp + self.fn
        return self.tp / d if d else 1.0

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN)."""
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    @property
    def pq(self) -> float:
        """Panoptic quality: sum of matched IoU / (TP + FP/2 + FN/2)."""
        d = self.tp + 0.5 * self.fp + 0.5 * self.fn
        return self.sum_iou / d if d else 1.0


@dataclass
class SegCounts:
    """CTC SEG accumulator: sum of per-object scores and number of true objects."""

    total: float = 0.0
    n: int = 0

    def __add__(self, other: SegCounts) -> SegCounts:
        return SegCounts(self.total + other.total, self.n + other.n)

    @property
    def seg(self) -> float:
        """Mean SEG over true objects (1.0 when there are none)."""
        return self.total / self.n if self.n else 1.0


def _drop_ignored(labels: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """Remove objects that lie mostly (over half) in the ignored region."""
    ids, inverse = np.unique(labels, return_inverse=True)  # any ids: large, negative or float
    inverse = inverse.reshape(labels.shape)
    total = np.bincount(inverse.ravel(), minlength=ids.size)
    ignored = np.bincount(inverse[ignore].ravel(), minlength=ids.size)
    drop = (ignored * 2 > total) & (ids != 0)
    out = labels.copy()
    out[drop[inverse]] = 0
    return out


def scored_ids(labels: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """The ids of the objects that scores count, sorted: those not mostly (over half) in the unreviewed ``ignore``."""
    kept = labels if ignore is None or not ignore.any() else _drop_ignored(labels, ignore)
    return np.unique(kept[kept != 0])


def drop_ignored(true: np.ndarray, pred: np.ndarray, ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave out, on both sides alike, the true and predicted objects of the unreviewed pixels ``ignore``.

    An object lying mostly (over half) in ``ignore`` is left out, and so is its match on the other
    side (IoU at least 0.5). Judged on each side alone, an object cut by the edge of the reviewed
    region could be left out on one side and kept on the other, its match then counting as invented
    or missed. A partner that does not match stays: a reviewed object swallowed by a prediction
    lying mostly in unreviewed pixels is still missed.

    Returns
    -------
    tuple of numpy.ndarray
        ``(true, pred)`` with those objects set to 0.
    """
    t, p = _drop_ignored(true, ignore), _drop_ignored(pred, ignore)
    t_out, p_out = (true != 0) & (t == 0), (pred != 0) & (p == 0)
    if not (t_out.any() or p_out.any()):
        return t, p
    true, pred = np.asarray(true), np.asarray(pred)
    ti, pi, _, iou, _, _ = overlap(true, pred)  # objects by rank among the ids present: back to the ids
    ti, pi = np.unique(true[true != 0])[ti], np.unique(pred[pred != 0])[pi]
    match = iou >= 0.5
    gone_t, gone_p = np.unique(true[t_out]), np.unique(pred[p_out])
    p_with = pi[match & np.isin(ti, gone_t)]  # predictions matching a true object left out
    t_with = ti[match & np.isin(pi, gone_p)]  # true objects matching a prediction left out
    if p_with.size:
        p = np.where(np.isin(p, p_with), 0, p)
    if t_with.size:
        t = np.where(np.isin(t, t_with), 0, t)
    return t, p


def overlap(true: np.ndarray, pred: np.ndarray):
    """Overlapping pairs of true and predicted objects (sparse, for any object count).

    Returns
    -------
    tuple of numpy.ndarray
        ``(ti, pi, inter, iou, area_t, area_p)``: for every overlapping pair, the
        index of the true object (into ``area_t``), of the predicted object (into
        ``area_p``), their intersection and IoU; then the areas of all true and of
        all predicted objects (objects numbered by their rank among the ids present).
    """
    t = true.ravel()
    p = pred.ravel()
    _, t_idx, area_t = np.unique(t, return_inverse=True, return_counts=True)
    _, p_idx, area_p = np.unique(p, return_inverse=True, return_counts=True)
    # drop the background entry (rank 0) when present
    t_off = 1 if t.size and t.min() == 0 else 0
    p_off = 1 if p.size and p.min() == 0 else 0
    area_t, area_p = area_t[t_off:], area_p[p_off:]
    both = (t > 0) & (p > 0)
    pair = (t_idx[both] - t_off).astype(np.int64) * max(len(area_p), 1) + (p_idx[both] - p_off)
    codes, inter = np.unique(pair, return_counts=True)
    ti, pi = np.divmod(codes, max(len(area_p), 1))
    iou = inter / (area_t[ti] + area_p[pi] - inter)
    return ti, pi, inter, iou, area_t, area_p


def matching(
    true: np.ndarray,
    pred: np.ndarray,
    thresholds: tuple[float, ...] = THRESHOLDS,
    ignore: np.ndarray | None = None,
) -> tuple[dict[float, MatchCounts], SegCounts]:
    """Match predicted to true objects and count TP, FP, FN at each IoU threshold.

    The matching is one-to-one and maximises the summed IoU (Hungarian algorithm)
    among the pairs at or above each threshold.

    Parameters
    ----------
    true, pred : numpy.ndarray
        Instance label images of the same shape.
    thresholds : tuple of float
        IoU thresholds.
    ignore : numpy.ndarray, optional
        Boolean mask of unreviewed pixels; objects lying mostly inside it are left out, on both
        sides alike (:func:`drop_ignored`).

    Returns
    -------
    tuple
        ``({threshold: MatchCounts}, SegCounts)``.
    """
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: true {true.shape}, predicted {pred.shape}")
    if ignore is not None and ignore.any():
        true, pred = drop_ignored(true, pred, ignore)
    ti, pi, inter, iou, area_t, area_p = overlap(true, pred)
    nt, np_ = len(area_t), len(area_p)
    out = {}
    for t in thresholds:
        keep = iou >= t
        a, b, v = ti[keep], pi[keep], iou[keep]
        if len(np.unique(a)) == len(a) and len(np.unique(b)) == len(b):
            tp, s = len(a), float(v.sum())  # already one-to-one (always so for t > 0.5)
        else:
            ua, ra = np.unique(a, return_inverse=True)
            ub, rb = np.unique(b, return_inverse=True)
            m = np.zeros((len(ua), len(ub)))
            m[ra, rb] = v
            rows, cols = linear_sum_assignment(-m)
            hit = m[rows, cols] >= t
            tp, s = int(hit.sum()), float(m[rows, cols][hit].sum())
        out[t] = MatchCounts(t, tp, np_ - tp, nt - tp, s)
    # CTC SEG: the predicted object covering more than half of each true object
    covers = inter * 2 > area_t[ti]
    seg = SegCounts(float(iou[covers].sum()), nt)
    return out, seg


@dataclass
class Scores:
    """Summary scores of a set of images (pooled counts)."""

    n_images: int
    ap50: float
    ap75: float
    f1_50: float
    precision_50: float
    recall_50: float
    pq: float
    seg: float
    n_true: int
    n_pred: int

    def to_dict(self) -> dict:
        """Return the scores as a dict."""
        return asdict(self)


def _planes(true: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None):
    """``(true, predicted, ignored)`` 2D planes (the last two axes) of stacks of one shape (``None``: no ignore)."""
    n = true.size // max(true.shape[-2] * true.shape[-1], 1)
    ignores = [None] * n if ignore is None else np.asarray(ignore).reshape(-1, *true.shape[-2:])
    return zip(true.reshape(-1, *true.shape[-2:]), pred.reshape(-1, *pred.shape[-2:]), ignores)


def matching_planes(
    true: np.ndarray,
    pred: np.ndarray,
    thresholds: tuple[float, ...] = (0.5, 0.75),
    ignore: np.ndarray | None = None,
) -> tuple[dict[float, MatchCounts], SegCounts]:
    """:func:`matching` of a stack plane by plane (the last two axes), counts summed.

    Objects are numbered per plane in a segmented stack, so the same id in two planes
    is two objects: matching the stack as one volume would merge them. ``ignore`` (the
    shape of ``true``) is split into planes alike.
    """
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: true {true.shape}, predicted {pred.shape}")
    if true.ndim <= 2:
        return matching(true, pred, thresholds, ignore=ignore)
    per_plane = [matching(t, p, thresholds, ignore=ig) for t, p, ig in _planes(true, pred, ignore)]
    counts = {t: sum((c[t] for c, _ in per_plane[1:]), per_plane[0][0][t]) for t in thresholds}
    seg = sum((s for _, s in per_plane[1:]), per_plane[0][1])
    return counts, seg


def pool(results: list[tuple[dict[float, MatchCounts], SegCounts]]) -> Scores:
    """Pool per-image counts into :class:`Scores` (sums of TP, FP, FN over images)."""
    m50 = MatchCounts(0.5)
    m75 = MatchCounts(0.75)
    seg = SegCounts()
    for counts, s in results:
        m50 = m50 + counts[0.5]
        m75 = m75 + counts[0.75]
        seg = seg + s
    return Scores(
        n_images=len(results),
        ap50=m50.ap,
        ap75=m75.ap,
        f1_50=m50.f1,
        precision_50=m50.precision,
        recall_50=m50.recall,
        pq=m50.pq,
        seg=seg.seg,
        n_true=m50.tp + m50.fn,
        n_pred=m50.tp + m50.fp,
    )


@dataclass
class ErrorCounts:
    """What went wrong, object by object, at IoU 0.5; poolable over images (``+``).

    Every true object is one of ``found`` (a prediction with IoU >= 0.5), ``missed`` (less
    than half of it inside predicted objects), ``split`` (two or more predictions each hold
    at least a fifth of it), ``merged`` (the prediction holding most of it also holds most of
    another true object) or ``outline`` (found, but the outline is too far off: IoU < 0.5),
    tested in that order. Every prediction matched to none is ``invented`` (less than half
    of it inside true objects, and holding no more than half of any) or a ``piece`` (of a
    split, merged or badly outlined object).

    Attributes
    ----------
    found, missed, split, merged, outline : int
        True objects, by what happened to them.
    invented, pieces : int
        Unmatched predicted objects, by where they lie.
    """

    found: int = 0
    missed: int = 0
    split: int = 0
    merged: int = 0
    outline: int = 0
    invented: int = 0
    pieces: int = 0

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def to_dict(self) -> dict:
        """Return the counts as a dict."""
        return asdict(self)

    def summary(self) -> str:
        """One line: ``"12 missed, 30 merged, 4 split, 9 outline off; 20 invented, 35 extra pieces"``."""
        return (
            f"{self.missed} missed, {self.merged} merged, {self.split} split, {self.outline} outline off; "
            f"{self.invented} invented, {self.pieces} extra pieces"
        )


def error_kinds(true: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> ErrorCounts:
    """Sort a segmentation's errors by kind (see :class:`ErrorCounts`).

    Parameters
    ----------
    true, pred : numpy.ndarray
        Instance label images of the same shape; a stack (more than two axes) is sorted
        plane by plane, as :func:`matching_planes` scores it.
    ignore : numpy.ndarray, optional
        Boolean mask of unreviewed pixels; true and predicted objects mostly inside it are left
        out, as :func:`matching` leaves them out.

    Returns
    -------
    ErrorCounts
        The counts.
    """
    true, pred = np.asarray(true), np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: true {true.shape}, predicted {pred.shape}")
    if true.ndim > 2:
        return sum((error_kinds(t, p, ig) for t, p, ig in _planes(true, pred, ignore)), ErrorCounts())
    if ignore is not None and ignore.any():
        true, pred = drop_ignored(true, pred, ignore)
    ti, pi, inter, iou, area_t, area_p = overlap(true, pred)
    nt, np_ = len(area_t), len(area_p)
    good = iou >= 0.5
    found = np.zeros(nt, bool)
    found[ti[good]] = True
    matched = np.zeros(np_, bool)
    matched[pi[good]] = True
    share = inter / area_t[ti]  # of each true object, the part in each prediction
    covered = np.bincount(ti, share, minlength=nt)
    pieces = np.bincount(ti[share >= 0.2], minlength=nt)
    most = np.bincount(pi[share > 0.5], minlength=np_)  # true objects each prediction holds most of
    # the prediction holding most of each true object: the last of its pairs sorted by intersection
    order = np.lexsort((inter, ti))
    last = np.r_[ti[order][1:] != ti[order][:-1], True] if ti.size else np.zeros(0, bool)
    main = np.full(nt, -1)
    main_share = np.zeros(nt)
    main[ti[order][last]] = pi[order][last]
    main_share[ti[order][last]] = share[order][last]
    others = np.zeros(nt, np.int64)  # other true objects held by the prediction holding most of each
    has = main >= 0  # (none without predictions: a plane segmented empty)
    others[has] = most[main[has]] - (main_share[has] > 0.5)
    lost = ~found
    missed = lost & (covered < 0.5)
    split = lost & ~missed & (pieces >= 2)
    merged = lost & ~missed & ~split & (others >= 1)
    inside = np.bincount(pi, inter, minlength=np_) / np.maximum(area_p, 1)
    invented = ~matched & (inside < 0.5) & (most == 0)  # mostly background, and holding no true object
    return ErrorCounts(
        found=int(found.sum()),
        missed=int(missed.sum()),
        split=int(split.sum()),
        merged=int(merged.sum()),
        outline=int((lost & ~missed & ~split & ~merged).sum()),
        invented=int(invented.sum()),
        pieces=int((~matched & ~invented).sum()),
    )


def score(true: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> Scores:
    """Scores of a single image."""
    return pool([matching(true, pred, ignore=ignore)])


@dataclass
class CorrectionAgreement:
    """How a segmentation treats the objects a user corrected (see :func:`correction_agreement`).

    Attributes
    ----------
    n_fixed : int
        Objects of the corrected labels that the user drew or changed.
    n_fixed_found : int
        Of those, how many the segmentation has (one of its objects with IoU > 0.5).
    n_removed : int
        Objects of the original labels the user erased (mostly gone from the corrected labels).
    n_removed_found : int
        Of those, how many the segmentation still has (IoU > 0.5): mistakes it repeats.
    """

    n_fixed: int
    n_fixed_found: int
    n_removed: int
    n_removed_found: int


def _objects(labels: np.ndarray, ids: np.ndarray):
    """``(box, mask)`` of each object of ``labels`` whose id is in ``ids``, without a full-plane pass per object."""
    from scipy import ndimage as ndi

    ids = np.sort(np.asarray(ids))
    if ids.size == 0:
        return []
    sel = np.isin(labels, ids)
    index = np.zeros(labels.shape, np.int32)
    index[sel] = np.searchsorted(ids, labels[sel]) + 1
    return [(box, index[box] == k + 1) for k, box in enumerate(ndi.find_objects(index)) if box is not None]


def _found(box, obj: np.ndarray, pred: np.ndarray, pred_area: dict[int, int]) -> bool:
    """Whether an object (mask within ``box``) has a match with IoU > 0.5 in ``pred`` (then the only one)."""
    ids, inter = np.unique(pred[box][obj], return_counts=True)
    area = int(obj.sum())
    for i, n in zip(ids.tolist(), inter.tolist()):
        if i != 0 and n / (area + pred_area[i] - n) > 0.5:
            return True
    return False


def correction_agreement(original: np.ndarray, corrected: np.ndarray, pred: np.ndarray) -> CorrectionAgreement:
    """Score a segmentation on just the objects a user corrected.

    Agreement over a whole image says little after a few corrections: the corrected labels
    started as the old model's output, so the old model agrees with them almost everywhere.
    This counts only what the user changed: objects drawn or reshaped (does ``pred`` have
    them, with IoU > 0.5?) and objects erased (does ``pred`` still have them?).

    Parameters
    ----------
    original : numpy.ndarray
        The labels as the model wrote them.
    corrected : numpy.ndarray
        The labels after the user's corrections.
    pred : numpy.ndarray
        The segmentation to judge (e.g. the old or the new model's), same shape.

    Returns
    -------
    CorrectionAgreement
    """
    original, corrected, pred = (np.asarray(a) for a in (original, corrected, pred))
    if not original.shape == corrected.shape == pred.shape:
        raise ValueError(f"shape mismatch: {original.shape}, {corrected.shape}, {pred.shape}")
    changed = original != corrected
    ids, counts = np.unique(pred, return_counts=True)
    pred_area = dict(zip(ids.tolist(), counts.tolist()))
    touched = np.unique(original[changed])
    # drawn or reshaped: objects with changed pixels, and objects that lost pixels to others
    fixed_ids = np.union1d(np.unique(corrected[changed]), np.intersect1d(touched, np.unique(corrected)))
    fixed = _objects(corrected, fixed_ids[fixed_ids != 0])
    removed = [
        (box, obj)
        for box, obj in _objects(original, touched[touched != 0])
        if (corrected[box][obj] == 0).mean() > 0.5  # mostly erased
    ]
    return CorrectionAgreement(
        len(fixed),
        sum(_found(box, obj, pred, pred_area) for box, obj in fixed),
        len(removed),
        sum(_found(box, obj, pred, pred_area) for box, obj in removed),
    )
