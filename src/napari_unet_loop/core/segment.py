"""One call from a raw image to instance labels: prepare, predict tiles, post-process."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from .image import prepare_input
from .models import Model
from .postprocess import PostprocessConfig, instances
from .predict import Progress, iter_predict, run


@dataclass
class Segmentation:
    """Result of :func:`iter_segment`.

    Attributes
    ----------
    labels : numpy.ndarray
        ``int32`` instance labels.
    probs : numpy.ndarray
        ``(C, H, W)`` network outputs, kept for re-thresholding without the network.
    """

    labels: np.ndarray
    probs: np.ndarray


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

    Yields
    ------
    Progress
        Tile progress.

    Returns
    -------
    Segmentation
        Labels and network outputs.
    """
    x = prepare_input(image, model.card.architecture.in_channels, model.card.normalization, rgb, channel)
    probs = yield from iter_predict(
        model.net, x, device=device, tile=tile, precision=precision, batch_size=batch_size, tta=tta
    )
    yield Progress(0, 1, "instances")
    labels = instances(probs, postprocess or model.card.postprocess)
    yield Progress(1, 1, "instances")
    return Segmentation(labels, probs)


def segment(model: Model, image: np.ndarray, **kwargs) -> Segmentation:
    """Run :func:`iter_segment` to the end."""
    return run(iter_segment(model, image, **kwargs))
