"""``napari-unet-loop export``: convert label files (with measurements and provenance)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..io.export import (
    ExportError,
    export_labels,
    output_names,
    safe_name,
)
from ..io.images import read_image
from ..io.writers import full_resolution
from ._common import CLIError, _formats, _log


def cmd_export(args: argparse.Namespace) -> int:
    """Convert label files to other formats (with measurements and provenance)."""
    from ..io.readers import read_labels

    formats = _formats(args.format, default="tif")
    image = read_image(args.image) if args.image else None
    outdir = Path(args.output)
    try:  # files of the same name from different folders would overwrite each other's outputs
        output_names([Path(p).stem for p in args.labels], list(args.labels))
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    taken: dict[str, str] = {}
    for path in args.labels:
        layers = [layer for layer in read_labels(path, force=True) if layer[2] == "labels"]
        if not layers:
            raise CLIError(f"{path} holds no labels")
        for data, kwargs, _ in layers:
            data = full_resolution(data)  # a large OME-Zarr's labels come as their multiscale levels
            if data.dtype != bool and not np.issubdtype(data.dtype, np.integer):  # a mask: one object
                raise CLIError(f"{path}: labels must be integers, got {data.dtype}")
            meta = kwargs.get("metadata", {}) or {}
            axes = args.axes or meta.get("axes")
            scale = _pixel_size(args.pixel_size, kwargs.get("scale"), data.ndim, path)
            translate = _moved(kwargs.get("translate"), kwargs.get("scale"), scale)
            units = args.unit or meta.get("units")
            if args.pixel_size and not args.unit and _unit_of(meta.get("units")):
                _log(f"note: {Path(path).name}: --pixel-size taken in {_unit_of(meta.get('units'))}, the file's unit")
            name = Path(path).stem if len(layers) == 1 else kwargs.get("name", Path(path).stem)
            key = safe_name(name).casefold()
            if key in taken:
                raise CLIError(
                    f"{path} ({name}) and {taken[key]} would both be written as {safe_name(name)}.*: "
                    "export them to different folders"
                )
            taken[key] = f"{path}"
            for fmt in formats:
                img = image if fmt in ("csv", "zarr") else None
                if img is not None and img.shape[: data.ndim] != data.shape:
                    img = img[..., :3].mean(-1) if img.ndim == data.ndim + 1 else img
                    if img.shape != data.shape:
                        raise CLIError(f"--image has shape {image.shape}, the labels {data.shape}")
                res = export_labels(
                    data,
                    outdir,
                    fmt,
                    name=name,
                    image=img,
                    scale=scale,
                    units=units,
                    axes=axes,
                    overwrite=args.overwrite,
                    provenance=meta.get("napari_unet_loop") or None,
                    translate=translate,  # an OME-Zarr's translation: where the labels lie
                )
                for note in res.notes:
                    _log(f"note: {Path(path).name} ({fmt}): {note}")
                _log(f"{Path(path).name} -> {', '.join(str(p) for p in res.paths)}")
    return 0


def _pixel_size(given: list[float] | None, file_scale, ndim: int, path) -> list[float] | None:
    """The scale to export: ``--pixel-size`` for the last axes (one value: Y and X), the file's for the others.

    A Z stack exported with ``--pixel-size 0.2 0.2`` keeps its Z spacing (it was reset to 1).
    """
    if not given:
        return file_scale
    values = [given[0], given[0]] if len(given) == 1 else list(given)
    if len(values) > ndim:
        raise CLIError(f"--pixel-size has {len(values)} values; {path} has {ndim} axes")
    kept = list(file_scale or [1.0] * ndim)[-ndim:] if file_scale is not None else [1.0] * ndim
    return [*kept[: ndim - len(values)], *values]


def _moved(translate, file_scale, scale) -> list[float] | None:
    """A file's offset (in its scale's units) in the units of the exported ``scale``: the same pixel offset.

    ``--pixel-size`` changes the size of a pixel, not where the labels start among the image's
    pixels, so each axis' offset is rescaled with its pixel size.
    """
    if translate is None:
        return None
    n = len(scale) if scale is not None else len(translate)
    old = list(file_scale)[-n:] if file_scale is not None else [1.0] * n
    new = list(scale) if scale is not None else old
    return [float(t) * (b / a if a else 1.0) for t, a, b in zip(list(translate)[-n:], old, new, strict=True)]


def _unit_of(units) -> str | None:
    """The unit of Y and X in a file's ``units`` (one string, or one per axis), if any."""
    if isinstance(units, str):
        return units or None
    if isinstance(units, (list, tuple)) and units:
        return units[-1] or None
    return None
