"""One call from a raw image to instance labels: prepare, predict tiles, post-process."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from .image import InputError, input_limits, prepare_input
from .model_files import Model
from .postprocess import PostprocessConfig, instances
from .predict import Progress, iter_predict, run

LARGE_PIXELS = 6144 * 6144  # planes above this are segmented block by block
MIN_BLOCK = 64  # smallest block side for block-wise segmentation


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
    """

    labels: np.ndarray
    probs: np.ndarray | None
    modality: str | None = None


def input_modality(
    model: Model, image, modality: str | None = None, rgb: bool | None = None, channel: int | None = None
) -> str | None:
    """The modality an image is converted from before the network, with ``"auto"`` resolved.

    Parameters
    ----------
    model : Model
        Its card's ``modality`` is the default.
    image : array-like
        The whole image (large ones are read on a subsample).
    modality : str, optional
        ``"auto"``, ``"fluorescence"``, ``"brightfield"``, ``"he"`` or ``"none"``; the
        model's setting when omitted.
    rgb, channel
        As for :func:`iter_segment`.

    Returns
    -------
    str or None
        A kind from :data:`.modality.MODALITIES`, or ``None`` (grey as it is: models made
        before modalities, and multichannel models).

    Raises
    ------
    InputError
        For an unknown modality.
    """
    from .modality import check_choice, detect

    m = model.card.modality if modality is None else modality
    if m == "none" or model.card.architecture.in_channels != 1:
        return None
    try:
        m = check_choice(m)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if m is None:
        return None
    return detect(image, rgb, channel).modality if m == "auto" else m


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

    Yields
    ------
    Progress
        Tile progress.

    Returns
    -------
    Segmentation
        Labels and network outputs.
    """
    h, w = image.shape[:2]
    kind = input_modality(model, image, modality, rgb, channel)
    if block is not None or h * w > LARGE_PIXELS:
        labels = yield from iter_segment_blocks(
            model,
            image,
            2048 if block is None else block,
            device=device,
            tile=tile,
            precision=precision,
            postprocess=postprocess,
            rgb=rgb,
            channel=channel,
            batch_size=batch_size,
            tta=tta,
            modality=kind or "none",
        )
        return Segmentation(labels, None, kind)
    x = prepare_input(image, model.card.architecture.in_channels, model.card.normalization, rgb, channel, modality=kind)
    probs = yield from iter_predict(
        model.net, x, device=device, tile=tile, precision=precision, batch_size=batch_size, tta=tta
    )
    yield Progress(0, 1, "instances")
    labels = instances(probs, postprocess or model.card.postprocess, model.card.architecture.n_classes)
    yield Progress(1, 1, "instances")
    return Segmentation(labels, probs, kind)


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
) -> Generator[Progress, None, np.ndarray]:
    """Segment a large plane block by block, holding only the image, the labels and one block's work.

    Each block's core is predicted with ``margin`` pixels of context for the objects and
    the network's halo beyond that (real image content, mirrored only at the image
    border, on the whole image's pooling grid), so the probabilities equal whole-image
    ones. Instances are found in core plus margin; an object is kept by the block whose
    core holds its centre, so objects crossing block borders are whole and appear once.
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

    Yields
    ------
    Progress
        One unit per block.

    Returns
    -------
    numpy.ndarray
        Instance labels, 1..N.
    """
    from scipy import ndimage as ndi

    from .postprocess import instances_from_maps
    from .predict import model_halo, predict

    if block < MIN_BLOCK:
        raise InputError(f"block size {block} is too small: use at least {MIN_BLOCK} pixels (2048 is a good size)")
    card = model.card
    pp = postprocess or card.postprocess
    h, w = image.shape[:2]
    kind = input_modality(model, image, modality, rgb, channel) or "none"
    limits = input_limits(image, card.architecture.in_channels, card.normalization, rgb, channel, modality=kind)
    m = card.architecture.size_multiple
    halo = model_halo(model.net)
    labels = np.zeros((h, w), np.int32) if out is None else out
    next_id = 1
    cores = [(y, x) for y in range(0, h, block) for x in range(0, w, block)]
    yield Progress(0, len(cores), "blocks")
    n_cls = card.architecture.n_classes
    for k, (y0, x0) in enumerate(cores):
        y1, x1 = min(y0 + block, h), min(x0 + block, w)
        ry0, rx0, ry1, rx1 = max(y0 - margin, 0), max(x0 - margin, 0), min(y1 + margin, h), min(x1 + margin, w)
        # window: the region plus the network's halo of real pixels, starting on the whole image's
        # pooling grid; mirrored content at its inner edges only reaches the halo, which is dropped
        wy0, wx0 = max(ry0 - halo, 0) // m * m, max(rx0 - halo, 0) // m * m
        wy1, wx1 = min(ry1 + halo, h), min(rx1 + halo, w)
        window = np.asarray(image[wy0:wy1, wx0:wx1])
        x = prepare_input(window, card.architecture.in_channels, card.normalization, rgb, channel, limits, kind)
        probs = predict(model.net, x, device=device, tile=tile, precision=precision, batch_size=batch_size, tta=tta)
        sl = (slice(ry0 - wy0, ry1 - wy0), slice(rx0 - wx0, rx1 - wx0))
        local = instances_from_maps(1.0 - probs[0][sl], probs[n_cls][sl], pp)
        n = int(local.max())
        if n:
            centres = np.asarray(ndi.center_of_mass(np.ones_like(local), local, np.arange(1, n + 1)))
            cy, cx = centres[:, 0] + ry0, centres[:, 1] + rx0
            keep = (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
            target = labels[ry0:ry1, rx0:rx1]
            free = (local > 0) & (target == 0)
            # ids only for kept objects that still get pixels (none already written by a neighbour)
            keep &= np.bincount(local[free], minlength=n + 1)[1:] > 0
            lut = np.zeros(n + 1, np.int64)
            lut[1:][keep] = np.arange(next_id, next_id + int(keep.sum()))
            next_id += int(keep.sum())
            new = lut[local]
            write = (new > 0) & free
            target[write] = new[write]
        yield Progress(k + 1, len(cores), "blocks")
    return labels
