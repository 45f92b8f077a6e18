"""TIFF export: uint16 with ImageJ metadata below 65,536 labels, uint32 above; stacks stay stacks."""

from __future__ import annotations

from ..conventions import ExportJob, ExportResult
from ..labels import UINT16_MAX, write_tiff
from ..units import imagej_unit


def export(job: ExportJob) -> ExportResult:
    """The TIFF entry of the export registry (pixel size, Z spacing and unit in the file)."""
    if int(job.data.max()) > UINT16_MAX:
        job.notes.append(
            "more than 65,535 labels: written as uint32 TIFF, which ImageJ's own TIFF reader cannot "
            "open (Fiji opens it through Bio-Formats); the pixel size is in the resolution tags"
        )
    spatial = next((u for a, u in zip(job.axes, job.units, strict=True) if a in "YX" and u), None)
    write_tiff(job.target, job.data, scale=job.scale, axes=job.axes, overwrite=job.overwrite, unit=imagej_unit(spatial))
    return ExportResult(paths=[job.target])
