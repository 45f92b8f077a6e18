"""Generators that run in napari worker threads for the Segment section.

They read image planes through a callable (plain array reads, safe off the main
thread) and compute; they never change a layer: results are written on the main
thread, in the widget's handlers of what they yield.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np

from ..core.model_files import Model
from ..core.planes import PlaneDone, PlaneError, SegmentSettings, iter_segment_planes
from ..core.postprocess import PostprocessConfig, instances_from_maps
from ..core.predict import Progress
from ..core.scale import postprocess_at


@dataclass
class PlaneResult:
    """One segmented plane, handed to the main thread.

    Attributes
    ----------
    index : tuple of int
        Position along the stacked axes.
    labels : numpy.ndarray
        Instance labels of the plane.
    fg, dist : numpy.ndarray or None
        Foreground probability and distance map (float16), for re-thresholding;
        ``None`` when only the labels were recomputed.
    seconds : float
        Time taken.
    modality : str or None
        The imaging modality the network saw the plane as (a kind from
        :data:`napari_unet_loop.core.modality.MODALITIES`, or ``"none"``: the grey image as it
        is); ``None`` when the network did not run (blank planes, re-thresholding).
    factor : float
        How the plane was rescaled before the network (see :mod:`napari_unet_loop.core.scale`);
        the maps are on the plane's grid, the thresholds' sizes are scaled by it.
    diameter : float or None
        Object diameter (pixels) the plane was segmented for (``None``: not known).
    """

    index: tuple[int, ...]
    labels: np.ndarray
    fg: np.ndarray | None
    dist: np.ndarray | None
    seconds: float
    modality: str | None = None
    factor: float = 1.0
    diameter: float | None = None


@dataclass
class Notice:
    """Something the user should know about a run that went on (e.g. blank planes skipped)."""

    message: str


@dataclass
class Failure:
    """An input the run cannot handle; the run stops and the message is shown to the user."""

    message: str


def segment_planes(
    model: Model,
    read: Callable[[tuple[int, ...]], np.ndarray],
    indices: Sequence[tuple[int, ...]],
    rgb: bool,
    channel: int | None,
    device,
    tile: int | None,
    postprocess: PostprocessConfig,
    tta: bool | str = "auto",
    modality: str | None = None,
    diameter: float | str | None = None,
    stack_of: Callable[[tuple[int, ...]], Sequence[tuple[int, ...]]] | None = None,
    sample: Callable[[tuple[int, ...], int], np.ndarray] | None = None,
) -> Generator[Progress | PlaneResult | Failure | Notice, None, int]:
    """Run :func:`~napari_unet_loop.core.planes.iter_segment_planes` for the dock.

    Turns each finished plane into a :class:`PlaneResult` (with the float16 maps kept for
    re-thresholding), an input problem into a :class:`Failure` (planes finished before it
    are kept) and the blank planes into a :class:`Notice` at the end. ``modality`` is the
    imaging modality (``"auto"``, a kind, or ``"none"``; the model card's when ``None``),
    ``diameter`` the objects' diameter in pixels or ``"auto"`` (the model card's when ``None``),
    ``stack_of`` the planes of a plane's Z stack (normalised together, from strided reads by
    ``sample``; see :func:`~napari_unet_loop.core.planes.iter_segment_planes`).

    Returns
    -------
    int
        Number of planes done.
    """
    settings = SegmentSettings(
        device=device,
        tile=tile,
        postprocess=postprocess,
        channel=channel,
        rgb=rgb,
        tta=tta,
        modality=modality,
        diameter=diameter,
    )
    gen = iter_segment_planes(model, read, indices, settings, stack_of, sample)
    done = 0
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            note = stop.value.note()
            if note:
                yield Notice(note)
            return done
        except PlaneError as exc:
            yield Failure(str(exc))
            return done
        if isinstance(item, PlaneDone):
            done += 1
            yield _plane_result(model, item)
        else:
            yield item


def _plane_result(model: Model, item: PlaneDone) -> PlaneResult:
    seg = item.result
    if seg is None:  # blank plane: nothing in it
        empty = np.zeros(item.labels.shape, np.float16)
        return PlaneResult(item.index, item.labels, empty, empty, item.seconds)
    if seg.probs is None:  # a large plane segmented block by block keeps no maps
        fg = dist = None
    else:
        fg = (1.0 - seg.probs[0]).astype(np.float16)
        dist = seg.probs[model.card.architecture.n_classes].astype(np.float16)
    return PlaneResult(item.index, seg.labels, fg, dist, item.seconds, seg.modality or "none", seg.factor, seg.diameter)


def rethreshold_planes(
    maps: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, float]], postprocess: PostprocessConfig
) -> Generator[Progress | PlaneResult, None, int]:
    """Recompute instance labels from cached probability maps (no network).

    ``maps`` holds, per plane, the foreground probability, the distance map and the plane's
    rescaling factor (the thresholds' sizes are given at the network's scale).
    """
    total = len(maps)
    for k, (index, (fg, dist, factor)) in enumerate(maps.items()):
        t0 = time.perf_counter()
        pp = postprocess_at(postprocess, factor)
        labels = instances_from_maps(fg.astype(np.float32), dist.astype(np.float32), pp)
        yield PlaneResult(index, labels, None, None, time.perf_counter() - t0)
        yield Progress(k + 1, total, "thresholds")
    return total
