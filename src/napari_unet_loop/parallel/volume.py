"""Segment a Z stack larger than memory into an OME-Zarr, a plane at a time, and join its planes into 3D objects.

Phase 1 (one task per plane, on this process or a dask cluster) reads plane ``z`` lazily, segments
it with the plane loop every front end shares (:func:`napari_unet_loop.parallel.files.segment_array`,
so a plane gets the labels it gets in memory) and keeps its own labels in the store's scratch array.
Phase 2 runs here, plane after plane, with two planes in memory: each plane gets its ids over the
whole stack, either after the planes before it (ids unique over the stack) or, with ``stitch_z``,
by :func:`napari_unet_loop.core.stitch.stitch_next` (the step :func:`~napari_unet_loop.core.stitch.stitch_planes`
repeats in memory, so the 3D objects are the same). Both phases leave markers after their data
(:mod:`napari_unet_loop.io.chunked`), so ``resume`` finishes an interrupted run and a plane
half-written is never taken for done. Memory follows one plane, not the stack.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core import model_files
from ..core.channels import check_channel_choice
from ..core.image import InputError
from ..core.planes import SegmentSettings, stack_settings
from ..core.stitch import stitch_next
from ..io.chunked import LabelsStore
from ..io.lazy import LazySource, PlaneView, source_record
from ..io.sidecar import file_sha256
from .blockwise import MAX_UINT32, BlockwiseResult, _opened, start_run
from .cluster import keep_model, worker_device, worker_model
from .files import modality_of, segment_array


@dataclass(frozen=True)
class VolumeSpec:
    """What every plane task needs: small and picklable.

    Attributes
    ----------
    source : LazySource
        The stack.
    model : str
        Path of the model file (every worker loads it once).
    settings : SegmentSettings
        How to segment a plane (its device may be ``"auto"`` or ``"cuda"``: chosen on each worker).
    target : str
        The final ``.zarr`` folder (its ``.partial`` sibling is written).
    threads : int
        Torch threads per worker (0: torch's default).
    """

    source: LazySource
    model: str
    settings: SegmentSettings
    target: str
    threads: int = 0


def _plane(source: LazySource, z: int) -> PlaneView:
    """Plane ``z`` of the stack, lazily, from the stack opened once per process (a TIFF is parsed once)."""
    return _opened(source.plane(z))


def run_plane(spec: VolumeSpec, z: int, model: model_files.Model | None = None) -> int:
    """Phase 1: segment plane ``z`` and keep its own labels in the store; return its object count."""
    model = model or worker_model(spec.model, spec.threads)
    settings = spec.settings
    if isinstance(settings.device, str):
        settings = replace(settings, device=worker_device(settings.device))
    data = np.asarray(_plane(spec.source, z))
    labels, _, summary = segment_array(data, "YXC" if data.ndim == 3 else "YX", model, settings)
    labels = labels.astype(np.uint32, copy=False)
    n = int(labels.max()) if labels.size else 0
    record = {"n": n, "modality": modality_of(summary)}
    LabelsStore.attach(spec.target).write_plane(z, labels, final=False, record=record)
    return n


def segment_volume_to_zarr(
    source: LazySource,
    model: model_files.Model,
    target: str | os.PathLike,
    settings: SegmentSettings,
    *,
    stitch_z: float | None = None,
    block: int = 2048,
    cluster=None,
    resume: bool = False,
    overwrite: bool = False,
    name: str = "labels",
    provenance: dict | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    stop_after: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BlockwiseResult:
    """Segment a Z stack into ``target`` (an OME-Zarr of ``(Z, Y, X)`` labels), a plane at a time.

    Parameters
    ----------
    source : LazySource
        The stack (:func:`napari_unet_loop.io.lazy.open_lazy` with ``stack=True``).
    model : Model
        The model; it must have a file (workers load it from there).
    target : path-like
        The ``.zarr`` folder to write.
    settings : SegmentSettings
        How each plane is segmented (as :func:`napari_unet_loop.parallel.files.segment_array` does).
    stitch_z : float, optional
        IoU to join objects of consecutive planes into 3D objects (as ``--stitch-z``); without it,
        ids are unique over the stack, one per 2D object (plane after plane; the in-memory path
        numbers each plane from 1 instead).
    block : int
        Chunk side of the labels (Y and X; one plane deep).
    cluster : str, Cluster or distributed.Client
        Where the planes are segmented (see :func:`.blockwise.segment_to_zarr`).
    resume, overwrite : bool
        Continue an interrupted run of the same job; replace an existing complete ``target``.
    name : str
        Name of the labels group.
    provenance : dict, optional
        Recorded in the store.
    log : callable
        Receives progress lines.
    stop_after : int, optional
        Stop after this many tasks (planes of phase 1, then planes of phase 2), leaving the
        partial store as an interrupted run would (for tests of ``resume``).
    should_stop : callable, optional
        Asked between tasks: True stops the run there (a partial store ``resume`` continues).

    Returns
    -------
    BlockwiseResult
        The store, the number of objects (3D objects with ``stitch_z``) and ``blocks`` = planes.

    Raises
    ------
    InputError
        Bad settings for this stack, or more objects than 32-bit labels hold.
    ClusterError
        The cluster cannot be used, or a plane failed on every try.
    FileExistsError, napari_unet_loop.io.chunked.JobMismatchError
        The target exists, or a partial run of another job is in the way.
    """
    if model.path is None:
        raise InputError("segmenting a stack on workers needs a model saved to a file")
    if stitch_z is not None and not 0 < stitch_z <= 1:
        raise InputError(f"the stitching threshold is an overlap (IoU) between 0 and 1, got {stitch_z}")
    if settings.diameter == "auto":
        raise InputError("stacks segmented a plane at a time take the object diameter in pixels, not auto")
    t_start = time.perf_counter()
    check_channel_choice(
        source.axes.replace("Z", ""), tuple(n for a, n in zip(source.axes, source.shape) if a != "Z"),
        model.card.architecture.in_channels, settings.channel,
    )  # fmt: skip
    depth = source.depth
    h, w = source.plane_shape
    settings = stack_settings(  # one modality and one normalisation for the stack, as in memory
        model, lambda i: _plane(source, i[0]), [(z,) for z in range(depth)], settings
    )
    pp = model.card.thresholds(settings.modality, settings.postprocess)
    record = {
        "input": source_record(source),
        "model": str(Path(model.path).resolve()),
        "model_sha256": file_sha256(Path(model.path)),
        "settings": {
            "device": str(settings.device).split(":")[0], "tile": settings.tile, "precision": settings.precision,
            "tta": settings.tta, "block": settings.block, "postprocess": pp.to_dict(),
            "channel": settings.channel, "modality": settings.modality, "diameter": settings.diameter,
            "limits": None if settings.limits is None else [list(lim) for lim in settings.limits],
        },
        "stitch_z": stitch_z,
    }  # fmt: skip
    executor, own, store = start_run(
        cluster, str(settings.device), log,
        lambda: LabelsStore.create(
            target, job=record, shape=(depth, h, w), block=block, region=0, n_blocks=0, name=name,
            scale=source.scale, unit=source.unit, overwrite=overwrite, resume=resume, z_scale=source.z_scale,
            offset=source.offset,
        ),
    )  # fmt: skip
    spec = VolumeSpec(source, str(Path(model.path).resolve()), settings, str(Path(target)), executor.threads)
    if executor.client is None:
        keep_model(spec.model, model)
    timings: dict[str, float] = {}
    try:
        done = store.done("planes")
        todo = [z for z in range(depth) if z not in done]
        resumed = depth - len(todo)
        if resumed:
            log(f"resuming: {resumed} of {depth} plane(s) already segmented")
        if stop_after is not None:
            todo = todo[:stop_after]
        t0 = time.perf_counter()
        executor.map(run_plane, todo, "plane", spec, log=log, should_stop=should_stop)
        timings["planes"] = time.perf_counter() - t0
    finally:
        if own:
            executor.close()
    done = store.done("planes")
    if len(done) < depth:
        return BlockwiseResult(store.partial, 0, depth, time.perf_counter() - t_start, resumed, complete=False)
    kinds = [done[z].get("modality") for z in range(depth) if done[z].get("modality")]
    modality = max(sorted(set(kinds)), key=kinds.count) if kinds else "none"  # most planes' (ties: by name)
    if sum(done[z]["n"] for z in range(depth)) > MAX_UINT32:
        raise InputError("the stack has more objects than 32-bit labels hold")
    # phase 2, here: each plane's ids over the stack, after the plane before it
    t0 = time.perf_counter()
    final = store.done("final")
    next_id, previous, steps = 1, None, 0
    for z in range(depth):
        if z in final:
            next_id = int(final[z]["next"])
            previous = None  # read from the store when the next plane needs it
            continue
        if (stop_after is not None and steps >= max(stop_after - len(todo), 0)) or (should_stop and should_stop()):
            return BlockwiseResult(store.partial, 0, depth, time.perf_counter() - t_start, resumed, complete=False)
        own_ids = store.read_plane(z, final=False)
        if stitch_z is None:
            out = np.where(own_ids > 0, own_ids.astype(np.int64) + (next_id - 1), 0)
            next_id += int(own_ids.max()) if own_ids.size else 0
        else:
            if previous is None and z > 0:
                previous = store.read_plane(z - 1, final=True)
            out, next_id = stitch_next(previous, own_ids, next_id, stitch_z)
        out = out.astype(np.uint32)
        store.write_plane(z, out, final=True, record={"next": next_id})
        previous = out
        steps += 1
    timings["stitch"] = time.perf_counter() - t0
    n_objects = next_id - 1
    path = store.finish(
        {
            "provenance": {**(provenance or {}), "input": source.path, "stitch_z": stitch_z, "modality": modality},
            "max_label": n_objects,
            "objects": n_objects,
        }
    )
    what = "3D object(s)" if stitch_z is not None else "object id(s)"
    log(f"{n_objects} {what} over {depth} plane(s)")
    return BlockwiseResult(
        path, n_objects, depth, time.perf_counter() - t_start, resumed, timings=timings, modality=modality
    )
