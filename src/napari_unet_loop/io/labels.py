"""Writing label images: TIFF (ImageJ-compatible where possible, OME-TIFF when named so), atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_path
from .units import UNIT_IN_CM, imagej_unit

UINT16_MAX = np.iinfo(np.uint16).max

#: Axes orders a label TIFF may have (ImageJ's hyperstack order, without channels).
TIFF_AXES = ("YX", "ZYX", "TYX", "TZYX")


def label_dtype(labels: np.ndarray) -> np.dtype:
    """``uint16`` when the labels fit (max < 65,536), else ``uint32``.

    Raises
    ------
    ValueError
        For negative labels or labels beyond the uint32 range.
    """
    if labels.size and labels.min() < 0:
        raise ValueError("labels hold negative values; cannot write them as label ids")
    top = int(labels.max()) if labels.size else 0
    if top <= UINT16_MAX:
        return np.dtype(np.uint16)
    if top <= np.iinfo(np.uint32).max:
        return np.dtype(np.uint32)
    raise ValueError(f"label id {top} exceeds the uint32 range")


def write_tiff(
    path: str | os.PathLike,
    labels: np.ndarray,
    scale: tuple[float, ...] | None = None,
    axes: str | None = None,
    overwrite: bool = False,
    *,
    unit: str | None = None,
) -> Path:
    """Write labels as a TIFF, atomically.

    Labels below 65,536 are written as uint16 with ImageJ metadata (Fiji opens
    them with the right pixel size, z spacing and frame interval); larger ids as
    uint32 (which ImageJ's TIFF format cannot hold) with the resolution tags in
    centimetres and the scale, axes and unit in the JSON image description.

    Parameters
    ----------
    path : path-like
        Target file.
    labels : numpy.ndarray
        2D or stacked (``ZYX``/``TYX``/``TZYX``) labels.
    scale : tuple of float, optional
        Pixel size per axis (the last two are y and x); a 2-tuple gives only y and x.
    axes : str, optional
        Axes of ``labels`` (default ``YX``/``ZYX``/``TZYX`` by dimension); one of :data:`TIFF_AXES`.
    overwrite : bool
        Whether an existing file may be replaced.
    unit : str, optional
        Length unit of the y/x (and z) pixel size, e.g. ``"um"`` or ``"micrometer"``.
        When not given and ``scale`` is not all ones, micrometres are assumed.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        For negative labels, ids beyond uint32, or axes that do not fit the data.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    import tifffile

    labels = np.asarray(labels)
    dtype = label_dtype(labels)
    data = labels.astype(dtype, copy=False)
    axes = (axes or {2: "YX", 3: "ZYX", 4: "TZYX"}.get(data.ndim) or "").upper()
    if not axes:
        raise ValueError(f"cannot write {data.ndim}D labels as TIFF without axes")
    if axes not in TIFF_AXES or len(axes) != data.ndim:
        raise ValueError(f"axes {axes!r} do not fit {data.ndim}D labels for TIFF; use one of {', '.join(TIFF_AXES)}")
    kwargs: dict = {}
    metadata: dict = {"axes": axes}
    full_scale: list[float] | None = None
    if scale is not None and len(scale) >= 2:
        full_scale = [1.0] * (data.ndim - 2) + [float(s) for s in scale[-2:]]
        if len(scale) == data.ndim:
            full_scale = [float(s) for s in scale]
        sy, sx = full_scale[-2], full_scale[-1]
        if not (sy > 0 and sx > 0):
            raise ValueError(f"pixel size must be positive, got {scale}")
        short = imagej_unit(unit)
        if short is None:
            short = "pixel" if (sy, sx) == (1.0, 1.0) else "um"
        if "Z" in axes:
            metadata["spacing"] = full_scale[axes.index("Z")]
        if "T" in axes:
            metadata["finterval"] = full_scale[axes.index("T")]
        metadata["unit"] = short
        if dtype == np.uint16:
            kwargs["resolution"] = (1.0 / sx, 1.0 / sy)
        else:
            metadata["scale"] = full_scale
            if short in UNIT_IN_CM:  # resolution tags in pixels per centimetre, read by any TIFF reader
                kwargs["resolution"] = (1.0 / (sx * UNIT_IN_CM[short]), 1.0 / (sy * UNIT_IN_CM[short]))
                kwargs["resolutionunit"] = tifffile.RESUNIT.CENTIMETER
            else:
                kwargs["resolution"] = (1.0 / sx, 1.0 / sy)
                kwargs["resolutionunit"] = tifffile.RESUNIT.NONE
    path = Path(path)
    if is_ome_tiff(path):  # the name promises OME-XML: Bio-Formats, QuPath and OMERO read its sizes
        ome = _ome_metadata(axes, full_scale, metadata.get("unit"))
        with atomic_path(path, overwrite=overwrite) as tmp:
            tifffile.imwrite(tmp, data, ome=True, metadata=ome, compression="zlib", photometric="minisblack")
        return path
    with atomic_path(path, overwrite=overwrite) as tmp:
        if dtype == np.uint16:
            tifffile.imwrite(tmp, data, imagej=True, metadata=metadata, compression=None, **kwargs)
        else:
            tifffile.imwrite(tmp, data, metadata=metadata, compression="zlib", **kwargs)
    return path


def is_ome_tiff(path: str | os.PathLike) -> bool:
    """Whether a file name asks for an OME-TIFF (``.ome.tif`` / ``.ome.tiff``)."""
    return Path(path).name.lower().endswith((".ome.tif", ".ome.tiff"))


# OME-XML's symbols for the units ImageJ writes short
_OME_UNITS = {"um": "\u00b5m", "nm": "nm", "mm": "mm", "cm": "cm", "m": "m"}
# OME's time units in seconds: a time step is kept in seconds, as ImageJ's ``finterval`` is
_OME_SECONDS = {"s": 1.0, "ms": 1e-3, "\u00b5s": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _ome_metadata(axes: str, scale: list[float] | None, unit: str | None) -> dict:
    """The OME metadata (as tifffile takes it) for labels of ``axes``: the pixel size per axis, in ``unit``."""
    meta: dict = {"axes": axes}
    if scale is None:
        return meta
    for axis in "ZYX":  # uncalibrated: sizes in pixels (OME's "pixel"), so a z spacing still travels
        if axis in axes:
            meta[f"PhysicalSize{axis}"] = scale[axes.index(axis)]
            meta[f"PhysicalSize{axis}Unit"] = _OME_UNITS.get(unit or "", "pixel")
    if "T" in axes:
        meta["TimeIncrement"] = scale[axes.index("T")]
        meta["TimeIncrementUnit"] = "s"
    return meta


def _ome_scale(tif, ndim: int, axes: str) -> tuple[list[float] | None, str | None]:
    """Pixel size per axis and length unit from an OME-TIFF's first image (``PhysicalSizeX`` ...)."""
    import tifffile

    try:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None, None
    if "PhysicalSizeX" not in pixels or "PhysicalSizeY" not in pixels:
        return None, None
    scale = [1.0] * ndim
    unit = imagej_unit(pixels.get("PhysicalSizeXUnit", "\u00b5m"))  # OME's default unit is µm
    for axis, key in (("X", "PhysicalSizeX"), ("Y", "PhysicalSizeY"), ("Z", "PhysicalSizeZ"), ("T", "TimeIncrement")):
        if axis in axes and key in pixels:
            size = float(pixels[key])
            if axis == "T":  # in seconds (OME's default unit), e.g. 2 min: 120
                size *= _OME_SECONDS.get(str(pixels.get("TimeIncrementUnit", "s")), 1.0)
            else:
                own = imagej_unit(pixels.get(f"{key}Unit", "\u00b5m")) if axis in "YZ" else unit
                if own != unit and own in UNIT_IN_CM and unit in UNIT_IN_CM:  # e.g. z in µm, x in nm: in x's unit
                    size *= UNIT_IN_CM[own] / UNIT_IN_CM[unit]
            scale[axes.index(axis)] = size
    if unit is None and scale == [1.0] * ndim:
        return None, None
    return scale, unit


def read_tiff_scale(tif, ndim: int, axes: str) -> tuple[list[float] | None, str | None]:
    """Pixel size per axis and length unit of an open TIFF, as :func:`write_tiff` stores them.

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file.
    ndim : int
        Dimensions of the first series.
    axes : str
        Axes of the first series (tifffile's letters, e.g. ``ZYX``).

    Returns
    -------
    tuple
        ``(scale, unit)``; ``scale`` is ``None`` when the file holds no pixel size.
    """
    page = tif.pages[0]
    tags = page.tags

    def _res(name: str) -> float | None:
        tag = tags.get(name)
        if tag is None:
            return None
        num, den = tag.value
        return den / num if num else None

    ry, rx = _res("YResolution"), _res("XResolution")
    yx = [axes.index("Y"), axes.index("X")] if "Y" in axes and "X" in axes else [ndim - 2, ndim - 1]  # YXS: not last
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        unit = imagej_unit(meta.get("unit"))
        if rx is None or ry is None:
            return None, unit
        scale = [1.0] * ndim
        scale[yx[0]], scale[yx[1]] = ry, rx
        if "Z" in axes and "spacing" in meta:
            scale[axes.index("Z")] = float(meta["spacing"])
        if "T" in axes and "finterval" in meta:
            scale[axes.index("T")] = float(meta["finterval"])
        if unit is None and scale == [1.0] * ndim:
            return None, None
        return scale, unit
    if tif.is_ome:
        return _ome_scale(tif, ndim, axes)
    shaped = tif.shaped_metadata[0] if tif.shaped_metadata else {}
    if isinstance(shaped, str):  # pragma: no cover - tifffile returns dicts; be lenient
        shaped = json.loads(shaped)
    unit = imagej_unit(shaped.get("unit"))
    if isinstance(shaped.get("scale"), Sequence) and len(shaped["scale"]) == ndim:
        return [float(s) for s in shaped["scale"]], unit
    resunit = tags.get("ResolutionUnit")
    if rx is not None and ry is not None and resunit is not None and resunit.value == 3:  # centimetre
        unit = unit or "um"
        factor = UNIT_IN_CM.get(unit, 1e-4)
        scale = [1.0] * ndim
        scale[yx[0]], scale[yx[1]] = ry / factor, rx / factor
        return scale, unit
    return None, unit


def tiff_scale_along(tif, wanted: str) -> tuple[list[float] | None, str | None]:
    """An open TIFF's pixel size along the axes ``wanted`` (e.g. ``"ZYX"`` of its labels) and its unit.

    The file's own axes are read from its first series (tifffile's ``I`` and ``Q`` taken as Z, as
    the readers take them); an axis ``wanted`` that the file does not store, or stores no size for,
    gets 1.

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file.
    wanted : str
        Axis letters, of the file's axes or of labels made from it.

    Returns
    -------
    tuple
        ``(scale, unit)``; ``scale`` is ``None`` when the file holds no size along any of them.
    """
    own = tif.series[0].axes.upper().replace("I", "Z").replace("Q", "Z")
    scale, unit = read_tiff_scale(tif, len(own), own)
    if scale is None:
        return None, unit
    sizes = dict(zip(own, scale))
    along = [float(sizes.get(a, 1.0)) for a in wanted]
    if unit is None and along == [1.0] * len(wanted):
        return None, None
    return along, unit


def file_scale(path: str | os.PathLike, wanted: str) -> tuple[list[float] | None, str | None]:
    """A TIFF file's pixel size along ``wanted`` and its unit (:func:`tiff_scale_along`).

    ``(None, None)`` for other files and for a TIFF whose sizes cannot be read (its labels are then
    uncalibrated).
    """
    import tifffile

    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None, None
    try:
        with tifffile.TiffFile(path) as tif:
            return tiff_scale_along(tif, wanted)
    except Exception:  # noqa: BLE001 - a size that cannot be read leaves the labels in pixels, as before
        return None, None
