"""Writing label images: TIFF (ImageJ-compatible where possible), atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_path

UINT16_MAX = np.iinfo(np.uint16).max


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
) -> Path:
    """Write labels as a TIFF, atomically.

    Labels below 65,536 are written as uint16 with ImageJ metadata (Fiji opens
    them with the right pixel size); larger ids as uint32 (which ImageJ's TIFF
    format cannot hold) with the resolution tags only.

    Parameters
    ----------
    path : path-like
        Target file.
    labels : numpy.ndarray
        2D or stacked (``ZYX``/``TYX``/``TZYX``) labels.
    scale : tuple of float, optional
        Pixel size per axis (the last two are y and x).
    axes : str, optional
        Axes of ``labels`` for the ImageJ metadata (default ``YX``/``ZYX``/``TZYX``).
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    import tifffile

    labels = np.asarray(labels)
    dtype = label_dtype(labels)
    data = labels.astype(dtype, copy=False)
    axes = axes or {2: "YX", 3: "ZYX", 4: "TZYX"}.get(data.ndim)
    if axes is None:
        raise ValueError(f"cannot write {data.ndim}D labels as TIFF without axes")
    kwargs: dict = {}
    metadata: dict = {"axes": axes}
    if scale is not None and len(scale) >= 2:
        sy, sx = float(scale[-2]), float(scale[-1])
        if sy > 0 and sx > 0:
            kwargs["resolution"] = (1.0 / sx, 1.0 / sy)
            if "Z" in axes and len(scale) >= 3:
                metadata["spacing"] = float(scale[axes.index("Z")])
            metadata["unit"] = "pixel" if (sy, sx) == (1.0, 1.0) else "um"
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        if dtype == np.uint16:
            tifffile.imwrite(tmp, data, imagej=True, metadata=metadata, compression=None, **kwargs)
        else:
            tifffile.imwrite(tmp, data, metadata=metadata, compression="zlib", **kwargs)
    return path
