"""Imaging modality: detect how an image was taken and make nuclei look alike for the network.

Nuclei reach the network as bright objects on a dark background whatever the imaging:

* ``fluorescence``: as it is (bright nuclei, dark background); RGB(A) as the mean of R, G, B.
* ``brightfield``: grey, dark nuclei on a bright background: inverted.
* ``he``: stained tissue in colour (H&E and similar), dark purple nuclei on a light background:
  the haematoxylin channel of a colour deconvolution (:func:`skimage.color.rgb2hed`),
  in which the nuclei are bright.

The rule that sorts images (:func:`detect`) reads two numbers off the grey image: where
its median lies between its 1st and 99.8th percentiles (the background of fluorescence
lies near the dark end, that of brightfield and stained tissue near the bright end), and
how coloured it is (mean distance of R, G, B from their mean, relative to the grey range).
On the 599 DSB2018 images the background position is <= 0.19 for every fluorescence image
and >= 0.43 for every brightfield or stained one (the line is drawn at 0.35); every stained
image has a colour of at least 0.02, every grey brightfield image 0. A coloured image with a
dark background (fluorescence shown with a colour table) counts as fluorescence.

Between those two groups (a background position above 0.19 and below 0.43) lies no DSB image:
the rule there is a guess. Phase contrast and DIC images (a mid-grey field with bright and dark
structures) and dense fluorescence often land in that band, and frames of one experiment can
fall on either side of 0.35, so that the network would see some inverted and some not. A
model fine-tuned on grey images in the band therefore reads every grey image in the band as
its training images were read (:attr:`ModelCard.kind_in_doubt
<napari_unet_loop.core.model_card.ModelCard>`, decided by :func:`settle_doubt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .channels import is_colour, sample_step, to_grey
from .errors import InputError

if TYPE_CHECKING:
    from .model_files import Model

MODALITIES = ("fluorescence", "brightfield", "he")
CHOICES = ("auto", *MODALITIES)
LABELS = {
    "fluorescence": "fluorescence",
    "brightfield": "brightfield",
    "he": "H&E / stained tissue",
}
BRIGHT_BACKGROUND = 0.35  # median position in the grey range above which the background is bright
COLOUR = 0.02  # relative colourfulness above which an image counts as colour
# no DSB2018 image has its background between these: the highest fluorescence 0.1885, the lowest
# brightfield or stained 0.433; grey images in between are read as a model's kind_in_doubt
DOUBT_BAND = (0.19, 0.43)
GREY_KINDS = ("fluorescence", "brightfield")  # what a grey image in doubt can be read as
_SAMPLE_PIXELS = 1_000_000


@dataclass(frozen=True)
class ModalityReport:
    """What :func:`detect` found.

    Attributes
    ----------
    modality : str
        One of :data:`MODALITIES`.
    background : float
        Where the median grey value lies between the 1st (0) and 99.8th (1) percentiles.
    colour : float
        Mean distance of R, G, B from their mean, relative to the grey range (0 for grey images).
    """

    modality: str
    background: float
    colour: float

    @property
    def in_doubt(self) -> bool:
        """Whether this is a grey image whose background lies in :data:`DOUBT_BAND`."""
        return self.colour <= COLOUR and DOUBT_BAND[0] < self.background < DOUBT_BAND[1]

    def read_as(self, kind_in_doubt: str | None) -> str:
        """The kind a model reads this image as: ``kind_in_doubt`` for an image in doubt, else the detected one.

        Examples
        --------
        >>> r = ModalityReport("fluorescence", 0.3, 0.0)
        >>> r.read_as(None), r.read_as("brightfield"), ModalityReport("fluorescence", 0.1, 0.0).read_as("brightfield")
        ('fluorescence', 'brightfield', 'fluorescence')
        """
        return kind_in_doubt if kind_in_doubt and self.in_doubt else self.modality

    def describe(self) -> str:
        """One line for people: the kind and why."""
        bg = "bright" if self.background > BRIGHT_BACKGROUND else "dark"
        col = f", colour {self.colour:.2f}" if self.colour > 0 else ""
        return f"{LABELS[self.modality]} ({bg} background {self.background:.2f}{col})"


def check_choice(modality: str | None) -> str | None:
    """Validate a modality setting (``None`` = the model's default).

    Raises
    ------
    ValueError
        For anything but ``None`` and :data:`CHOICES`.
    """
    if modality is None:
        return None
    m = str(modality).strip().lower()
    m = {"h&e": "he", "stain": "he", "fluo": "fluorescence", "bf": "brightfield"}.get(m, m)
    if m not in CHOICES:
        raise ValueError(f"unknown imaging modality {modality!r}: choose from {', '.join(CHOICES)}")
    return m


def _subsample(image: np.ndarray, max_pixels: int = _SAMPLE_PIXELS) -> np.ndarray:
    step = sample_step(image.shape[:2], max_pixels)
    return np.asarray(image[::step, ::step])


def detect(image: np.ndarray, rgb: bool | None = None, channel: int | None = None) -> ModalityReport:
    """Tell fluorescence, brightfield and stained (H&E-like) images apart.

    Parameters
    ----------
    image : array-like
        ``(Y, X)`` grey, ``(Y, X, 3|4)`` RGB(A) or ``(Y, X, C)``; large (memory-mapped,
        zarr) images are read on a strided subsample.
    rgb : bool, optional
        Whether a last axis of 3 or 4 is colour (guessed when ``None``).
    channel : int, optional
        The channel that will be segmented (its background decides; no colour then).

    Returns
    -------
    ModalityReport
        The kind and the two numbers it rests on.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((64, 64), 200, np.uint8); img[20:30, 20:30] = 40  # dark nucleus, bright field
    >>> detect(img).modality
    'brightfield'
    """
    sample = _subsample(image)
    if channel is None and is_colour(sample.shape, rgb):
        rgb_ = sample[..., :3].astype(np.float32)
        grey = rgb_.mean(-1)
        chroma = float(np.abs(rgb_ - grey[..., None]).mean())
    else:
        grey = to_grey(sample, rgb=rgb, channel=channel)
        chroma = 0.0
    grey = grey[np.isfinite(grey)]
    if grey.size == 0:
        return ModalityReport("fluorescence", 0.0, 0.0)
    lo, hi = (float(v) for v in np.percentile(grey, [1.0, 99.8]))
    span = hi - lo
    if span <= 0:
        return ModalityReport("fluorescence", 0.0, 0.0)
    background = float(np.clip((np.median(grey) - lo) / span, 0.0, 1.0))
    colour = chroma / span
    if background <= BRIGHT_BACKGROUND:
        kind = "fluorescence"
    else:
        kind = "he" if colour > COLOUR else "brightfield"
    return ModalityReport(kind, round(background, 4), round(colour, 4))


def resolve(
    modality: str | None,
    image: np.ndarray,
    rgb: bool | None = None,
    channel: int | None = None,
    kind_in_doubt: str | None = None,
) -> str:
    """The modality to use for ``image``: ``"auto"`` detected, ``None``/``"none"`` as fluorescence (no change).

    ``kind_in_doubt``: how a detected grey image in :data:`DOUBT_BAND` is read (``None``: by
    the 0.35 line).
    """
    m = check_choice(modality) if modality not in (None, "none") else "fluorescence"
    if m == "auto":
        return detect(image, rgb, channel).read_as(kind_in_doubt)
    return m


def check_kind_in_doubt(value: object) -> str | None:
    """A card's ``kind_in_doubt``, checked: ``None`` or one of :data:`GREY_KINDS`."""
    if value is None:
        return None
    if value not in GREY_KINDS:
        raise ValueError(f"kind_in_doubt must be one of {', '.join(GREY_KINDS)} (or null), got {value!r}")
    return str(value)


def settle_doubt(reports: Sequence[ModalityReport], kind_in_doubt: str | None = None) -> str | None:
    """How a training set's grey images in doubt are read, all of them alike.

    Parameters
    ----------
    reports : sequence of ModalityReport
        What :func:`detect` found on each training image.
    kind_in_doubt : str, optional
        The starting model's setting: kept when it has one (its network learnt images in
        doubt that way).

    Returns
    -------
    str or None
        ``kind_in_doubt`` if given; else, when some images are in doubt, the kind the 0.35 line
        gives the median of their background positions; else ``None``.

    Examples
    --------
    >>> frames = [ModalityReport("fluorescence", 0.33, 0.0), ModalityReport("brightfield", 0.37, 0.0),
    ...           ModalityReport("brightfield", 0.39, 0.0)]
    >>> settle_doubt(frames), settle_doubt(frames, "fluorescence"), settle_doubt(frames[:1] * 2)
    ('brightfield', 'fluorescence', 'fluorescence')
    >>> settle_doubt([ModalityReport("fluorescence", 0.05, 0.0)]) is None
    True
    """
    if kind_in_doubt:
        return kind_in_doubt
    doubtful = [r.background for r in reports if r.in_doubt]
    if not doubtful:
        return None
    return "brightfield" if float(np.median(doubtful)) > BRIGHT_BACKGROUND else "fluorescence"


def doubt_note(reports: Sequence[ModalityReport], kind_in_doubt: str | None) -> str | None:
    """One line for people on training images in doubt and how they are read (``None``: none in doubt).

    Examples
    --------
    >>> frames = [ModalityReport("fluorescence", 0.33, 0.0), ModalityReport("brightfield", 0.4, 0.0)]
    >>> print(doubt_note(frames, "brightfield"))  # doctest: +NORMALIZE_WHITESPACE
    2 of 2 training images lie between fluorescence and brightfield (background 0.33-0.40):
    all are read as brightfield, as the new model will read such images
    >>> print(doubt_note(frames[:1], "brightfield"))  # doctest: +NORMALIZE_WHITESPACE
    The training image lies between fluorescence and brightfield (background 0.33):
    it is read as brightfield, as the new model will read such images
    """
    doubtful = [r.background for r in reports if r.in_doubt]
    if not doubtful or not kind_in_doubt:
        return None
    low, high = f"{min(doubtful):.2f}", f"{max(doubtful):.2f}"
    where = f"between fluorescence and brightfield (background {low if low == high else low + '-' + high})"
    how = f"read as {LABELS[kind_in_doubt]}, as the new model will read such images"
    if len(reports) == 1:
        return f"The training image lies {where}: it is {how}"
    which = f"{len(doubtful)} of {len(reports)} training images"
    return f"{which} lie {where}: all are {how}" if len(doubtful) > 1 else f"{which} lies {where}: it is {how}"


def haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """The haematoxylin (nuclear stain) channel of an RGB image, bright where nuclei are.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(Y, X, 3|4)`` colour image, integer or float in [0, 1].

    Returns
    -------
    numpy.ndarray
        ``float32`` ``(Y, X)`` stain concentration (optical density units).
    """
    from skimage.color import rgb2hed

    rgb = np.asarray(rgb)[..., :3]
    if np.issubdtype(rgb.dtype, np.integer):
        x = rgb.astype(np.float32) / float(np.iinfo(rgb.dtype).max)
    else:  # float colour: [0, 1], or 8/16-bit values stored as floats (a fixed scale, so blocks agree)
        x = rgb.astype(np.float32)
        top = float(x.max()) if x.size else 1.0
        if top > 1.0:
            x = x / (255.0 if top <= 255.0 else 65535.0 if top <= 65535.0 else top)
    return rgb2hed(np.clip(x, 0.0, 1.0))[..., 0].astype(np.float32)


def to_fluorescence_like(
    image: np.ndarray, modality: str, rgb: bool | None = None, channel: int | None = None
) -> np.ndarray:
    """One grey plane in which nuclei are bright on a dark background.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)``, ``(Y, X, 3|4)`` RGB(A) or ``(Y, X, C)`` multichannel.
    modality : str
        One of :data:`MODALITIES` (resolve ``"auto"`` first with :func:`resolve`).
    rgb, channel
        As for :func:`napari_unet_loop.core.image.to_grey`.

    Returns
    -------
    numpy.ndarray
        ``float32`` 2D plane (not yet normalised).
    """
    if modality not in MODALITIES:
        raise ValueError(f"unknown imaging modality {modality!r}: choose from {', '.join(MODALITIES)}")
    if modality == "he" and channel is None and is_colour(np.shape(image), rgb):  # the shape: nothing read
        return haematoxylin(np.asarray(image))
    grey = to_grey(image, rgb=rgb, channel=channel)
    if modality in ("brightfield", "he"):  # dark nuclei on a bright field; a grey "stained" image as brightfield
        return -grey
    return grey


def input_modality(
    model: Model, image, modality: str | None = None, rgb: bool | None = None, channel: int | None = None
) -> str | None:
    """The modality an image is converted from before the network, with ``"auto"`` resolved.

    Parameters
    ----------
    model : Model
        Its card's ``modality`` is the default; its ``kind_in_doubt`` reads a grey image in
        :data:`DOUBT_BAND`.
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
        For an unknown modality; for a kind whose own network reads colour (H&E in a grey
        model with a colour network for it) and an image that is not colour, or a channel of it.
    """
    m = model.card.modality if modality is None else modality
    if m == "none" or model.card.architecture.in_channels != 1:
        return None
    try:
        kind = resolve(m, image, rgb, channel, model.card.kind_in_doubt)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if model.input_channels(kind) != 1 and (channel is not None or not is_colour(np.shape(image), rgb)):
        raise InputError(
            f"{model.name} reads {LABELS[kind]} images in colour (R, G and B), and this "
            f"{'channel' if channel is not None else 'image'} is not colour: choose its imaging kind "
            "(e.g. brightfield for a grey stained image)"
        )
    return kind
