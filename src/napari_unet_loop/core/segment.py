"""From a raw image to instance labels: prepare, predict tiles, post-process.

:func:`iter_segment` segments one 2D image (block by block when it is large, at the object size
asked or estimated); :mod:`.planes` runs it over the planes of a stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .image import ConstantImageError, InputError, input_limits, prepare_input
from .modality import input_modality
from .model_files import Model
from .postprocess import PostprocessConfig, instances
from .predict import Progress, auto_tta, iter_predict, run
from .scale import (
    MAX_FACTOR,
    MIN_FACTOR,
    check_diameter,
    median_diameter,
    postprocess_at,
    resize,
    scale_factor,
    scaled_shape,
)

LARGE_PIXELS = 6144 * 6144  # planes above this are segmented block by block
AUTO_PASSES = 3  # most segmentations to estimate an image's object diameter
AUTO_FITS = 1.5  # a pass whose objects measure within 1.5x of the diameter it assumed fits
AUTO_AGREE = 0.15  # a measured diameter within 15 % of the one used: estimated
AUTO_PIXELS = 2048 * 2048  # larger images are measured on a central crop of this size
AUTO_MIN_OBJECTS = 2  # a pass that finds fewer objects measures nothing (one blob is no size)


@dataclass
class Segmentation:
    """Result of :func:`iter_segment`.

    Attributes
    ----------
    labels : numpy.ndarray
        ``int32`` instance labels.
    probs : numpy.ndarray or None
        ``(C, H, W)`` network outputs, kept for re-thresholding without the network
        (``None`` for large planes segmented block by block, which keep only the labels).
    modality : str or None
        The imaging modality the image was treated as (``None``: the grey image as it is).
    diameter : float or None
        Object diameter (pixels) the image was segmented for (``None``: unknown, as it is).
    factor : float
        How the image was rescaled before the network (1.0: not); ``probs`` and ``labels``
        are on the image's own grid either way.
    """

    labels: np.ndarray
    probs: np.ndarray | None
    modality: str | None = None
    diameter: float | None = None
    factor: float = 1.0


def iter_segment(
    model: Model,
    image: np.ndarray,
    device: torch.device | str = "cpu",
    tile: int | None = None,
    precision: str = "auto",
    postprocess: PostprocessConfig | Mapping[str, Any] | None = None,
    rgb: bool | None = None,
    channel: int | None = None,
    batch_size: int | None = None,
    tta: bool | str = "auto",
    block: int | None = None,
    modality: str | None = None,
    diameter: float | str | None = None,
    limits: Sequence[tuple[float, float]] | None = None,
) -> Generator[Progress, None, Segmentation]:
    """Segment one 2D image (with optional channels) into instances.

    Parameters
    ----------
    model : Model
        The model.
    image : numpy.ndarray
        ``(Y, X)``, ``(Y, X, 3|4)`` or ``(Y, X, C)`` raw image.
    device : torch.device or str
        Compute device.
    tile : int, optional
        Core tile side; automatic when omitted.
    precision : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    postprocess : PostprocessConfig or mapping, optional
        Thresholds; the model card's for the image's imaging kind when omitted, with a
        mapping's settings replaced (see :meth:`.model_card.ModelCard.thresholds`).
    rgb : bool, optional
        Whether a last axis of 3 or 4 is colour.
    channel : int, optional
        Channel to segment in a multichannel image.
    batch_size : int, optional
        Tiles per forward pass.
    tta : bool or str
        Average over the four flips of each tile (4x the network's work). ``"auto"`` (the
        default): on images of at most :data:`~.predict.TTA_AUTO_PIXELS` pixels as the network
        sees them (rescaled for the object size), off on larger ones; ``"on"``/``"off"`` as
        ``True``/``False``.
    block : int, optional
        Segment block by block with this core size (bounded memory: no full-size
        probability maps). Planes above ``LARGE_PIXELS`` as the network sees them (enlarged for
        small objects) always are, with 2048 px blocks.
    modality : str, optional
        Imaging modality (``"auto"``, ``"fluorescence"``, ``"brightfield"``, ``"he"``,
        ``"none"``); the model card's when omitted. See :func:`input_modality`.
    diameter : float or str, optional
        Object diameter in the image (pixels): the image is rescaled so its objects reach the
        network at the size it was trained at (see :mod:`.scale`). ``"auto"`` estimates it
        from a first segmentation (see :func:`iter_estimate_diameter`); omitted, the model
        card's ``default_diameter`` (a model whose card sets ``upscale_small`` enlarges images
        of objects much smaller than its diameter: see :func:`_upscale_small`).
    limits : sequence of tuple, optional
        Per input channel, the grey values normalised to 0 and 1, when they are fixed for more
        than this image (a Z stack's, see :func:`.planes.stack_settings`); the image's own percentiles
        when omitted.

    Yields
    ------
    Progress
        Tile progress.

    Returns
    -------
    Segmentation
        Labels and network outputs, on the image's grid.

    Raises
    ------
    InputError
        For a diameter the model cannot use (it records none, or the value is not positive).
    ConstantImageError
        For a constant image (with ``limits`` too: a blank plane of a stack stays blank).
    """
    h, w = image.shape[:2]
    kind = input_modality(model, image, modality, rgb, channel)
    if limits is not None:
        limits = [(float(lo), float(hi)) for lo, hi in limits]
    options = dict(
        device=device, tile=tile, precision=precision, postprocess=postprocess, rgb=rgb, channel=channel,
        batch_size=batch_size, tta=tta, block=block, modality=kind or "none", limits=limits,
    )  # fmt: skip
    if isinstance(diameter, str):
        if diameter != "auto":
            raise InputError(f"unknown object diameter {diameter!r}: give a number of pixels or 'auto'")
        return (yield from iter_estimate_diameter(model, image, **options))
    d, factor = diameter_factor(model, diameter, kind)
    pp = postprocess_at(model.card.thresholds(kind, postprocess), factor)
    tta = auto_tta(tta, h * w * factor**2)  # for the whole image: every tile and block alike
    if block is not None or h * w * max(factor, 1.0) ** 2 > LARGE_PIXELS:  # as large as it reaches the network
        if limits is not None:  # a blank plane stays blank: its own percentiles (a subsample) say so
            input_limits(image, model.input_channels(kind), model.card.normalization, rgb, channel, modality=kind)
        labels = yield from iter_segment_blocks(
            model,
            image,
            2048 if block is None else block,
            device=device,
            tile=tile,
            precision=precision,
            postprocess=pp,
            rgb=rgb,
            channel=channel,
            batch_size=batch_size,
            tta=tta,
            modality=kind or "none",
            factor=factor,
            limits=limits,
        )
        return Segmentation(labels, None, kind, d, factor)
    x = prepare_input(image, model.input_channels(kind), model.card.normalization, rgb, channel, limits, modality=kind)
    if limits is not None and any(c.min() == c.max() for c in x):  # a blank plane of a stack stays blank
        raise ConstantImageError("image is constant (one value everywhere, in the channel read): nothing to segment")
    if factor != 1.0:
        x = resize(x, scaled_shape((h, w), factor))
    probs = yield from iter_predict(
        model.net_for(kind), x, device=device, tile=tile, precision=precision, batch_size=batch_size, tta=tta
    )
    yield Progress(0, 1, "instances")
    if factor != 1.0:
        probs = resize(probs, (h, w))
    labels = instances(probs, pp, model.card.architecture.n_classes)
    yield Progress(1, 1, "instances")
    seg = Segmentation(labels, probs, kind, d, factor)
    if diameter is None and limits is None and model.card.upscale_small:
        return (yield from _upscale_small(model, image, seg, options))
    return seg


def _upscale_small(
    model: Model, image: np.ndarray, seg: Segmentation, options: dict
) -> Generator[Progress, None, Segmentation]:
    """A model's ``upscale_small`` rule: objects much smaller than its diameter are segmented enlarged.

    When the median diameter of what ``seg`` found is under the diameter it assumed (the
    model's default) divided by :data:`AUTO_FITS`, the image is segmented again, enlarged for
    that diameter, and measured again while the measurement moves by more than
    :data:`AUTO_AGREE` (at most :data:`AUTO_PASSES` times). Images of objects of the model's size or larger are left as
    they were segmented: a network trained on nuclei of 10 to 50 px at their own scale segments
    large ones well and splits small touching ones less well (measured in docs/model.md).
    """
    small = float(model.image_diameter or 0) / AUTO_FITS
    lowest = float(model.card.diameter or 0) / MAX_FACTOR

    def measure(candidate: Segmentation) -> float | None:
        found = median_diameter([candidate.labels])
        return None if found is None else max(found, lowest)

    found = measure(seg)
    if found is None or found >= small:
        return seg
    result, _ = yield from _refine(
        _once_per_factor(model, seg.modality, lambda d: iter_segment(model, image, diameter=d, **options), [seg]),
        measure,
        seg,
        float(model.image_diameter),
        found,
        AUTO_PASSES,
        done=lambda d: d >= small,
    )
    return seg if result.factor == seg.factor else result  # not enlarged after all: the first pass as it was


def _once_per_factor(
    model: Model,
    kind: str | None,
    segment_at: Callable[[float], Generator[Progress, None, Segmentation]],
    known: Iterable[Segmentation] = (),
) -> Callable[[float], Generator[Progress, None, Segmentation]]:
    """``segment_at`` that runs the network once per rescaling factor.

    Diameters that give the same factor (within the sizes a network learnt unscaled, or within
    :data:`.scale.TOLERANCE`) give the same labels: the pass already made for one of them
    (``known`` ones included) is reused, marked with the diameter asked for.
    """
    made = {seg.factor: seg for seg in known}

    def at(diameter: float) -> Generator[Progress, None, Segmentation]:
        factor = diameter_factor(model, diameter, kind)[1]
        if factor not in made:
            made[factor] = yield from segment_at(diameter)
        return replace(made[factor], diameter=diameter)

    return at


def _refine(
    segment_at: Callable[[float], Generator[Progress, None, Segmentation]],
    measure: Callable[[Segmentation], float | None],
    seg: Segmentation,
    assumed: float,
    found: float | None,
    passes: int,
    done: Callable[[float], bool] = lambda d: False,
    tried: Iterable[float] = (),
) -> Generator[Progress, None, tuple[Segmentation, float]]:
    """Segment again at the diameter measured until the measurement settles.

    The one refining loop of :func:`iter_estimate_diameter` and :func:`_upscale_small`: while
    the diameter ``found`` in ``seg`` differs from the one it ``assumed`` by more than
    :data:`AUTO_AGREE` (and is not ``done`` nor already ``tried``), segment at ``found``
    and measure again, at most ``passes`` times. A pass that measures nothing leaves the pass
    before it.

    Parameters
    ----------
    segment_at : callable
        ``segment_at(diameter)``: a generator of :func:`iter_segment` for that diameter.
    measure : callable
        ``measure(segmentation)``: its object diameter, ``None`` when it measures nothing.
    seg : Segmentation
        The pass to start from.
    assumed : float
        The diameter ``seg`` was segmented for.
    found : float or None
        ``measure(seg)``.
    passes : int
        Most passes.
    done : callable, optional
        ``done(diameter)``: a measurement that needs no further pass.
    tried : iterable of float, optional
        Diameters segmented already (a measurement that returns to one of them stops).

    Returns
    -------
    tuple
        The last pass kept and the diameter it was segmented for.
    """
    seen = set(tried)
    for _ in range(passes):
        if found is None or abs(found / assumed - 1.0) <= AUTO_AGREE or found in seen or done(found):
            break
        candidate = yield from segment_at(found)
        seen.add(found)
        again = measure(candidate)
        if again is None:  # nothing measured at that size: the pass before stands
            break
        seg, assumed, found = candidate, found, again
    return seg, assumed


def diameter_factor(model: Model, diameter: float | None, kind: str | None = None) -> tuple[float | None, float]:
    """The object diameter an image is segmented for, and the image's rescaling factor.

    Parameters
    ----------
    model : Model
        Its card's ``diameter`` is the network's scale, ``default_diameter`` the default.
    diameter : float, optional
        Object diameter in the image (pixels).
    kind : str, optional
        The imaging kind the image reaches the network as: the sizes its network learnt
        unscaled are not rescaled (:meth:`.model_card.ModelCard.native_for`).

    Returns
    -------
    tuple
        ``(diameter, factor)``; ``(None, 1.0)`` for a model that records no diameter.

    Raises
    ------
    InputError
        For a non-positive diameter, or one given to a model that records none.
    """
    native = model.card.native_for(kind)  # object sizes the kind's network learnt unscaled
    if diameter is None:
        return model.image_diameter, scale_factor(model.card.diameter, model.image_diameter, native)
    try:
        d = check_diameter(diameter)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if model.card.diameter is None:
        raise InputError(
            f"the model {model.name!r} records no object diameter (it was made before object sizes), so it "
            "cannot rescale images: leave the object diameter empty, or fine-tune it again"
        )
    return d, scale_factor(model.card.diameter, d, native)


def iter_estimate_diameter(
    model: Model, image: np.ndarray, passes: int = AUTO_PASSES, **options
) -> Generator[Progress, None, Segmentation]:
    """Segment an image for the object diameter measured from its own segmentation.

    The image (a central crop of at most :data:`AUTO_PIXELS` pixels of a large one) is
    segmented assuming objects of the model's default diameter ``D``, and, while the median
    diameter of what a pass found disagrees with what it assumed by more than a factor
    :data:`AUTO_FITS`, of ``2 D`` and ``4 D`` (shrunk 2 and 4 times: cheap passes that keep
    large objects whole, where the first cuts them into nucleus-sized pieces). The first pass
    that agrees with itself wins, else the one that agrees best (a network shown objects at
    its own scale finds them at that scale; smaller assumptions go first because a coarse pass
    can merge small objects into clumps that look self-consistent). Its measurement is
    then refined: segmented again at the measured diameter while that changes it by more
    than :data:`AUTO_AGREE` (at most ``passes`` times). A pass that finds fewer than
    :data:`AUTO_MIN_OBJECTS` objects measures nothing (a shrunk pass can melt small objects
    into one blob), and a refining pass that finds nothing leaves the pass before it.
    Measured on the validation split in docs/model.md.

    Parameters
    ----------
    model : Model
        A model that records its diameter.
    image : numpy.ndarray
        The image.
    passes : int
        Most refining passes.
    **options
        Keyword arguments of :func:`iter_segment` (``diameter`` excepted).

    Returns
    -------
    Segmentation
        The segmentation at the estimated diameter (its ``diameter``).

    Raises
    ------
    InputError
        For a model that records no diameter.
    """
    if model.card.diameter is None:
        raise InputError(
            f"the model {model.name!r} records no object diameter (made before object sizes): it cannot "
            "estimate one; leave the object diameter empty"
        )
    crop = _estimate_crop(image)
    lo, hi = model.card.diameter / MAX_FACTOR, model.card.diameter / MIN_FACTOR
    base = float(model.image_diameter)
    if crop is None:  # no crop with content to measure on: the model's own size, on the whole image
        return (yield from iter_segment(model, image, diameter=min(base, hi), **options))
    tried: dict[float, tuple[Segmentation, float | None]] = {}
    kind = options.get("modality")
    on_crop = _once_per_factor(model, kind, lambda d: iter_segment(model, crop, diameter=d, **options))

    def clamped(seg: Segmentation) -> float | None:
        found = median_diameter([seg.labels]) if seg.labels.max() >= AUTO_MIN_OBJECTS else None
        return None if found is None else min(max(found, lo), hi)

    for d in (min(base, hi), min(2 * base, hi), min(4 * base, hi)):  # the first that agrees with itself...
        if d in tried:  # capped at the largest diameter already
            break
        seg = yield from on_crop(d)
        tried[d] = (seg, clamped(seg))
        found = tried[d][1]
        if found is not None and abs(math.log(found / d)) <= math.log(AUTO_FITS):
            break
    fits = [(abs(math.log(f / d)), d) for d, (_, f) in tried.items() if f is not None]
    start = min(fits)[1] if fits else min(base, hi)  # ... else the one that agrees best, else the default
    seg, found = tried[start]
    seg, current = yield from _refine(on_crop, clamped, seg, start, found, passes, tried=tried)
    if crop is image:
        return seg
    return (yield from iter_segment(model, image, diameter=current, **options))


def _estimate_crop(image: np.ndarray) -> np.ndarray | None:
    """Where a large image's object size is estimated: a crop of :data:`AUTO_PIXELS` with content in it.

    The centre first, then the centres of the four quarters: a mosaic's centre may be its blank
    fill. ``None`` when all five are blank (the image's content lies elsewhere, or it has none).
    """
    h, w = image.shape[:2]
    if h * w <= AUTO_PIXELS:
        return image
    side = int(AUTO_PIXELS**0.5)
    for cy, cx in ((h / 2, w / 2), (h / 4, w / 4), (h / 4, 3 * w / 4), (3 * h / 4, w / 4), (3 * h / 4, 3 * w / 4)):
        y0, x0 = int(np.clip(cy - side / 2, 0, max(0, h - side))), int(np.clip(cx - side / 2, 0, max(0, w - side)))
        crop = image[y0 : y0 + side, x0 : x0 + side]
        if np.nanmax(crop) > np.nanmin(crop):
            return crop
    return None


def segment(model: Model, image: np.ndarray, **kwargs) -> Segmentation:
    """Run :func:`iter_segment` to the end."""
    return run(iter_segment(model, image, **kwargs))


def iter_segment_blocks(
    model: Model,
    image,
    block: int = 2048,
    margin: int = 128,
    device: torch.device | str = "cpu",
    tile: int | None = None,
    precision: str = "auto",
    postprocess: PostprocessConfig | None = None,
    rgb: bool | None = None,
    channel: int | None = None,
    batch_size: int | None = None,
    tta: bool | str = "auto",
    out: np.ndarray | None = None,
    modality: str | None = None,
    factor: float = 1.0,
    limits: Sequence[tuple[float, float]] | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Segment a large plane block by block in this process, holding only the image, the labels and one block's work.

    The blocks and the rules that make the result independent of how the work is cut are
    in :mod:`.blocks`; a cluster (:mod:`napari_unet_loop.parallel`) gives the same labels.
    Objects wider than twice ``margin`` may be cut.

    Parameters
    ----------
    model : Model
        The model.
    image : array-like
        ``(Y, X)``, ``(Y, X, 3|4)`` or ``(Y, X, C)``; numpy, memory-mapped or zarr (only
        blocks are read).
    block : int
        Core block side in pixels.
    margin : int
        Context around each block for the objects (at least the largest object radius).
    device, tile, precision, postprocess, rgb, channel, batch_size, tta
        As for :func:`iter_segment` (``tta="auto"`` judged on the whole plane).
    out : numpy.ndarray, optional
        ``(Y, X)`` integer array to write the labels into (e.g. a memory map); a new
        ``int32`` array when omitted.
    modality : str, optional
        As for :func:`iter_segment`; ``"auto"`` is resolved once, on the whole image.
    factor : float
        Rescaling of each block before the network (see :mod:`.scale`): its probabilities are
        resized back, ``postprocess`` is taken as given for the image's grid, and the margin
        and halo grow with ``1 / factor``. The pooling grid of the rescaled blocks then differs
        from a whole-image rescale's, so probabilities agree up to interpolation, not bit for bit.
    limits : sequence of tuple, optional
        Normalisation limits fixed beforehand (as for :func:`iter_segment`); measured on the
        whole plane when omitted.

    Yields
    ------
    Progress
        One unit per block.

    Returns
    -------
    numpy.ndarray
        Instance labels, unique ids (see :mod:`.blocks`).
    """
    from .blocks import paste, plan_blocks, segment_block

    tta = auto_tta(tta, image.shape[0] * image.shape[1] * factor**2)
    job = plan_blocks(
        model, image, block, margin, postprocess, rgb, channel, modality, factor, limits,
        device=device, tile=tile, precision=precision, batch_size=batch_size, tta=tta,
    )  # fmt: skip
    if job.blank:  # as a whole image: the caller says so (a blank plane of a stack, the image)
        raise ConstantImageError("image is constant (one value everywhere, in the channel read): nothing to segment")
    grid = job.grid
    labels = np.zeros(grid.shape, np.int32) if out is None else out
    offset = 0
    yield Progress(0, len(grid), "blocks")
    for i in range(len(grid)):
        # blocks run in row-major order, so writing where still free is merge_core's first-block rule
        local = segment_block(model, image, job, i)
        ry0, rx0, ry1, rx1 = grid.region(i)
        paste(labels[ry0:ry1, rx0:rx1], (ry0, rx0), local, (ry0, rx0), offset)
        offset += int(local.max())
        yield Progress(i + 1, len(grid), "blocks")
    return labels
