"""``napari-unet-loop segment``: image files or folders to label files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..core import model_files
from ..core.device import resolve_device
from ..core.image import InputError
from ..core.modality import LABELS as MODALITY_LABELS
from ..io.export import (
    ExportError,
    check_writable,
    export_labels,
    export_target,
    output_names,
)
from ..io.images import ReadError, expand_inputs
from ._common import (
    CLIError,
    _formats,
    _intensity_image,
    _kind,
    _log,
    _oserror,
    _postprocess,
    _provenance,
    _read,
    _segment_array,
    count_objects,
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
    device = resolve_device(args.device)
    model = model_files.load(args.model)
    pp = _postprocess(args, model)
    outdir = Path(args.output)
    check_writable(outdir)  # before any segmenting
    try:
        stems = output_names([f.stem for f in files], [str(f) for f in files])
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    if not args.overwrite:
        existing = [export_target(outdir, f, s) for s in stems for f in formats]
        existing = [p for p in existing if p.exists()]
        if existing:
            raise CLIError(f"{existing[0]} exists ({len(existing)} output(s) in all); use --overwrite to replace")
    _log(f"model {model.name} on {device}; {len(files)} image(s) -> {outdir} ({', '.join(formats)})")
    failed = 0
    prov = _provenance(model, pp, args)
    for f, stem in zip(files, stems):
        t0 = time.perf_counter()
        try:
            image, image_axes = _read(f, args, model.card.architecture.in_channels)
            labels, axes, summary = _segment_array(image, image_axes, model, args, device, pp)
            kind = _kind(summary)
        except (InputError, ReadError) as exc:
            _log(f"error: {f}: {exc}")
            failed += 1
            continue
        written = []
        try:
            for fmt in formats:
                res = export_labels(
                    labels,
                    outdir,
                    fmt,
                    name=stem,
                    axes=axes,
                    overwrite=args.overwrite,
                    image=_intensity_image(image, image_axes, args) if fmt in ("csv", "zarr") else None,
                    provenance={**prov, "input": str(f), "modality": kind or "none", "diameter": summary.diameter()},
                    objects_3d=args.stitch_z is not None and "Z" in axes,
                )
                written += [str(p) for p in res.paths]
                for note in res.notes:
                    _log(f"note: {f.name} ({fmt}): {note}")
        except (ExportError, OSError, ValueError) as exc:  # this file's outputs; the others go on
            _log(f"error: {f}: cannot write its labels: {_oserror(exc) if isinstance(exc, OSError) else exc}")
            failed += 1
            continue
        _log(
            f"{f.name}: {count_objects(labels)} objects{_seen_as(kind, summary.diameter(), model)}, "
            f"{time.perf_counter() - t0:.1f} s -> {', '.join(written)}"
        )
    if failed:
        _log(f"error: {failed} of {len(files)} image(s) could not be segmented or written; the others were")
        return 1
    return 0


def _seen_as(kind: str | None, diameter, model) -> str:
    """`` (as fluorescence, objects 40 px)``: how the image was read, the size only when it was rescaled."""
    parts = [f"as {_shown(kind)}"] if kind else []
    if isinstance(diameter, float) and model.card.diameter and abs(diameter / model.card.diameter - 1) > 0.05:
        parts.append(f"objects {diameter:.0f} px")
    elif isinstance(diameter, list):
        parts.append("objects " + ", ".join("-" if d is None else f"{d:.0f}" for d in diameter[:5]) + " px")
    return f" ({', '.join(parts)})" if parts else ""


def _shown(kinds: str) -> str:
    """Modality codes (``"he"``) as people read them (``"H&E / stained tissue"``)."""
    return ", ".join(MODALITY_LABELS.get(k, k) for k in kinds.split(", "))
