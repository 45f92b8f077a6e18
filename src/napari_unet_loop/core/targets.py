"""Training targets from instance labels.

An instance label image (0 = background, 1..N = one object each) becomes

* a class map: 0 background, 1 interior, 2 boundary (the object's inner rim);
* the U-Net border weight map of Ronneberger et al. (2015),
  ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))``, where ``d1`` and
  ``d2`` are the distances to the nearest and second-nearest object and ``w_c``
  balances the class frequencies; it makes the thin gaps and shared borders
  between touching objects count;
* a normalised distance map: inside each object, the Euclidean distance to its
  border divided by the object's maximum, so every object peaks at 1 whatever its
  size (seeds for the watershed come from its plateau).

Pixels outside the reviewed region are ignored (weight 0) through ``ignore``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


@dataclass
class Targets:
    """Per-pixel training targets of one image.

    Attributes
    ----------
    classes : numpy.ndarray
        ``uint8`` class map (0 background, 1 interior, 2 boundary).
    weight : numpy.ndarray
        ``float32`` loss weight per pixel (0 where ignored).
    distance : numpy.ndarray
        ``float32`` normalised distance map in ``[0, 1]``.
    """

    classes: np.ndarray
    weight: np.ndarray
    distance: np.ndarray


def check_labels(labels: np.ndarray) -> np.ndarray:
    """Validate an instance label image and return it as ``int64``.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer label image; 0 is background.

    Returns
    -------
    numpy.ndarray
        The labels as ``int64``.

    Raises
    ------
    ValueError
        If the labels are not integers, hold negative values or are not 2D.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2D, got shape {labels.shape}")
    return object_ids(labels).astype(np.int64, copy=False)


def object_ids(labels: np.ndarray, what: str = "the label image") -> np.ndarray:
    """Labels of any shape as object ids: whole numbers, 0 (background) or above.

    Parameters
    ----------
    labels : numpy.ndarray
        Label image or stack.
    what : str
        What to call them in an error (e.g. the file's path).

    Returns
    -------
    numpy.ndarray
        The labels: integer dtypes as they are, whole-number floats as ``int64``, ``bool`` masks as ``uint8``.

    Raises
    ------
    ValueError
        If they hold fractions, NaN or text (a probability or intensity map is not object ids), or
        negative values (-1 for background): scoring or training on them would count the wrong objects.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        whole = np.issubdtype(labels.dtype, np.floating) and bool(np.isfinite(labels).all())
        if not (whole and np.array_equal(labels, np.round(labels))):
            raise ValueError(
                f"{what} holds {labels.dtype} values that are not whole numbers: labels are object ids "
                "(0 background, 1, 2, ... one per object), not a probability or intensity map"
            )
        labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(
            f"{what} holds negative values (down to {labels.min()}): object ids are 0 (background) or above; "
            "relabel the file (e.g. its -1 background as 0)"
        )
    return labels


def sequential_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The objects numbered 1..n in the order of their ids, without a table up to the largest id.

    uint32 ids reach 4e9: a lookup table (or ``np.bincount``) up to the largest would need gigabytes.

    Parameters
    ----------
    labels : numpy.ndarray
        Labels (0 background), any shape. Negative values are not objects: they stay as they are.

    Returns
    -------
    labels : numpy.ndarray
        ``int64`` labels of the same shape, objects numbered 1..n.
    ids : numpy.ndarray
        The original ids: ``ids[k - 1]`` is that of object ``k``.
    """
    ids, inverse = np.unique(labels, return_inverse=True)
    objects = ids > 0
    new = np.where(objects, np.cumsum(objects), np.minimum(ids, 0).astype(np.int64))  # one entry per id present
    return new[inverse.reshape(np.shape(labels))].astype(np.int64), ids[objects]


def separate_mask(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """A binary mask's separate pieces as objects: each plane holding one id in several pieces.

    A mask saved as labels (0/1 or 0/255) holds every nucleus under one id: scored as one object,
    or trained on as one (its distance map normalised over all of them). A plane whose objects
    are all one id, in pieces that do not touch (8-connected), gets one id per piece; labels with
    two ids or more in a plane are instance labels and stay as they are.

    Parameters
    ----------
    labels : numpy.ndarray
        Object ids (2D, or a stack whose last two axes are Y and X).

    Returns
    -------
    labels : numpy.ndarray
        The labels as given, or (int32) with the pieces numbered 1..n per plane where a plane was a mask.
    planes : int
        How many planes were read as masks (0: the labels as given).
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    if labels.ndim < 2 or not labels.size:
        return labels, 0
    out, changed = labels, 0
    flat = labels.reshape(-1, *labels.shape[-2:])
    for k in range(flat.shape[0]):
        plane = flat[k]
        top = plane.max()
        if top <= 0 or plane.min(initial=0) < 0 or np.any((plane > 0) & (plane != top)):
            continue
        pieces, n = ndi.label(plane > 0, structure=np.ones((3, 3), bool))
        if n < 2:
            continue
        if changed == 0:
            out = labels.astype(np.int32)  # a uint8 mask may hold more than 255 pieces
        out.reshape(-1, *labels.shape[-2:])[k] = pieces
        changed += 1
    return out, changed


def class_map(labels: np.ndarray) -> np.ndarray:
    """Return the background / interior / boundary class map of ``labels``.

    The boundary is the inner rim of each object (one pixel wide), so objects
    that touch are separated by two boundary pixels.
    """
    classes = np.zeros(labels.shape, np.uint8)
    fg = labels > 0
    classes[fg] = INTERIOR
    classes[find_boundaries(labels, mode="inner") & fg] = BOUNDARY
    return classes


def _object_slices(labels: np.ndarray, margin: int):
    """Yield ``(label, slices, offset)`` for every object, bounding box grown by ``margin``."""
    h, w = labels.shape
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - margin, 0), min(sl[0].stop + margin, h)
        x0, x1 = max(sl[1].start - margin, 0), min(sl[1].stop + margin, w)
        yield i, (slice(y0, y1), slice(x0, x1))


def distance_map(labels: np.ndarray) -> np.ndarray:
    """Return the per-object normalised distance to the object's border.

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels.

    Returns
    -------
    numpy.ndarray
        ``float32`` map, 0 on background, in ``(0, 1]`` inside objects, 1 at each
        object's deepest point.
    """
    out = np.zeros(labels.shape, np.float32)
    for i, sl in _object_slices(labels, 1):
        mask = labels[sl] == i
        d = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        dmax = d.max()
        if dmax > 0:
            out[sl][mask] = (d[mask] / dmax).astype(np.float32)
    return out


def border_weight_map(
    labels: np.ndarray, classes: np.ndarray | None = None, w0: float = 10.0, sigma: float = 5.0
) -> np.ndarray:
    """Return the U-Net border weight map of Ronneberger et al. (2015).

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels.
    classes : numpy.ndarray, optional
        The class map used for the class-balancing term; computed if omitted.
    w0 : float
        Weight of the border term (10 in the paper).
    sigma : float
        Width of the border term in pixels (about 5 in the paper).

    Returns
    -------
    numpy.ndarray
        ``float32`` weights, ``w_c + w0 * exp(-(d1 + d2)**2 / (2 sigma**2))``.
    """
    if classes is None:
        classes = class_map(labels)
    # class balancing: inverse frequency, normalised so background weighs 1, capped
    counts = np.bincount(classes.ravel(), minlength=3).astype(np.float64)
    wc = np.ones(3)
    if counts[0] > 0:
        present = counts > 0
        wc[present] = np.clip(counts[0] / counts[present], 1.0, 10.0)
    weight = wc[classes].astype(np.float32)
    if w0 <= 0 or labels.max() < 2:
        return weight
    # d1, d2: distances to the nearest and second-nearest objects. The border term is
    # negligible beyond a few sigma, so each object's distance is computed in its
    # bounding box grown by that reach.
    reach = int(np.ceil(3 * sigma)) + 1
    big = np.float32(1e6)
    d1 = np.full(labels.shape, big, np.float32)
    d2 = np.full(labels.shape, big, np.float32)
    for i, sl in _object_slices(labels, reach):
        d = ndi.distance_transform_edt(labels[sl] != i).astype(np.float32)
        a, b = d1[sl], d2[sl]
        closer = d < a
        b[:] = np.where(closer, a, np.minimum(b, d))
        a[:] = np.where(closer, d, a)
    both = d2 < big
    weight[both] += w0 * np.exp(-((d1[both] + d2[both]) ** 2) / (2 * sigma**2))
    return weight


def make_targets(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
) -> Targets:
    """Compute all training targets for one labelled image.

    Parameters
    ----------
    labels : numpy.ndarray
        2D instance labels (0 = background).
    ignore : numpy.ndarray, optional
        Boolean mask of pixels the loss must ignore (not reviewed).
    w0, sigma : float
        Parameters of the border weight map.

    Returns
    -------
    Targets
        Class map, loss weights and distance map.
    """
    labels = check_labels(labels)
    classes = class_map(labels)
    weight = border_weight_map(labels, classes, w0=w0, sigma=sigma)
    if ignore is not None:
        if ignore.shape != labels.shape:
            raise ValueError(f"ignore mask shape {ignore.shape} != labels shape {labels.shape}")
        weight[ignore.astype(bool)] = 0
    return Targets(classes=classes, weight=weight, distance=distance_map(labels))
