"""One image file in, its label files out: the job ``segment`` runs per file, here or as a cluster task.

:func:`~napari_unet_loop.io.images.read_with_axes` reads a file and its axes, :func:`segment_array`
runs the shared plane loop (:func:`napari_unet_loop.core.planes.iter_segment_planes`) with optional Z
stitching, and :func:`segment_file` does both and writes every format asked for. A :class:`FileJob` holds all a job
needs (no argparse namespace, no open model), so a folder of images becomes one task per file on a
dask cluster (:func:`segment_files`), each worker loading the model once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core import model_files
from ..core.axes import Planes, to_stack
from ..core.image import InputError, to_grey
from ..core.planes import PlaneDone, PlanesSummary, SegmentSettings, iter_segment_planes
from ..core.predict import run
from ..core.stitch import stitch_stack
from ..io.conventions import os_error_text
from ..io.export import ExportError, export_labels
from ..io.images import read_with_axes, tiff_series
from ..io.labels import file_scale
from .cluster import Cluster, worker_device, worker_model


class WriteError(ExportError):
    """The labels were made but a file could not be written."""


def segment_array(
    data: np.ndarray,
    axes: str,
    model: model_files.Model,
    settings: SegmentSettings,
    stitch_z: float | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> tuple[np.ndarray, str, PlanesSummary]:
    """Segment an array of any supported layout, plane by plane (the shared plane loop of core).

    The planes of a Z stack share one modality and one normalisation (see
    :func:`napari_unet_loop.core.planes.stack_settings`); time points are apart.

    Returns
    -------
    tuple
        Labels of shape (stacked axes..., Y, X), their axes (e.g. ``"YX"``, ``"ZYX"``) and the
        summary of the planes (imaging modality and object diameter each was segmented as).
    """
    source = Planes.of(data, axes)
    planes: dict[tuple[int, ...], np.ndarray] = {}

    def keep(item) -> None:
        if isinstance(item, PlaneDone):
            planes[item.index] = item.labels

    indices = source.indices
    summary = run(iter_segment_planes(model, source.read, indices, settings, source.stack_of()), keep)
    note = summary.note()
    if note:
        log(f"note: {note}")
    labels = np.stack([planes[i] for i in indices])
    out_axes = source.axes + "YX"
    labels = labels.reshape((*source.shape, *labels.shape[-2:])) if source.shape else labels[0]
    if stitch_z is not None:
        if "Z" not in out_axes:
            log("note: Z stitching joins the planes of a Z stack; this image has none")
        else:
            z = out_axes.index("Z")  # stitched as the axis before Y and X, wherever the file keeps it (ZTYX)
            labels = np.moveaxis(stitch_stack(np.moveaxis(labels, z, -3), stitch_z), -3, z)
    return labels, out_axes, summary


def intensity_image(image: np.ndarray, axes: str, channel: int | None = None) -> np.ndarray:
    """The image as a grey array of the labels' shape, for measurements and OME-Zarr."""
    stack, stack_shape = to_stack(image, axes)
    if stack.ndim == 4:  # channels last: reduced as for segmenting (channel, mean of RGB, grey of grey + alpha)
        try:
            stack = np.stack([to_grey(p, channel=channel) for p in stack])
        except InputError:  # several channels and none chosen (a multichannel model): their mean
            stack = stack.astype(np.float32).mean(-1)
    return stack.reshape((*stack_shape, *stack.shape[-2:])) if stack_shape else stack[0]


def modality_of(summary: PlanesSummary) -> str | None:
    """The imaging modality (or modalities) the planes were seen as (``None``: grey as it is)."""
    return ", ".join(sorted({k for k in summary.modalities.values() if k})) or None


def count_objects(labels: np.ndarray) -> int:
    """Number of objects (distinct non-zero ids; in a stack, per plane, summed)."""
    if labels.ndim == 2:
        return int(len(np.unique(labels)) - (1 if (labels == 0).any() else 0))
    return sum(count_objects(p) for p in labels.reshape(-1, *labels.shape[-2:]))


@dataclass(frozen=True)
class FileJob:
    """Everything needed to segment one file and write its labels: small and picklable.

    Attributes
    ----------
    path : str
        The image file.
    stem : str
        Output name (``<outdir>/<stem>.tif`` ...).
    outdir : str
        Output folder.
    formats : tuple of str
        Output formats (``"tif"``, ``"png"``, ``"csv"``, ``"zarr"``, ``"roi"``).
    model : str
        Model file path (each worker loads it once).
    settings : SegmentSettings
        How to segment (its ``device`` may be ``"auto"``: chosen where the job runs).
    axes : str or None
        Axes of the file (declared or guessed when ``None``).
    stitch_z : float or None
        IoU to join objects of consecutive Z planes into 3D objects.
    overwrite : bool
        Replace existing outputs.
    provenance : dict
        Recorded beside each output.
    """

    path: str
    stem: str
    outdir: str
    formats: tuple[str, ...]
    model: str
    settings: SegmentSettings
    axes: str | None = None
    stitch_z: float | None = None
    overwrite: bool = False
    provenance: dict = field(default_factory=dict)


@dataclass
class FileResult:
    """What one file's job did."""

    path: str
    written: list[str]
    objects: int
    modality: str | None
    diameter: float | list | None
    seconds: float
    notes: list[str] = field(default_factory=list)


def segment_file(job: FileJob, model: model_files.Model | None = None, threads: int = 0) -> FileResult:
    """Read, segment and write one file (in this process, or on a cluster worker).

    Raises
    ------
    InputError, napari_unet_loop.io.images.ReadError
        The image cannot be read or segmented as asked.
    WriteError
        A label file could not be written.
    """
    t0 = time.perf_counter()
    model = model or worker_model(job.model, threads)
    settings = job.settings
    if isinstance(settings.device, str):  # "cuda" on a cluster: one GPU per worker
        settings = replace(settings, device=worker_device(settings.device))
    notes: list[str] = []
    image, image_axes = read_with_axes(job.path, job.axes, model.card.architecture.in_channels, settings.channel)
    series = tiff_series(job.path)
    if series > 1:  # e.g. the positions of a multi-position OME-TIFF: not one image
        notes.append(f"note: {Path(job.path).name} holds {series} image series; only the first was segmented")
    labels, axes, summary = segment_array(image, image_axes, model, settings, job.stitch_z, notes.append)
    kind = modality_of(summary)
    scale, unit = file_scale(job.path, axes)  # the image's pixel size, z spacing and time step, on its labels
    written: list[str] = []
    try:
        for fmt in job.formats:
            res = export_labels(
                labels,
                job.outdir,
                fmt,
                name=job.stem,
                axes=axes,
                overwrite=job.overwrite,
                scale=scale,
                units=unit,
                image=intensity_image(image, image_axes, settings.channel) if fmt in ("csv", "zarr") else None,
                provenance={
                    **job.provenance,
                    "input": job.path,
                    "modality": kind or "none",
                    "diameter": summary.diameter(),
                },
                objects_3d=job.stitch_z is not None and "Z" in axes,
            )
            written += [str(p) for p in res.paths]
            notes += [f"note: {Path(job.path).name} ({fmt}): {n}" for n in res.notes]
    except (ExportError, OSError, ValueError) as exc:  # this file's outputs; the others go on
        raise WriteError(f"cannot write its labels: {os_error_text(exc) if isinstance(exc, OSError) else exc}") from exc
    objects_3d = job.stitch_z is not None and "Z" in axes
    n = int(np.count_nonzero(np.unique(labels))) if objects_3d else count_objects(labels)  # 3D objects: once
    return FileResult(job.path, written, n, kind, summary.diameter(), time.perf_counter() - t0, notes)


def segment_files(
    jobs: Sequence[FileJob],
    cluster: Cluster,
    model: model_files.Model | None = None,
    on_result: Callable[[FileJob, FileResult | Exception], None] = lambda _job, _result: None,
) -> None:
    """Run :func:`segment_file` for each job: one after the other here, or as cluster tasks (one per file).

    ``on_result`` receives each job with its result, or with the exception that ended it
    (:class:`~napari_unet_loop.core.image.InputError`, ``ReadError``, :class:`WriteError`,
    a :class:`~.cluster.ClusterError` when a worker could not run it, or any other: one file's
    failure never ends the others, here as on a cluster).
    """
    if cluster.client is None:
        for job in jobs:
            try:
                result: FileResult | Exception = segment_file(job, model)
            except Exception as exc:  # noqa: BLE001 - this file failed, the others go on (as on a cluster)
                result = exc
            on_result(job, result)
        return
    for job, result in cluster.run_each(segment_file, list(jobs), "file", threads=cluster.threads):
        on_result(job, result)
