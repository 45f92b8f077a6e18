"""Segment images larger than memory into an OME-Zarr, block by block, in this process or on a dask cluster.

The work is the same wherever it runs: :func:`napari_unet_loop.core.blocks.segment_block` per block,
then :func:`~napari_unet_loop.core.blocks.merge_core` per output chunk, with ids offset by the
blocks' counts, so the labels are byte-identical for ``cluster="none"`` (this process), a
``LocalCluster`` or a remote scheduler, and do not depend on the order the tasks ran in.

Phase 1 (one task per block) writes each block's labels to the store's scratch area and a marker;
phase 2 (one task per core) merges the blocks that reach the core and writes the core's chunk of
every resolution level. Tasks are idempotent, so dask may retry them on another worker when one
dies, and ``resume=True`` picks up an interrupted run where its markers say it stopped (see
:mod:`napari_unet_loop.io.chunked`). Memory per task follows the block size, not the image's.

Workers need this package, torch and the model file at the same path (a shared file system).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import model_files
from ..core.blocks import BlockJob, id_offsets, merge_core, plan_blocks, segment_block
from ..core.channels import check_channel_choice
from ..core.image import InputError
from ..core.postprocess import PostprocessConfig
from ..core.scale import postprocess_at
from ..io.chunked import LabelsStore
from ..io.lazy import LazySource, PlaneView, source_record
from ..io.sidecar import file_sha256
from .cluster import Cluster, keep_model, worker_device, worker_model

MAX_UINT32 = 2**32 - 1


@dataclass(frozen=True)
class BlockwiseSpec:
    """What every task needs: small and picklable, sent to each worker.

    Attributes
    ----------
    source : LazySource
        The image.
    model : str
        Path of the model file (every worker loads it once).
    job : BlockJob
        The plan shared by all blocks.
    target : str
        The final ``.zarr`` folder (its ``.partial`` sibling is written).
    threads : int
        Torch threads per worker (0: torch's default).
    """

    source: LazySource
    model: str
    job: BlockJob
    target: str
    threads: int = 0


@dataclass
class BlockwiseResult:
    """What a run did."""

    path: Path
    objects: int
    blocks: int
    seconds: float
    resumed_blocks: int = 0
    resumed_cores: int = 0
    factor: float = 1.0
    modality: str | None = "none"
    timings: dict[str, float] = field(default_factory=dict)
    complete: bool = True


def _worker_device(spec: BlockwiseSpec) -> BlockJob:
    """The plan with this worker's device (see :func:`.cluster.worker_device`)."""
    device = str(spec.job.predict.get("device", "cpu"))
    if device not in ("auto", "cuda"):
        return spec.job
    import dataclasses

    return dataclasses.replace(spec.job, predict={**spec.job.predict, "device": str(worker_device(device))})


_OPEN: dict[tuple, object] = {}


def _opened(source: LazySource):
    """The image opened once per process (a TIFF store holds a file handle), kept for the next blocks.

    Keyed by path, array and modification time, so a file written again is opened again; the view
    reads the plane ``source`` names (``source.at``), whichever plane of the file was opened first.
    """
    key = (source.path, source.array, os.stat(source.path).st_mtime_ns)
    view = _OPEN.get(key)
    if view is None:
        for old in [k for k in _OPEN if k[:2] == key[:2]]:
            del _OPEN[old]
        view = _OPEN[key] = source.open()
    return PlaneView(view.array, view.axes, dict(source.at))


def run_block(spec: BlockwiseSpec, i: int, model: model_files.Model | None = None) -> int:
    """Phase 1: segment block ``i``, keep its labels in the store; return its object count."""
    model = model or worker_model(spec.model, spec.threads)
    local = segment_block(model, _opened(spec.source), _worker_device(spec), i)
    return LabelsStore.attach(spec.target).write_block(i, local)


def run_core(spec: BlockwiseSpec, i: int, offsets: Mapping[int, int] | Sequence[int]) -> int:
    """Phase 2: merge the blocks that reach core ``i`` and write its chunk of every level; return its largest id."""
    store = LabelsStore.attach(spec.target)
    grid = spec.job.grid
    results = {}
    for j in grid.sources(i):
        ry0, rx0, ry1, rx1 = grid.region(j)
        results[j] = store.block_view(j, (ry1 - ry0, rx1 - rx0))  # only the part over this core is read
    labels = merge_core(grid, i, results, offsets, np.dtype(store.job["dtype"]))
    y0, x0, _, _ = grid.core(i)
    store.write_core((y0, x0), labels, i)
    return int(labels.max()) if labels.size else 0


# ------------------------------------------------------------------------------------------ driver


def start_run(cluster, device: str, log: Callable[[str], None], create: Callable[[], LabelsStore]):
    """The run's executor (a new :class:`Cluster` unless one is given) and its store, made by ``create``.

    Returns ``(executor, own, store)``; ``own`` says the caller closes the executor. When the
    store cannot be made, an executor made here is closed before the error goes on.
    """
    own = not isinstance(cluster, Cluster)
    executor = Cluster(cluster or "none", device, log) if own else cluster
    try:
        store = create()
    except BaseException:
        if own:
            executor.close()
        raise
    return executor, own, store


def _device_kind(device) -> str:
    """``cpu``, ``cuda``, ``mps`` or ``auto``: what may change the labels (autocast), not which GPU."""
    return str(device).split(":")[0]


def _input_chunks(image) -> tuple[int, int] | None:
    """The (Y, X) chunk shape of a lazily read image, when it has one."""
    array, axes = getattr(image, "array", None), getattr(image, "axes", "")
    chunks = getattr(array, "chunks", None)
    if not chunks or "Y" not in axes or "X" not in axes:
        return None
    return int(chunks[axes.index("Y")]), int(chunks[axes.index("X")])


def segment_to_zarr(
    source: LazySource,
    model: model_files.Model,
    target: str | os.PathLike,
    *,
    block: int = 2048,
    margin: int = 128,
    cluster: Any = "none",
    resume: bool = False,
    overwrite: bool = False,
    postprocess: PostprocessConfig | Mapping[str, Any] | None = None,
    diameter: float | None = None,
    modality: str | None = None,
    channel: int | None = None,
    device: str = "cpu",
    tile: int | None = None,
    precision: str = "auto",
    batch_size: int | None = None,
    tta: bool | str = "auto",
    name: str = "labels",
    provenance: dict | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    stop_after: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BlockwiseResult:
    """Segment a (large) 2D image into ``target`` (an OME-Zarr), block by block.

    Parameters
    ----------
    source : LazySource
        The image (see :func:`napari_unet_loop.io.lazy.open_lazy`).
    model : Model
        The model; it must have a file (workers load it from there).
    target : path-like
        The ``.zarr`` folder to write.
    block, margin : int
        Core side (and output chunk) and context for the objects, in pixels.
    cluster : str, Cluster or distributed.Client
        ``"none"`` (this process), ``"local"``, ``"local:N"`` (a LocalCluster of N worker
        processes), a scheduler address (``tcp://host:8786``), or a :class:`Cluster` or client
        the caller runs (left open, e.g. for many images).
    resume : bool
        Continue an interrupted run's partial store (same input, model and settings).
    overwrite : bool
        Replace an existing complete ``target``.
    postprocess : PostprocessConfig or mapping, optional
        Thresholds for objects of the network's size: the card's for the image's imaging kind
        when omitted, with a mapping's settings replaced (see
        :meth:`napari_unet_loop.core.model_card.ModelCard.thresholds`).
    diameter : float, optional
        Object diameter in the image, in pixels (see :mod:`napari_unet_loop.core.scale`).
    modality : str, optional
        Imaging modality (``"auto"`` is resolved once on the whole image).
    channel : int, optional
        Channel to segment in a multichannel image.
    device : str
        ``"cpu"``, ``"cuda"`` (one GPU per worker), ``"auto"`` (chosen on each worker) ...
    tile, precision, batch_size, tta
        Prediction settings.
    name : str
        Name of the labels group.
    provenance : dict, optional
        Recorded in the store.
    log : callable
        Receives progress lines.
    stop_after : int, optional
        Stop after this many tasks (blocks, then chunks), leaving the partial store as an
        interrupted run would (for tests of ``resume``).
    should_stop : callable, optional
        Asked between tasks: when it returns True the run stops there, leaving a partial
        store that ``resume`` continues (a Cancel button).

    Returns
    -------
    BlockwiseResult
        The store and counts.

    Raises
    ------
    InputError
        Bad settings for this image.
    ClusterError
        The cluster cannot be used, or a task failed on every try.
    FileExistsError, napari_unet_loop.io.chunked.JobMismatchError
        The target exists, or a partial run of another job is in the way.
    """
    from ..core.modality import input_modality
    from ..core.predict import auto_tta
    from ..core.segment import diameter_factor

    if model.path is None:
        raise InputError("block-wise segmentation on workers needs a model saved to a file")
    t_start = time.perf_counter()
    image = source.open()
    check_channel_choice(source.axes, source.shape, model.card.architecture.in_channels, channel)  # as per file
    kind = input_modality(model, image, modality, None, channel) or "none"  # its thresholds, and once for all
    d, factor = diameter_factor(model, diameter, kind)  # the sizes its network learnt unscaled too
    h, w = source.plane_shape
    tta = auto_tta(tta, h * w * factor**2)  # for the whole image, as in memory
    pp = postprocess_at(model.card.thresholds(kind, postprocess), factor)
    job = plan_blocks(
        model, image, block, margin, pp, None, channel, kind, factor,
        device=str(device), tile=tile, precision=precision, batch_size=batch_size, tta=tta,
    )  # fmt: skip
    grid = job.grid
    if job.blank:
        log("note: the image is blank (one value everywhere): no objects")
    region = grid.block + 2 * grid.margin
    chunks = _input_chunks(image)
    if chunks and any(grid.block % c for c in chunks):
        log(
            f"note: the image is stored in chunks of {chunks[0]} x {chunks[1]} px, which do not divide the block "
            f"({grid.block} px): blocks read parts of chunks (slower, same labels); a block size that is a "
            "multiple of the chunks reads each chunk once"
        )
    record = {
        "input": source_record(source),
        "model": str(Path(model.path).resolve()),
        "model_sha256": file_sha256(Path(model.path)),  # a model written again at its path is another
        "predict": {"device": _device_kind(device), "precision": precision, "tta": bool(tta)},
        "plan": {
            "block": grid.block,
            "margin": grid.margin,
            "factor": job.factor,
            "modality": job.modality,
            "limits": job.limits,
            "postprocess": job.postprocess.to_dict(),
            "channel": channel,
        },
    }
    executor, own, store = start_run(
        cluster, str(device), log,
        lambda: LabelsStore.create(
            target, job=record, shape=grid.shape, block=grid.block, region=region, n_blocks=len(grid), name=name,
            scale=source.scale, unit=source.unit, overwrite=overwrite, resume=resume,
            offset=None if source.offset is None else source.offset[-2:],
        ),
    )  # fmt: skip
    spec = BlockwiseSpec(source, str(Path(model.path).resolve()), job, str(Path(target)), executor.threads)
    if executor.client is None:
        keep_model(spec.model, model)
    timings = {"plan": time.perf_counter() - t_start}
    try:
        done = store.done("blocks")
        todo = [i for i in range(len(grid)) if i not in done]
        resumed_blocks = len(grid) - len(todo)
        if resumed_blocks:
            log(f"resuming: {resumed_blocks} of {len(grid)} block(s) already done")
        if stop_after is not None:
            todo = todo[:stop_after]
        t0 = time.perf_counter()
        executor.map(run_block, todo, "block", spec, log=log, should_stop=should_stop)
        timings["blocks"] = time.perf_counter() - t0
        done = store.done("blocks")
        if len(done) < len(grid):
            return BlockwiseResult(
                store.partial, 0, len(grid), time.perf_counter() - t_start, resumed_blocks, complete=False
            )
        counts = [done[i]["n"] for i in range(len(grid))]
        if sum(counts) > MAX_UINT32:
            raise InputError(f"{sum(counts)} objects do not fit 32-bit labels; use larger blocks or a coarser image")
        offsets = [int(o) for o in id_offsets(counts)]
        cores_done = store.done("cores")
        todo_cores = [i for i in range(len(grid)) if i not in cores_done]
        if stop_after is not None:
            todo_cores = todo_cores[: max(stop_after - len(todo), 0)]
        t0 = time.perf_counter()
        sources = grid.sources  # each chunk task carries only the offsets of the blocks that reach it
        executor.map(
            run_core,
            todo_cores,
            "chunk",
            spec,
            log=log,
            extra=lambda i: ({j: offsets[j] for j in sources(i)},),
            should_stop=should_stop,
        )
        timings["stitch"] = time.perf_counter() - t0
        if len(store.done("cores")) < len(grid):
            return BlockwiseResult(
                store.partial, 0, len(grid), time.perf_counter() - t_start, resumed_blocks, complete=False
            )
    finally:
        if own:
            executor.close()
    maxima = [m["max"] for m in store.done("cores").values()]
    path = store.finish(
        {
            "provenance": {
                **(provenance or {}),
                "input": source.path,
                "modality": job.modality,
                "diameter": d,
                "block": grid.block,
                "margin": grid.margin,
            },
            "max_label": max(maxima, default=0),  # new objects drawn in corrections get ids above it
            "objects": sum(counts),
        }
    )
    n_objects = sum(counts)
    log(f"{n_objects} object id(s) over {len(grid)} block(s); largest id {max(maxima, default=0)}")
    return BlockwiseResult(
        path,
        n_objects,
        len(grid),
        time.perf_counter() - t_start,
        resumed_blocks,
        len(cores_done),
        job.factor,
        None if job.blank else job.modality,  # a blank image was seen as nothing (its detection guessed)
        timings,
    )
