"""One module per export format behind a small registry.

Each module has ``export(job: ExportJob) -> ExportResult``, which writes the data files of one
format (atomically; the provenance record is written by :func:`napari_unet_loop.io.export.export_labels`).
A new format is a new module here, an entry in :data:`WRITERS` and its name and suffix in
:data:`napari_unet_loop.io.conventions.FORMATS` / ``SUFFIXES``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..conventions import ExportJob, ExportResult
from . import csv, png, roi, tif, zarr

WRITERS: dict[str, Callable[[ExportJob], ExportResult]] = {
    "tif": tif.export,
    "png": png.export,
    "zarr": zarr.export,
    "csv": csv.export,
    "roi": roi.export,
}
