"""PNG export: uint16, one 2D plane per file (stacks become one file per plane)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core import atomic
from ...core.atomic import atomic_path
from ..conventions import ExportError, ExportJob, ExportResult, _check_targets, _planes, check_labels, normalize_axes
from ..labels import UINT16_MAX

# --------------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------------


def _check_png(labels: np.ndarray) -> np.ndarray:
    """Labels as uint16 for PNG, or a clear refusal."""
    arr = check_labels(labels)
    top = int(arr.max())
    if top > UINT16_MAX:
        raise ExportError(
            f"PNG holds at most 65,535 labels (16-bit); these labels go up to {top}. "
            "Export as TIFF (uint32) or OME-Zarr, or relabel them sequentially if fewer objects exist."
        )
    return arr.astype(np.uint16, copy=False)


def write_png(path: str | os.PathLike, labels: Any, *, overwrite: bool = False) -> ExportResult:
    """Write 2D labels as a 16-bit grayscale PNG, atomically.

    Parameters
    ----------
    path : path-like
        Target ``.png`` file.
    labels : array-like
        2D labels with ids up to 65,535.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    ExportResult
        The written file.

    Raises
    ------
    ExportError
        For data that is not 2D, more than 65,535 labels, negative values.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    import imageio.v3 as iio

    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ExportError(
            f"PNG holds one 2D plane; these labels are {arr.ndim}D (shape {arr.shape}). Export a stack "
            "as TIFF or OME-Zarr, or as one PNG per plane with export_labels(..., 'png', axes='ZYX')."
        )
    data = _check_png(arr)
    path = Path(path)
    _check_targets([path], overwrite)
    with atomic_path(path, overwrite=overwrite) as tmp:
        iio.imwrite(tmp, data, extension=".png")
    return ExportResult(paths=[path])


def png_slice_paths(path: str | os.PathLike, shape: Sequence[int], axes: str) -> list[Path]:
    """The per-plane file names of a PNG stack: ``cells.png`` -> ``cells_z000.png``, ``cells_t000_z000.png``.

    Parameters
    ----------
    path : path-like
        The nominal ``.png`` path of the set.
    shape : sequence of int
        Shape of the labels.
    axes : str
        Their axes.
    """
    path = Path(path)
    stack_axes = axes[:-2]
    stack_shape = tuple(shape[: len(stack_axes)])
    widths = [max(3, len(str(n - 1))) for n in stack_shape]
    out = []
    for idx in np.ndindex(*stack_shape):
        tag = "".join(f"_{a.lower()}{i:0{w}d}" for a, i, w in zip(stack_axes, idx, widths, strict=True))
        out.append(path.with_name(f"{path.stem}{tag}{path.suffix}"))
    return out


def write_png_slices(path: str | os.PathLike, labels: Any, axes: str, *, overwrite: bool = False) -> ExportResult:
    """Write a Z/T stack of labels as one 16-bit PNG per plane (see :func:`png_slice_paths`).

    All planes are written to temporary files first and renamed together at the end, so an
    error (such as a full disk) leaves none of them behind.

    Parameters
    ----------
    path : path-like
        The nominal ``.png`` path of the set; plane files get ``_z000``-style suffixes.
    labels : array-like
        Labels with axes ``ZYX``, ``TYX`` or ``TZYX``.
    axes : str
        Their axes.
    overwrite : bool
        Whether existing plane files may be replaced.

    Returns
    -------
    ExportResult
        The plane files, in stack order.
    """
    import imageio.v3 as iio

    data = _check_png(labels)
    axes = normalize_axes(axes, data.ndim)
    if axes == "YX":
        return write_png(path, data, overwrite=overwrite)
    targets = png_slice_paths(path, data.shape, axes)
    _check_targets(targets, overwrite)
    with contextlib.ExitStack() as stack:
        for target, (_, plane) in zip(targets, _planes(data, axes), strict=True):
            tmp = stack.enter_context(atomic_path(target, overwrite=overwrite))
            iio.imwrite(tmp, np.ascontiguousarray(plane), extension=".png")
            atomic._fsync_file(tmp)  # every plane on disk before any is renamed: a failure here renames none
    return ExportResult(paths=targets)


def export(job: ExportJob) -> ExportResult:
    """The PNG entry of the export registry."""
    result = write_png_slices(job.target, job.data, job.axes, overwrite=job.overwrite)
    if job.scale is not None:
        job.notes.append("PNG holds no pixel size: the scale is kept in the sidecar JSON")
    return result
