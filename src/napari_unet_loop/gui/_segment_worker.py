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

from ..core.image import ConstantImageError, InputError
from ..core.model_files import Model
from ..core.postprocess import PostprocessConfig, instances_from_maps
from ..core.predict import Progress
from ..core.segment import iter_segment


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
    """

    index: tuple[int, ...]
    labels: np.ndarray
    fg: np.ndarray | None
    dist: np.ndarray | None
    seconds: float
    modality: str | None = None


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
    tta: bool = False,
    modality: str | None = None,
) -> Generator[Progress | PlaneResult | Failure, None, int]:
    """Segment planes one after another, yielding progress and each plane's result.

    ``modality`` is the imaging modality (``"auto"``, a kind, or ``"none"``; the model
    card's when ``None``), passed to :func:`~napari_unet_loop.core.segment.iter_segment`.

    Input problems (NaN, wrong channel count...) end the run with a :class:`Failure`
    carrying the reason; planes finished before it are kept. In a stack, a blank
    (constant) plane gets empty labels and the run goes on; a :class:`Notice` at the
    end says which planes were blank.

    Returns
    -------
    int
        Number of planes segmented.
    """
    total = len(indices)
    blank: list[tuple[int, ...]] = []
    for k, index in enumerate(indices):
        t0 = time.perf_counter()
        plane = read(index)
        where = f"plane {index}: " if total > 1 else ""
        gen = iter_segment(
            model,
            plane,
            device=device,
            tile=tile,
            postprocess=postprocess,
            rgb=rgb if plane.ndim == 3 else None,
            channel=channel,
            tta=tta,
            modality=modality,
        )
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                seg = stop.value
                break
            except ConstantImageError:
                blank.append(index)  # a blank field of view is normal (e.g. in a plate): no objects, no error
                seg = None
                break
            except InputError as exc:
                yield Failure(f"{where}{exc}")
                return k
            # overall progress: planes done plus the share of this plane's tiles
            frac = p.done / p.total if p.total else 1.0
            yield Progress(
                int(1000 * (k + (0.9 * frac if p.stage in ("predict", "blocks") else 0.95))),
                1000 * total,
                f"plane {k + 1}/{total}: {p.stage}" if total > 1 else p.stage,
            )
        if seg is None:  # blank plane: nothing in it
            empty = np.zeros(plane.shape[:2], np.float16)
            yield PlaneResult(index, np.zeros(plane.shape[:2], np.int32), empty, empty, time.perf_counter() - t0)
            yield Progress(1000 * (k + 1), 1000 * total, f"plane {k + 1}/{total} blank")
            continue
        if seg.probs is None:  # a large plane segmented block by block keeps no maps
            fg = dist = None
        else:
            fg = (1.0 - seg.probs[0]).astype(np.float16)
            dist = seg.probs[model.card.architecture.n_classes].astype(np.float16)
        yield PlaneResult(index, seg.labels, fg, dist, time.perf_counter() - t0, seg.modality or "none")
        yield Progress(1000 * (k + 1), 1000 * total, f"plane {k + 1}/{total} done")
    if blank and total == 1:
        yield Notice("the image is blank (one value everywhere): no objects")
    elif blank:
        shown = ", ".join(str(i) for i in blank[:10]) + (", ..." if len(blank) > 10 else "")
        yield Notice(f"{len(blank)} blank plane(s) left without objects: {shown}")
    return total


def rethreshold_planes(
    maps: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]], postprocess: PostprocessConfig
) -> Generator[Progress | PlaneResult, None, int]:
    """Recompute instance labels from cached probability maps (no network)."""
    total = len(maps)
    for k, (index, (fg, dist)) in enumerate(maps.items()):
        t0 = time.perf_counter()
        labels = instances_from_maps(fg.astype(np.float32), dist.astype(np.float32), postprocess)
        yield PlaneResult(index, labels, None, None, time.perf_counter() - t0)
        yield Progress(k + 1, total, "thresholds")
    return total
