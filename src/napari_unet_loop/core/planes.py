"""The planes of a stack, segmented one after another: the loop the dock and the command line share.

:func:`iter_segment_planes` runs :func:`.segment.iter_segment` on each plane, with one policy for
blank planes and for input errors (:class:`PlaneError` names the plane); :func:`stack_settings`
gives the planes of one Z stack one imaging modality and one normalisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .image import ConstantImageError, InputError, input_limits
from .modality import input_modality
from .model_files import Model
from .postprocess import PostprocessConfig
from .predict import Progress
from .segment import Segmentation, iter_segment


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
    tta : bool or str
        Average the network over four flips; ``"auto"``: on planes small as the network sees
        them (see :func:`.segment.iter_segment`).
    block : int or None
        Segment block by block with this block side.
    postprocess : PostprocessConfig, mapping or None
        Thresholds: the model card's for each plane's imaging kind when ``None``, with a
        mapping's settings replaced (see :meth:`.model_card.ModelCard.thresholds`).
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
    tta: bool | str = "auto"
    block: int | None = None
    postprocess: PostprocessConfig | Mapping[str, Any] | None = None
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
            mosaic, model.input_channels(kind), card.normalization, rgb, settings.channel, modality=kind
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
