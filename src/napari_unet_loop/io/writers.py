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
from typing import Any

import numpy as np

from .export import ExportError, ExportResult, export_labels, unit_name

_AXIS_LETTERS = {"t": "T", "time": "T", "z": "Z", "y": "Y", "x": "X"}


def _labels_array(data: Any) -> np.ndarray:
    """Full-resolution labels from a layer's data (a multiscale list gives its first level)."""
    if isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape"):
        data = data[0]
    return np.asarray(data)


def _axes_from_attributes(attributes: Mapping[str, Any], ndim: int) -> str | None:
    """Label axes from the layer's metadata (``axes``) or its napari axis labels, if they say."""
    meta = attributes.get("metadata") or {}
    axes = meta.get("axes")
    if isinstance(axes, str) and len(axes) == ndim:
        return axes.upper()
    labels = attributes.get("axis_labels")
    if labels and len(labels) >= ndim:
        letters = [_AXIS_LETTERS.get(str(a).strip().lower()) for a in list(labels)[-ndim:]]
        if all(letters):
            return "".join(letters)  # type: ignore[arg-type]
    return None


def _units_from_attributes(attributes: Mapping[str, Any], ndim: int) -> list[str | None] | None:
    """Per-axis units from the layer (napari ``units`` or ``metadata['units']``); ``None`` if none known."""
    meta = attributes.get("metadata") or {}
    for units in (attributes.get("units"), meta.get("units")):
        if units is None:
            continue
        if isinstance(units, str):
            return [unit_name(units)] * ndim
        seq = [unit_name(u) for u in list(units)[-ndim:]]
        if len(seq) == ndim and any(seq):
            return seq
    return None


def _provenance(attributes: Mapping[str, Any]) -> dict:
    """The layer's provenance (``metadata['napari_unet_loop']``) plus its name and source."""
    meta = attributes.get("metadata") or {}
    prov = dict(meta.get("napari_unet_loop") or {})
    prov.setdefault("layer_name", attributes.get("name"))
    if meta.get("source"):
        prov.setdefault("source", str(meta["source"]))
    return prov


def _export(
    path: str,
    data: Any,
    attributes: Mapping[str, Any],
    fmt: str,
    image: Any | None = None,
) -> list[str]:
    """Export one labels layer and return the written paths (data files, then the sidecar)."""
    labels = _labels_array(data)
    ndim = labels.ndim
    scale = attributes.get("scale")
    scale = list(scale)[-ndim:] if scale is not None else None
    if scale is not None and all(float(s) == 1.0 for s in scale):
        scale = None
    axes = _axes_from_attributes(attributes, ndim)
    units = _units_from_attributes(attributes, ndim)
    translate = attributes.get("translate")
    result: ExportResult = export_labels(
        labels,
        path,
        fmt,
        name=attributes.get("name"),
        image=image,
        scale=scale,
        units=units,
        axes=axes,
        overwrite=True,
        provenance=_provenance(attributes),
    )
    if translate is not None and any(float(t) for t in translate):
        result.notes.append("the layer's translate (offset) is not stored in the export")
    for note in result.notes:
        warnings.warn(f"{result.paths[0].name}: {note}", UserWarning, stacklevel=3)
    return [str(p) for p in result.all_paths]


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
    image = _labels_array(images[0][0]) if images else None  # RGB images are channels-last already
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
