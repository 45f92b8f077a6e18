"""Object size: measure it, and rescale images so their objects reach the network at the size it knows.

A model card records ``diameter``: the median object diameter (pixels) of the objects the
network was trained at. An image whose objects have another diameter ``d`` is rescaled by
``factor = card.diameter / d`` before the network; its probabilities are resized back to the
image's grid, and the post-processing sizes (``min_size`` in pixels, ``dist_sigma``), which the
card gives at the network's scale, grow with ``1 / factor``. Labels always come out on the
image's own grid. Training data are rescaled the same way (labels with nearest neighbours), so
a model fine-tuned on cells three times larger than nuclei keeps its scale and sees three times
more of them per patch.

The diameter of an object is the diameter of a disc of its area (``2 sqrt(area / pi)``, as
Cellpose measures it); a set of labels has the median over its objects.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .postprocess import PostprocessConfig

TOLERANCE = 0.05  # diameters within 5 % of the model's: the image is used as it is
MIN_FACTOR, MAX_FACTOR = 1 / 8, 4.0  # objects 8x larger or 4x smaller than the model's: the most we rescale
MIN_OBJECT_PX = 9  # objects of fewer pixels are ignored when measuring (specks, cut fragments)
MAX_DIAMETER = 2000.0  # a diameter setting above this is a typo


def object_diameters(labels: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Diameters of the objects of a labels image (``2 sqrt(area / pi)``, pixels).

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels (0 is background), any number of dimensions (areas are pixel counts).
    ignore : numpy.ndarray, optional
        Pixels not reviewed: objects with more than half their pixels there are left out.

    Returns
    -------
    numpy.ndarray
        One diameter per object of at least :data:`MIN_OBJECT_PX` pixels.
    """
    lab = np.asarray(labels).ravel()
    if lab.size == 0 or lab.max(initial=0) <= 0:
        return np.zeros(0)
    lab = lab.astype(np.int64, copy=False)
    if lab.min() >= 0 and lab.max() <= 4 * lab.size + (1 << 16):  # a count per id up to the largest
        index, ids = lab, None
    else:  # negative ids (not objects) or ids far above their number (uint32 ids reach 4e9): per id present
        ids, index = np.unique(lab, return_inverse=True)
    counts = np.bincount(index)
    keep = counts >= MIN_OBJECT_PX
    keep &= (np.arange(counts.size) > 0) if ids is None else (ids > 0)
    if ignore is not None:
        ignored = np.bincount(index, weights=np.asarray(ignore).ravel().astype(np.float64), minlength=counts.size)
        keep &= ignored <= 0.5 * counts
    return 2.0 * np.sqrt(counts[keep] / math.pi)


def median_diameter(labels: Iterable[np.ndarray], ignores: Iterable[np.ndarray | None] | None = None) -> float | None:
    """Median object diameter pooled over several labels images (``None`` without objects)."""
    ignores = list(ignores) if ignores is not None else None
    found = [object_diameters(lab, None if ignores is None else ignores[i]) for i, lab in enumerate(labels)]
    alld = np.concatenate(found) if found else np.zeros(0)
    return float(np.median(alld)) if alld.size else None


def check_diameter(value: float | None, what: str = "object diameter") -> float | None:
    """A diameter setting, checked: ``None`` or a positive number of pixels.

    Raises
    ------
    ValueError
        For zero, negative, non-finite or absurdly large values.
    """
    if value is None:
        return None
    try:
        d = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the {what} must be a number of pixels, got {value!r}") from None
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"the {what} must be a positive number of pixels, got {value!r}")
    if d > MAX_DIAMETER:
        raise ValueError(f"the {what} of {d:g} pixels is over {MAX_DIAMETER:g}: is it in pixels?")
    return d


def check_native(value: Sequence[float] | None) -> tuple[float, float] | None:
    """A network's ``native_diameters`` setting, checked: ``None``, or ``(smallest, largest)`` in pixels.

    Raises
    ------
    ValueError
        For anything but two positive diameters, the smaller first.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"native_diameters must be two diameters (smallest, largest), got {value!r}")
    lo, hi = (check_diameter(v, "native diameter") for v in value)
    if lo > hi:
        raise ValueError(f"native_diameters must give the smallest first, got {list(value)!r}")
    return lo, hi


def scale_factor(model_diameter: float | None, diameter: float | None, native: Sequence[float] | None = None) -> float:
    """How much to rescale an image whose objects are ``diameter`` px for a model trained at ``model_diameter``.

    Returns 1.0 when either is unknown, when they agree within :data:`TOLERANCE`, or when
    ``diameter`` lies within ``native``: the object sizes the network learnt at their own scale
    (a card's ``native_diameters``), which it segments best unscaled; otherwise
    ``model_diameter / diameter``, kept within [:data:`MIN_FACTOR`, :data:`MAX_FACTOR`].

    Examples
    --------
    >>> scale_factor(20.0, 60.0)
    0.3333333333333333
    >>> scale_factor(20.0, 20.5)
    1.0
    >>> scale_factor(None, 60.0)
    1.0
    >>> scale_factor(20.0, 39.0, native=(13.5, 42.7)), scale_factor(20.0, 60.0, native=(13.5, 42.7))
    (1.0, 0.3333333333333333)
    """
    if not model_diameter or not diameter:
        return 1.0
    if native is not None and native[0] <= float(diameter) <= native[1]:
        return 1.0
    f = float(model_diameter) / float(diameter)
    if abs(f - 1.0) <= TOLERANCE:
        return 1.0
    return min(max(f, MIN_FACTOR), MAX_FACTOR)


def scaled_shape(shape: Sequence[int], factor: float) -> tuple[int, int]:
    """``(H, W)`` of a plane rescaled by ``factor`` (at least 1 px each)."""
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resize(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize ``(C, H, W)`` float maps to ``(C, *shape)``, bilinear, antialiased when shrinking.

    Parameters
    ----------
    x : numpy.ndarray
        ``(C, H, W)`` (or ``(H, W)``) float array.
    shape : sequence of int
        Target ``(H, W)``.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the new size.
    """
    squeeze = x.ndim == 2
    t = torch.from_numpy(np.ascontiguousarray(x[None] if squeeze else x, dtype=np.float32))
    target = (int(shape[0]), int(shape[1]))
    if tuple(t.shape[-2:]) == target:
        out = t
    else:
        shrink = target[0] < t.shape[-2] or target[1] < t.shape[-1]
        with torch.no_grad():
            out = F.interpolate(t[None], size=target, mode="bilinear", align_corners=False, antialias=shrink)[0]
    arr = out.numpy()
    return arr[0] if squeeze else arr


def resize_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize a 2D integer (or boolean) image by nearest neighbours (pixel centres mapped)."""
    h, w = labels.shape[-2:]
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.intp), w - 1)
    return labels[..., rows[:, None], cols[None, :]]


def postprocess_at(config: PostprocessConfig, factor: float) -> PostprocessConfig:
    """Post-processing sizes for maps on an image's grid, given at the network's scale.

    ``factor`` is the image's rescaling (network pixels per image pixel): areas grow with
    ``1 / factor**2``, lengths with ``1 / factor``.
    """
    if factor == 1.0:
        return config
    s = 1.0 / factor
    return dataclasses.replace(
        config, min_size=int(round(config.min_size * s * s)), dist_sigma=float(config.dist_sigma * s)
    )
