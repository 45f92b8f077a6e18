"""Export label masks and measurements: TIFF, PNG, OME-Zarr, CSV and ImageJ ROI sets.

Headless (no napari, no Qt). Every file is written atomically: to a temporary
file (or folder, for OME-Zarr) beside the target that is renamed into place only
once complete, so a full disk or a crash never leaves a half-written export and
never destroys the file being replaced. Each export gets a provenance sidecar
JSON (``<file>.json``) with the model, thresholds, tile size, date and plugin version.

The formats (see ``docs/formats.md``):

- ``tif``: uint16 with ImageJ metadata below 65,536 labels, uint32 above; pixel size,
  z spacing and frame interval in the file. Stacks stay stacks.
- ``png``: uint16, one 2D plane per file; stacks become one file per plane.
- ``zarr``: OME-Zarr (NGFF 0.4 by default), the image plus ``labels/<name>``, multiscale.
- ``csv``: one row per object (per plane for stacks) from ``skimage.measure.regionprops_table``.
- ``roi``: ImageJ ROI set (``.zip``), one traced polygon per object, for Fiji's ROI Manager.

Where things live: the conventions every export follows (label checks, axes, units, names,
targets) in :mod:`.conventions`; provenance records in :mod:`.sidecar`; one module per format
behind the registry of :mod:`.formats`. This module is the entry point, :func:`export_labels`,
and offers the public names of those modules in one place.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .conventions import (
    _SUFFIX_FORMATS,
    FORMATS,
    LABEL_AXES,
    SUFFIXES,
    ExportError,
    ExportJob,
    ExportResult,
    Measurements,
    TargetExistsError,
    _check_targets,
    _format_name,
    check_labels,
    check_writable,
    normalize_axes,
    normalize_scale,
    normalize_units,
    output_names,
    parse_formats,
    plain_name,
    safe_name,
    sidecar_path,
)
from .formats import WRITERS
from .formats.csv import measure_table, write_csv
from .formats.png import _check_png, png_slice_paths, write_png, write_png_slices
from .formats.roi import outline_polygons, write_imagej_rois
from .formats.zarr import write_ome_zarr
from .images import is_zarr_dir, plugin_attrs
from .labels import UINT16_MAX
from .sidecar import (
    _move_aside,
    _sidecar_record,
    edit_summary,
    file_sha256,
    file_state,
    read_sidecar,
    sidecar_matches,
    write_provenance,
)
from .units import SHORT_UNITS, short_unit, unit_name

__all__ = [
    "FORMATS",
    "LABEL_AXES",
    "SHORT_UNITS",
    "SUFFIXES",
    "ExportError",
    "ExportJob",
    "ExportResult",
    "Measurements",
    "TargetExistsError",
    "check_labels",
    "check_writable",
    "edit_summary",
    "export_labels",
    "export_target",
    "measure_table",
    "normalize_axes",
    "normalize_scale",
    "normalize_units",
    "outline_polygons",
    "output_names",
    "parse_formats",
    "plain_name",
    "png_slice_paths",
    "read_sidecar",
    "safe_name",
    "short_unit",
    "sidecar_matches",
    "sidecar_path",
    "unit_name",
    "write_csv",
    "write_imagej_rois",
    "write_ome_zarr",
    "write_png",
    "write_png_slices",
    "write_provenance",
]

# --------------------------------------------------------------------------------------------------
# one entry point
# --------------------------------------------------------------------------------------------------


def export_target(outdir_or_path: str | os.PathLike, fmt: str | None, name: str | None = None) -> Path:
    """The file an export writes.

    That is ``outdir_or_path`` itself if it has the format's suffix, else ``<outdir>/<name><suffix>``.
    A folder named ``*.zarr`` that holds files and is no zarr store is a folder to write into.

    Raises
    ------
    ExportError
        If the path's suffix belongs to another export format.
    """
    p = Path(outdir_or_path)
    suffix = p.suffix.lower()
    key = _format_name(fmt, p if suffix in _SUFFIX_FORMATS else None)
    folder = p.is_dir() and (key != "zarr" or (not is_zarr_dir(p) and any(p.iterdir())))
    if suffix in _SUFFIX_FORMATS and not folder:
        if _SUFFIX_FORMATS[suffix] != key:
            raise ExportError(f"{p.name} has the suffix of {_SUFFIX_FORMATS[suffix]!r}, not of {key!r}")
        return p
    return p / f"{safe_name(name)}{SUFFIXES[key]}"


def recorded_files(sidecar: Path, beside: Path) -> list[Path]:
    """The files an export's sidecar lists, in the folder ``beside`` (bare file names only; none when unreadable)."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, or unreadable: nothing is known of its files
        return []
    listed = record.get("files", []) if isinstance(record, dict) else []
    listed = listed if isinstance(listed, list) else []
    return [beside / e for e in listed if isinstance(e, str) and Path(e).name == e]


def _remove_stale(old_sidecar: Path, side: Path, written: Sequence[Path], notes: list[str]) -> None:
    """Remove the files an export replaced that the new one does not write again.

    A PNG stack of 5 planes replaced by one of 3 would leave ``_z003``/``_z004`` of the old
    stack beside the new planes, read as part of it. Only files the replaced export's sidecar
    lists (files it wrote, beside it) are removed.
    """
    keep = {p.resolve() for p in written}
    gone, failed = 0, []
    for stale in recorded_files(old_sidecar, side.parent):
        if stale.resolve() in keep or not stale.is_file():
            continue
        try:
            stale.unlink()
            gone += 1
        except OSError:
            failed.append(stale.name)
    if gone:
        notes.append(f"{gone} file(s) of the export this one replaced, not written again, were removed")
    if failed:
        notes.append(f"could not remove files of the replaced export: {', '.join(failed)}")


# labels this process wrote in a format that keeps them (TIFF, PNG, OME-Zarr), by file: File > Save with this
# plugin's writers and the dock's Export both come here, and a clean quit of napari keeps the autosave of no
# labels that are on disk as they are (gui.autosave). Each target holds its last write only, and counts only
# while its files are those written (the same file_state): overwritten or deleted, it no longer does.
LABELS_FORMATS = ("tif", "png", "zarr")
_WRITTEN: OrderedDict[str, tuple[tuple, tuple]] = OrderedDict()  # target -> (labels checksum, files' stats)
_WRITTEN_KEPT = 1024
_WRITTEN_LOCK = threading.Lock()  # exports run in worker threads
_STORE_FILES = ("zarr.json", ".zattrs", ".zgroup")  # a store's own metadata: replaced with the store


def labels_checksum(data: np.ndarray) -> tuple:
    """Shape, dtype and CRC-32 of an array: tells whether labels changed since they were saved.

    CRC-32 catches every change of up to 32 consecutive bits, so a single changed label always shows.
    """
    arr = np.ascontiguousarray(data)
    return arr.shape, arr.dtype.str, zlib.crc32(arr.reshape(-1).view(np.uint8))


def _file_stats(paths: Sequence[Path]) -> tuple:
    """``(path, file_state)`` of written files (a store: its metadata files; :func:`.sidecar.file_state`)."""
    files = [f for p in paths for f in ([p / n for n in _STORE_FILES if (p / n).is_file()] if p.is_dir() else [p])]
    return tuple((str(f), file_state(f.stat())) for f in files)


def _unchanged(stats: tuple) -> bool:
    """Whether the files of :func:`_file_stats` are still those written (none replaced, changed or gone)."""
    try:
        return bool(stats) and all(file_state(os.stat(f)) == state for f, state in stats)
    except OSError:
        return False


def written_as_they_are(data: np.ndarray, checksum: tuple | None = None) -> bool:
    """Whether these labels are in a TIFF, PNG or OME-Zarr file this process wrote, still as it wrote it.

    Parameters
    ----------
    data : numpy.ndarray
        The labels.
    checksum : tuple, optional
        Their :func:`labels_checksum`, when known.

    Returns
    -------
    bool
        ``True`` when a file written by :func:`export_labels` holds exactly them and has not
        changed since (the same :func:`.sidecar.file_state`).
    """
    key = labels_checksum(data) if checksum is None else checksum
    with _WRITTEN_LOCK:
        candidates = [stats for known, stats in _WRITTEN.values() if known == key]
    return any(_unchanged(stats) for stats in candidates)


def _remember_written(target: Path, data: np.ndarray, paths: Sequence[Path]) -> None:
    try:
        entry = (labels_checksum(data), _file_stats(paths))
        name = str(target.resolve())
    except OSError:
        return
    with _WRITTEN_LOCK:
        _WRITTEN[name] = entry
        _WRITTEN.move_to_end(name)
        while len(_WRITTEN) > _WRITTEN_KEPT:
            _WRITTEN.popitem(last=False)


def export_labels(
    labels: Any,
    outdir_or_path: str | os.PathLike,
    fmt: str | None,
    *,
    name: str | None = None,
    image: Any | None = None,
    scale: Sequence[float] | None = None,
    units: str | Sequence[Any] | None = None,
    axes: str | None = None,
    overwrite: bool = False,
    provenance: Mapping[str, Any] | None = None,
    sidecar: bool = True,
    objects_3d: bool = False,
    translate: Sequence[float] | None = None,
) -> ExportResult:
    """Export labels in one format, with a provenance sidecar JSON beside the file.

    Z/T stacks stay stacks in TIFF and OME-Zarr, become one file per plane in PNG
    (which then needs ``axes``), and get plane index columns in the CSV and plane
    positions on the ImageJ ROIs. Every target (the sidecar included) is checked before
    anything is written: an existing one is refused unless ``overwrite``.

    Parameters
    ----------
    labels : array-like
        Label image (0 background, positive ids).
    outdir_or_path : path-like
        A folder (the file is ``<name><suffix>`` in it) or the target file itself.
    fmt : {"tif", "png", "zarr", "csv", "roi"} or None
        The format (aliases: ``tiff``, ``ome-zarr``, ``zip``); ``None`` takes it from the suffix.
    name : str, optional
        Base file name (and OME-Zarr labels name); ``"labels"`` by default.
    image : array-like, optional
        The paired image: intensities for ``csv``, the image of the ``zarr`` store.
    scale : sequence of float, optional
        Pixel size per axis (a 2-tuple gives y and x).
    units : str or sequence, optional
        Spatial unit such as ``"um"`` (or one per axis). A scale without a unit is taken as micrometres.
    axes : str, optional
        ``YX``, ``ZYX``, ``TYX`` or ``TZYX``; guessed from the dimensions, except for PNG,
        where more than 2D without axes is refused (a PNG holds one plane).
    overwrite : bool
        Whether existing files may be replaced (atomically, only once the new file is complete).
    provenance : mapping, optional
        Model name and card, thresholds, tile size ... stored in the sidecar under ``provenance``.
    sidecar : bool
        Whether to write the sidecar JSON.
    objects_3d : bool
        The labels of a Z stack are 3D objects: the CSV measures each in 3D (see
        :func:`measure_table`), and the record says so.
    translate : sequence of float, optional
        Where the labels' first pixel lies, per axis, in the units of ``scale`` (a napari layer's
        ``translate``: labels of a region of a larger image). OME-Zarr stores it as each level's
        ``translation``; the other formats have no place for it, so the sidecar records it
        (``translate``) and a note says so.

    Returns
    -------
    ExportResult
        Written paths, the sidecar and notes.

    Raises
    ------
    ExportError
        For input the format cannot hold (see the message).
    TargetExistsError
        If a target exists and ``overwrite`` is False (a :class:`FileExistsError`); nothing is
        written then.
    PermissionError
        If the folder is not writable.
    OSError
        If writing fails (e.g. disk full); no partial file is left behind.
    """
    target = export_target(outdir_or_path, fmt, name)
    key = _format_name(fmt, target)
    if key == "zarr" and is_zarr_dir(target) and not plugin_attrs(target):  # not ours, or unreadable
        raise ExportError(
            f"{target} is a zarr store this plugin did not write (an image?): it is never replaced, nothing was "
            "written. Choose another name or folder."
        )
    name = safe_name(name if name is not None else (target.stem if target.suffix else None))
    data = check_labels(labels)
    notes: list[str] = []
    if key == "png" and data.ndim > 2 and axes is None:
        raise ExportError(
            f"PNG holds one 2D plane; these labels are {data.ndim}D (shape {data.shape}). Export them as "
            "TIFF or OME-Zarr, or give axes (e.g. 'ZYX', 'TYX') to write one PNG per plane."
        )
    axes = normalize_axes(axes, data.ndim)
    vals = normalize_scale(scale, data.ndim)
    unit_list = normalize_units(units, axes, vals, notes)
    img = None if image is None else np.asarray(image)
    if key == "png":
        if data.max() > UINT16_MAX:
            _check_png(data)  # raises the clear message
        files = png_slice_paths(target, data.shape, axes) if axes != "YX" else [target]
    else:
        files = [target]
    side = sidecar_path(target) if sidecar else None
    # a record whose files are all gone (deleted to be written again) describes nothing: it is replaced
    listed = recorded_files(side, side.parent) if side is not None and not overwrite else []
    orphan = bool(listed) and not any(p.exists() or p.is_symlink() for p in listed)
    _check_targets([*files, *([side] if side and not orphan else [])], overwrite)

    extra: dict[str, Any] = {"export_id": uuid.uuid4().hex}
    if objects_3d:
        extra["objects_3d"] = True
    if translate is not None and any(float(t) for t in translate):
        if len(translate) != data.ndim:
            raise ExportError(f"translate has {len(translate)} values for {data.ndim}D labels ({axes})")
        extra["translate"] = [float(t) for t in translate]
        if key != "zarr":
            notes.append(
                f"the labels' offset ({', '.join(f'{a} {t:g}' for a, t in zip(axes, extra['translate']))}) is in "
                f"the sidecar only: a {key.upper()} file has no place for it (this plugin's reader puts it back; "
                "OME-Zarr keeps it in the file)"
            )
    # the old record is moved aside while the data is replaced, so no moment leaves a record that
    # describes other data (a kill in between leaves the new data without a record); it comes back
    # if writing fails
    aside = _move_aside(side) if side is not None and (overwrite or orphan) else None
    try:
        job = ExportJob(target, data, img, name, vals, unit_list, axes, overwrite, provenance, extra, notes)
        result = WRITERS[key](job)
        result.notes = notes + [n for n in result.notes if n not in notes]
        if side is not None:
            used_image = img if key in ("csv", "zarr") else None
            extra["sha256"] = {p.name: file_sha256(p) for p in result.paths if p.is_file()}
            record = _sidecar_record(
                key, result.paths, data, axes, name, vals, unit_list, used_image, result.notes, provenance, extra
            )
            result.sidecar = write_provenance(side, record, overwrite=overwrite or orphan)
            if aside is not None:  # the new export is complete: what only the old one had goes
                _remove_stale(aside, side, result.paths, result.notes)
    except BaseException:
        if aside is not None and side is not None and not side.exists():
            os.replace(aside, side)
            aside = None
        raise
    finally:
        if aside is not None and aside.exists():
            aside.unlink()
    if key in LABELS_FORMATS and isinstance(labels, np.ndarray):  # as the caller holds them (a layer's data)
        _remember_written(target, labels, result.paths)
    return result
