"""Readers for the label files :mod:`napari_unet_loop.io.export` writes (and the same formats by others).

Headless: the functions return napari ``LayerData`` tuples ``(data, kwargs, layer_type)``
built from plain numpy/dask data, and never import napari. ``napari_get_reader`` is the
npe2 reader contribution.

- ``.tif``/``.tiff``, ``.png``: an integer image reopens as labels, anything else as an image;
  the pixel size (TIFF tags/ImageJ metadata, or the export's sidecar JSON) becomes ``scale``.
- ``.zarr``: OME-Zarr through ome-zarr-py: the image (multiscale) as an image layer and each
  ``labels/<name>`` as a labels layer (full resolution, editable).
- ``.zip``: an ImageJ ROI set, filled into a label image (the shape and scale come from the
  sidecar JSON when present, else from the ROI extents).
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from .conventions import LABEL_AXES
from .images import PNG_PALETTE, ReadError, _reason, check_png_depth, planar_colour, png_colour_type, read_png_pixels
from .labels import label_dtype, read_tiff_scale
from .ngff import full_resolution
from .sidecar import current_sidecar, read_sidecar
from .units import SHORT_UNITS, unit_name

LayerData = tuple[Any, dict, str]
"""A napari layer data tuple: ``(data, layer kwargs, layer type)``."""

LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".zarr", ".zip")
"""File suffixes this reader opens."""

#: Labels bigger than this (bytes) stay lazy (dask, multiscale) when read from OME-Zarr.
LAZY_LABELS_BYTES = 2**31

_AREA_ROI_TYPES = ("POLYGON", "RECT", "OVAL", "FREEHAND", "TRACED", "COMPOSITE")
_OUR_ROI_NAME = re.compile(r"^(\d+)(-[tz]\d+)*$")


# --------------------------------------------------------------------------------------------------
# npe2 entry point
# --------------------------------------------------------------------------------------------------


def napari_get_reader(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Callable | None:
    """Return :func:`read_labels` if every path is one this plugin reads, else ``None`` (npe2 reader hook).

    Parameters
    ----------
    path : str or list of str
        A file/folder path, or several.

    Returns
    -------
    callable or None
        A function taking the path(s) and returning a list of layer data tuples.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_is_ours(Path(p)) for p in paths):
        return None
    return read_labels


def _is_ours(path: Path) -> bool:
    """Whether ``path`` looks like a file this module reads (cheap checks only)."""
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        return False
    if suffix == ".zarr":
        return path.is_dir()
    if not path.is_file():
        return False
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except (OSError, zipfile.BadZipFile):
            return False
        if not names:  # an empty ROI set is ours only if our sidecar says so
            return read_sidecar(path) is not None
        return all(n.lower().endswith(".roi") for n in names)
    return True


def read_labels(path: str | os.PathLike | Sequence[str | os.PathLike], force: bool = False) -> list[LayerData]:
    """Read label files (TIFF, PNG, OME-Zarr, ImageJ ROI zip) as napari layer data.

    Parameters
    ----------
    path : path-like or sequence of path-like
        One path or several; layers of all of them are returned in order.
    force : bool
        Take integer TIFF/PNG data as labels even when it does not look like labels
        (the ``export`` command, which is given label files). By default only data that is
        piecewise constant opens as labels (see :func:`_is_label_array`).

    Returns
    -------
    list of tuple
        ``(data, kwargs, layer_type)`` per layer; ``kwargs`` holds ``name``, ``scale`` (when the
        file has a pixel size) and ``metadata`` (``axes``, ``units``, ``source``, and the export's
        provenance under ``napari_unet_loop``).

    Raises
    ------
    ReadError
        If a file is missing, of an unknown kind, or unreadable.
    """
    if not isinstance(path, (str, os.PathLike)):
        out: list[LayerData] = []
        for p in path:
            out.extend(read_labels(p, force))
        return out
    p = Path(path)
    if not p.exists():
        raise ReadError(f"{p} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            return read_tiff(p, force)
        if suffix == ".png":
            return read_png(p, force)
        if suffix == ".zarr":
            return read_ome_zarr(p)
        if suffix == ".zip":
            return read_imagej_rois(p)
    except ReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any library failure is reported the same way
        if p.is_file() and p.stat().st_size == 0:
            raise ReadError(f"{p} is empty (0 bytes)") from None
        raise ReadError(f"cannot read {p}: {_reason(exc)}") from exc
    raise ReadError(f"{p}: not a label file this plugin reads ({', '.join(LABEL_SUFFIXES)})")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _napari_has_units() -> bool:
    """Whether the installed napari takes ``units``/``axis_labels`` layer arguments (0.6+)."""
    try:
        parts = version("napari").split(".")[:2]
        return tuple(int(re.sub(r"\D.*", "", x) or 0) for x in parts) >= (0, 6)
    except (PackageNotFoundError, ValueError):
        return False


def _is_label_array(data: np.ndarray, side: dict | None = None, force: bool = False) -> bool:
    """Whether integer (or boolean) data holds labels rather than intensities.

    Files this plugin wrote (with a sidecar) are labels. Otherwise labels are piecewise
    constant: of the horizontal neighbour pairs that are both non-zero, only those across
    two touching objects differ (at least 96% are equal in every DSB2018 label image),
    while a microscope image's noise makes most of them differ (at most 78% equal in the
    DSB2018 images made grey, 3% in ISBI EM; a tiling of 8-pixel cells gives 87.5%).
    Checked on crops of up to three non-empty planes; ``force`` skips the check.
    """
    if data.dtype.kind not in "iub":
        return False
    ours = side is not None and not side.get("stale")  # our export, still as written
    if force or ours or data.dtype.kind == "b" or data.ndim < 2 or data.shape[-1] < 2:
        return True
    planes = data.reshape(-1, *data.shape[-2:])
    n = same = seen = 0
    for k in range(planes.shape[0]):
        plane = np.asarray(planes[k, :1024, :1024])
        both = (plane[:, 1:] != 0) & (plane[:, :-1] != 0)
        if not both.any():
            continue
        n += int(both.sum())
        same += int(((plane[:, 1:] == plane[:, :-1]) & both).sum())
        seen += 1
        if seen == 3:
            break
    return n == 0 or same >= 0.85 * n  # n == 0: empty labels, or objects one pixel wide


def _stack_axes_for(ndim: int, axes: str | None) -> str:
    """Label axes for ``ndim`` dimensions: ``axes`` if valid, else YX/ZYX/TZYX."""
    if axes and axes.upper() in LABEL_AXES and len(axes) == ndim:
        return axes.upper()
    return {2: "YX", 3: "ZYX", 4: "TZYX"}.get(ndim, "")


def _reconcile_scale(file_scale: list[float] | None, side: dict | None, ndim: int) -> list[float] | None:
    """The file's scale, replaced by the sidecar's exact values when they agree (or fill in a missing one)."""
    side_scale = (side or {}).get("scale")
    if isinstance(side_scale, list) and side_scale:
        side_scale = [float(s) for s in side_scale]
        if len(side_scale) > ndim:
            side_scale = side_scale[-ndim:]
        if len(side_scale) == ndim:
            if file_scale is None or np.allclose(file_scale, side_scale, rtol=1e-6, atol=0):
                return side_scale
    return file_scale


def _units_for(side: dict | None, axes: str, unit: str | None) -> list[str | None]:
    """One unit per axis, from the sidecar or a single spatial unit."""
    side_units = (side or {}).get("units")
    if isinstance(side_units, list) and side_units:
        units = list(side_units)[-len(axes) :]
        if len(units) == len(axes):
            return [unit_name(u) for u in units]
    name = unit_name(unit)
    return [name if a in "ZYX" else None for a in axes]


def _layer_kwargs(
    name: str,
    scale: list[float] | None,
    axes: str,
    units: list[str | None] | None,
    source: Path,
    side: dict | None,
    extra_meta: dict | None = None,
) -> dict:
    """Layer kwargs for napari: name, scale, metadata (and units/axis labels on napari >= 0.6)."""
    meta: dict[str, Any] = {"source": str(source)}
    if axes:
        meta["axes"] = axes
    if units and any(units):
        meta["units"] = [u or "pixel" for u in units]
    prov = (side or {}).get("provenance")
    if prov:
        meta["napari_unet_loop"] = prov
    if extra_meta:
        meta.update(extra_meta)
    kwargs: dict[str, Any] = {"name": name, "metadata": meta}
    if scale is not None:
        kwargs["scale"] = list(scale)
    shift = (side or {}).get("translate")  # where an export's labels lay (a file format with no place for it)
    if isinstance(shift, list) and axes and len(shift) == len(axes) and any(shift):
        kwargs["translate"] = [float(t) for t in shift]
    if axes and _napari_has_units():
        kwargs["axis_labels"] = tuple(a.lower() for a in axes)
        if units and all(u is None or u in SHORT_UNITS for u in units):
            kwargs["units"] = tuple(u or "pixel" for u in units)
    return kwargs


def _labels_name(path: Path, side: dict | None) -> str:
    """Layer name: the exported labels' name from the sidecar, else the file stem."""
    name = ((side or {}).get("labels") or {}).get("name")
    return str(name) if name and len(((side or {}).get("files")) or []) <= 1 else path.stem


# --------------------------------------------------------------------------------------------------
# TIFF and PNG
# --------------------------------------------------------------------------------------------------


def read_tiff(path: str | os.PathLike, force: bool = False) -> list[LayerData]:
    """Read a TIFF: integer data as labels, other data as an image, with the pixel size as ``scale``.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    list of tuple
        One layer data tuple.
    """
    import tifffile

    path = Path(path)
    side = current_sidecar(path)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if len(tif.series) > 1:  # positions of a multi-position OME-TIFF...: napari shows warnings as notes
            warnings.warn(
                f"{path.name} holds {len(tif.series)} image series; only the first ({series.shape}) is opened",
                UserWarning,
                stacklevel=2,
            )
        data = series.asarray()
        tax = series.axes.upper()
        # axes of one value that name nothing (Q: a (Y, X, 1) mask saved with a channel axis) are left out
        for i in reversed(range(data.ndim)):
            if tax[i] not in "TZCYXS" and data.shape[i] == 1 and data.ndim > 2:
                data, tax = data.squeeze(i), tax[:i] + tax[i + 1 :]
        if tax == "SYX" and planar_colour(tif):  # planar RGB: the samples last, as napari shows colour
            data, tax = np.moveaxis(data, 0, -1), "YXS"
        elif tax == "SYX":  # tifffile's guess for any (3 | 4, Y, X) array it wrote unnamed: a stack of planes
            tax = "ZYX"
        file_scale, unit = read_tiff_scale(tif, data.ndim, tax)
    channels = "S" in tax or "C" in tax
    if not channels and 2 <= data.ndim <= 4 and _is_label_array(data, side, force):
        axes = _stack_axes_for(data.ndim, tax if tax in LABEL_AXES else ((side or {}).get("labels") or {}).get("axes"))
        scale = _reconcile_scale(file_scale, side, data.ndim)
        units = _units_for(side, axes, unit) if scale is not None else None
        kwargs = _layer_kwargs(_labels_name(path, side), scale, axes, units, path, side)
        return [(data, kwargs, "labels")]
    return [_image_layer(data, tax, file_scale, unit, path, side)]


def _image_layer(
    data: np.ndarray, axes: str, scale: list[float] | None, unit: str | None, path: Path, side: dict | None
) -> LayerData:
    """An image layer tuple for non-label data (RGB via ``rgb``, channels via ``channel_axis``)."""
    kwargs: dict[str, Any] = {"name": path.stem, "metadata": {"source": str(path), "axes": axes}}
    spatial = axes
    if axes.endswith("S") and data.shape[-1] in (3, 4):
        kwargs["rgb"] = True
        spatial = axes[:-1]
    elif "C" in axes:
        kwargs["channel_axis"] = axes.index("C")
        spatial = axes.replace("C", "")
    if scale is not None:
        # read_tiff_scale gives one value per array axis; keep those of the displayed axes
        full = list(scale) + [1.0] * (len(axes) - len(scale))
        kwargs["scale"] = [s for s, a in zip(full, axes, strict=True) if a in spatial]
    if unit_name(unit):
        kwargs["metadata"]["units"] = unit_name(unit)
    _per_channel(kwargs, data.shape)
    return (data, kwargs, "image")


def _per_channel(kwargs: dict[str, Any], shape: Sequence[int]) -> None:
    """Give each layer napari splits off the file's channel axis its channel index (``metadata['channel']``).

    What reads the file again (the dock's run of the whole file to OME-Zarr) then segments the
    channel that layer shows.
    """
    if "channel_axis" in kwargs:
        meta = kwargs["metadata"]
        kwargs["metadata"] = [{**meta, "channel": i} for i in range(int(shape[kwargs["channel_axis"]]))]


def read_png(path: str | os.PathLike, force: bool = False) -> list[LayerData]:
    """Read a PNG: a 2D integer image as labels (scale from the sidecar JSON), else an image.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    list of tuple
        One layer data tuple.
    """
    path = Path(path)
    check_png_depth(path)  # a 16-bit colour PNG would be cut to 8 bits
    side = current_sidecar(path)
    palette = png_colour_type(path) == PNG_PALETTE
    data = read_png_pixels(path, indices=palette)  # a palette PNG's indices: labels if they look like labels
    if palette and not _is_label_array(data, side, force):
        data = read_png_pixels(path)  # a picture in indexed colour: its colours
    if data.ndim == 2 and _is_label_array(data, side, force):
        scale = _reconcile_scale(None, side, 2)
        units = _units_for(side, "YX", None) if scale is not None else None
        return [(data, _layer_kwargs(_labels_name(path, side), scale, "YX", units, path, side), "labels")]
    axes = "YXS" if data.ndim == 3 else "YX"
    return [_image_layer(data, axes, None, None, path, side)]


# --------------------------------------------------------------------------------------------------
# OME-Zarr
# --------------------------------------------------------------------------------------------------


def _node_transform(node) -> tuple[list[float] | None, list[float] | None]:
    """Full-resolution scale and translation of an ome-zarr reader node (translation ``None`` if zero).

    With the multiscales' own transformations, as NGFF composes them (:func:`.ngff.full_resolution`).
    """
    transforms = node.metadata.get("coordinateTransformations")
    level = transforms[0] if transforms and transforms[0] else []
    try:
        attrs = dict(node.zarr.root_attrs)
        multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales") or [{}]
        common = multiscales[0].get("coordinateTransformations") or []
    except (AttributeError, TypeError, IndexError, ValueError):
        common = []
    scale, shift = full_resolution(level, common)
    return scale, (shift if shift is not None and any(shift) else None)


def _node_axes(node) -> tuple[str, list[str | None]]:
    """Axis names (lower case) and units of an ome-zarr node."""
    axes = node.metadata.get("axes") or []
    names = "".join((a["name"] if isinstance(a, dict) else str(a))[0] for a in axes)
    units = [(a.get("unit") if isinstance(a, dict) else None) for a in axes]
    return names.lower(), [unit_name(u) for u in units]


def read_ome_zarr(path: str | os.PathLike) -> list[LayerData]:
    """Read an OME-Zarr image and its labels with ome-zarr-py's reader.

    The image comes back as a (lazy, multiscale) image layer, unless it is the empty
    placeholder :func:`~napari_unet_loop.io.formats.zarr.write_ome_zarr` writes when no image was
    given; each label group as a labels layer at full resolution (numpy, so it can be edited;
    dask multiscale when larger than :data:`LAZY_LABELS_BYTES`).

    Parameters
    ----------
    path : path-like
        The ``.zarr`` folder (or a group inside one).

    Returns
    -------
    list of tuple
        Image layer first, then labels layers.

    Raises
    ------
    ReadError
        If the folder is not an OME-Zarr image.
    """
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    path = Path(path)
    zarr_v2 = (path / ".zgroup").exists() or (path / ".zattrs").exists()
    loc = parse_url(str(path), mode="r", fmt=FormatV04() if zarr_v2 else FormatV05())
    if loc is None:
        raise ReadError(f"{path} is not a zarr store")
    try:
        ours = dict(zarr.open_group(str(path), mode="r").attrs).get("napari_unet_loop") or {}
    except Exception:  # noqa: BLE001 - a sub-group or foreign store simply has no attributes of ours
        ours = {}
    side = current_sidecar(path) or {}
    prov = side.get("provenance") or ours.get("provenance")
    side = {**side, "provenance": prov} if prov else side
    images: list[LayerData] = []
    labels: list[LayerData] = []
    for node in Reader(loc)():
        if node.load(Multiscales) is None or not node.data:
            continue
        axes, units = _node_axes(node)
        scale, translate = _node_transform(node)
        if node.load(Label) is not None:
            name = str(node.metadata.get("name") or path.stem)
            level0 = node.data[0]
            if level0.nbytes > LAZY_LABELS_BYTES:
                data: Any = list(node.data)
                if len(data) == 1:  # napari reads a list of one array as that array's levels: add a lazy one
                    data.append(data[0][..., ::2, ::2])
            else:
                data = np.asarray(level0)
            label_axes = axes.upper() if axes.upper() in LABEL_AXES else _stack_axes_for(level0.ndim, None)
            kwargs = _layer_kwargs(name, scale, label_axes, units, path, side)
            kwargs["metadata"]["labels_group"] = node.zarr.basename()  # which of the store's labels it is
            if isinstance(data, list):
                kwargs["multiscale"] = True
            if translate:
                kwargs["translate"] = translate
            labels.append((data, kwargs, "labels"))
        else:
            if ours.get("placeholder_image") and node.zarr.basename() == path.name:
                continue
            images.append(_zarr_image_layer(node, axes, units, scale, translate, path))
    if not images and not labels:
        raise ReadError(f"{path} holds no OME-Zarr image or labels")
    return images + labels


def _zarr_image_layer(
    node, axes: str, units: list[str | None], scale: list[float] | None, translate, path: Path
) -> LayerData:
    """The image of an OME-Zarr node as an image layer tuple."""
    data = list(node.data)
    name = str(node.metadata.get("name") or path.stem)
    kwargs: dict[str, Any] = {"name": name, "metadata": {"source": str(path), "axes": axes.upper()}}
    keep = list(range(len(axes)))
    if "c" in axes:
        c = axes.index("c")
        n_c = data[0].shape[c]
        if n_c in (3, 4) and data[0].dtype == np.uint8:
            data = [np.moveaxis(d, c, -1) for d in data]
            kwargs["rgb"] = True
        else:
            kwargs["channel_axis"] = c
        keep.remove(c)
    if scale is not None:
        kwargs["scale"] = [scale[i] for i in keep]
    if translate is not None:
        kwargs["translate"] = [translate[i] for i in keep]
    spatial_units = [units[i] for i in keep]
    if any(spatial_units):
        kwargs["metadata"]["units"] = [u or "pixel" for u in spatial_units]
    _per_channel(kwargs, data[0].shape)
    if len(data) > 1:
        kwargs["multiscale"] = True
        return (data, kwargs, "image")
    return (data[0], kwargs, "image")


# --------------------------------------------------------------------------------------------------
# ImageJ ROI sets
# --------------------------------------------------------------------------------------------------


def _roi_label(roi, index: int) -> int:
    """The label id of a ROI: its ``label`` property, an id-style name (``7``, ``7-z3``), else index + 1."""
    value = roi.properties.get("label") if roi.props else None
    if isinstance(value, int) and value > 0:
        return value
    m = _OUR_ROI_NAME.match(roi.name or "")
    if m and int(m.group(1)) > 0:
        return int(m.group(1))
    return index + 1


def _roi_planes(roi, stack_shape: tuple[int, ...], stack_axes: str) -> list[tuple[int, ...]]:
    """The stack positions a ROI belongs to (all planes when it has no position)."""
    if not stack_axes:
        return [()]
    per_axis = {"T": roi.t_position, "Z": roi.z_position}
    if any(per_axis[a] for a in stack_axes):
        ranges = [[per_axis[a] - 1] if per_axis[a] else range(n) for a, n in zip(stack_axes, stack_shape)]
        return [idx for idx in itertools.product(*ranges) if all(0 <= i < n for i, n in zip(idx, stack_shape))]
    if roi.position:
        flat = roi.position - 1
        if flat < int(np.prod(stack_shape)):
            return [tuple(int(i) for i in np.unravel_index(flat, stack_shape))]
        return []
    return list(np.ndindex(*stack_shape))


def _roi_mask(roi, shape_yx: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Pixel rows/cols inside a ROI (pixel centres inside its outline; sub-paths combine even-odd)."""
    from skimage.draw import polygon

    paths = [np.asarray(xy, dtype=np.float64) for xy in roi.coordinates(multi=True)]
    paths = [xy for xy in paths if len(xy) >= 3]
    if not paths:
        return None
    if len(paths) == 1:
        xy = paths[0]
        return polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape_yx)
    # several sub-paths (a composite ROI with holes): even-odd in a mask over their bounding box
    allxy = np.concatenate(paths)
    y0, x0 = max(0, int(np.floor(allxy[:, 1].min()))), max(0, int(np.floor(allxy[:, 0].min())))
    y1 = min(shape_yx[0], int(np.ceil(allxy[:, 1].max())) + 1)
    x1 = min(shape_yx[1], int(np.ceil(allxy[:, 0].max())) + 1)
    if y1 <= y0 or x1 <= x0:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for xy in paths:
        rr, cc = polygon(xy[:, 1] - 0.5 - y0, xy[:, 0] - 0.5 - x0, mask.shape)
        sub = np.zeros_like(mask)
        sub[rr, cc] = True
        mask ^= sub
    rr, cc = np.nonzero(mask)
    return rr + y0, cc + x0


def rois_to_labels(rois: Sequence, shape: Sequence[int], axes: str | None = None) -> tuple[np.ndarray, int]:
    """Fill ImageJ ROIs into a label image.

    Larger ROIs are painted first, so objects nested inside others survive. Line and
    point ROIs have no area and are skipped.

    Parameters
    ----------
    rois : sequence of roifile.ImagejRoi
        The ROIs.
    shape : sequence of int
        Shape of the label image (``YX`` last).
    axes : str, optional
        Its axes (``YX``, ``ZYX``, ``TYX``, ``TZYX``); guessed from the dimensions if not given.

    Returns
    -------
    tuple
        ``(labels, skipped)``: the label image (uint16, or uint32 for ids above 65,535) and the
        number of ROIs without an area.
    """
    shape = tuple(int(n) for n in shape)
    axes = _stack_axes_for(len(shape), axes)
    stack_axes = axes[:-2]
    stack_shape = shape[: len(stack_axes)]
    shape_yx = (shape[-2], shape[-1])
    painted: list[tuple[int, list[tuple[int, ...]], tuple[np.ndarray, np.ndarray]]] = []
    skipped = 0
    for i, roi in enumerate(rois):
        if roi.roitype.name not in _AREA_ROI_TYPES:
            skipped += 1
            continue
        pix = _roi_mask(roi, shape_yx)
        if pix is None or not len(pix[0]):
            skipped += 1
            continue
        painted.append((_roi_label(roi, i), _roi_planes(roi, stack_shape, stack_axes), pix))
    top = max((p[0] for p in painted), default=0)
    labels = np.zeros(shape, dtype=label_dtype(np.array([top])))
    for label, planes, (rr, cc) in sorted(painted, key=lambda p: -len(p[2][0])):
        for idx in planes:
            labels[idx][rr, cc] = label
    return labels, skipped


def read_imagej_rois(path: str | os.PathLike) -> list[LayerData]:
    """Read an ImageJ ROI set (``.zip``) as a labels layer.

    The label image's shape, axes and pixel size come from the export's sidecar JSON
    when it is there; otherwise the shape is the extent of the ROIs (bottom-right corner,
    largest stack position), which may be smaller than the original image.

    Parameters
    ----------
    path : path-like
        The ``.zip`` (or a single ``.roi``) file.

    Returns
    -------
    list of tuple
        One labels layer tuple; ``metadata["notes"]`` says what was guessed or skipped.

    Raises
    ------
    ReadError
        If the set is empty and no sidecar gives the image shape.
    """
    from roifile import roiread

    path = Path(path)
    found = roiread(path)
    rois = found if isinstance(found, list) else [found]
    side = current_sidecar(path)
    info = (side or {}).get("labels") or {}
    notes: list[str] = []
    if isinstance(info.get("shape"), list) and len(info["shape"]) >= 2:
        shape = tuple(int(n) for n in info["shape"])
        axes = _stack_axes_for(len(shape), info.get("axes"))
    else:
        if not rois:
            raise ReadError(f"{path} holds no ROIs and no sidecar JSON gives the image shape")
        h = max(max(r.bottom, r.top + 1) for r in rois)
        w = max(max(r.right, r.left + 1) for r in rois)
        zs = max(r.z_position for r in rois)
        ts = max(r.t_position for r in rois)
        ps = max(r.position for r in rois)
        if ts and zs:
            shape, axes = (ts, zs, h, w), "TZYX"
        elif ts:
            shape, axes = (ts, h, w), "TYX"
        elif zs or ps > 1:
            shape, axes = (max(zs, ps), h, w), "ZYX"
        else:
            shape, axes = (h, w), "YX"
        notes.append(f"no sidecar JSON: image shape {shape} taken from the ROI extents")
    labels, skipped = rois_to_labels(rois, shape, axes)
    if skipped:
        notes.append(f"{skipped} ROI(s) without an area (lines, points) skipped")
    scale = _reconcile_scale(None, side, len(shape))
    units = _units_for(side, axes, None) if scale is not None else None
    extra = {"notes": notes} if notes else None
    return [(labels, _layer_kwargs(_labels_name(path, side), scale, axes, units, path, side, extra), "labels")]
