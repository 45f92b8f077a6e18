"""``napari-unet-loop segment``: image files or folders to label files."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from ..core import model_files
from ..core.device import resolve_device
from ..core.image import InputError
from ..core.modality import LABELS as MODALITY_LABELS
from ..core.segment import LARGE_PIXELS, diameter_factor
from ..io.chunked import JobMismatchError, partial_path
from ..io.conventions import TargetExistsError, _json_safe, os_error_text
from ..io.export import (
    ExportError,
    check_writable,
    export_labels,
    export_target,
    output_names,
)
from ..io.images import ReadError, expand_inputs, is_zarr_dir, max_pixels, output_stem
from ..io.lazy import open_lazy
from ..io.sidecar import read_sidecar
from ..io.store_edits import read_labels
from ..parallel import Cluster, ClusterError, FileJob, segment_files
from ._common import (
    CLIError,
    _flags,
    _formats,
    _log,
    _oserror,
    _postprocess,
    _provenance,
    _settings,
)


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment image files or folders into label files (one per input and format)."""
    formats = _formats(args.format)
    skipped: list[Path] = []
    files = expand_inputs(args.inputs, None if args.include_labels else skipped)  # cheap checks first
    if skipped:
        shown = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        _log(
            f"note: skipped {len(skipped)} label file(s) found beside their images ({shown}); "
            "--include-labels segments them too"
        )
    if not files:
        raise CLIError("nothing to segment: the folder(s) hold only label files")
    # on a remote cluster the workers' devices count, not this machine's: each worker resolves it
    remote = args.cluster is not None and args.cluster != "none" and not args.cluster.startswith("local")
    device = args.device if remote else resolve_device(args.device)
    model = model_files.load(args.model)
    pp = _postprocess(args, model)
    outdir = Path(args.output)
    try:
        stems = output_names([output_stem(f) for f in files], [str(f) for f in files])
        targets = [export_target(outdir, fmt, s) for s in stems for fmt in formats]
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    _check_targets(files, targets, outdir)
    check_writable(outdir.parent if outdir in targets else outdir)  # before any segmenting
    if args.resume and not args.overwrite:  # images whose outputs are all there were finished: the rest go on
        cut = [s for s in stems if _interrupted(outdir, s, formats)]
        if cut:  # an --overwrite run cut short: its old outputs are still there, its new store partial
            partial = partial_path(_store_target(outdir, cut[0], formats))
            raise CLIError(
                f"{partial} is the unfinished store of a run that replaces {cut[0]}'s outputs "
                f"({len(cut)} image(s) in all): add --overwrite to --resume to finish it, or remove it"
            )
        have = {s: [fmt for fmt in formats if export_target(outdir, fmt, s).exists()] for s in stems}
        prov = _provenance(model, pp, args)
        # every kept output must be this command's, a finished image's too: the batch is one run's (before any work)
        for f, s in zip(files, stems):
            for fmt in have[s]:
                made = _made_by(export_target(outdir, fmt, s))
                other = None if made is None else _other_setting(made, prov, f, args)
                if other:
                    raise CLIError(
                        f"{export_target(outdir, fmt, s)} was made by a run with another "
                        f"{other.replace('_', ' ')}: --resume finishes a run of the same command; add --overwrite "
                        "to make it again"
                    )
        done = [len(have[s]) == len(formats) for s in stems]
        if any(done):
            _log(f"--resume: {sum(done)} of {len(files)} image(s) finished before, their outputs kept")
            if all(done):
                return 0
            files = [f for f, d in zip(files, done) if not d]
            stems = [s for s, d in zip(stems, done) if not d]
        partly = [s for s in stems if have[s]]
        if partly:  # a run cut between two formats of an image: the missing ones are written, the rest kept
            shown = ", ".join(f"{s} ({', '.join(fmt for fmt in formats if fmt not in have[s])})" for s in partly[:3])
            _log(
                f"--resume: {len(partly)} image(s) have some of their outputs; only the missing ones are written: "
                f"{shown}{', ...' if len(partly) > 3 else ''}"
            )
    else:
        have = {s: [] for s in stems}
    blockwise = [_blockwise(f, args, formats) for f in files]
    # each image's formats: those not written yet (a block-wise run's finished OME-Zarr is where the others come from)
    wanted = [
        [fmt for fmt in formats if fmt not in have[s] or (fmt == "zarr" and by_blocks)]
        for s, by_blocks in zip(stems, blockwise)
    ]
    if not args.overwrite:
        existing = [
            export_target(outdir, fmt, s) for s, fmts in zip(stems, wanted) for fmt in fmts if fmt not in have[s]
        ]
        existing = [p for p in existing if p.exists()]
        if existing:
            raise CLIError(f"{existing[0]} exists ({len(existing)} output(s) in all); use --overwrite to replace")
    _log(f"model {model.name} on {device}; {len(files)} image(s) -> {outdir} ({', '.join(formats)})")
    # one cluster for all the images: blocks of large images and whole small files are its tasks
    try:
        cluster = Cluster(args.cluster or "none", str(device), _log)
    except ClusterError as exc:
        raise CLIError(str(exc)) from None
    with cluster:
        return _segment_files(files, stems, blockwise, args, model, device, pp, wanted, outdir, cluster)


def _check_targets(files: list[Path], targets: list[Path], outdir: Path) -> None:
    """Refuse outputs that would replace an input image, or each other, whatever ``--overwrite`` says."""
    inputs = {f.resolve(): f for f in files}
    for t in targets:
        if t.resolve() in inputs:
            raise CLIError(
                f"the output {t} would replace the input image {inputs[t.resolve()]}: choose another output folder (-o)"
            )
    if len(set(targets)) < len(targets):  # -o names one file: one output in all, not one per image
        raise CLIError(
            f"-o {outdir} names one file, and {len(files)} image(s) x {len(targets) // max(len(files), 1)} "
            "format(s) would all be written to it: give a folder"
        )


def _segment_files(files, stems, blockwise, args, model, device, pp, wanted, outdir, cluster) -> int:
    """Segment and write each input in its formats (``wanted``, one list per input); return the exit status.

    Block-wise images go one after the other (their blocks in parallel), the others as one job
    per file (in parallel on a cluster).
    """
    failed = 0
    prov = _provenance(model, pp, args)
    for f, stem, by_blocks, formats in zip(files, stems, blockwise, wanted):
        if not by_blocks:
            continue
        t0 = time.perf_counter()
        try:
            written, n, kind = _segment_blockwise(f, stem, args, model, device, pp, formats, outdir, prov, cluster)
        except (InputError, ReadError, ExportError, ClusterError, FileExistsError) as exc:
            hint = ""  # the settings the messages name, as this front end spells them
            if isinstance(exc, TargetExistsError):
                hint = " Use --overwrite to replace it."
            elif isinstance(exc, JobMismatchError) and "resume it" in str(exc):
                hint = " (--resume)"
            _log(f"error: {f}: {_flags(str(exc))}{hint}")
            failed += 1
            continue
        except OSError as exc:  # a full disk, a lost file system: the partial store stays for --resume
            _log(
                f"error: {f}: {_oserror(exc)}; what was written is kept: run the same command with --resume added "
                "to finish"
            )
            failed += 1
            continue
        _log(f"{f.name}: {n} objects{_seen_as(kind, None, model)}, {time.perf_counter() - t0:.1f} s -> {written}")
    # on a cluster each worker chooses its device (one GPU each): the setting travels as text
    settings = _settings(args, str(device).split(":")[0] if cluster.client is not None else device, pp)
    jobs = [
        FileJob(
            str(f),
            stem,
            str(outdir),
            tuple(formats),
            str(model.path),
            settings,
            args.axes,
            args.stitch_z,
            args.overwrite,
            prov,
        )  # fmt: skip
        for f, stem, by_blocks, formats in zip(files, stems, blockwise, wanted)
        if not by_blocks
    ]

    def report(job: FileJob, result) -> None:
        nonlocal failed
        name = Path(job.path).name
        if isinstance(result, Exception):
            failed += 1
            _log(f"error: {job.path}: {_flags(str(result))}")
            return
        for note in result.notes:
            _log(_flags(note))
        left = partial_path(_store_target(outdir, job.stem, list(job.formats)))
        if _exists(left):  # an earlier block-wise run of this image, cut short: its outputs are written now
            shutil.rmtree(left, ignore_errors=True)
            _log(f"{name}: removed {left.name}, the unfinished store of an earlier run (its outputs are written now)")
        _log(
            f"{name}: {result.objects} objects{_seen_as(result.modality, result.diameter, model)}, "
            f"{result.seconds:.1f} s -> {', '.join(result.written)}"
        )

    if jobs and cluster.client is not None:
        _log(f"{len(jobs)} image(s) as one task each on the cluster")
    segment_files(jobs, cluster, model, report)
    if failed:
        _log(f"error: {failed} of {len(files)} image(s) could not be segmented or written; the others were")
        return 1
    return 0


def _blockwise(f: Path, args: argparse.Namespace, formats: list[str]) -> bool:
    """Whether an input goes block by block (a Z stack: a plane at a time) into an OME-Zarr.

    OME-Zarr inputs do; so do TIFF planes, and TIFF Z stacks, of more than 6144 x 6144 pixels in
    all, with ``--cluster`` or ``--resume``, or when the only output is OME-Zarr. Other images are
    one job each, read whole (one task per file on a cluster).
    """
    if is_zarr_dir(f):
        return True
    if f.suffix.lower() not in (".tif", ".tiff"):
        return False
    if args.diameter == "auto" or args.axes:
        return False  # auto diameters and explicit axes: the per-file path
    try:
        source = open_lazy(f, stack=True)  # 2D planes (with channels) and Z stacks; time series go in memory
    except ReadError:
        return False
    if args.stitch_z is not None and source.depth == 1:
        return False  # the per-file path notes that a 2D image has no planes to join
    h, w = source.plane_shape
    return source.depth * h * w > LARGE_PIXELS and (args.cluster is not None or args.resume or formats == ["zarr"])


def _segment_blockwise(
    f: Path,
    stem: str,
    args: argparse.Namespace,
    model,
    device,
    pp,
    formats: list[str],
    outdir: Path,
    prov: dict,
    cluster: Cluster,
) -> tuple[str, int, str]:
    """Segment one image block by block into ``<stem>.zarr`` (then the other formats from it).

    Returns
    -------
    tuple
        What was written (for the log), the number of objects and the modality the image was seen as.
    """
    if args.diameter == "auto":
        raise InputError("block-wise runs take the object diameter in pixels (--diameter PX), not auto")
    if args.axes:
        raise InputError("block-wise runs read the axes the OME-Zarr declares; --axes is for other files")
    source = open_lazy(f, stack=True)
    stack = source.depth > 1
    if args.stitch_z is not None and not stack:
        raise InputError("--stitch-z joins the planes of a Z stack; this image is one 2D plane")
    others = [fmt for fmt in formats if fmt != "zarr"]
    target = _store_target(outdir, stem, formats)  # without zarr, a hidden store beside the files it becomes
    if target.resolve() == f.resolve():
        raise InputError(f"the output {target} would replace the input image: choose another output folder")
    h, w = source.plane_shape
    if others and source.depth * h * w > max_pixels():  # refused before any work, not after it
        raise InputError(
            f"the labels ({' x '.join(str(n) for n in ((source.depth,) if stack else ()) + (h, w))}) are too large "
            f"to write as {', '.join(others)} in memory: write --format zarr only (and convert parts of it later)"
        )
    if args.resume and not args.overwrite and "zarr" in formats and target.exists():
        result = _finished_store(target, f, prov, args)  # a run cut after its store: the other formats from it
    else:
        result = _run_blocks(source, stack, f, stem, args, model, device, pp, formats, target, prov, cluster)
    written = [str(result.path)] if "zarr" in formats else []
    if others:  # the other formats need the labels in memory: read them back from the store
        try:
            labels = read_labels(result.path)
            for fmt in others:
                res = export_labels(
                    labels, outdir, fmt, name=stem, axes="ZYX" if stack else "YX", overwrite=args.overwrite,
                    scale=[source.z_scale or 1.0, *source.scale] if stack and source.scale else source.scale,
                    units=source.unit, provenance={**prov, "input": str(f), "modality": result.modality},
                    objects_3d=stack and args.stitch_z is not None,
                    translate=None if source.offset is None else source.offset[-(3 if stack else 2) :],
                )  # fmt: skip
                written += [str(p) for p in res.paths]
        except OSError as exc:  # the labels are made: not a run to resume (the caller's advice for OSError)
            raise ExportError(f"cannot write its labels: {os_error_text(exc)}") from exc
        finally:  # the hidden store goes, written from or not (a failed export left it in the output folder)
            if "zarr" not in formats:
                shutil.rmtree(result.path, ignore_errors=True)
    return ", ".join(written), result.objects, result.modality


def _run_blocks(source, stack, f, stem, args, model, device, pp, formats, target, prov, cluster):
    """Segment ``source`` block by block (a Z stack: a plane at a time) into the store ``target``."""
    from ..parallel import segment_to_zarr

    common = dict(
        cluster=cluster, resume=args.resume, overwrite=args.overwrite or "zarr" not in formats, name=stem,
        log=lambda msg: _log(f"{f.name}: {msg}"), provenance={**prov, "input": str(f)},
    )  # fmt: skip
    if stack:  # a Z stack: a plane at a time, planes joined with two in memory
        from ..parallel import segment_volume_to_zarr

        result = segment_volume_to_zarr(
            source, model, target, _settings(args, str(device), pp), stitch_z=args.stitch_z,
            block=args.block or 2048, **common,
        )  # fmt: skip
    else:
        result = segment_to_zarr(
            source, model, target, block=args.block or 2048, postprocess=pp, diameter=args.diameter,
            modality=args.modality, channel=args.channel, device=str(device), tile=args.tile,
            precision=args.precision, tta=args.tta, **common,
        )  # fmt: skip
    if not result.complete:
        raise InputError(f"the run stopped before its end; run the same command with --resume to finish {target}")
    return result


def _finished_store(target: Path, f: Path, prov: dict, args: argparse.Namespace):
    """The finished store of an earlier run of this command (``--resume``): its other formats come from it.

    Raises
    ------
    InputError
        The store does not record how it was made (one that does was compared with this command's
        settings before any work).
    """
    import zarr

    from ..parallel.blockwise import BlockwiseResult

    meta = dict(zarr.open_group(str(target), mode="r").attrs.get("napari_unet_loop") or {})
    made = dict(meta.get("provenance") or {})
    if not made:  # the command compared every kept output that says how it was made (cmd_segment)
        raise InputError(
            f"{target} does not record how it was made: --resume finishes a run of the same command, whose "
            "other formats come from this store; add --overwrite to make it again"
        )
    _log(f"{f.name}: --resume: {target.name} was finished before; the other formats are written from it")
    modality = made.get("modality")
    objects = meta.get("objects")
    if objects is None:  # a store written whole (in memory): its objects counted
        ids = np.unique(read_labels(target))
        objects = int((ids != 0).sum())
    return BlockwiseResult(target, int(objects), 0, 0.0, modality=modality)


def _made_by(output: Path) -> dict | None:
    """The provenance an output was written with: an OME-Zarr's own, else its sidecar's (``None``: not known).

    A store records how it was made itself (a block-wise run writes that, and may leave an older
    sidecar beside it); a file changed since its sidecar was written (corrected by hand) still
    answers with that record: it was made so.
    """
    if is_zarr_dir(output):
        import zarr

        try:
            meta = zarr.open_group(str(output), mode="r").attrs.get("napari_unet_loop") or {}
        except Exception:  # noqa: BLE001 - a store we cannot read: its sidecar, if any, speaks for it
            meta = {}
        if isinstance(meta.get("provenance"), dict):
            return meta["provenance"]
    side = read_sidecar(output)
    return side["provenance"] if side is not None and isinstance(side.get("provenance"), dict) else None


def _other_setting(made: dict, prov: dict, f: Path, args: argparse.Namespace) -> str | None:
    """The first setting in which an output's provenance ``made`` differs from this command's (``None``: none)."""
    asked = _json_safe({k: v for k, v in prov.items() if k != "command"})
    if "input" in made and Path(made["input"]).resolve() != f.resolve():
        return "input"
    other = [k for k, v in asked.items() if made.get(k) != v]
    if made.get("stitch_z", args.stitch_z) != args.stitch_z:
        other.append("stitch_z")
    return other[0] if other else None


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; ``False`` for a name the file system cannot hold (too long: none can be there)."""
    try:
        return path.exists()
    except OSError:
        return False


def _store_target(outdir: Path, stem: str, formats: list[str]) -> Path:
    """The store a block-wise run of ``stem`` writes: its ``.zarr`` output, else the hidden one beside the files."""
    if "zarr" in formats:
        return export_target(outdir, "zarr", stem)
    others = [fmt for fmt in formats if fmt != "zarr"]
    return export_target(outdir, others[0], stem).parent / f".{stem}.blocks.zarr"


def _interrupted(outdir: Path, stem: str, formats: list[str]) -> bool:
    """Whether ``stem``'s outputs are all there and a block-wise run replacing them was cut short."""
    finished = all(export_target(outdir, fmt, stem).exists() for fmt in formats)
    return finished and _exists(partial_path(_store_target(outdir, stem, formats)))


def _seen_as(kind: str | None, diameter, model) -> str:
    """`` (as fluorescence, objects 40 px)``: how the image was read, and the object size when not the network's.

    A size the network learnt unscaled (the kind's ``native_diameters``) reads ``objects 30 px, as they
    are``: the image was not rescaled.
    """
    parts = [f"as {_shown(kind)}"] if kind and kind != "none" else []  # "none": read grey as it is
    if kind in model.card.weights_by_kind:
        parts.append("the model's own weights for them")
    if isinstance(diameter, float) and model.card.diameter and abs(diameter / model.card.diameter - 1) > 0.05:
        unscaled = diameter_factor(model, diameter, kind)[1] == 1.0
        parts.append(f"objects {diameter:.0f} px" + (", as they are" if unscaled else ""))
    elif isinstance(diameter, list):
        parts.append("objects " + ", ".join("-" if d is None else f"{d:.0f}" for d in diameter[:5]) + " px")
    return f" ({', '.join(parts)})" if parts else ""


def _shown(kinds: str) -> str:
    """Modality codes (``"he"``) as people read them (``"H&E / stained tissue"``)."""
    return ", ".join(MODALITY_LABELS.get(k, k) for k in kinds.split(", "))
