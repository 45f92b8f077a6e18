"""Object-level corrections of instance labels, fast on large label images.

Every edit works on one 2D plane and touches only a bounding box: the functions
return an :class:`Edit` (the box and its new content) instead of changing the
array, so the caller can check that nothing changed meanwhile and apply it as one
undoable step (napari's ``Labels.data_setitem`` inside ``block_history``).

Finding an object's box without scanning a 4096 x 4096 plane: start from a
window around a point of the object and double it until the object no longer
touches its border (:func:`object_box`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.measure import regionprops_table
from skimage.segmentation import watershed

from .targets import sequential_ids


class ProofreadError(ValueError):
    """An edit that cannot be done; the message says why (nothing was changed)."""


Box = tuple[slice, slice]


@dataclass
class Edit:
    """New content for a box of a plane.

    Attributes
    ----------
    box : tuple of slice
        Rows and columns of the plane.
    before : numpy.ndarray
        The box's content the edit was computed from.
    after : numpy.ndarray
        The box's new content.
    message : str
        What was done, for the status line.
    """

    box: Box
    before: np.ndarray
    after: np.ndarray
    message: str

    @property
    def changed(self) -> int:
        """Number of pixels the edit changes."""
        return int((self.before != self.after).sum())


def _grow(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    return (
        slice(max(box[0].start - margin, 0), min(box[0].stop + margin, shape[0])),
        slice(max(box[1].start - margin, 0), min(box[1].stop + margin, shape[1])),
    )


def _union(boxes: Sequence[Box]) -> Box:
    return (
        slice(min(b[0].start for b in boxes), max(b[0].stop for b in boxes)),
        slice(min(b[1].start for b in boxes), max(b[1].stop for b in boxes)),
    )


def label_at(labels: np.ndarray, point: Sequence[float]) -> int:
    """The label id at a (row, column) point (0 outside the plane)."""
    r, c = int(round(point[0])), int(round(point[1]))
    if not (0 <= r < labels.shape[0] and 0 <= c < labels.shape[1]):
        return 0
    return int(labels[r, c])


def object_box(labels: np.ndarray, label: int, point: Sequence[float] | None = None, start: int = 64) -> Box:
    """Tight bounding box of ``label``, searched outwards from ``point`` (a pixel of the object).

    Without a point, the whole plane is scanned.

    Raises
    ------
    ProofreadError
        If the object does not exist.
    """
    h, w = labels.shape
    if point is None:
        rows, cols = np.nonzero(labels == label)
        if rows.size == 0:
            raise ProofreadError(f"there is no object {label}")
        return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)
    r, c = int(round(point[0])), int(round(point[1]))
    half = start
    while True:
        win = (slice(max(r - half, 0), min(r + half, h)), slice(max(c - half, 0), min(c + half, w)))
        mask = labels[win] == label
        if not mask.any():
            if win == (slice(0, h), slice(0, w)):
                raise ProofreadError(f"there is no object {label}")
            half *= 2
            continue
        rows = np.flatnonzero(mask.any(1))
        cols = np.flatnonzero(mask.any(0))
        touches = (
            (rows[0] == 0 and win[0].start > 0)
            or (rows[-1] == mask.shape[0] - 1 and win[0].stop < h)
            or (cols[0] == 0 and win[1].start > 0)
            or (cols[-1] == mask.shape[1] - 1 and win[1].stop < w)
        )
        if not touches:
            return (
                slice(win[0].start + int(rows[0]), win[0].start + int(rows[-1]) + 1),
                slice(win[1].start + int(cols[0]), win[1].start + int(cols[-1]) + 1),
            )
        half *= 2


def _object(labels: np.ndarray, point: Sequence[float], what: str) -> tuple[int, Box]:
    label = label_at(labels, point)
    if label == 0:
        raise ProofreadError(f"no object under the cursor to {what} (that is background)")
    return label, object_box(labels, label, point)


def delete(labels: np.ndarray, point: Sequence[float]) -> Edit:
    """Delete the object at ``point``."""
    label, box = _object(labels, point, "delete")
    before = labels[box].copy()
    after = np.where(before == label, 0, before)
    return Edit(box, before, after, f"deleted object {label}")


def merge(labels: np.ndarray, points: Sequence[Sequence[float]]) -> Edit:
    """Merge the objects at ``points`` into the one with the smallest id.

    Raises
    ------
    ProofreadError
        With fewer than two distinct objects.
    """
    found: dict[int, Box] = {}
    for p in points:
        label = label_at(labels, p)
        if label and label not in found:
            found[label] = object_box(labels, label, p)
    if len(found) < 2:
        raise ProofreadError("select at least two different objects to merge")
    box = _union(list(found.values()))
    before = labels[box].copy()
    keep = min(found)
    after = np.where(np.isin(before, list(found)), keep, before)
    return Edit(box, before, after, f"merged {len(found)} objects into {keep}")


def next_free_label(labels: np.ndarray) -> int:
    """The smallest id larger than every id in use.

    Raises
    ------
    ProofreadError
        If that id does not fit the labels' integer type (8-bit labels that reach 255).
    """
    label = int(labels.max()) + 1 if labels.size else 1
    check_fits(labels, label)
    return label


def check_fits(labels: np.ndarray, label: int) -> None:
    """Refuse an id the labels' integer type cannot hold (it would wrap around to another id, or 0)."""
    if np.issubdtype(labels.dtype, np.integer) and label > np.iinfo(labels.dtype).max:
        raise ProofreadError(
            f"object id {label} does not fit these {labels.dtype} labels (at most {np.iinfo(labels.dtype).max}): "
            "renumber them (Relabel) or convert the layer to a wider type"
        )


def split(
    labels: np.ndarray,
    seeds: Sequence[Sequence[float]],
    landscape: np.ndarray | None = None,
    next_label: int | None = None,
) -> Edit:
    """Split one object by a seeded watershed from two or more seed points inside it.

    Parameters
    ----------
    labels : numpy.ndarray
        The plane.
    seeds : sequence of (row, column)
        Points inside the object, one per part.
    landscape : numpy.ndarray, optional
        Plane-sized map whose *high* values mark object centres (the model's distance
        map); the split then follows its valleys. A compact watershed keeps seeds that
        are off-centre from losing their part to a seed nearer the centre. Without a
        landscape, the object is shared by geodesic distance to the seeds.
    next_label : int, optional
        First id for the new parts (default: one above the largest id of the plane).

    Raises
    ------
    ProofreadError
        For fewer than two seeds, seeds on background, in different objects, or on the same pixel.
    """
    if len(seeds) < 2:
        raise ProofreadError("a split needs at least two seed points inside the object")
    ids = {label_at(labels, s) for s in seeds}
    if 0 in ids:
        raise ProofreadError("a split seed lies on background: put every seed inside the object")
    if len(ids) > 1:
        raise ProofreadError(f"the split seeds fall in different objects ({sorted(ids)}): use one object")
    label = ids.pop()
    box = _grow(object_box(labels, label, seeds[0]), 1, labels.shape)
    before = labels[box].copy()
    mask = before == label
    markers = np.zeros(before.shape, np.int32)
    for i, s in enumerate(seeds, 1):
        r, c = int(round(s[0])) - box[0].start, int(round(s[1])) - box[1].start
        if markers[r, c]:
            raise ProofreadError("two split seeds are on the same pixel")
        markers[r, c] = i
    if landscape is not None:
        values = np.asarray(landscape[box], np.float32)
        inside = values[mask]
        span = float(inside.max() - inside.min()) if inside.size else 0.0
        elevation = (inside.max() - values) / span if span > 0 else np.zeros(values.shape, np.float32)
        parts = watershed(elevation, markers, mask=mask, compactness=0.01)
    else:
        parts = watershed(np.zeros(before.shape, np.float32), markers, mask=mask)
    first = next_free_label(labels) if next_label is None else next_label
    check_fits(labels, first + len(seeds) - 2)
    after = before.copy()
    for i in range(2, len(seeds) + 1):
        after[parts == i] = first + i - 2
    return Edit(box, before, after, f"split object {label} into {len(seeds)}")


def _clip_segment(
    start: Sequence[float], end: Sequence[float], h: int, w: int
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The part of the segment ``start``-``end`` inside a plane of ``h`` x ``w`` pixels (``None``: none of it).

    Clipping keeps the line's direction (Liang-Barsky); clamping each end point's coordinates
    on its own would bend a line whose end lies off the image.
    """
    r0, c0 = float(start[0]), float(start[1])
    dr, dc = float(end[0]) - r0, float(end[1]) - c0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dr, r0), (dr, h - 1 - r0), (-dc, c0), (dc, w - 1 - c0)):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
    if t0 > t1:
        return None
    return (r0 + t0 * dr, c0 + t0 * dc), (r0 + t1 * dr, c0 + t1 * dc)


def cut(labels: np.ndarray, start: Sequence[float], end: Sequence[float], next_label: int | None = None) -> Edit:
    """Split the object(s) crossed by a straight cut line; each extra piece gets a new id.

    The line's own pixels go to the nearest piece, so no gap is left.

    Raises
    ------
    ProofreadError
        If the line crosses no object or leaves every object in one piece.
    """
    h, w = labels.shape
    ends = _clip_segment(start, end, h, w)
    if ends is None:
        raise ProofreadError("the cut line crosses no object")
    (r0, c0), (r1, c1) = ((int(np.clip(round(r), 0, h - 1)), int(np.clip(round(c), 0, w - 1))) for r, c in ends)
    rr, cc = draw_line(r0, c0, r1, c1)
    on_line = labels[rr, cc]
    crossed = sorted(set(np.unique(on_line).tolist()) - {0})
    if not crossed:
        raise ProofreadError("the cut line crosses no object")
    boxes = []
    for lab in crossed:
        i = int(np.argmax(on_line == lab))
        boxes.append(object_box(labels, lab, (rr[i], cc[i])))
    box = _grow(_union(boxes), 1, labels.shape)
    before = labels[box].copy()
    line = np.zeros(before.shape, bool)
    lr, lc = rr - box[0].start, cc - box[1].start
    inside = (lr >= 0) & (lr < line.shape[0]) & (lc >= 0) & (lc < line.shape[1])
    line[lr[inside], lc[inside]] = True
    after = before.copy()
    first = next_free_label(labels) if next_label is None else next_label
    pieces = 0
    for lab in crossed:
        obj = before == lab
        comp, n = ndi.label(obj & ~line)  # 4-connected: a diagonal line still separates
        pieces += max(n, 1)
        if n < 2:
            continue
        nearest = ndi.distance_transform_edt(comp == 0, return_distances=False, return_indices=True)
        comp = np.where(obj, comp[tuple(nearest)], 0)
        for k in range(2, n + 1):
            check_fits(labels, first)
            after[comp == k] = first
            first += 1
    if pieces <= len(crossed):
        raise ProofreadError("the cut line does not cross an object from side to side: nothing to split")
    return Edit(box, before, after, f"cut {len(crossed)} object(s) into {pieces} pieces")


ADD_THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.12, 0.06)  # foreground levels tried, from the usual one down


def add_object(
    labels: np.ndarray,
    point: Sequence[float],
    foreground: np.ndarray,
    distance: np.ndarray | None = None,
    max_area: int | None = None,
    min_area: int = 8,
    window: int = 96,
    next_label: int | None = None,
) -> Edit:
    """Add the object the model nearly found at ``point``: its foreground region at a locally lowered threshold.

    Around the clicked background pixel, the region of ``foreground`` above a level is taken,
    from the usual level (0.5) down to 0.06, at the first level where the region containing
    the point reaches ``min_area`` pixels; it never covers other objects. A level at which
    the region would pass ``max_area`` (or leave the search window) is not used: the region
    at the level above it is kept, so a faint nucleus next to the background does not
    spill into it. Where the model saw nothing at all, nothing is added.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Y, X)`` labels of the plane.
    point : sequence of float
        ``(row, column)`` inside the missed object (on background).
    foreground : numpy.ndarray
        ``(Y, X)`` foreground probability the model gave the plane.
    distance : numpy.ndarray, optional
        The model's distance map: when given, the region is cut where it is lowest between
        the point and other distance peaks (as a split would), so one click adds one object.
    max_area : int, optional
        Largest area accepted (default: 4 times the median object area of the plane, at
        least 400 px).
    min_area : int
        Smallest area accepted.
    window : int
        Half side of the square searched around the point.
    next_label : int, optional
        Id of the new object (default: one above the largest in ``labels``; a stack's labels
        give it, so the id is free in every plane).

    Returns
    -------
    Edit
        The new object, with the next free label.

    Raises
    ------
    ProofreadError
        If the point is on an object, or the model saw no object there.
    """
    from skimage.segmentation import watershed

    r, c = (int(round(v)) for v in point[-2:])
    h, w = labels.shape
    if not (0 <= r < h and 0 <= c < w):
        raise ProofreadError("the point is outside the image")
    if labels[r, c] != 0:
        raise ProofreadError(f"there is an object ({int(labels[r, c])}) here already: click on background")
    if max_area is None:
        areas = np.bincount(labels.ravel())[1:]
        areas = areas[areas > 0]
        max_area = max(400, int(4 * np.median(areas))) if areas.size else 4000
    box = (slice(max(r - window, 0), min(r + window + 1, h)), slice(max(c - window, 0), min(c + window + 1, w)))
    before = labels[box].copy()
    fg = np.asarray(foreground[box], np.float32)
    free = before == 0
    pr, pc = r - box[0].start, c - box[1].start
    chosen = None
    for level in ADD_THRESHOLDS:
        region, _ = ndi.label((fg > level) & free)
        lab = region[pr, pc]
        if lab == 0:
            continue
        mask = region == lab
        area = int(mask.sum())
        touches = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
        if area > max_area or (touches and area > min_area):
            break  # spilled: keep the region found at the level above, if any
        chosen = mask
        if area >= min_area:
            break
    if chosen is None or int(chosen.sum()) < min_area:
        raise ProofreadError("the model sees no separate object here: paint it with New object (N)")
    if distance is not None:  # one click, one object: cut where the distance map dips towards other peaks
        d = np.asarray(distance[box], np.float32)
        peaks, n = ndi.label((d >= 0.5 * d[chosen].max()) & chosen)
        if n > 1:
            parts = watershed(-d, peaks, mask=chosen)
            own = parts[pr, pc] or parts[chosen][np.argmax(d[chosen])]
            chosen = parts == own
    new = next_free_label(labels) if next_label is None else next_label
    check_fits(labels, new)
    after = np.where(chosen, new, before)
    return Edit(box, before, after, f"added object {new} ({int(chosen.sum())} px) from the model's foreground map")


def fill_holes(labels: np.ndarray, point: Sequence[float]) -> Edit:
    """Fill the holes of the object at ``point`` (background enclosed by it; other objects stay)."""
    label, box = _object(labels, point, "fill")
    box = _grow(box, 1, labels.shape)
    before = labels[box].copy()
    filled = ndi.binary_fill_holes(before == label)
    after = np.where(filled & (before == 0), label, before)
    return Edit(box, before, after, f"filled the holes of object {label}")


def dilate(labels: np.ndarray, point: Sequence[float], pixels: int = 1) -> Edit:
    """Grow the object at ``point`` by ``pixels`` into background (never into other objects)."""
    label, box = _object(labels, point, "grow")
    box = _grow(box, pixels + 1, labels.shape)
    before = labels[box].copy()
    grown = ndi.binary_dilation(before == label, iterations=pixels)
    after = np.where(grown & (before == 0), label, before)
    return Edit(box, before, after, f"grew object {label} by {pixels} px")


def erode(labels: np.ndarray, point: Sequence[float], pixels: int = 1) -> Edit:
    """Shrink the object at ``point`` by ``pixels``.

    Raises
    ------
    ProofreadError
        If the object would vanish.
    """
    label, box = _object(labels, point, "shrink")
    box = _grow(box, 1, labels.shape)
    before = labels[box].copy()
    mask = before == label
    kept = ndi.binary_erosion(mask, iterations=pixels)
    if not kept.any():
        raise ProofreadError(f"object {label} is too thin to shrink by {pixels} px: delete it instead")
    after = np.where(mask & ~kept, 0, before)
    return Edit(box, before, after, f"shrank object {label} by {pixels} px")


def remove_small(labels: np.ndarray, min_size: int) -> Edit:
    """Remove every object smaller than ``min_size`` pixels (negative values are not objects: they stay)."""
    ids, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)  # no table up to the largest id
    small = (sizes < min_size) & (ids > 0)
    box = (slice(0, labels.shape[0]), slice(0, labels.shape[1]))
    after = np.where(small[inverse.reshape(labels.shape)], 0, labels) if small.any() else labels
    return Edit(box, labels, after, f"removed {int(small.sum())} object(s) under {min_size} px")


def relabel_sequential(labels: np.ndarray) -> Edit:
    """Renumber the objects 1..N in order of their current ids."""
    renumbered, ids = sequential_ids(labels)
    n = int(ids.size)
    box = (slice(0, labels.shape[0]), slice(0, labels.shape[1]))
    return Edit(box, labels, renumbered.astype(labels.dtype), f"renumbered {n} objects 1..{n}")


def correct_worst(labels: np.ndarray, truth: np.ndarray, n: int) -> Edit:
    """Correct the areas around the ``n`` objects ``labels`` got most wrong, from ground truth: a simulated proofreader.

    For benchmarks, demos and tests of the correct -> fine-tune loop. It corrects what a person
    would: whole objects of ``truth`` (not cut by the plane's border, at least half the median
    object's area) that no object of ``labels`` matches with IoU 0.5, worst first. Around each,
    the objects of ``labels`` over it are erased and every true object they covered is drawn as
    ``truth`` has it, with new ids.

    Parameters
    ----------
    labels : numpy.ndarray
        A segmentation of one plane.
    truth : numpy.ndarray
        Its ground-truth instance labels.
    n : int
        Most objects to correct.

    Returns
    -------
    Edit
        The whole plane, corrected; its message says how many objects were chosen.
    """
    from skimage.segmentation import clear_border

    from .metrics import overlap

    labels, truth = np.asarray(labels), np.asarray(truth)
    if labels.shape != truth.shape:
        raise ProofreadError(f"labels {labels.shape} and ground truth {truth.shape} differ in shape")
    ti, _, _, iou, area_t, _ = overlap(truth, labels)
    best = np.zeros(len(area_t))
    np.maximum.at(best, ti, iou)  # each true object's best IoU with any object of labels
    true_ids = np.unique(truth[truth > 0])
    areas = np.bincount(truth.ravel())
    whole = set(np.unique(clear_border(truth)).tolist()) - {0}
    big = set(true_ids[areas[true_ids] >= 0.5 * np.median(areas[true_ids])].tolist()) if true_ids.size else set()
    worst = [int(t) for b, t in sorted(zip(best.tolist(), true_ids.tolist())) if b < 0.5 and t in whole & big][:n]
    after = labels.copy()
    next_id, drawn = next_free_label(labels), set()
    for t in worst:
        covered = np.isin(labels, np.setdiff1d(np.unique(labels[truth == t]), [0])) & ~np.isin(truth, list(drawn))
        after[covered] = 0
        for u in sorted(set(np.unique(truth[covered | (truth == t)]).tolist()) - {0} - drawn):
            after[truth == u] = next_id
            next_id += 1
            drawn.add(u)
    box = (slice(0, labels.shape[0]), slice(0, labels.shape[1]))
    return Edit(box, labels, after, f"corrected the areas of {len(worst)} object(s), {len(drawn)} drawn from the truth")


def doubt_table(
    labels: np.ndarray, fg_prob: np.ndarray | None = None, dist: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Rank objects by doubt, most doubtful first.

    The score adds, per object: the model's uncertainty (mean of ``1 - |2p - 1|`` of the
    foreground probability over the object, when given), a weak or split-looking centre
    (low peak of the distance map, when given), low solidity (non-convex shapes: merged
    or ragged objects), and size outliers (|z| of log area above 2).

    Returns
    -------
    dict of numpy.ndarray
        Columns ``label``, ``score``, ``centroid_y``, ``centroid_x``, ``area``, ``uncertainty``,
        ``solidity``, ``reason`` (text), sorted by decreasing score.
    """
    props = regionprops_table(labels, properties=("label", "area", "centroid", "solidity"))
    n = props["label"].size
    if n == 0:
        return {k: np.zeros(0) for k in ("label", "score", "centroid_y", "centroid_x", "area")} | {
            "reason": np.zeros(0, dtype=object)
        }
    index = props["label"]
    unc = np.zeros(n)
    peak = np.ones(n)
    if fg_prob is not None:
        u = 1 - np.abs(2 * np.asarray(fg_prob, np.float32) - 1)
        unc = np.asarray(ndi.mean(u, labels, index))
    if dist is not None:
        peak = np.asarray(ndi.maximum(np.asarray(dist, np.float32), labels, index))
    log_area = np.log(props["area"].astype(float))
    z = (log_area - log_area.mean()) / (log_area.std() + 1e-9)
    solidity = props["solidity"]
    parts = {
        "uncertain": 2.0 * unc,
        "weak centre": np.clip(0.8 - peak, 0, None),
        "not convex": np.clip(0.95 - solidity, 0, None) * 4,
        "unusual size": np.clip(np.abs(z) - 1.5, 0, None) * 0.3,
    }
    score = sum(parts.values())
    names = list(parts)
    stacked = np.stack([parts[k] for k in names])
    reason = np.array([names[i] if stacked[i, j] > 0 else "" for j, i in enumerate(stacked.argmax(0))], dtype=object)
    order = np.argsort(-score, kind="stable")
    return {
        "label": index[order],
        "score": score[order],
        "centroid_y": props["centroid-0"][order],
        "centroid_x": props["centroid-1"][order],
        "area": props["area"][order],
        "uncertainty": unc[order],
        "solidity": solidity[order],
        "reason": reason[order],
    }
