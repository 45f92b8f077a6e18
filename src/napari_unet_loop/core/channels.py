"""Channels of an input plane: one grey plane from RGB(A) or a chosen channel; a strided sample of a large plane."""

from __future__ import annotations

import numpy as np

from .errors import InputError


def is_colour(shape: tuple[int, ...], rgb: bool | None = None) -> bool:
    """Whether an image's last axis is colour: the one rule for "a last axis of 3 or 4 is RGB(A)".

    Parameters
    ----------
    shape : tuple of int
        The image's shape: ``(Y, X, S)`` for a 2D image with a colour or channel axis.
    rgb : bool, optional
        Whether a last axis of 3 or 4 is colour (napari's ``rgb`` flag); ``None`` guesses that it is.

    Returns
    -------
    bool
        ``True`` for a 3D shape whose last axis holds 3 or 4 values, unless ``rgb`` says no.

    Examples
    --------
    >>> is_colour((64, 64, 3)), is_colour((64, 64, 3), rgb=False), is_colour((64, 64, 5), rgb=True)
    (True, False, False)
    """
    if len(shape) != 3 or shape[-1] not in (3, 4):
        return False
    return True if rgb is None else bool(rgb)


def _is_alpha(plane: np.ndarray) -> bool:
    """Whether a channel looks like an opacity channel: one value everywhere (all opaque)."""
    return bool(plane.min() == plane.max())


def to_grey(image: np.ndarray, rgb: bool | None = None, channel: int | None = None) -> np.ndarray:
    """Reduce a 2D image with optional channels to one grey plane.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)``, ``(Y, X, 1|2)`` grey (with alpha), ``(Y, X, 3|4)`` RGB(A), or
        ``(Y, X, C)`` multichannel.
    rgb : bool, optional
        Whether a last axis of 3 or 4 is RGB(A) colour. ``None`` guesses: a last
        axis of 3 or 4 is colour.
    channel : int, optional
        For multichannel images, the channel to segment. For RGB(A) images the
        default is the mean of R, G and B, for grey + alpha images (an opacity
        channel of one value) the grey channel.

    Returns
    -------
    numpy.ndarray
        ``float32`` 2D image (``float64`` for a ``float64`` or a 32/64-bit integer image: a large
        offset or values beyond 32-bit range are kept until it is normalised).

    Raises
    ------
    InputError
        If the image is not 2D after channel handling or the channel does not exist.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        n_ch = image.shape[-1]
        if channel is not None:
            if not -n_ch <= channel < n_ch:
                raise InputError(f"channel {channel} does not exist: the image has {n_ch} channels")
            image = image[..., channel]
        elif rgb is None and (n_ch == 1 or (n_ch == 2 and _is_alpha(image[..., 1]))):  # grey (+ alpha, LA PNG)
            image = image[..., 0]
        elif is_colour(image.shape, rgb):
            image = image[..., :3].astype(np.float32).mean(-1)
        else:
            raise InputError(
                f"image of shape {image.shape} has {n_ch} channels in its last axis: choose the channel to segment"
            )
    if image.ndim != 2:
        raise InputError(f"expected a 2D image (with optional channels), got shape {image.shape}")
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(f"image data type {image.dtype} is not a number type")
    if image.dtype == np.float64 or (image.dtype.kind in "iu" and image.dtype.itemsize >= 4):
        return image.astype(np.float64, copy=False)  # 32/64-bit integers: a large offset keeps its grey levels
    return image.astype(np.float32, copy=False)


def sample_step(shape: tuple[int, ...], max_pixels: int) -> int:
    """The stride that reads about ``max_pixels`` pixels of a ``(Y, X)`` plane (1: every pixel).

    Examples
    --------
    >>> sample_step((4000, 4000), 1_000_000)
    4
    """
    h, w = shape[:2]
    return max(1, int(np.ceil(np.sqrt(h * w / max_pixels))))


def check_channel_choice(axes: str, shape, in_channels: int, channel: int | None) -> None:
    """Refuse an image whose channels a one-channel model cannot read without a chosen channel.

    Grey + alpha and RGB(A) samples (``S`` of 2-4) are known; any other channel axis of more
    than one channel needs ``channel``.

    Raises
    ------
    InputError
        Saying how many channels there are and that one must be chosen.
    """
    chan = "C" if "C" in axes else "S" if "S" in axes else None
    n = int(shape[axes.index(chan)]) if chan else 1
    if in_channels == 1 and channel is None and n > 1 and not (chan == "S" and n in (2, 3, 4)):
        raise InputError(f"the image has {n} channels (axes {axes}): choose the one to segment")
