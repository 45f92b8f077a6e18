"""What the user corrected: differences between the model's labels and the edited labels.

Comparing the labels as the plugin wrote them with the labels now is honest about
every way of editing (brush, fill, eraser, polygon, new label, undo and redo, a
script): whatever differs was corrected, whatever was undone is not.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

CORRECTION_WEIGHT = 3.0  # the dock's default loss weight of corrected pixels


def changed_mask(original: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Pixels whose label differs between ``original`` and ``current``.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    if original.shape != current.shape:
        raise ValueError(f"shapes differ: {original.shape} and {current.shape}")
    return np.asarray(original) != np.asarray(current)


def changed_objects(original: np.ndarray, current: np.ndarray) -> int:
    """Number of objects touched by corrections.

    An object counts once whether it was added, removed, reshaped (grown, or trimmed by a
    neighbour drawn over it), split or merged: the distinct ids inside the changed pixels,
    before or after. These are the objects
    :func:`napari_unet_loop.core.metrics.correction_agreement` judges, drawn or reshaped, plus
    those erased.
    """
    diff = changed_mask(original, current)
    if not diff.any():
        return 0
    now = set(np.unique(current[diff]).tolist())
    before = set(np.unique(original[diff]).tolist())
    return len((now | before) - {0})


def edited_region(original: np.ndarray, current: np.ndarray, margin: int = 16) -> np.ndarray:
    """The region a user reviewed by editing: the changed pixels and the objects they touch, plus a margin.

    Parameters
    ----------
    original, current : numpy.ndarray
        Labels before and after editing.
    margin : int
        Pixels added around the edited objects (context that was visibly right).

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    diff = changed_mask(original, current)
    ids = np.unique(np.concatenate([current[diff], original[diff]]))
    ids = ids[ids > 0]
    region = diff | np.isin(current, ids) | np.isin(original, ids)
    if margin > 0 and region.any():
        region = ndi.binary_dilation(region, iterations=margin)
    return region


def correction_weight(
    original: np.ndarray, current: np.ndarray, weight: float = CORRECTION_WEIGHT, width: int = 3
) -> np.ndarray:
    """Per-pixel loss weight: ``weight`` on and near corrected pixels, 1 elsewhere."""
    diff = changed_mask(original, current)
    out = np.ones(diff.shape, np.float32)
    if weight != 1 and diff.any():
        near = ndi.binary_dilation(diff, iterations=width) if width > 0 else diff
        out[near] = weight
    return out


def labelled_region(labels: np.ndarray, margin: int | None = None) -> np.ndarray:
    """The region labels that mark only some objects can be trusted in: those objects plus a margin.

    Ground truth that marks some of the cells (Cell Tracking Challenge gold segmentation truth,
    a few cells drawn by hand) says nothing of the pixels away from them: an unmarked cell there
    is not background. Around a marked object its label and the background ring beside it hold;
    training and validation leave out the rest (a ``Sample``'s ``ignore`` is ``~region``).

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels of one plane (0: background or unmarked).
    margin : int, optional
        Pixels of background trusted around each object; half the objects' median diameter
        (at least 4) when omitted.

    Returns
    -------
    numpy.ndarray
        Boolean mask, all False when no object is marked.
    """
    from .scale import object_diameters

    marked = np.asarray(labels) > 0
    if not marked.any():
        return marked
    if margin is None:
        diameters = object_diameters(labels)
        margin = max(4, int(round(float(np.median(diameters)) / 2))) if diameters.size else 4
    return ndi.distance_transform_edt(~marked) <= margin  # a ring of ``margin`` pixels, round


def trust_near_labels(samples: list) -> list:
    """Training samples whose labels mark only some objects: each trusted only in its :func:`labelled_region`.

    ``train --partial-labels`` and the dock's *near labelled objects* (folders too). Each sample's
    ``ignore`` gains everything outside the region; the samples are changed in place and returned.
    """
    for s in samples:
        outside = ~labelled_region(s.labels)
        s.ignore = outside if s.ignore is None else (s.ignore | outside)
    return samples
