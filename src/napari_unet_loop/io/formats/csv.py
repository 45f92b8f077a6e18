"""CSV measurements: one row per object (per plane for stacks, or per 3D object)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.atomic import atomic_path
from ..conventions import (
    ExportError,
    ExportJob,
    ExportResult,
    Measurements,
    _check_targets,
    _planes,
    check_labels,
    compact_ids,
    normalize_axes,
    normalize_scale,
    normalize_units,
)
from ..units import short_unit

# --------------------------------------------------------------------------------------------------
# CSV measurements
# --------------------------------------------------------------------------------------------------

_GEOMETRY = ("label", "area", "centroid", "bbox", "equivalent_diameter_area", "eccentricity", "solidity")


def measure_table(
    labels: Any,
    image: Any | None = None,
    *,
    scale: Sequence[float] | None = None,
    axes: str | None = None,
    units: str | Sequence[Any] | None = None,
    objects_3d: bool = False,
) -> Measurements:
    """Measure every object with ``skimage.measure.regionprops_table``, per 2D plane (or in 3D).

    Columns: ``label``; for stacks the plane index per stack axis (``t``, ``z``);
    ``area``, ``centroid_y``, ``centroid_x``, ``equivalent_diameter``, in calibrated units
    when a scale is given (pixels otherwise); ``bbox_y0``, ``bbox_x0``, ``bbox_y1``,
    ``bbox_x1`` in pixel indices (end exclusive); ``eccentricity``, ``solidity`` (ratios, of
    the calibrated shape); ``mean_intensity``, ``max_intensity`` from ``image`` (per channel,
    ``mean_intensity_c0``..., for a trailing channel axis).

    Parameters
    ----------
    labels : array-like
        Labels (``YX``, ``ZYX``, ``TYX``, ``TZYX``).
    image : array-like, optional
        The paired image (same shape, optionally a trailing channel axis). Without it the
        intensity columns are left out and a note says so.
    scale : sequence of float, optional
        Pixel size per axis (a 2-tuple gives y and x).
    axes : str, optional
        Label axes (guessed from the dimensions if not given).
    units : str or sequence, optional
        Spatial unit of the scale (micrometres assumed for a scale without a unit).
    objects_3d : bool
        The labels of a Z stack are 3D objects (one id across planes, e.g. after
        :func:`napari_unet_loop.core.stitch.stitch_planes`): one row per object (and time
        point) with ``volume``, ``centroid_z/y/x``, the 3D bounding box and the diameter of the
        sphere of equal volume, in calibrated units with the Z spacing of ``scale``.

    Returns
    -------
    Measurements
        Columns, their units and notes.
    """
    from skimage.measure import regionprops_table

    if objects_3d and "Z" in normalize_axes(axes, np.ndim(labels)):
        return _measure_3d(labels, image, scale=scale, axes=axes, units=units)

    notes: list[str] = []
    data = check_labels(labels)
    axes = normalize_axes(axes, data.ndim)
    vals = normalize_scale(scale, data.ndim)
    unit_list = normalize_units(units, axes, vals, notes)
    img = None
    if image is None:
        notes.append("no image given: intensity columns (mean_intensity, max_intensity) left out")
    else:
        img = np.asarray(image)
        if not (img.shape == data.shape or (img.ndim == data.ndim + 1 and img.shape[:-1] == data.shape)):
            raise ExportError(
                f"image shape {img.shape} does not match labels shape {data.shape}; give the image the "
                "labels were made from (same shape, optionally with a trailing channel axis)"
            )
    spacing = (vals[-2], vals[-1]) if vals else (1.0, 1.0)
    length = short_unit(unit_list[-1]) if vals else "px"
    stack_axes = axes[:-2].lower()
    props = _GEOMETRY + (("intensity_mean", "intensity_max") if img is not None else ())
    parts: list[dict[str, np.ndarray]] = []
    for idx, plane in _planes(data, axes):
        kwargs: dict[str, Any] = {"properties": props, "spacing": spacing}
        if img is not None:
            kwargs["intensity_image"] = img[idx]
        plane, ids = compact_ids(plane)
        table = regionprops_table(plane, **kwargs)
        n = len(table["label"])
        cols: dict[str, np.ndarray] = {"label": _original_ids(table["label"], ids)}
        for a, i in zip(stack_axes, idx, strict=True):
            cols[a] = np.full(n, i, dtype=np.int64)
        cols["area"] = table["area"]
        cols["centroid_y"] = table["centroid-0"]
        cols["centroid_x"] = table["centroid-1"]
        for k, key in enumerate(("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")):
            cols[key] = table[f"bbox-{k}"].astype(np.int64)
        cols["equivalent_diameter"] = table["equivalent_diameter_area"]
        cols["eccentricity"] = table["eccentricity"]
        cols["solidity"] = table["solidity"]
        if img is not None:
            _intensity_columns(cols, table)
        parts.append(cols)
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    units_map = {k: "" for k in columns}
    units_map.update({"area": f"{length}^2", "centroid_y": length, "centroid_x": length})
    units_map.update({"equivalent_diameter": length})
    units_map.update({k: "px" for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")})
    if not len(columns["label"]):
        notes.append("the labels hold no objects: the table has a header only")
    return Measurements(columns=columns, units=units_map, notes=notes)


def _original_ids(labels: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    """The ``label`` column: the objects' own ids (see :func:`~napari_unet_loop.io.conventions.compact_ids`)."""
    labels = labels.astype(np.int64)
    return labels if ids is None else ids[labels - 1].astype(np.int64)


def _intensity_columns(cols: dict[str, np.ndarray], table: dict[str, np.ndarray]) -> None:
    """Add ``mean_intensity``/``max_intensity`` (``_c0``, ``_c1``... per channel of a colour image) to ``cols``."""
    for src, dst in (("intensity_mean", "mean_intensity"), ("intensity_max", "max_intensity")):
        if src in table:
            cols[dst] = table[src]
            continue
        chans = sorted((k for k in table if k.startswith(src + "-")), key=lambda k: int(k.rsplit("-", 1)[1]))
        for k in chans:
            cols[f"{dst}_c{k.rsplit('-', 1)[1]}"] = table[k]


def _measure_3d(labels: Any, image: Any | None, *, scale, axes, units) -> Measurements:
    """Per-object measurements of 3D objects in ``ZYX`` / ``TZYX`` labels (see :func:`measure_table`)."""
    from skimage.measure import regionprops_table

    notes: list[str] = []
    data = check_labels(labels)
    axes = normalize_axes(axes, data.ndim)
    vals = normalize_scale(scale, data.ndim)
    unit_list = normalize_units(units, axes, vals, notes)
    img = None if image is None else np.asarray(image)
    if img is None:
        notes.append("no image given: intensity columns (mean_intensity, max_intensity) left out")
    elif not (img.shape == data.shape or (img.ndim == data.ndim + 1 and img.shape[:-1] == data.shape)):
        raise ExportError(f"image shape {img.shape} does not match labels shape {data.shape}")
    zi = axes.index("Z")
    spacing = tuple(vals[zi:]) if vals else (1.0, 1.0, 1.0)
    length = short_unit(unit_list[-1]) if vals else "px"
    t_axis = axes.index("T") if "T" in axes else None
    props = ("label", "area", "centroid", "bbox", "equivalent_diameter_area")
    props += ("intensity_mean", "intensity_max") if img is not None else ()
    parts = []
    for t in range(data.shape[t_axis]) if t_axis is not None else [None]:
        vol = data if t is None else np.take(data, t, axis=t_axis)
        kwargs: dict[str, Any] = {"properties": props, "spacing": spacing}
        if img is not None:
            kwargs["intensity_image"] = img if t is None else np.take(img, t, axis=t_axis)
        vol, ids = compact_ids(vol)
        table = regionprops_table(vol, **kwargs)
        n = len(table["label"])
        cols: dict[str, np.ndarray] = {"label": _original_ids(table["label"], ids)}
        if t is not None:
            cols["t"] = np.full(n, t, dtype=np.int64)
        cols["volume"] = table["area"]
        for k, a in enumerate("zyx"):
            cols[f"centroid_{a}"] = table[f"centroid-{k}"]
        for k, key in enumerate(("bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1")):
            cols[key] = table[f"bbox-{k}"].astype(np.int64)
        cols["equivalent_diameter"] = table["equivalent_diameter_area"]
        if img is not None:
            _intensity_columns(cols, table)
        parts.append(cols)
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    units_map = {k: "" for k in columns}
    units_map.update({"volume": f"{length}^3", "equivalent_diameter": length})
    units_map.update({f"centroid_{a}": length for a in "zyx"})
    units_map.update({k: "px" for k in columns if k.startswith("bbox_")})
    notes.append("3D objects: one row per object, volume and 3D centroid from the Z spacing")
    if not len(columns["label"]):
        notes.append("the labels hold no objects: the table has a header only")
    return Measurements(columns=columns, units=units_map, notes=notes)


def write_csv(
    path: str | os.PathLike,
    labels: Any,
    image: Any | None = None,
    *,
    scale: Sequence[float] | None = None,
    axes: str | None = None,
    units: str | Sequence[Any] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write per-object measurements (see :func:`measure_table`) as CSV, atomically.

    Parameters
    ----------
    path : path-like
        Target ``.csv`` file.
    labels : array-like
        Labels.
    image : array-like, optional
        Paired image for the intensity columns (left out, with a note, when not given).
    scale, axes, units
        As for :func:`measure_table`.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    ExportResult
        The file and notes (e.g. intensity columns left out).
    """
    table = measure_table(labels, image, scale=scale, axes=axes, units=units)
    return _write_table(Path(path), table, overwrite)


def _write_table(path: Path, table: Measurements, overwrite: bool) -> ExportResult:
    """Write measurements as CSV, atomically."""
    _check_targets([path], overwrite)
    names = list(table.columns)
    cols = [table.columns[k].tolist() for k in names]
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(names)
            writer.writerows(zip(*cols, strict=True))
    return ExportResult(paths=[path], notes=list(table.notes))


def export(job: ExportJob) -> ExportResult:
    """The CSV entry of the export registry."""
    table = measure_table(
        job.data,
        job.image,
        scale=job.scale,
        axes=job.axes,
        units=job.units,
        objects_3d=job.extra.get("objects_3d", False),
    )
    job.extra["columns"] = table.units
    return _write_table(job.target, table, job.overwrite)
