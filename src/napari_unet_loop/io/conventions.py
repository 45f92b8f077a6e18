"""Conventions every export follows: label checks, axes, scales and units, file names, targets.

Headless (no napari, no Qt). Shared by the writers of :mod:`napari_unet_loop.io.formats`, the
provenance records of :mod:`.sidecar`, :mod:`.export` and the readers.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import TargetExistsError
from ..core.targets import sequential_ids
from .labels import label_dtype
from .units import unit_name

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


#: Smallest side (pixels) the coarsest OME-Zarr pyramid level may have.
MIN_LEVEL_SIZE = 64
#: At most this many downsampled levels below full resolution.
MAX_LEVELS = 4


class ExportError(ValueError):
    """Input that cannot be exported as asked; the message says why and what to do instead."""


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
class ExportJob:
    """Everything one format's writer needs, checked by :func:`~napari_unet_loop.io.export.export_labels`.

    Attributes
    ----------
    target : pathlib.Path
        The file (or OME-Zarr folder) to write.
    data : numpy.ndarray
        Checked labels.
    image : numpy.ndarray or None
        The paired image (CSV intensities, OME-Zarr image), if any.
    name : str
        Base name (OME-Zarr labels name).
    scale : list of float or None
        Pixel size per axis.
    units : list
        Unit per axis.
    axes : str
        Label axes.
    overwrite : bool
        Whether existing files may be replaced.
    provenance : mapping or None
        The provenance record's ``provenance`` part.
    extra : dict
        Record fields a writer adds (e.g. the CSV's column units) or reads (``export_id``).
    notes : list of str
        Notes for the user, which writers may add to.
    """

    target: Path
    data: np.ndarray
    image: np.ndarray | None
    name: str
    scale: list[float] | None
    units: list
    axes: str
    overwrite: bool
    provenance: Mapping[str, Any] | None
    extra: dict[str, Any]
    notes: list[str]


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


def pyramid_levels(shape_yx: Sequence[int], block: int | None = None) -> int:
    """Downsampled levels of a multiscale store: halve while the smaller side stays at least MIN_LEVEL_SIZE.

    At most MAX_LEVELS; with ``block`` (the chunk of the full resolution), only while it halves
    evenly, so each chunk maps to one chunk of every level.
    """
    levels = 0
    while (
        levels < MAX_LEVELS
        and min(shape_yx) // 2 ** (levels + 1) >= MIN_LEVEL_SIZE
        and (block is None or block % 2 ** (levels + 1) == 0)
    ):
        levels += 1
    return levels


def os_error_text(exc: OSError) -> str:
    """An operating-system error in words, naming the file (a full disk says so)."""
    import errno

    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing{where}: free some space or write elsewhere"
    return f"{exc.strerror or exc}{where}" if exc.strerror else str(exc)


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
        where = f"folder {folder}" if probe == folder else f"cannot create folder {folder}: its parent {probe}"
        raise PermissionError(f"{where} is not writable; choose another folder or change its permissions")


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


def compact_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels renumbered 1..n where their largest id is far above their number, for per-id tools.

    ``scipy.ndimage.find_objects`` and ``skimage.measure.regionprops`` allocate per id up to the
    largest one: a valid uint32 id of 3e9 would need gigabytes for one object.

    Parameters
    ----------
    labels : numpy.ndarray
        Labels (0 background).

    Returns
    -------
    labels : numpy.ndarray
        ``labels`` itself when its largest id is at most its pixel count (or 65,536), else the
        same objects numbered 1..n in the order of their ids (:func:`~napari_unet_loop.core.targets.sequential_ids`).
    ids : numpy.ndarray or None
        ``None`` when not renumbered; else ``ids[k - 1]`` is the original id of object ``k``.
    """
    top = int(labels.max()) if labels.size else 0
    if top <= max(labels.size, 1 << 16):
        return labels, None
    return sequential_ids(labels)


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


_AXIS_LETTERS = {"t": "T", "time": "T", "z": "Z", "y": "Y", "x": "X"}


@dataclass
class ExportArguments:
    """A labels layer's attributes as :func:`~napari_unet_loop.io.export.export_labels` arguments."""

    name: str | None
    scale: list[float] | None
    units: list[str | None] | None
    axes: str | None
    provenance: dict[str, Any]
    objects_3d: bool = False
    translate: list[float] | None = None


def export_arguments(attributes: Mapping[str, Any], ndim: int) -> ExportArguments:
    """Turn a labels layer's attributes into export arguments: the one rule for File > Save and the dock.

    Parameters
    ----------
    attributes : mapping
        napari layer attributes as npe2 hands them to writers: ``name``, ``scale``,
        ``translate``, ``metadata`` (with ``axes``, ``units``, ``source`` and the plugin's
        ``napari_unet_loop`` record), ``axis_labels``, ``units``.
    ndim : int
        Dimensions of the labels.

    Returns
    -------
    ExportArguments
        Name, scale (``None`` when every axis is 1 without a unit: uncalibrated), per-axis units, axes (from
        ``metadata['axes']``, else the axis labels ``t``/``z``/``y``/``x``, else ``YX``, ``ZYX`` or
        ``TZYX`` by dimension), the provenance (the plugin's record plus ``layer_name`` and
        ``source``), whether the labels of a Z stack are 3D objects (the plugin's
        record says ``objects_3d``: its planes were joined, so the CSV measures each in 3D), and
        the layer's offset per axis in the units of its scale (``translate``; ``None`` when zero).
    """
    meta = attributes.get("metadata") or {}
    scale = attributes.get("scale")
    scale = [float(v) for v in list(scale)[-ndim:]] if scale is not None else None
    axes = meta.get("axes")
    if not (isinstance(axes, str) and len(axes) == ndim):
        axes = None
        labels = attributes.get("axis_labels")
        if labels and len(labels) >= ndim:
            letters = [_AXIS_LETTERS.get(str(a).strip().lower()) for a in list(labels)[-ndim:]]
            if all(letters):
                axes = "".join(letters)  # type: ignore[arg-type]
        if axes is None:  # napari's default labels ("0", "1", ...): a stack of planes
            axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(ndim)
    units = None
    for given in (attributes.get("units"), meta.get("units")):
        if given is None:
            continue
        if isinstance(given, str):
            units = [unit_name(given)] * ndim
            break
        seq = [unit_name(u) for u in list(given)[-ndim:]]
        if len(seq) == ndim and any(seq):
            units = seq
            break
    if scale is not None and all(v == 1.0 for v in scale) and not (units and any(units)):
        scale = None  # 1 pixel per pixel: uncalibrated (a pixel of exactly 1 um keeps its size)
    provenance = dict(meta.get("napari_unet_loop") or {})
    provenance.setdefault("layer_name", attributes.get("name"))
    if meta.get("source"):
        provenance.setdefault("source", str(meta["source"]))
    translate = attributes.get("translate")
    translate = [float(t) for t in list(translate)[-ndim:]] if translate is not None else None
    if translate is not None and not any(translate):
        translate = None
    return ExportArguments(
        attributes.get("name"),
        scale,
        units,
        axes.upper() if axes else None,
        provenance,
        objects_3d=bool(provenance.get("objects_3d")),
        translate=translate,
    )
