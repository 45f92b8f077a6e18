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
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import __version__
from ..core.atomic import atomic_dir, atomic_path
from ..core.edits import changed_mask, edited_region
from .labels import UINT16_MAX, decode_unit, imagej_unit, label_dtype, write_tiff

FORMATS = ("tif", "png", "zarr", "csv", "roi")
"""The export formats, by short name."""

SUFFIXES = {"tif": ".tif", "png": ".png", "zarr": ".zarr", "csv": ".csv", "roi": ".zip"}
"""The file suffix each format writes."""

_FORMAT_ALIASES = {
    "tif": "tif",
    "tiff": "tif",
    "png": "png",
    "zarr": "zarr",
    "ome-zarr": "zarr",
    "ome.zarr": "zarr",
    "omezarr": "zarr",
    "csv": "csv",
    "roi": "roi",
    "rois": "roi",
    "zip": "roi",
    "imagej": "roi",
}
_SUFFIX_FORMATS = {
    ".tif": "tif",
    ".tiff": "tif",
    ".png": "png",
    ".zarr": "zarr",
    ".csv": "csv",
    ".zip": "roi",
}

#: Axes orders accepted for labels: 2D, or Z and/or T stacks of 2D planes.
LABEL_AXES = ("YX", "ZYX", "TYX", "TZYX")

#: Unit spellings mapped to the OME-NGFF (UDUNITS-2) names.
_UNIT_NAMES = {
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometre": "micrometer",
    "micrometer": "micrometer",
    "nm": "nanometer",
    "nanometre": "nanometer",
    "nanometer": "nanometer",
    "mm": "millimeter",
    "millimetre": "millimeter",
    "millimeter": "millimeter",
    "cm": "centimeter",
    "centimetre": "centimeter",
    "centimeter": "centimeter",
    "m": "meter",
    "metre": "meter",
    "meter": "meter",
    "s": "second",
    "sec": "second",
    "second": "second",
    "ms": "millisecond",
    "millisecond": "millisecond",
    "min": "minute",
    "minute": "minute",
    "h": "hour",
    "hour": "hour",
}
SHORT_UNITS = {
    "micrometer": "um",
    "nanometer": "nm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
    "second": "s",
    "millisecond": "ms",
    "minute": "min",
    "hour": "h",
}
_NO_UNIT = ("", "pixel", "pixels", "px", "none", "dimensionless")

#: Smallest side (pixels) the coarsest OME-Zarr pyramid level may have.
MIN_LEVEL_SIZE = 64
#: At most this many downsampled levels below full resolution.
MAX_LEVELS = 4


class ExportError(ValueError):
    """Input that cannot be exported as asked; the message says why and what to do instead."""


class TargetExistsError(FileExistsError):
    """An export target exists and overwriting was not allowed; nothing was written.

    The message is neutral ("allow overwriting"): each front end names its own way of
    allowing it (a command-line flag, a checkbox).

    Attributes
    ----------
    paths : list of pathlib.Path
        The targets that exist.
    """

    def __init__(self, message: str, paths: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.paths = [Path(p) for p in paths]


@dataclass
class ExportResult:
    """What an export wrote and what the user should know about it.

    Attributes
    ----------
    paths : list of pathlib.Path
        The data files (or the ``.zarr`` folder) written.
    sidecar : pathlib.Path or None
        The provenance JSON written next to them, if any.
    notes : list of str
        Human-readable remarks, e.g. ``"no image given: intensity columns left out"``.
    """

    paths: list[Path] = field(default_factory=list)
    sidecar: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def all_paths(self) -> list[Path]:
        """Data files plus the sidecar."""
        return [*self.paths, *([self.sidecar] if self.sidecar else [])]

    def __str__(self) -> str:
        lines = [f"wrote {p}" for p in self.all_paths] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class Measurements:
    """Per-object measurements, column by column.

    Attributes
    ----------
    columns : dict of str to numpy.ndarray
        Equal-length columns in output order.
    units : dict of str to str
        Unit of each column (``""`` for counts, indices and ratios).
    notes : list of str
        Remarks, e.g. that the intensity columns were left out.
    """

    columns: dict[str, np.ndarray]
    units: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def check_labels(labels: Any) -> np.ndarray:
    """Return ``labels`` as an unsigned integer array (uint16 if the ids fit, else uint32).

    Parameters
    ----------
    labels : array-like
        Label image: 0 is background, positive integers are object ids.
        Booleans are taken as a single object; floats must hold whole numbers.

    Returns
    -------
    numpy.ndarray
        The labels as uint16 or uint32.

    Raises
    ------
    ExportError
        For empty arrays, non-integer or non-finite values, negative values or ids beyond uint32.
    """
    arr = np.asarray(labels)
    if arr.ndim < 2 or arr.size == 0:
        raise ExportError(f"labels must be an image of at least 2 dimensions; got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.uint16)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ExportError("labels hold non-integer values; label ids must be whole numbers")
    elif arr.dtype.kind not in "iu":
        raise ExportError(f"labels of type {arr.dtype} are not label ids; give an integer array")
    lo = arr.min()
    if lo < 0:
        n = int(np.count_nonzero(arr < 0))
        raise ExportError(
            f"labels hold negative values (minimum {lo}, {n} pixels); label ids must be 0 (background) "
            "or positive. Relabel them (e.g. skimage.segmentation.relabel_sequential) before exporting."
        )
    try:
        dtype = label_dtype(arr)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    return arr.astype(dtype, copy=False)


def normalize_axes(axes: str | Sequence[str] | None, ndim: int, *, strict: bool = False) -> str:
    """Validate label axes (one of ``YX``, ``ZYX``, ``TYX``, ``TZYX``), guessing them from ``ndim``.

    Parameters
    ----------
    axes : str or sequence of str, optional
        Axis letters, any case; a sequence of names (napari ``axis_labels``) is joined.
    ndim : int
        Dimensions of the labels.
    strict : bool
        If True, ``axes=None`` is refused for more than 2 dimensions instead of guessed.

    Returns
    -------
    str
        Upper-case axes.

    Raises
    ------
    ExportError
        If the axes do not fit the data or are not a stack of 2D planes.
    """
    if axes is None:
        if ndim == 2:
            return "YX"
        if strict:
            raise ExportError(f"the axes of {ndim}D labels must be given (e.g. 'ZYX', 'TYX' or 'TZYX')")
        guess = {3: "ZYX", 4: "TZYX"}.get(ndim)
        if guess is None:
            raise ExportError(f"cannot export {ndim}D labels; give 2D to 4D labels (YX, ZYX, TYX, TZYX)")
        return guess
    text = "".join(str(a) for a in axes).upper() if not isinstance(axes, str) else axes.upper()
    if len(text) != ndim:
        raise ExportError(f"axes {text!r} have {len(text)} letters but the labels have {ndim} dimensions")
    if text not in LABEL_AXES:
        raise ExportError(
            f"axes {text!r} are not supported for labels; use one of {', '.join(LABEL_AXES)} "
            "(T and Z stacks of YX planes, in that order)"
        )
    return text


def normalize_scale(scale: Sequence[float] | None, ndim: int) -> list[float] | None:
    """A pixel size per axis (a 2-tuple gives y and x; stack axes get 1), or ``None``.

    Raises
    ------
    ExportError
        If a value is not a positive finite number or the length does not fit.
    """
    if scale is None:
        return None
    vals = [float(s) for s in scale]
    if len(vals) == 2 and ndim > 2:
        vals = [1.0] * (ndim - 2) + vals
    elif len(vals) > ndim:  # napari layers may carry more dims than the data after slicing
        vals = vals[-ndim:]
    if len(vals) != ndim:
        raise ExportError(f"scale {tuple(scale)} does not fit {ndim}D labels")
    if not all(math.isfinite(v) and v > 0 for v in vals):
        raise ExportError(f"scale must hold positive pixel sizes, got {tuple(scale)}")
    return vals


def unit_name(unit: Any) -> str | None:
    """Canonical (OME-NGFF) name of a unit such as ``um``/``µm`` -> ``micrometer``; ``None`` for pixels.

    Parameters
    ----------
    unit : str, pint.Unit or None
        A unit; anything with a ``str()`` works.
    """
    if unit is None:
        return None
    text = decode_unit(str(unit).strip())
    if text.lower() in _NO_UNIT:
        return None
    return _UNIT_NAMES.get(text, _UNIT_NAMES.get(text.lower(), text))


def short_unit(unit: str | None) -> str:
    """Short unit symbol (``um``, ``nm``, ``s``) for column headers and ImageJ; ``px`` for none."""
    name = unit_name(unit)
    if name is None:
        return "px"
    return SHORT_UNITS.get(name, name)


def normalize_units(
    units: str | Sequence[Any] | None, axes: str, scale: list[float] | None, notes: list[str] | None = None
) -> list[str | None]:
    """One canonical unit per axis (``None`` where uncalibrated).

    A single string applies to the spatial axes (Z, Y, X). When a scale other than
    1 is given without a unit, micrometres are assumed (and a note says so).

    Parameters
    ----------
    units : str or sequence, optional
        A spatial unit, or one unit per axis.
    axes : str
        The label axes.
    scale : list of float or None
        The pixel sizes.
    notes : list of str, optional
        Where to record assumptions.
    """
    if units is None or isinstance(units, str):
        per_axis = [unit_name(units) if a in "ZYX" else None for a in axes]
    else:
        seq = list(units)
        if len(seq) > len(axes):
            seq = seq[-len(axes) :]
        if len(seq) != len(axes):
            raise ExportError(f"units {tuple(units)} do not fit axes {axes!r}")
        per_axis = [unit_name(u) for u in seq]
    if scale is not None:
        yx_calibrated = any(scale[i] != 1.0 for i in (-2, -1))
        if yx_calibrated and per_axis[-1] is None and per_axis[-2] is None:
            per_axis = ["micrometer" if (a in "ZYX" and u is None) else u for a, u in zip(axes, per_axis, strict=True)]
            if notes is not None:
                notes.append("no unit given for the pixel size: taken as micrometres")
    return per_axis


def parse_formats(values: Sequence[str] | None, default: str = "tif") -> list[str]:
    """Canonical format names from repeated or comma-separated choices (``"png,csv"``), aliases included.

    The one parser of format names: the command line's ``--format`` and :func:`export_labels`
    accept the same names (``tif``/``tiff``, ``zarr``/``ome-zarr``/``ome.zarr``, ``roi``/``rois``/
    ``zip``/``imagej``, ...).

    Raises
    ------
    ExportError
        For an unknown name.
    """
    names = [f.strip() for v in (values or [default]) for f in str(v).split(",") if f.strip()]
    return list(dict.fromkeys(_format_name(n) for n in names))


def _format_name(fmt: str | None, path: Path | None = None) -> str:
    """The canonical format name, from ``fmt`` or the path's suffix."""
    if fmt is None:
        key = _SUFFIX_FORMATS.get(path.suffix.lower()) if path is not None else None
        if key is None:
            raise ExportError(f"give a format, one of {', '.join(FORMATS)}")
        return key
    key = _FORMAT_ALIASES.get(str(fmt).lower().lstrip("."))
    if key is None:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return key


_BAD_NAME_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f]+')


def safe_name(name: str | None, default: str = "labels") -> str:
    """A file-name-safe version of a layer name (path separators and reserved characters replaced)."""
    text = _BAD_NAME_CHARS.sub("_", str(name or "")).strip(" .")
    return text or default


_NOT_PLAIN = re.compile(r"[^\w.-]+")


def plain_name(name: str | None, default: str = "labels") -> str:
    """A plain file name for a layer name: letters, digits, ``_``, ``-`` and ``.`` only.

    Spaces, brackets, parentheses and other punctuation become one ``_`` each run, so
    napari's ``cells labels [1]`` becomes ``cells_labels_1``: names that shells, Fiji
    macros and spreadsheets take without quoting.

    Parameters
    ----------
    name : str or None
        The layer (or file) name.
    default : str
        Used when nothing is left.

    Returns
    -------
    str
        The plain name.
    """
    text = _NOT_PLAIN.sub("_", str(name or ""))
    text = re.sub(r"_+", "_", text).strip("_ .")
    return text or default


def output_names(names: Sequence[str | None], sources: Sequence[str] | None = None) -> list[str]:
    """File-name-safe names for several outputs written to one folder, checked for collisions.

    Names are compared after cleaning (:func:`safe_name`) and without regard to case, as
    macOS and Windows file systems do, so ``a:b`` and ``a?b``, ``x `` and ``x``, or ``A``
    and ``a`` are caught before anything is written.

    Parameters
    ----------
    names : sequence of str
        Wanted names (file stems or layer names).
    sources : sequence of str, optional
        What each name stands for (file paths, layer names), for the message.

    Returns
    -------
    list of str
        The cleaned names, in order.

    Raises
    ------
    ExportError
        If two names become the same file name.
    """
    cleaned = [safe_name(n) for n in names]
    sources = list(sources) if sources is not None else [str(n) for n in names]
    seen: dict[str, int] = {}
    clashes = []
    for i, c in enumerate(cleaned):
        key = c.casefold()
        if key in seen:
            clashes.append(f"{sources[seen[key]]!r} and {sources[i]!r} -> {c!r}")
        else:
            seen[key] = i
    if clashes:
        raise ExportError(
            f"{len(clashes)} output name(s) would collide in one folder ({'; '.join(clashes[:5])}): "
            "rename them or write them to different folders"
        )
    return cleaned


def sidecar_path(path: str | os.PathLike) -> Path:
    """The provenance JSON beside an export: ``cells.tif`` -> ``cells.tif.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def check_writable(folder: str | os.PathLike) -> None:
    """Raise a clear :class:`PermissionError` if files cannot be created in ``folder``.

    A folder that does not exist yet is judged by its nearest existing parent (it will be created).

    Raises
    ------
    PermissionError
        If the folder (or the parent it would be created in) is not writable.
    NotADirectoryError
        If the nearest existing ancestor is a file.
    """
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"cannot write into {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "folder" if probe == folder else f"folder {folder} cannot be created: its parent"
        raise PermissionError(
            f"cannot write the export: {where} {probe} is not writable; choose another folder or change its permissions"
        )


def _check_targets(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse (before writing anything) when a target exists and ``overwrite`` is False."""
    for p in paths:
        check_writable(p.parent)
    if overwrite:
        return
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing:
        raise TargetExistsError(
            f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}; nothing was "
            "written. Choose another name or folder, or allow overwriting.",
            existing,
        )


def _planes(labels: np.ndarray, axes: str) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Yield ``(stack index, 2D plane)`` over the stack axes (one item, index ``()``, for 2D)."""
    stack_shape = labels.shape[: len(axes) - 2]
    for idx in np.ndindex(*stack_shape) if stack_shape else [()]:
        yield idx, labels[idx]


def _json_safe(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays, paths, tuples and other objects into JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist()) if value.size <= 10_000 else f"<array shape {value.shape}>"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


# --------------------------------------------------------------------------------------------------
# provenance sidecar
# --------------------------------------------------------------------------------------------------


def write_provenance(path: str | os.PathLike, provenance: Mapping[str, Any], *, overwrite: bool = True) -> Path:
    """Write a provenance record as JSON, atomically.

    ``date`` (UTC, ISO 8601), ``plugin`` and ``plugin_version`` are added when missing.
    Values that JSON cannot hold (numpy numbers and arrays, paths) are converted.

    Parameters
    ----------
    path : path-like
        The JSON file (see :func:`sidecar_path` for the name beside an export).
    provenance : mapping
        The record, e.g. ``model_name``, ``model_card``, ``thresholds``, ``tile_size``.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    record = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "plugin": "napari-unet-loop",
        "plugin_version": __version__,
    }
    record.update(_json_safe(dict(provenance)))
    path = Path(path)
    check_writable(path.parent)
    try:
        text = json.dumps(record, indent=2, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not valid UTF-8: escaped, still valid JSON
        text = json.dumps(record, indent=2, ensure_ascii=True).encode("utf-8")
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(text + b"\n")
    return path


def edit_summary(original: Any, current: Any, margin: int = 16) -> dict[str, Any]:
    """How one plane of labels changed since the plugin wrote it, in brief, for a provenance record.

    Objects are matched by overlap (IoU above 0.5, as in
    :func:`napari_unet_loop.core.metrics.correction_agreement`), not by id: an object whose
    pixels changed and that still matches one of before is *reshaped*; one that matches
    none is *added*; an object of before that no object matches any more is *removed*.
    Renumbered objects (the same pixels under another id) do not count. A merge of two
    objects of equal size counts as two removed and one added; a split as one reshaped
    (the larger part) and one added.

    Parameters
    ----------
    original : array-like
        The labels as the plugin wrote them.
    current : array-like
        The labels now, same shape.
    margin : int
        Pixels around the edited objects that count as reviewed (as for fine-tuning on edited
        regions, :func:`napari_unet_loop.core.edits.edited_region`).

    Returns
    -------
    dict
        ``objects_added``, ``objects_removed``, ``objects_reshaped``, ``pixels_changed``,
        ``reviewed_pixels`` (the edited objects plus ``margin``) and ``reviewed_box``
        (``[y0, x0, y1, x1]`` of that region, end exclusive; ``None`` when nothing changed).

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    original, current = np.asarray(original), np.asarray(current)
    changed = changed_mask(original, current)
    out: dict[str, Any] = {
        "objects_added": 0,
        "objects_removed": 0,
        "objects_reshaped": 0,
        "pixels_changed": int(np.count_nonzero(changed)),
        "reviewed_pixels": 0,
        "reviewed_box": None,
    }
    if not out["pixels_changed"]:
        return out
    before, after = np.unique(original[changed]), np.unique(current[changed])
    # an object that only lost pixels keeps its id on the other side: it was touched too
    touched_o = np.union1d(before, after[np.isin(after, original)])
    touched_c = np.union1d(after, before[np.isin(before, current)])
    touched_o, touched_c = touched_o[touched_o > 0], touched_c[touched_c > 0]
    in_o, in_c = np.isin(original, touched_o), np.isin(current, touched_c)
    area_o = dict(zip(*(a.tolist() for a in np.unique(original[in_o], return_counts=True))))
    area_c = dict(zip(*(a.tolist() for a in np.unique(current[in_c], return_counts=True))))
    both = in_o & in_c
    pairs, inter = np.unique(np.stack([original[both], current[both]]), axis=1, return_counts=True)
    matched_o: set[int] = set()
    match_c: dict[int, bool] = {}  # current id -> same pixels as its match
    for o, c, n in zip(pairs[0].tolist(), pairs[1].tolist(), inter.tolist()):
        if n / (area_o[o] + area_c[c] - n) > 0.5:
            matched_o.add(o)
            match_c[c] = n == area_o[o] == area_c[c]
    for c in touched_c.tolist():
        if c not in match_c:
            out["objects_added"] += 1
        elif not match_c[c]:
            out["objects_reshaped"] += 1
    out["objects_removed"] = sum(o not in matched_o for o in touched_o.tolist())
    # the reviewed region, computed in the box of the touched objects (plus the margin) only
    rows, cols = np.nonzero(in_o | in_c | changed)
    y0, x0 = max(int(rows.min()) - margin, 0), max(int(cols.min()) - margin, 0)
    y1, x1 = int(rows.max()) + margin + 1, int(cols.max()) + margin + 1
    box = (slice(y0, y1), slice(x0, x1))
    region = edited_region(original[box], current[box], margin)
    if region.any():
        ry, rx = np.nonzero(region.any(1))[0], np.nonzero(region.any(0))[0]
        out["reviewed_pixels"] = int(np.count_nonzero(region))
        out["reviewed_box"] = [y0 + int(ry[0]), x0 + int(rx[0]), y0 + int(ry[-1]) + 1, x0 + int(rx[-1]) + 1]
    return out


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The provenance sidecar of an export (``<file>.json``), or ``None`` if absent or unreadable.

    For one plane of a per-slice PNG set (``cells_z003.png``) the set's sidecar
    (``cells.png.json``) is returned when it lists the file.
    """
    path = Path(path)
    candidates = [sidecar_path(path)]
    m = re.match(r"^(?P<base>.+?)((_t\d+)?(_z\d+)?)$", path.stem)
    if m and m.group(2):
        candidates.append(path.with_name(m.group("base") + path.suffix + ".json"))
    for cand in candidates:
        if not cand.is_file():
            continue
        try:
            record = json.loads(cand.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        if cand != candidates[0] and path.name not in record.get("files", []):
            continue
        return record
    return None


def _sidecar_record(
    fmt: str,
    files: Sequence[Path],
    labels: np.ndarray,
    axes: str,
    name: str,
    scale: list[float] | None,
    units: list[str | None],
    image: np.ndarray | None,
    notes: list[str],
    provenance: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """The sidecar JSON content for an export."""
    top = int(labels.max()) if labels.size else 0
    if top < 2**24:  # a histogram is one pass; np.unique sorts
        n_objects = int(np.count_nonzero(np.bincount(labels.ravel(), minlength=top + 1)[1:]))
    else:
        n_objects = int(np.count_nonzero(np.unique(labels)))
    record: dict[str, Any] = {
        "export_format": fmt,
        "files": [p.name for p in files],
        "labels": {
            "name": name,
            "shape": list(labels.shape),
            "dtype": str(labels.dtype),
            "axes": axes,
            "n_objects": n_objects,
            "max_label": top,
        },
        "scale": scale,
        "units": units,
        "image": None if image is None else {"shape": list(image.shape), "dtype": str(image.dtype)},
        "notes": list(notes),
    }
    if extra:
        record.update(extra)
    record["provenance"] = dict(provenance or {})
    return record


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
    return ExportResult(paths=targets)


# --------------------------------------------------------------------------------------------------
# OME-Zarr
# --------------------------------------------------------------------------------------------------


def _pyramid_factors(shape_yx: Sequence[int], levels: int | None) -> tuple[int, ...]:
    """Downsampling factors (2, 4, ...) keeping the coarsest level at least MIN_LEVEL_SIZE pixels."""
    if levels is None:
        levels = 0
        while levels < MAX_LEVELS and min(shape_yx) // 2 ** (levels + 1) >= MIN_LEVEL_SIZE:
            levels += 1
    return tuple(2**i for i in range(1, int(levels) + 1))


def _image_for_zarr(image: Any, labels_shape: tuple[int, ...], axes: str) -> tuple[np.ndarray, str]:
    """The image in OME-NGFF axis order (t, c, z, y, x) with its lower-case axes."""
    img = np.asarray(image)
    if img.shape == labels_shape:
        return img, axes.lower()
    if img.ndim == len(labels_shape) + 1 and img.shape[:-1] == labels_shape and img.shape[-1] <= 16:
        # channels last (RGB or a few channels) -> NGFF puts c after t
        c_pos = 1 if axes.startswith("T") else 0
        img = np.moveaxis(img, -1, c_pos)
        lower = axes.lower()
        return img, lower[:c_pos] + "c" + lower[c_pos:]
    raise ExportError(
        f"image shape {img.shape} does not match labels shape {labels_shape}; give the image the labels "
        "were made from (same shape, optionally with a trailing channel axis)"
    )


def write_ome_zarr(
    path: str | os.PathLike,
    labels: Any,
    image: Any | None = None,
    *,
    name: str = "labels",
    scale: Sequence[float] | None = None,
    units: str | Sequence[Any] | None = None,
    axes: str | None = None,
    overwrite: bool = False,
    levels: int | None = None,
    ngff_version: str = "0.4",
    attrs: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Write an OME-Zarr image with the labels in its ``labels/<name>`` group, through ome-zarr-py.

    Both are multiscale (labels downsampled by nearest neighbour). Without an image, an
    all-zero placeholder image (tiny on disk) holds the labels, since OME-Zarr labels belong
    to an image; the reader in :mod:`napari_unet_loop.io.readers` skips it.
    The store is written to a temporary sibling folder and renamed into place when complete.

    Parameters
    ----------
    path : path-like
        Target ``.zarr`` folder.
    labels : array-like
        Labels (``YX``, ``ZYX``, ``TYX``, ``TZYX``).
    image : array-like, optional
        The image, same shape as the labels or with a trailing channel axis.
    name : str
        Name of the labels group.
    scale : sequence of float, optional
        Pixel size per axis of the labels.
    units : str or sequence, optional
        Spatial unit (or one per axis); see :func:`normalize_units`.
    axes : str, optional
        Label axes (guessed from the dimensions if not given).
    overwrite : bool
        Whether an existing store may be replaced (only after the new one is complete).
    levels : int, optional
        Downsampled levels below full resolution (default: halve until the smaller side
        would drop below 64 pixels, at most 4).
    ngff_version : {"0.4", "0.5"}
        OME-NGFF version: 0.4 (Zarr v2, read by most tools today) or 0.5 (Zarr v3).
    attrs : mapping, optional
        Extra attributes stored under ``napari_unet_loop`` in the image group.

    Returns
    -------
    ExportResult
        The ``.zarr`` folder and notes.
    """
    import zarr
    from ome_zarr import writer as oz_writer
    from ome_zarr.format import FormatV04, FormatV05

    notes: list[str] = []
    data = check_labels(labels)
    axes = normalize_axes(axes, data.ndim)
    vals = normalize_scale(scale, data.ndim)
    unit_list = normalize_units(units, axes, vals, notes)
    fmt = {"0.4": FormatV04, "0.5": FormatV05}.get(str(ngff_version))
    if fmt is None:
        raise ExportError(f"unknown OME-NGFF version {ngff_version!r}; use '0.4' or '0.5'")
    group_name = safe_name(name).replace(" ", "_")
    lower = axes.lower()
    scale_map = {a: (vals[i] if vals else 1.0) for i, a in enumerate(lower)}
    axes_units = {a: u for a, u in zip(lower, unit_list, strict=True) if u is not None}
    placeholder = image is None
    if placeholder:
        img, img_axes = np.zeros(data.shape, np.uint8), lower
        notes.append("no image given: an empty placeholder image holds the labels in the OME-Zarr")
    else:
        img, img_axes = _image_for_zarr(image, data.shape, axes)
    factors = _pyramid_factors(data.shape[-2:], levels)
    img_scale = {a: scale_map.get(a, 1.0) for a in img_axes}
    img_units = {a: u for a, u in axes_units.items() if a in img_axes}
    meta = {"placeholder_image": placeholder, "labels_name": group_name, **_json_safe(dict(attrs or {}))}
    path = Path(path)
    _check_targets([path], overwrite)
    chunk_yx = 512
    with atomic_dir(path, overwrite=overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2 if fmt is FormatV04 else 3)
        oz_writer.write_image(
            img,
            root,
            scale_factors=factors,
            fmt=fmt(),
            axes=list(img_axes),
            scale=img_scale,
            axes_units=img_units or None,
            storage_options={"chunks": _chunks(img.shape, img_axes, chunk_yx)},
        )
        oz_writer.write_labels(
            data,
            root,
            name=group_name,
            scaler=None,
            scale_factors=factors,
            fmt=fmt(),
            axes=list(lower),
            scale=scale_map,
            axes_units=axes_units or None,
            storage_options={"chunks": _chunks(data.shape, lower, chunk_yx)},
            label_metadata={"source": {"image": "../../"}},
        )
        if fmt is FormatV04:
            root.attrs["napari_unet_loop"] = meta
        else:
            root.attrs.update({"napari_unet_loop": meta})
    return ExportResult(paths=[path], notes=notes)


def _chunks(shape: Sequence[int], axes: str, yx: int) -> tuple[int, ...]:
    """Chunks of one plane (up to ``yx`` square) per non-spatial-plane index."""
    return tuple(min(n, yx) if a in "yx" else 1 for n, a in zip(shape, axes, strict=True))


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
        table = regionprops_table(plane, **kwargs)
        n = len(table["label"])
        cols: dict[str, np.ndarray] = {"label": table["label"].astype(np.int64)}
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
            for src, dst in (("intensity_mean", "mean_intensity"), ("intensity_max", "max_intensity")):
                if src in table:
                    cols[dst] = table[src]
                else:
                    chans = sorted(
                        (k for k in table if k.startswith(src + "-")), key=lambda k: int(k.rsplit("-", 1)[1])
                    )
                    for k in chans:
                        cols[f"{dst}_c{k.rsplit('-', 1)[1]}"] = table[k]
        parts.append(cols)
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    units_map = {k: "" for k in columns}
    units_map.update({"area": f"{length}^2", "centroid_y": length, "centroid_x": length})
    units_map.update({"equivalent_diameter": length})
    units_map.update({k: "px" for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")})
    if not len(columns["label"]):
        notes.append("the labels hold no objects: the table has a header only")
    return Measurements(columns=columns, units=units_map, notes=notes)


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
            im = img if t is None else np.take(img, t, axis=t_axis)
            kwargs["intensity_image"] = im if im.ndim == 3 else im.mean(-1)
        table = regionprops_table(vol, **kwargs)
        n = len(table["label"])
        cols: dict[str, np.ndarray] = {"label": table["label"].astype(np.int64)}
        if t is not None:
            cols["t"] = np.full(n, t, dtype=np.int64)
        cols["volume"] = table["area"]
        for k, a in enumerate("zyx"):
            cols[f"centroid_{a}"] = table[f"centroid-{k}"]
        for k, key in enumerate(("bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1")):
            cols[key] = table[f"bbox-{k}"].astype(np.int64)
        cols["equivalent_diameter"] = table["equivalent_diameter_area"]
        if img is not None:
            cols["mean_intensity"] = table["intensity_mean"]
            cols["max_intensity"] = table["intensity_max"]
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


# --------------------------------------------------------------------------------------------------
# ImageJ ROIs
# --------------------------------------------------------------------------------------------------


def outline_polygons(mask: np.ndarray) -> list[tuple[bool, np.ndarray]]:
    """Trace the pixel-edge outlines of a 2D mask (like ImageJ's wand, 8-connected).

    Vertices lie on pixel corners, so filling a polygon by pixel centres gives back
    exactly the pixels it was traced from.

    Parameters
    ----------
    mask : numpy.ndarray
        2D boolean mask.

    Returns
    -------
    list of tuple
        ``(is_outer, vertices)`` per closed outline; ``vertices`` is an ``(N, 2)`` int array of
        ``(y, x)`` corner coordinates without the closing repeat and without collinear points.
        Outer outlines come first, largest first; holes follow.
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    inside = m[1:-1, 1:-1]
    sides = (
        (inside & ~m[:-2, 1:-1], (0, 1), (0, 0)),  # top: (r, c+1) -> (r, c)
        (inside & ~m[1:-1, :-2], (0, 0), (1, 0)),  # left: (r, c) -> (r+1, c)
        (inside & ~m[2:, 1:-1], (1, 0), (1, 1)),  # bottom: (r+1, c) -> (r+1, c+1)
        (inside & ~m[1:-1, 2:], (1, 1), (0, 1)),  # right: (r+1, c+1) -> (r, c+1)
    )
    starts, ends = [], []
    for sel, (sy, sx), (ey, ex) in sides:
        r, c = np.nonzero(sel)
        starts.append(np.stack([r + sy, c + sx], axis=1))
        ends.append(np.stack([r + ey, c + ex], axis=1))
    start = np.concatenate(starts)
    end = np.concatenate(ends)
    if not len(start):
        return []
    width = m.shape[1] + 1
    skey = (start[:, 0] * width + start[:, 1]).tolist()
    ekey = (end[:, 0] * width + end[:, 1]).tolist()
    out_edges: dict[int, list[int]] = {}
    for i, k in enumerate(skey):
        out_edges.setdefault(k, []).append(i)
    used = [False] * len(skey)
    dirs = (end - start).tolist()
    loops: list[tuple[bool, np.ndarray, float]] = []
    # start each walk at a vertex with a single outgoing edge, so closing it is unambiguous
    order = sorted(range(len(skey)), key=lambda i: len(out_edges[skey[i]]))
    for first in order:
        if used[first]:
            continue
        path = [first]
        used[first] = True
        cur = first
        while ekey[cur] != skey[first]:
            cands = [j for j in out_edges[ekey[cur]] if not used[j]]
            if not cands:  # pragma: no cover - cannot happen for edges traced from a mask
                break
            if len(cands) > 1:  # a diagonal touch: turn towards the other pixel (8-connectivity)
                dy, dx = dirs[cur]
                cands.sort(key=lambda j: -(dx * dirs[j][0] - dy * dirs[j][1]))
            cur = cands[0]
            used[cur] = True
            path.append(cur)
        verts = start[path]
        d = np.diff(np.vstack([verts, verts[:1]]), axis=0)
        turn = np.any(d != np.roll(d, 1, axis=0), axis=1)
        verts = verts[turn]
        y, x = verts[:, 0].astype(np.float64), verts[:, 1].astype(np.float64)
        signed = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
        loops.append((signed < 0, verts, abs(signed)))
    loops.sort(key=lambda t: (not t[0], -t[2]))
    return [(outer, verts) for outer, verts, _ in loops]


def _roi_name(label: int, idx: tuple[int, ...], stack_axes: str) -> str:
    """ROI name: the label id, plus 1-based plane positions for stacks (``7-z3``)."""
    return "-".join([str(label)] + [f"{a.lower()}{i + 1}" for a, i in zip(stack_axes, idx, strict=True)])


def write_imagej_rois(
    path: str | os.PathLike, labels: Any, *, axes: str | None = None, overwrite: bool = False
) -> ExportResult:
    """Write one traced polygon ROI per object (and plane) as an ImageJ ROI set ``.zip``.

    Each ROI is named by its label id (``"7"``; ``"7-z3"`` / ``"7-t2-z3"`` in stacks, 1-based
    like Fiji) and carries the id as the ``label`` property; stack ROIs get their
    position (z/t). Fiji's ROI Manager opens the file; the outlines follow pixel edges,
    so filling them gives back the labels exactly, except for objects with holes or several
    separate pieces, whose ROI is the outer outline of their largest piece (a note counts them).

    Parameters
    ----------
    path : path-like
        Target ``.zip`` file.
    labels : array-like
        Labels (``YX``, ``ZYX``, ``TYX``, ``TZYX``).
    axes : str, optional
        Label axes (guessed from the dimensions if not given).
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    ExportResult
        The file and notes.
    """
    from roifile import ROI_TYPE, ImagejRoi, roiwrite
    from scipy import ndimage as ndi

    data = check_labels(labels)
    axes = normalize_axes(axes, data.ndim)
    stack_axes = axes[:-2]
    notes: list[str] = []
    rois = []
    inexact = 0
    for idx, plane in _planes(data, axes):
        for i, sl in enumerate(ndi.find_objects(plane)):
            if sl is None:
                continue
            label = i + 1
            loops = outline_polygons(plane[sl] == label)
            outers = [v for outer, v in loops if outer]
            if len(outers) > 1 or len(outers) != len(loops):
                inexact += 1
            verts = outers[0] + [sl[0].start, sl[1].start]
            points = verts[:, ::-1].astype(np.int32)  # ImageJ wants (x, y)
            pos: dict[str, int] = {}
            if len(stack_axes) == 1:
                pos["position"] = idx[0]
            elif len(stack_axes) == 2:
                pos["t"], pos["z"] = idx
                pos["position"] = idx[0] * data.shape[1] + idx[1]
            roi = ImagejRoi.frompoints(points, name=_roi_name(label, idx, stack_axes), **pos)
            roi.roitype = ROI_TYPE.TRACED
            roi.right, roi.bottom = int(points[:, 0].max()), int(points[:, 1].max())
            roi.properties = {"label": label}
            rois.append(roi)
    if inexact:
        notes.append(
            f"{inexact} object outline(s) have holes or several pieces: their ROI is the outer outline of "
            "the largest piece, so reading the ROIs back fills the holes and drops the smaller pieces"
        )
    if not rois:
        notes.append("the labels hold no objects: the ROI set is empty")
    path = Path(path)
    _check_targets([path], overwrite)
    with atomic_path(path, overwrite=overwrite) as tmp:
        roiwrite(tmp, rois, mode="w")
    return ExportResult(paths=[path], notes=notes)


# --------------------------------------------------------------------------------------------------
# one entry point
# --------------------------------------------------------------------------------------------------


def export_target(outdir_or_path: str | os.PathLike, fmt: str | None, name: str | None = None) -> Path:
    """The file an export writes.

    That is ``outdir_or_path`` itself if it has the format's suffix, else ``<outdir>/<name><suffix>``.

    Raises
    ------
    ExportError
        If the path's suffix belongs to another export format.
    """
    p = Path(outdir_or_path)
    suffix = p.suffix.lower()
    key = _format_name(fmt, p if suffix in _SUFFIX_FORMATS else None)
    if suffix in _SUFFIX_FORMATS and not (p.is_dir() and key != "zarr"):
        if _SUFFIX_FORMATS[suffix] != key:
            raise ExportError(f"{p.name} has the suffix of {_SUFFIX_FORMATS[suffix]!r}, not of {key!r}")
        return p
    return p / f"{safe_name(name)}{SUFFIXES[key]}"


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
    _check_targets([*files, *([side] if side else [])], overwrite)

    extra: dict[str, Any] = {"export_id": uuid.uuid4().hex}
    if objects_3d:
        extra["objects_3d"] = True
    # the old record is moved aside while the data is replaced, so no moment leaves a record that
    # describes other data (a kill in between leaves the new data without a record); it comes back
    # if writing fails
    aside = _move_aside(side) if side is not None and overwrite else None
    try:
        result = _write_format(key, target, data, img, name, vals, unit_list, axes, overwrite, provenance, extra, notes)
        result.notes = notes + [n for n in result.notes if n not in notes]
        if side is not None:
            used_image = img if key in ("csv", "zarr") else None
            extra["sha256"] = {p.name: _sha256(p) for p in result.paths if p.is_file()}
            record = _sidecar_record(
                key, result.paths, data, axes, name, vals, unit_list, used_image, result.notes, provenance, extra
            )
            result.sidecar = write_provenance(side, record, overwrite=overwrite)
    except BaseException:
        if aside is not None and side is not None and not side.exists():
            os.replace(aside, side)
            aside = None
        raise
    finally:
        if aside is not None and aside.exists():
            aside.unlink()
    return result


def _move_aside(path: Path) -> Path | None:
    """Rename ``path`` to a hidden name that :func:`clean_leftovers` recognises; ``None`` if absent."""
    if not path.is_file():
        return None
    aside = path.with_name(f".{path.name[:40]}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.replace(path, aside)
    return aside


def _sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (to tell whether a record still describes the file)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sidecar_matches(path: str | os.PathLike) -> bool | None:
    """Whether an export's sidecar still describes it (file checksums, or the OME-Zarr's export id).

    Returns
    -------
    bool or None
        ``None`` when there is no sidecar, or it predates checksums.
    """
    path = Path(path)
    record = read_sidecar(path)
    if record is None:
        return None
    if path.is_dir():
        try:
            import zarr

            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
        except Exception:  # noqa: BLE001 - unreadable store: it does not match
            return False
        ours = (attrs.get("napari_unet_loop") or {}).get("export_id")
        return None if "export_id" not in record else ours == record["export_id"]
    sums = record.get("sha256")
    if not sums or path.name not in sums:
        return None
    return _sha256(path) == sums[path.name]


def _write_format(key, target, data, img, name, vals, unit_list, axes, overwrite, provenance, extra, notes):
    """Write the data files of one export format (no sidecar)."""
    if key == "tif":
        if int(data.max()) > UINT16_MAX:
            notes.append(
                "more than 65,535 labels: written as uint32 TIFF, which ImageJ's own TIFF reader cannot "
                "open (Fiji opens it through Bio-Formats); the pixel size is in the resolution tags"
            )
        spatial = next((u for a, u in zip(axes, unit_list, strict=True) if a in "YX" and u), None)
        write_tiff(target, data, scale=vals, axes=axes, overwrite=overwrite, unit=imagej_unit(spatial))
        result = ExportResult(paths=[target])
    elif key == "png":
        result = write_png_slices(target, data, axes, overwrite=overwrite)
        if vals is not None:
            notes.append("PNG holds no pixel size: the scale is kept in the sidecar JSON")
    elif key == "zarr":
        result = write_ome_zarr(
            target,
            data,
            img,
            name=name,
            scale=vals,
            units=unit_list,
            axes=axes,
            overwrite=overwrite,
            attrs={"provenance": dict(provenance or {}), "export_id": extra["export_id"]},
        )
    elif key == "csv":
        table = measure_table(
            data, img, scale=vals, axes=axes, units=unit_list, objects_3d=extra.get("objects_3d", False)
        )
        extra["columns"] = table.units
        result = _write_table(target, table, overwrite)
    else:
        result = write_imagej_rois(target, data, axes=axes, overwrite=overwrite)
        if vals is not None:
            notes.append("ImageJ ROIs hold pixel coordinates: the scale is kept in the sidecar JSON")
    return result
