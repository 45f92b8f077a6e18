"""npe2 writer contributions for Labels layers: TIFF, PNG, OME-Zarr, CSV and ImageJ ROI sets.

No napari import: npe2 hands these functions plain data and the layer's attributes
(``name``, ``scale``, ``metadata``, ``axis_labels``, ``units``, ...). Each export gets a
provenance sidecar JSON; a ``"napari_unet_loop"`` entry in the layer's metadata (model
name and card, thresholds, tile size) is written into it.

napari's save dialog has already asked before replacing an existing file, so these
writers overwrite (atomically: the old file stays until the new one is complete).

Single-layer writers take ``(path, data, attributes)``; the multi-layer ones
(:func:`write_layers_csv`, :func:`write_layers_zarr`) take ``(path, layer_data)`` with one
labels layer and optionally the image layer it was made from (intensity columns for the CSV,
the image of the OME-Zarr store).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .conventions import export_arguments, sidecar_path
from .export import ExportError, ExportResult, TargetExistsError, export_labels, recorded_files


def full_resolution(data: Any) -> np.ndarray:
    """A layer's full-resolution pixels: a multiscale layer's first level, read into memory.

    napari hands a multiscale layer's data as a list, a tuple or its ``MultiScaleData`` (a sequence
    whose ``numpy.asarray`` gives the *coarsest* level): all give level 0 here.

    Examples
    --------
    >>> full = np.zeros((8, 8), np.uint16)
    >>> full_resolution([full, full[::2, ::2]]).shape
    (8, 8)
    >>> full_resolution(full).shape
    (8, 8)
    """
    if not isinstance(data, np.ndarray) and isinstance(data, Sequence) and len(data) and hasattr(data[0], "shape"):
        data = data[0]
    return np.asarray(data)


def _export(
    path: str,
    data: Any,
    attributes: Mapping[str, Any],
    fmt: str,
    image: Any | None = None,
) -> list[str]:
    """Export one labels layer and return the written paths (data files, then the sidecar).

    napari's save dialog asks before replacing the file chosen, so that file (and its sidecar)
    is replaced. A Z/T stack as PNG writes other files (``cells_z000.png``...), which nobody was
    asked about: they are never replaced from here.
    """
    labels = full_resolution(data)
    args = export_arguments(attributes, labels.ndim)
    planes = fmt == "png" and labels.ndim > 2
    if not planes:
        _check_record_is_the_files(Path(path))
    try:
        result: ExportResult = export_labels(
            labels,
            path,
            fmt,
            name=args.name,
            image=image,
            scale=args.scale,
            units=args.units,
            axes=args.axes,
            overwrite=not planes,
            provenance=args.provenance,
            objects_3d=args.objects_3d,
            translate=args.translate,
        )
    except TargetExistsError as exc:
        names = ", ".join(p.name for p in exc.paths[:3]) + (", ..." if len(exc.paths) > 3 else "")
        raise TargetExistsError(
            f"{names} already exist{'s' if len(exc.paths) == 1 else ''} in {Path(path).parent}: a stack saved as "
            f"PNG is one file per plane, and File > Save asked only about {Path(path).name}, so nothing was "
            "replaced or written. Choose another name, or use the dock's Export with 'Replace existing files'.",
            exc.paths,
        ) from None
    for note in result.notes:
        warnings.warn(f"{result.paths[0].name}: {note}", UserWarning, stacklevel=3)
    return [str(p) for p in result.all_paths]


def _check_record_is_the_files(path: Path) -> None:
    """Refuse to replace a sidecar that records other files than ``path`` (those of a PNG stack of the same name).

    File > Save asked only about ``path``: replacing the record of ``cells_z000.png``... with that of
    ``cells.png`` would leave the planes without theirs, and the export would remove them as stale.
    """
    side = sidecar_path(path)
    others = [f.name for f in recorded_files(side, path.parent) if f.name != path.name and f.is_file()]
    if others:
        names = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise TargetExistsError(
            f"{side.name} in {path.parent} is the record of {names}, an earlier export under this name that "
            "File > Save was not asked to replace: nothing was written. Choose another name, or use the dock's "
            "Export with 'Replace existing files'.",
            [side],
        )


def write_labels_tif(path: str, data: Any, attributes: dict) -> list[str]:
    """Write a Labels layer as TIFF (uint16 ImageJ below 65,536 labels, else uint32), with its pixel size.

    Parameters
    ----------
    path : str
        Target ``.tif`` file.
    data : array-like
        The layer's labels.
    attributes : dict
        The layer's attributes (``name``, ``scale``, ``metadata``, ...).

    Returns
    -------
    list of str
        The written files (the TIFF and its sidecar JSON).
    """
    return _export(path, data, attributes, "tif")


def write_labels_png(path: str, data: Any, attributes: dict) -> list[str]:
    """Write a 2D Labels layer as 16-bit PNG; a Z/T stack with named axes as one PNG per plane.

    A stack's axes come from ``metadata['axes']`` or the layer's axis labels (``z``, ``t``);
    without them, more than 2D is refused with a message pointing to TIFF/OME-Zarr.

    Parameters
    ----------
    path : str
        Target ``.png`` file (stacks: the base name of the plane files).
    data : array-like
        The layer's labels.
    attributes : dict
        The layer's attributes.

    Returns
    -------
    list of str
        The written files.
    """
    return _export(path, data, attributes, "png")


def write_labels_zarr(path: str, data: Any, attributes: dict) -> list[str]:
    """Write a Labels layer as OME-Zarr (labels in ``labels/<name>`` of a placeholder image).

    Parameters
    ----------
    path : str
        Target ``.zarr`` folder.
    data : array-like
        The layer's labels.
    attributes : dict
        The layer's attributes.

    Returns
    -------
    list of str
        The written store and its sidecar JSON.
    """
    return _export(path, data, attributes, "zarr")


def write_labels_csv(path: str, data: Any, attributes: dict) -> list[str]:
    """Write per-object measurements of a Labels layer as CSV (no intensity columns: no image).

    Parameters
    ----------
    path : str
        Target ``.csv`` file.
    data : array-like
        The layer's labels.
    attributes : dict
        The layer's attributes.

    Returns
    -------
    list of str
        The written files.
    """
    return _export(path, data, attributes, "csv")


def write_labels_roi(path: str, data: Any, attributes: dict) -> list[str]:
    """Write a Labels layer as an ImageJ ROI set (``.zip``) for Fiji's ROI Manager.

    Parameters
    ----------
    path : str
        Target ``.zip`` file.
    data : array-like
        The layer's labels.
    attributes : dict
        The layer's attributes.

    Returns
    -------
    list of str
        The written files.
    """
    return _export(path, data, attributes, "roi")


def _split_layers(layer_data: Sequence[tuple]) -> tuple[tuple, Any | None]:
    """The one labels layer and the (optional) image of a multi-layer writer call."""
    labels = [ld for ld in layer_data if ld[2] == "labels"]
    images = [ld for ld in layer_data if ld[2] == "image"]
    if len(labels) != 1:
        raise ExportError(f"select exactly one Labels layer to export (got {len(labels)})")
    if len(images) > 1:
        raise ExportError(f"select at most one Image layer with the labels (got {len(images)})")
    image = full_resolution(images[0][0]) if images else None  # RGB images are channels-last already
    return labels[0], image


def write_layers_csv(path: str, layer_data: list[tuple]) -> list[str]:
    """Write measurements of one Labels layer with intensities from an optional Image layer.

    Parameters
    ----------
    path : str
        Target ``.csv`` file.
    layer_data : list of tuple
        ``(data, attributes, layer_type)`` for one ``labels`` and at most one ``image`` layer.

    Returns
    -------
    list of str
        The written files.
    """
    (data, attrs, _), image = _split_layers(layer_data)
    return _export(path, data, attrs, "csv", image=image)


def write_layers_zarr(path: str, layer_data: list[tuple]) -> list[str]:
    """Write an OME-Zarr of an optional Image layer with one Labels layer in ``labels/<name>``.

    Parameters
    ----------
    path : str
        Target ``.zarr`` folder.
    layer_data : list of tuple
        ``(data, attributes, layer_type)`` for one ``labels`` and at most one ``image`` layer.

    Returns
    -------
    list of str
        The written store and its sidecar JSON.
    """
    (data, attrs, _), image = _split_layers(layer_data)
    return _export(path, data, attrs, "zarr", image=image)
