"""From a raw image to instance labels: prepare, predict tiles, post-process; plane by plane for stacks.

:func:`iter_segment` segments one 2D image; :func:`iter_segment_planes` is the one loop over the
planes of a stack (with its blank-plane policy) that the dock and the command line both run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .image import ConstantImageError, InputError, input_limits, prepare_input
from .modality import input_modality
from .model_files import Model
from .postprocess import PostprocessConfig, instances
from .predict import Progress, iter_predict, run
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
    postprocess: PostprocessConfig | None = None,
    rgb: bool | None = None,
    channel: int | None = None,
    batch_size: int | None = None,
    tta: bool = False,
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
    postprocess : PostprocessConfig, optional
        Thresholds; the model card's defaults when omitted.
    rgb : bool, optional
        Whether a last axis of 3 or 4 is colour.
    channel : int, optional
        Channel to segment in a multichannel image.
    batch_size : int, optional
        Tiles per forward pass.
    tta : bool
        Average over the four flips of each tile (4x slower).
    block : int, optional
        Segment block by block with this core size (bounded memory: no full-size
        probability maps). Planes above ``LARGE_PIXELS`` always are, with 2048 px blocks.
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
        than this image (a Z stack's, see :func:`stack_settings`); the image's own percentiles
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
    d, factor = diameter_factor(model, diameter)
    pp = postprocess_at(postprocess or model.card.postprocess, factor)
    if block is not None or h * w > LARGE_PIXELS:
        if limits is not None:  # a blank plane stays blank: its own percentiles (a subsample) say so
            input_limits(
                image, model.card.architecture.in_channels, model.card.normalization, rgb, channel, modality=kind
            )
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
    x = prepare_input(
        image, model.card.architecture.in_channels, model.card.normalization, rgb, channel, limits, modality=kind
    )
    if limits is not None and any(c.min() == c.max() for c in x):  # a blank plane of a stack stays blank
        raise ConstantImageError("image is constant (one value everywhere, in the channel read): nothing to segment")
    if factor != 1.0:
        x = resize(x, scaled_shape((h, w), factor))
    probs = yield from iter_predict(
        model.net, x, device=device, tile=tile, precision=precision, batch_size=batch_size, tta=tta
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
    found = median_diameter([seg.labels])
    if found is None or found >= small:
        return seg
    current, result = max(found, lowest), seg
    for _ in range(AUTO_PASSES):
        candidate = yield from iter_segment(model, image, diameter=current, **options)
        again = median_diameter([candidate.labels])
        if again is None:  # nothing found enlarged: keep what was
            break
        result = candidate
        if abs(again / current - 1.0) <= AUTO_AGREE or again >= small:
            break
        current = max(again, lowest)
    return result


def diameter_factor(model: Model, diameter: float | None) -> tuple[float | None, float]:
    """The object diameter an image is segmented for, and the image's rescaling factor.

    Parameters
    ----------
    model : Model
        Its card's ``diameter`` is the network's scale, ``default_diameter`` the default.
    diameter : float, optional
        Object diameter in the image (pixels).

    Returns
    -------
    tuple
        ``(diameter, factor)``; ``(None, 1.0)`` for a model that records no diameter.

    Raises
    ------
    InputError
        For a non-positive diameter, or one given to a model that records none.
    """
    if diameter is None:
        return model.image_diameter, scale_factor(model.card.diameter, model.image_diameter)
    try:
        d = check_diameter(diameter)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if model.card.diameter is None:
        raise InputError(
            f"the model {model.name!r} records no object diameter (it was made before object sizes), so it "
            "cannot rescale images: leave the object diameter empty, or fine-tune it again"
        )
    return d, scale_factor(model.card.diameter, d)


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
    h, w = image.shape[:2]
    crop = image
    if h * w > AUTO_PIXELS:
        side = int(AUTO_PIXELS**0.5)
        y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
        crop = image[y0 : y0 + side, x0 : x0 + side]
    lo, hi = model.card.diameter / MAX_FACTOR, model.card.diameter / MIN_FACTOR
    base = float(model.image_diameter)
    tried: dict[float, tuple[Segmentation, float | None]] = {}

    def measure(d: float):
        seg = yield from iter_segment(model, crop, diameter=d, **options)
        found = median_diameter([seg.labels]) if seg.labels.max() >= AUTO_MIN_OBJECTS else None
        tried[d] = (seg, None if found is None else min(max(found, lo), hi))

    for d in (base, 2 * base, 4 * base):  # the first that agrees with itself, else the one that agrees best
        yield from measure(min(d, hi))
        found = tried[min(d, hi)][1]
        if found is not None and abs(math.log(found / min(d, hi))) <= math.log(AUTO_FITS):
            break
    fits = [(abs(math.log(f / d)), d) for d, (_, f) in tried.items() if f is not None]
    current = min(fits)[1] if fits else base
    for _ in range(passes):
        found = tried[current][1]
        if found is None or abs(found / current - 1.0) <= AUTO_AGREE or found in tried:
            break
        previous, current = current, found
        yield from measure(current)
        if tried[current][1] is None:  # nothing found at the size measured: the pass before stands
            current = previous
            break
    if crop is image:
        return tried[current][0]
    return (yield from iter_segment(model, image, diameter=current, **options))


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
    tta: bool = False,
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
        As for :func:`iter_segment`.
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

    job = plan_blocks(
        model, image, block, margin, postprocess, rgb, channel, modality, factor, limits,
        device=device, tile=tile, precision=precision, batch_size=batch_size, tta=tta,
    )  # fmt: skip
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


@dataclass(frozen=True)
class SegmentSettings:
    """How to segment: everything besides the model and the image.

    Attributes
    ----------
    device : torch.device or str
        Compute device.
    tile : int or None
        Core tile side (automatic when ``None``).
    precision : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    batch_size : int or None
        Tiles per forward pass (automatic when ``None``).
    tta : bool
        Average the network over four flips.
    block : int or None
        Segment block by block with this block side.
    postprocess : PostprocessConfig or None
        Thresholds (the model card's when ``None``).
    channel : int or None
        Channel to segment in multichannel planes.
    rgb : bool or None
        Whether a last axis of 3 or 4 is colour (guessed when ``None``).
    modality : str or None
        Imaging modality (the model card's when ``None``).
    diameter : float, str or None
        Object diameter in pixels, or ``"auto"`` (the model card's default when ``None``).
    limits : tuple of tuple or None
        Normalisation limits per input channel shared by all planes (a Z stack's, set by
        :func:`stack_settings`); each plane's own percentiles when ``None``.
    """

    device: torch.device | str = "cpu"
    tile: int | None = None
    precision: str = "auto"
    batch_size: int | None = None
    tta: bool = False
    block: int | None = None
    postprocess: PostprocessConfig | None = None
    channel: int | None = None
    rgb: bool | None = None
    modality: str | None = None
    diameter: float | str | None = None
    limits: tuple[tuple[float, float], ...] | None = None

    def kwargs(self, plane: np.ndarray) -> dict:
        """Keyword arguments of :func:`iter_segment` for one plane."""
        return dict(
            device=self.device,
            tile=self.tile,
            precision=self.precision,
            postprocess=self.postprocess,
            rgb=self.rgb if np.ndim(plane) == 3 else None,
            channel=self.channel,
            batch_size=self.batch_size,
            tta=self.tta,
            block=self.block,
            modality=self.modality,
            diameter=self.diameter,
            limits=self.limits,
        )


STACK_PLANES = 32  # most planes of a stack read to fix its modality and normalisation limits
STACK_PIXELS = 4_000_000  # most pixels read over those planes


def stack_settings(
    model: Model,
    read: Callable[[tuple[int, ...]], np.ndarray],
    stack: Sequence[tuple[int, ...]],
    settings: SegmentSettings = SegmentSettings(),
    sample: Callable[[tuple[int, ...], int], np.ndarray] | None = None,
) -> SegmentSettings:
    """Settings that treat the planes of one Z stack alike: one imaging modality, one normalisation.

    Each plane normalised by its own percentiles stretches the noise of a plane without
    objects (above or below the sample) to the full range, and the network then finds
    objects in it. As Cellpose does for Z stacks by default (``norm3D``), the percentiles
    are taken over the stack instead: on a strided sample of up to :data:`STACK_PLANES`
    planes spread evenly over it, :data:`STACK_PIXELS` pixels in all; ``"auto"`` modality is
    detected on the same sample.

    Parameters
    ----------
    model : Model
        The model (its normalisation percentiles and input channels).
    read : callable
        ``read(index)`` returns the plane at a stack position.
    stack : sequence of tuple
        The positions of the stack's planes (a plane of it may be segmented alone: the limits
        are the stack's all the same, so it gets the labels the whole stack gives it).
    settings : SegmentSettings
        The settings to complete (a ``modality`` or ``limits`` already set is kept).
    sample : callable, optional
        ``sample(index, max_pixels)``: a plane strided by
        ``core.channels.sample_step(plane_shape, max_pixels)``, for stacks whose planes are
        cheaper to read that way (lazy layers); ``read`` and a stride when omitted.

    Returns
    -------
    SegmentSettings
        ``settings`` with ``modality`` resolved and ``limits`` set; unchanged for a stack of
        one plane, and for one that is constant throughout (its planes are blank).

    Raises
    ------
    PlaneError
        For a plane holding NaN or infinity (in the pixels read here; the others are found when
        the plane is segmented).
    InputError
        For a modality the model cannot use.
    """
    from .channels import sample_step

    if len(stack) < 2 or settings.limits is not None:
        return settings
    picked = list(stack)
    if len(stack) > STACK_PLANES:  # spread evenly, the first and the last included
        last = len(stack) - 1
        picked = list(dict.fromkeys(stack[round(k * last / (STACK_PLANES - 1))] for k in range(STACK_PLANES)))
    samples = []
    budget = STACK_PIXELS // len(picked)
    for index in picked:
        if sample is not None:
            part = np.asarray(sample(index, budget))
        else:
            plane = read(index)
            step = sample_step(np.shape(plane)[:2], budget)
            part = np.array(plane[::step, ::step])  # a copy: the plane itself is not kept
            del plane
        if np.issubdtype(part.dtype, np.floating) and not np.isfinite(part).all():
            raise PlaneError(
                index, len(stack), InputError("it holds NaN or infinite values; replace them (e.g. with 0) first")
            )
        samples.append(part)
    mosaic = np.concatenate(samples, axis=0)  # the planes' samples one under another: one image
    rgb = settings.rgb if mosaic.ndim == 3 else None
    kind = input_modality(model, mosaic, settings.modality, rgb, settings.channel)
    card = model.card
    try:
        limits = input_limits(
            mosaic, card.architecture.in_channels, card.normalization, rgb, settings.channel, modality=kind
        )
    except ConstantImageError:
        return settings
    return replace(settings, modality=kind or "none", limits=tuple((float(lo), float(hi)) for lo, hi in limits))


@dataclass
class PlaneDone:
    """One plane of :func:`iter_segment_planes`, segmented (or found blank).

    Attributes
    ----------
    index : tuple of int
        Position along the stacked axes (``()`` for a single image).
    labels : numpy.ndarray
        ``int32`` instance labels (all zero for a blank plane).
    result : Segmentation or None
        The full result (``None`` for a blank plane).
    seconds : float
        Time taken.
    """

    index: tuple[int, ...]
    labels: np.ndarray
    result: Segmentation | None
    seconds: float

    @property
    def blank(self) -> bool:
        """Whether the plane held one value only (nothing to segment)."""
        return self.result is None


@dataclass
class PlanesSummary:
    """What :func:`iter_segment_planes` returns: the blank planes, and how each plane was seen.

    ``modalities`` and ``diameters`` hold, per segmented plane, the imaging modality and the
    object diameter it was segmented as.
    """

    total: int
    blank: list[tuple[int, ...]] = field(default_factory=list)
    modalities: dict[tuple[int, ...], str | None] = field(default_factory=dict)
    diameters: dict[tuple[int, ...], float | None] = field(default_factory=dict)

    def diameter(self) -> float | list[float | None] | None:
        """The object diameter used: one value when all planes agree, else the list per plane."""
        values = [None if d is None else round(float(d), 2) for d in self.diameters.values()]
        if not values:
            return None
        return values[0] if len(set(values)) == 1 else values

    def note(self) -> str | None:
        """One line about blank planes, or ``None``."""
        if not self.blank:
            return None
        if self.total == 1:
            return "the image is blank (one value everywhere): no objects"
        shown = ", ".join(str(i) for i in self.blank[:10]) + (", ..." if len(self.blank) > 10 else "")
        return f"{len(self.blank)} blank plane(s) of {self.total} left without objects: {shown}"


class PlaneError(InputError):
    """A plane of a stack cannot be segmented; ``index`` says which, the message why."""

    def __init__(self, index: tuple[int, ...], total: int, exc: InputError) -> None:
        where = f"plane {index}: " if total > 1 else ""
        super().__init__(f"{where}{exc}")
        self.index = index


def iter_segment_planes(
    model: Model,
    read: Callable[[tuple[int, ...]], np.ndarray],
    indices: Sequence[tuple[int, ...]],
    settings: SegmentSettings = SegmentSettings(),
    stack_of: Callable[[tuple[int, ...]], Sequence[tuple[int, ...]]] | None = None,
    sample: Callable[[tuple[int, ...], int], np.ndarray] | None = None,
) -> Generator[Progress | PlaneDone, None, PlanesSummary]:
    """Segment planes one after another: the loop the dock and the command line share.

    A blank (constant) plane is not an error: it gets empty labels, and the returned summary
    lists it (a blank field of view is normal in a plate). Other input problems stop the run
    with :class:`PlaneError`; planes yielded before it are finished. The planes of a Z stack
    (``stack_of``) share one modality and one normalisation (:func:`stack_settings`).

    Parameters
    ----------
    model : Model
        The model.
    read : callable
        ``read(index)`` returns the plane at a stack position (``(Y, X)`` or ``(Y, X, C)``).
    indices : sequence of tuple
        Stack positions to segment (``[()]`` for a single image).
    settings : SegmentSettings
        Device, tiles, thresholds, channel, modality...
    stack_of : callable, optional
        ``stack_of(index)`` gives the positions of all planes of the Z stack that holds
        ``index`` (itself alone for a plane that is not part of one); every plane is an image
        of its own when omitted.
    sample : callable, optional
        Strided reads of a plane for the stack's normalisation (see :func:`stack_settings`).

    Yields
    ------
    Progress or PlaneDone
        Overall progress (1000 units per plane) and each finished plane.

    Returns
    -------
    PlanesSummary
        Blank planes and the modality each plane was seen as.

    Raises
    ------
    PlaneError
        If a plane cannot be segmented (NaN, too small, wrong channels...).
    """
    total = len(indices)
    summary = PlanesSummary(total)
    stacks: dict[tuple[tuple[int, ...], ...], SegmentSettings] = {}
    for k, index in enumerate(indices):
        t0 = time.perf_counter()
        plane_settings = settings
        if stack_of is not None:
            stack = tuple(stack_of(index))
            if stack not in stacks:
                try:
                    stacks[stack] = stack_settings(model, read, stack, settings, sample)
                except PlaneError:  # it names the plane of the stack at fault
                    raise
                except InputError as exc:
                    raise PlaneError(index, total, exc) from exc
            plane_settings = stacks[stack]
        plane = read(index)
        gen = iter_segment(model, plane, **plane_settings.kwargs(plane))
        seg = None
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                seg = stop.value
                break
            except ConstantImageError:
                summary.blank.append(index)
                break
            except InputError as exc:
                raise PlaneError(index, total, exc) from exc
            frac = p.done / p.total if p.total else 1.0
            yield Progress(
                int(1000 * (k + (0.9 * frac if p.stage in ("predict", "blocks") else 0.95))),
                1000 * total,
                f"plane {k + 1}/{total}: {p.stage}" if total > 1 else p.stage,
            )
        if seg is None:
            labels = np.zeros(np.shape(plane)[:2], np.int32)
        else:
            labels = seg.labels
            summary.modalities[index] = seg.modality
            summary.diameters[index] = seg.diameter
        yield PlaneDone(index, labels, seg, time.perf_counter() - t0)
        yield Progress(1000 * (k + 1), 1000 * total, f"plane {k + 1}/{total} {'blank' if seg is None else 'done'}")
    return summary
