"""Input images: checks, channel handling and percentile normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .channels import _is_alpha, is_colour, sample_step, to_grey  # noqa: F401 - part of this module's interface
from .config import Settings
from .errors import ConstantImageError, InputError  # noqa: F401 - raised here, imported from here elsewhere

MIN_SIDE = 8


@dataclass(frozen=True)
class Normalization(Settings):
    """Percentile normalisation: ``(x - p_low) / (p_high - p_low)``.

    Parameters
    ----------
    low, high : float
        Percentiles mapped to 0 and 1.
    """

    _what = "normalisation"

    low: float = 1.0
    high: float = 99.8

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got {self.low}, {self.high}")


def _working_copy(given: np.ndarray) -> np.ndarray:
    """An image as floats to normalise: ``float64`` for ``float64`` and 32/64-bit integers, else ``float32``.

    ``1e7 + noise`` in float32 keeps a few grey levels of the noise (``1e9 + noise`` in int64:
    none); the limits and the normalisation are computed in 64 bits, the normalised image is 32-bit.
    """
    if given.dtype == np.float64:
        return given
    if given.dtype.kind in "iu" and given.dtype.itemsize >= 4:
        return given.astype(np.float64)
    with np.errstate(over="ignore"):  # values beyond float32 (float128 input) become inf: reported by the caller
        return np.asarray(given, dtype=np.float32)


def _not_finite(given: np.ndarray, bad: int) -> InputError:
    """The error for an image whose float copy (or normalised image) holds ``bad`` NaN or infinite values.

    A 64-bit float image can hold finite values beyond 32-bit range (3.4e38), which become
    infinite once normalised to 32 bits: the message says so rather than calling them NaN.
    """
    if given.dtype.kind == "f" and given.dtype.itemsize > 4 and np.isfinite(given).all():
        top = float(np.abs(given).max())
        return InputError(
            f"image holds values up to {top:.3g}, beyond what 32-bit floats hold (3.4e38); rescale it first"
        )
    return InputError(f"image holds {bad} NaN or infinite value(s); replace them (e.g. with 0) first")


def intensity_limits(image: np.ndarray, norm: Normalization = Normalization()) -> tuple[float, float]:
    """The grey values that :func:`normalize` maps to 0 and 1.

    Raises
    ------
    InputError
        For images holding NaN or infinity, and constant images (nothing to segment).
    """
    given = np.asarray(image)
    image = _working_copy(given)
    finite = np.isfinite(image)
    if not finite.all():
        raise _not_finite(given, image.size - int(finite.sum()))
    # percentiles on a subsample for big images: same result to within a grey level
    sample = image if image.size <= 4_000_000 else image.ravel()[:: image.size // 2_000_000]
    lo, hi = (float(v) for v in np.percentile(sample, [norm.low, norm.high]))
    # a range the float type resolves, relative to the values (only: an image of values near 1e-8 has a range)
    tol = 1e-12 if image.dtype == np.float64 else 1e-6
    if hi - lo <= tol * max(abs(hi), abs(lo)):
        hi, lo = float(image.max()), float(image.min())
        if hi - lo <= tol * max(abs(hi), abs(lo)):
            raise ConstantImageError(f"image is constant (every pixel is {lo:g}): nothing to segment")
    return lo, hi


def normalize(
    image: np.ndarray, norm: Normalization = Normalization(), limits: tuple[float, float] | None = None
) -> np.ndarray:
    """Check a 2D grey image and normalise it by percentiles.

    Parameters
    ----------
    image : numpy.ndarray
        2D image (any number type).
    norm : Normalization
        Percentiles to map to 0 and 1.
    limits : tuple of float, optional
        The grey values to map to 0 and 1, when known (e.g. from the whole of a large
        image that is normalised block by block); computed from ``image`` otherwise.

    Returns
    -------
    numpy.ndarray
        ``float32`` normalised image.

    Raises
    ------
    InputError
        For images smaller than ``MIN_SIDE`` pixels a side, images holding NaN or
        infinity, and constant images (nothing to segment).
    """
    given = np.asarray(image)
    image = _working_copy(given)
    if image.ndim != 2:
        raise InputError(f"expected a 2D image, got shape {image.shape}")
    if min(image.shape) < MIN_SIDE:
        raise InputError(
            f"image of {image.shape[0]}x{image.shape[1]} pixels is too small: need at least {MIN_SIDE}x{MIN_SIDE}"
        )
    finite = np.isfinite(image)
    if not finite.all():
        raise _not_finite(given, image.size - int(finite.sum()))
    lo, hi = intensity_limits(image, norm) if limits is None else limits
    if image.dtype == np.float64:  # in 64 bits, then 32: values far beyond the limits may not fit
        with np.errstate(over="ignore"):
            out = ((image - lo) / (hi - lo)).astype(np.float32)
        finite = np.isfinite(out)
        if not finite.all():
            raise _not_finite(given, out.size - int(finite.sum()))
        return out
    out = (image - np.float32(lo)) / np.float32(hi - lo)
    return out.astype(np.float32, copy=False)


def prepare_input(
    image: np.ndarray,
    in_channels: int = 1,
    norm: Normalization = Normalization(),
    rgb: bool | None = None,
    channel: int | None = None,
    limits: list[tuple[float, float]] | None = None,
    modality: str | None = None,
) -> np.ndarray:
    """Turn one 2D image (with optional channels) into the network's normalised input.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)``, ``(Y, X, 3|4)`` RGB(A) or ``(Y, X, C)`` multichannel.
    in_channels : int
        Channels the model expects.
    norm : Normalization
        Percentile normalisation.
    rgb : bool, optional
        Whether a last axis of 3 or 4 is colour (guessed when ``None``).
    channel : int, optional
        Channel to segment, for one-channel models on multichannel images.
    limits : list of tuple, optional
        Per input channel, the grey values to map to 0 and 1 (see :func:`input_limits`).
    modality : str, optional
        For one-channel models: ``"fluorescence"``, ``"brightfield"`` or ``"he"`` turn the
        image into bright nuclei on a dark background (see :mod:`.modality`); ``"auto"``
        detects the kind on this image (resolve it once for images processed block by
        block); ``None`` or ``"none"``: the grey image as it is.

    Returns
    -------
    numpy.ndarray
        ``(in_channels, Y, X)`` float32.

    Raises
    ------
    InputError
        If the image does not fit the model or cannot be segmented.
    """
    return np.stack(
        [
            normalize(p, norm, None if limits is None else limits[i])
            for i, p in enumerate(_planes(image, in_channels, rgb, channel, modality))
        ]
    )


def _planes(
    image: np.ndarray, in_channels: int, rgb: bool | None, channel: int | None, modality: str | None = None
) -> list[np.ndarray]:
    """The grey planes the model reads (one, or one per input channel)."""
    image = np.asarray(image)
    if in_channels == 1:
        if modality in (None, "none"):
            return [to_grey(image, rgb=rgb, channel=channel)]
        from .modality import resolve, to_fluorescence_like

        return [to_fluorescence_like(image, resolve(modality, image, rgb, channel), rgb=rgb, channel=channel)]

    if in_channels == 3 and image.shape[-1:] == (4,) and is_colour(image.shape, rgb):
        image = image[..., :3]  # RGBA, as grey models read it: the alpha plane is opacity, not a colour
    if image.ndim != 3 or image.shape[-1] != in_channels:
        have = 1 if image.ndim == 2 else image.shape[-1]
        raise InputError(
            f"the model expects {in_channels} channels (last axis), the image has {have} "
            f"(shape {image.shape}); choose a model made for this kind of image"
        )
    return [image[..., c] for c in range(in_channels)]  # as floats when normalised (_working_copy)


def input_limits(
    image,
    in_channels: int = 1,
    norm: Normalization = Normalization(),
    rgb: bool | None = None,
    channel: int | None = None,
    max_pixels: int = 4_000_000,
    modality: str | None = None,
) -> list[tuple[float, float]]:
    """Normalisation limits of a (large) image from a strided subsample, per input channel.

    Reads only about ``max_pixels`` pixels, so it works on memory-mapped and zarr images.
    """
    step = sample_step(image.shape[:2], max_pixels)
    sample = np.asarray(image[::step, ::step])
    return [intensity_limits(p, norm) for p in _planes(sample, in_channels, rgb, channel, modality)]
