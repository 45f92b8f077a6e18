"""Join per-plane instances of a Z stack into 3D objects.

Each plane of a stack is segmented on its own, so one nucleus cut by several planes gets a new id in
each. :func:`stitch_planes` relabels plane by plane: an object takes the id of the object in the
plane above it that it overlaps most, when their intersection over union reaches ``threshold`` and
no other object of its plane overlaps that one more (greedy matching, as Cellpose's
``stitch_threshold``); otherwise it starts a new 3D object.

IoU alone cuts the caps of round objects off: the last planes of a sphere are small discs whose IoU
with the plane before is far below any useful threshold. An object lying at least 90 % inside one
object of the plane before (or holding 90 % of it) therefore continues it too, after the pairs that
pass the IoU threshold have been matched.
"""

from __future__ import annotations

import numpy as np

CONTAINED = 0.9  # share of the smaller object inside the other that continues it whatever the IoU


def _overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of ids overlapping between two label planes, with their IoU and containment.

    Returns
    -------
    tuple of numpy.ndarray
        ``(ids_a, ids_b, iou, contained)``, one entry per overlapping pair of non-zero ids;
        ``contained`` is the intersection over the smaller object's area.
    """
    both = (a > 0) & (b > 0)
    if not both.any():
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), np.zeros(0)
    pairs, inter = np.unique(np.stack([a[both], b[both]]).astype(np.int64), axis=1, return_counts=True)
    ids_a, ids_b = pairs
    area_a = dict(zip(*np.unique(a[a > 0], return_counts=True), strict=True))
    area_b = dict(zip(*np.unique(b[b > 0], return_counts=True), strict=True))
    sizes = np.array([(area_a[i], area_b[j]) for i, j in zip(ids_a, ids_b, strict=True)], np.float64)
    union = sizes.sum(1) - inter
    return ids_a, ids_b, inter / union, inter / sizes.min(1)


def stitch_planes(labels: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Join 2D instances of consecutive planes into 3D objects by their overlap.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Z, Y, X)`` labels, ids per plane (any ids; 0 is background).
    threshold : float
        Smallest intersection over union for an object to continue the one above it
        (0 < threshold <= 1); Cellpose's default ``stitch_threshold`` is in this sense.

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` labels with one id per 3D object, 1..N, ``int32`` (``int64`` beyond 2^31
        objects). Negative values are not objects: they stay as they are.

    Raises
    ------
    ValueError
        For a threshold outside (0, 1] or labels that are not 3D.

    Examples
    --------
    >>> import numpy as np
    >>> stack = np.zeros((3, 8, 8), np.int32)
    >>> stack[:, 2:6, 2:6] = [[[1]], [[7]], [[2]]]  # one cube, a different id per plane
    >>> np.unique(stitch_planes(stack)).tolist()
    [0, 1]
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"the stitching threshold is an overlap (IoU) between 0 and 1, got {threshold}")
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"stitching joins the planes of a Z stack (3D labels), got shape {labels.shape}")
    out = np.zeros(labels.shape, np.int32)  # the final type from the start: no 64-bit copy of the stack
    next_id = 1
    for z in range(labels.shape[0]):
        plane, next_id = stitch_next(out[z - 1] if z > 0 else None, labels[z], next_id, threshold)
        if next_id > np.iinfo(np.int32).max and out.dtype == np.int32:  # beyond 2^31 objects: 64-bit ids
            out = out.astype(np.int64)
        out[z] = plane
    return out


def stitch_next(
    previous: np.ndarray | None, plane: np.ndarray, next_id: int, threshold: float = 0.5
) -> tuple[np.ndarray, int]:
    """One step of :func:`stitch_planes`: the ids of ``plane`` given the plane before it, already stitched.

    Two planes in memory at a time, so a stack larger than memory is stitched plane by plane
    (:func:`napari_unet_loop.parallel.volume.segment_volume_to_zarr`) with the same result.

    Parameters
    ----------
    previous : numpy.ndarray or None
        The plane before, with its final (3D) ids; ``None`` for the first plane.
    plane : numpy.ndarray
        This plane's labels, ids of its own.
    next_id : int
        The first id no 3D object has yet.
    threshold : float
        As for :func:`stitch_planes`.

    Returns
    -------
    tuple
        The plane with 3D ids (int64; negative values, not objects, as they were), and the next free id.
    """
    plane = np.asarray(plane).astype(np.int64, copy=False)
    positive = plane > 0
    ids = np.unique(plane[positive])
    lut: dict[int, int] = {}
    used: set[int] = set()  # ids of the plane before already continued (a set: planes of 10^5 objects)
    if previous is not None and ids.size:
        ids_cur, ids_prev, iou, contained = _overlaps(plane, np.asarray(previous))
        passes = iou >= threshold
        keep = passes | (contained >= CONTAINED)
        ids_cur, ids_prev, iou, passes = ids_cur[keep], ids_prev[keep], iou[keep], passes[keep]
        # greedy: pairs passing the IoU threshold first, best first; each object of either plane is used once
        for k in np.lexsort((-iou, ~passes)):
            c, p = int(ids_cur[k]), int(ids_prev[k])
            if c not in lut and p not in used:
                lut[c] = p
                used.add(p)
    for i in ids:
        if int(i) not in lut:
            lut[int(i)] = next_id
            next_id += 1
    out = np.minimum(plane, 0)  # background 0, negative values as they are
    if ids.size:  # each id found among the ids present: no table up to the largest (uint32 ids reach 4e9)
        new = np.array([lut[int(i)] for i in ids], np.int64)
        out[positive] = new[np.searchsorted(ids, plane[positive])]
    return out, next_id


def stitch_stack(labels: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """:func:`stitch_planes` along the axis before Y and X, for each position of the axes before it.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(..., Z, Y, X)`` labels, e.g. ``ZYX`` or ``TZYX`` (each time point joined on its own).
    threshold : float
        As for :func:`stitch_planes`.

    Returns
    -------
    numpy.ndarray
        Labels of the same shape, ids 1..N within each ``(Z, Y, X)`` volume, ``int32`` (``int64``
        beyond 2^31 objects in one).
    """
    labels = np.asarray(labels)
    if labels.ndim < 3:
        raise ValueError(f"stitching joins the planes of a Z stack (3D labels), got shape {labels.shape}")
    if labels.ndim == 3:
        return stitch_planes(labels, threshold)
    out = np.empty(labels.shape, np.int32)
    for outer in np.ndindex(*labels.shape[:-3]):
        joined = stitch_planes(labels[outer], threshold)
        if joined.dtype != out.dtype:
            out = out.astype(joined.dtype)
        out[outer] = joined
    return out
