"""Block-wise segmentation of planes too large to predict at once, split into independent tasks.

A plane is cut into square *cores* (the output chunks). Each block's work is one task,
:func:`segment_block`: predict the core plus ``margin`` pixels of context for the objects and the
network's halo beyond that (real image content, on the whole image's pooling grid, so the
probabilities equal whole-image ones), find the instances in core plus margin and keep those whose
centre lies in the core. Its result is the region's labels of the kept objects, numbered 1..k.

Two rules make the merged result independent of how and in which order the tasks ran:

- **ids**: block ``i``'s objects get ``offset[i] + 1 .. offset[i] + k_i`` with the offsets the
  running sum of the blocks' counts (:func:`id_offsets`), so ids are unique over the image;
- **pixels**: a pixel claimed by kept objects of several blocks (their margins overlap) belongs to the
  block that comes first in row-major order (:func:`merge_core`).

Objects smaller than the margin are therefore whole and appear once; an object whose every pixel
was claimed by earlier blocks keeps its id unused (ids are unique, not always consecutive).
This module runs the same on one process (:func:`iter_segment_blocks` in :mod:`.segment`) and
on a cluster (:mod:`napari_unet_loop.parallel`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .image import ConstantImageError, InputError, input_limits, prepare_input
from .model_files import Model
from .postprocess import PostprocessConfig

MIN_BLOCK = 64  # smallest block side for block-wise segmentation


@dataclass(frozen=True)
class BlockGrid:
    """How a ``(Y, X)`` plane is cut: cores of ``block`` pixels, ``margin`` of context, ``halo`` for the network.

    Parameters
    ----------
    shape : tuple of int
        ``(Y, X)`` of the plane.
    block : int
        Core side in pixels (the output chunk).
    margin : int
        Context around each core in which objects are found (at least the largest object radius).
    halo : int
        Real pixels beyond the margin that the network sees, so its output there equals the whole image's.
    multiple : int
        The network's size multiple: windows start on the whole image's pooling grid.
    """

    shape: tuple[int, int]
    block: int
    margin: int
    halo: int
    multiple: int = 1

    @property
    def rows(self) -> int:
        """Number of block rows."""
        return math.ceil(self.shape[0] / self.block)

    @property
    def cols(self) -> int:
        """Number of block columns."""
        return math.ceil(self.shape[1] / self.block)

    def __len__(self) -> int:
        return self.rows * self.cols

    def core(self, i: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of block ``i``'s core (row-major numbering)."""
        y0, x0 = (i // self.cols) * self.block, (i % self.cols) * self.block
        return y0, x0, min(y0 + self.block, self.shape[0]), min(x0 + self.block, self.shape[1])

    def region(self, i: int) -> tuple[int, int, int, int]:
        """The core plus the margin, clipped to the plane."""
        y0, x0, y1, x1 = self.core(i)
        h, w = self.shape
        m = self.margin
        return max(y0 - m, 0), max(x0 - m, 0), min(y1 + m, h), min(x1 + m, w)

    def window(self, i: int) -> tuple[int, int, int, int]:
        """The region plus the halo, starting on the pooling grid: the pixels the network reads."""
        ry0, rx0, ry1, rx1 = self.region(i)
        h, w = self.shape
        m = self.multiple
        return (
            max(ry0 - self.halo, 0) // m * m,
            max(rx0 - self.halo, 0) // m * m,
            min(ry1 + self.halo, h),
            min(rx1 + self.halo, w),
        )

    def sources(self, i: int) -> list[int]:
        """Blocks (ascending) whose region reaches core ``i``: the ones that may have written into it."""
        y0, x0, y1, x1 = self.core(i)
        reach = math.ceil(self.margin / self.block)
        r, c = divmod(i, self.cols)
        out = []
        for rr in range(max(r - reach, 0), min(r + reach + 1, self.rows)):
            for cc in range(max(c - reach, 0), min(c + reach + 1, self.cols)):
                j = rr * self.cols + cc
                ry0, rx0, ry1, rx1 = self.region(j)
                if ry0 < y1 and ry1 > y0 and rx0 < x1 and rx1 > x0:
                    out.append(j)
        return out


@dataclass(frozen=True)
class BlockJob:
    """Everything a block task needs besides the model and the image, fixed once for the whole plane.

    Made by :func:`plan_blocks`; small and picklable, so it travels to cluster workers.
    """

    grid: BlockGrid
    postprocess: PostprocessConfig
    limits: list[tuple[float, float]]
    modality: str = "none"
    factor: float = 1.0
    rgb: bool | None = None
    channel: int | None = None
    predict: dict = field(default_factory=dict)  # device, tile, precision, batch_size, tta
    blank: bool = False  # one value everywhere: every block is empty, as a blank plane is


def plan_blocks(
    model: Model,
    image,
    block: int = 2048,
    margin: int = 128,
    postprocess: PostprocessConfig | None = None,
    rgb: bool | None = None,
    channel: int | None = None,
    modality: str | None = None,
    factor: float = 1.0,
    limits: Sequence[tuple[float, float]] | None = None,
    **predict_options,
) -> BlockJob:
    """Fix what every block shares: the grid, the modality and the normalisation limits of the whole plane.

    Parameters
    ----------
    model : Model
        The model.
    image : array-like
        ``(Y, X)``, ``(Y, X, 3|4)`` or ``(Y, X, C)``; numpy, memory-mapped or zarr (read on a
        subsample here).
    block : int
        Core side in pixels.
    margin : int
        Context for the objects around each core, in the image's pixels before rescaling.
    postprocess : PostprocessConfig, optional
        Post-processing for the image's grid (the card's for the image's imaging kind, rescaled,
        when omitted).
    rgb, channel
        How channels are read (see :func:`.image.prepare_input`).
    modality : str, optional
        ``"auto"`` is resolved here, once, on the whole plane.
    factor : float
        Rescaling of each block before the network (see :mod:`.scale`); margin and halo grow with ``1 / factor``.
    limits : sequence of tuple, optional
        Normalisation limits per input channel when fixed beforehand (e.g. over a Z stack, see
        :func:`.segment.stack_settings`); measured on the whole plane when omitted.
    **predict_options
        ``device``, ``tile``, ``precision``, ``batch_size``, ``tta`` for :func:`.predict.predict`.

    Returns
    -------
    BlockJob
        The plan.

    Raises
    ------
    InputError
        For a block smaller than :data:`MIN_BLOCK`.
    """
    from .modality import input_modality
    from .predict import model_halo
    from .scale import postprocess_at

    if block < MIN_BLOCK:
        raise InputError(f"block size {block} is too small: use at least {MIN_BLOCK} pixels (2048 is a good size)")
    card = model.card
    kind = input_modality(model, image, modality, rgb, channel) or "none"
    blank = False
    if limits is None:
        try:
            limits = input_limits(image, model.input_channels(kind), card.normalization, rgb, channel, modality=kind)
        except ConstantImageError:  # nothing to segment: empty labels, as the other paths give a blank image
            limits, blank = [], True
    limits = [(float(lo), float(hi)) for lo, hi in limits]
    halo = math.ceil(model_halo(model.net_for(kind)) / factor) + (2 if factor != 1.0 else 0)
    grid = BlockGrid(
        (int(image.shape[0]), int(image.shape[1])),
        int(block),
        max(int(margin), math.ceil(margin / factor)),
        halo,
        card.architecture.size_multiple,
    )
    options = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in predict_options.items()}
    if postprocess is None:
        postprocess = postprocess_at(card.thresholds(kind), factor)
    return BlockJob(grid, postprocess, limits, kind, float(factor), rgb, channel, options, blank)


def segment_block(model: Model, image, job: BlockJob, i: int) -> np.ndarray:
    """Segment block ``i``: the labels of its kept objects over its region, numbered 1..k.

    Parameters
    ----------
    model : Model
        The model (the one :func:`plan_blocks` was given).
    image : array-like
        The whole plane; only block ``i``'s window is read.
    job : BlockJob
        The plan.
    i : int
        Block index (row-major).

    Returns
    -------
    numpy.ndarray
        ``uint32`` labels of the region :meth:`BlockGrid.region` ``(i)``: the objects whose centre
        lies in the core, 1..k in the order of their first pixel; 0 elsewhere.
    """
    from scipy import ndimage as ndi

    from .postprocess import instances_from_maps
    from .predict import predict
    from .scale import resize, scaled_shape

    card = model.card
    grid = job.grid
    y0, x0, y1, x1 = grid.core(i)
    ry0, rx0, ry1, rx1 = grid.region(i)
    if job.blank:
        return np.zeros((ry1 - ry0, rx1 - rx0), np.uint32)
    wy0, wx0, wy1, wx1 = grid.window(i)
    window = np.asarray(image[wy0:wy1, wx0:wx1])
    x = prepare_input(
        window, model.input_channels(job.modality), card.normalization, job.rgb, job.channel, job.limits, job.modality
    )
    if job.factor != 1.0:
        x = resize(x, scaled_shape(x.shape[-2:], job.factor))
    del window
    probs = predict(model.net_for(job.modality), x, **job.predict)
    del x
    n_cls = card.architecture.n_classes
    maps = probs[[0, n_cls]]  # background and distance: all the instances need
    del probs
    if job.factor != 1.0:
        maps = resize(np.ascontiguousarray(maps), (wy1 - wy0, wx1 - wx0))
    sl = (slice(ry0 - wy0, ry1 - wy0), slice(rx0 - wx0, rx1 - wx0))
    local = instances_from_maps(1.0 - maps[0][sl], maps[1][sl], job.postprocess)
    del maps
    n = int(local.max())
    out = np.zeros(local.shape, np.uint32)
    if n:
        centres = np.asarray(ndi.center_of_mass(np.ones_like(local), local, np.arange(1, n + 1)))
        cy, cx = centres[:, 0] + ry0, centres[:, 1] + rx0
        keep = (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
        lut = np.zeros(n + 1, np.uint32)
        lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        out = lut[local]
    return out


def id_offsets(counts: Sequence[int]) -> np.ndarray:
    """Where each block's ids start: the running sum of the blocks' object counts (``int64``)."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, np.int64))])[:-1]


def paste(target: np.ndarray, origin: tuple[int, int], local: np.ndarray, at: tuple[int, int], offset: int) -> None:
    """Write a block's labels (``local``, placed at ``at``) into ``target`` (placed at ``origin``) where it is still 0.

    Only the overlap of the two is touched; ids become ``offset + local``.
    """
    oy, ox = origin
    ay, ax = at
    y0, x0 = max(oy, ay), max(ox, ax)
    y1, x1 = min(oy + target.shape[0], ay + local.shape[0]), min(ox + target.shape[1], ax + local.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    src = local[y0 - ay : y1 - ay, x0 - ax : x1 - ax]
    dst = target[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    write = (src > 0) & (dst == 0)
    dst[write] = src[write].astype(np.int64) + int(offset)


def merge_core(
    grid: BlockGrid, i: int, results: Mapping[int, np.ndarray], offsets: Mapping[int, int] | Sequence[int], dtype
) -> np.ndarray:
    """The final labels of core ``i`` from the results of the blocks that reach it.

    Parameters
    ----------
    grid : BlockGrid
        The grid.
    i : int
        Core index.
    results : mapping
        :func:`segment_block` results of (at least) :meth:`BlockGrid.sources` ``(i)``: arrays, or
        anything with a ``shape`` that 2D slicing reads (only the part over the core is read).
    offsets : sequence or mapping of int
        :func:`id_offsets` of all blocks (or of those that reach core ``i``, by block index).
    dtype : numpy dtype
        Of the returned labels.

    Returns
    -------
    numpy.ndarray
        The core's labels: each pixel from the first block (row-major) whose kept objects cover it.
    """
    y0, x0, y1, x1 = grid.core(i)
    out = np.zeros((y1 - y0, x1 - x0), dtype)
    for j in grid.sources(i):
        ry0, rx0, _, _ = grid.region(j)
        paste(out, (y0, x0), results[j], (ry0, rx0), offsets[j])
    return out
