"""Headless commands: ``napari-unet-loop segment | evaluate | train | tune | export | models | gui``.

They run on the same core as the napari dock widget, so a model trained in napari
segments a folder on a cluster, and a model trained here opens in napari.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .core import __version__, model_files
from .core.axes import guess_axes, to_stack
from .core.checkpoint import load_checkpoint, save_checkpoint
from .core.device import DEVICE_CHOICES, DeviceError, resolve_device
from .core.finetune import preset
from .core.image import InputError, prepare_input, to_grey
from .core.metrics import matching_planes, pool
from .core.modality import CHOICES as MODALITY_CHOICES
from .core.modality import MODALITIES, detect
from .core.model_files import ModelError
from .core.postprocess import PostprocessConfig
from .core.sampling import Sample, balance_kinds, split_validation
from .core.segment import PlaneDone, SegmentSettings, iter_segment_planes
from .core.train import TrainingError, iter_train
from .core.unet import UNet, UNetConfig
from .io.export import (
    FORMATS,
    ExportError,
    TargetExistsError,
    check_writable,
    export_labels,
    export_target,
    output_names,
    parse_formats,
    safe_name,
)
from .io.images import ReadError, expand_inputs, file_axes, pair_files, read_image


class CLIError(Exception):
    """An error to report on the command line (without a traceback)."""


def _log(msg: str) -> None:
    # file names that are not valid UTF-8 (kept by Python as surrogate escapes) print as escapes
    try:
        msg = msg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        msg = msg.encode("utf-8", "backslashreplace").decode("utf-8")
    print(msg, file=sys.stderr, flush=True)


def _positive_int(text: str) -> int:
    """Parse a whole number of at least 1 (an argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


MIN_TILE = 64


def _tile(text: str) -> int:
    """Parse a tile size (an argparse type): small tiles are almost all halo, and very slow."""
    value = _positive_int(text)
    if value < MIN_TILE:
        raise argparse.ArgumentTypeError(
            f"tiles under {MIN_TILE} px are almost all overlap and very slow, got {value} (512 is a good size)"
        )
    return value


def _oserror(exc: OSError) -> str:
    """An operating-system error in words, naming the file (a full disk says so)."""
    import errno

    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing{where}: free some space or write elsewhere"
    return f"{exc.strerror or exc}{where}" if exc.strerror else str(exc)


def _iou(text: str) -> float:
    """Parse an overlap between 0 (exclusive) and 1 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be an overlap above 0 and at most 1, got {text}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="default",
        help="model name or .safetensors path (default: the shipped nuclei model)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help=f"compute device: {', '.join(DEVICE_CHOICES)} or cuda:N (default auto)",
    )
    p.add_argument(
        "--tile", type=_tile, default=None, help="core tile size in pixels (default: chosen from free memory)"
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision (auto: bf16 on CUDA, fp32 elsewhere)",
    )
    p.add_argument(
        "--fg-threshold",
        type=float,
        default=None,
        help="foreground probability threshold (default: the model's)",
    )
    p.add_argument(
        "--seed-threshold",
        type=float,
        default=None,
        help="seed (distance) threshold; higher splits less (default: the model's)",
    )
    p.add_argument("--min-size", type=int, default=None, help="smallest object in pixels (default: the model's)")
    p.add_argument(
        "--channel",
        type=int,
        default=None,
        help="channel to segment in multichannel images (default: mean of RGB)",
    )
    p.add_argument(
        "--axes",
        default=None,
        help="axes of the input arrays, e.g. YX, YXS, ZYX, TZYX, ZCYX (default: guessed)",
    )
    _add_modality_arg(p)
    p.add_argument(
        "--stitch-z",
        type=_iou,
        default=None,
        metavar="IOU",
        help="join the objects of consecutive Z planes into 3D objects when they overlap by this IoU (e.g. 0.5)",
    )
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average 4 flips (4x slower)")
    p.add_argument(
        "--block",
        type=_positive_int,
        default=None,
        help="segment block by block with this block size (bounded memory; automatic above 6144 x 6144)",
    )


def _add_modality_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--modality",
        default=None,
        choices=[*MODALITY_CHOICES, "none"],
        help="imaging modality: auto (detected per image: dark or bright background, colour), fluorescence, "
        "brightfield (inverted), he (stained tissue: haematoxylin channel) or none (grey as it is); "
        "default: the model's",
    )


def _postprocess(args: argparse.Namespace, model: model_files.Model) -> PostprocessConfig:
    base = model.card.postprocess.to_dict()
    for key in ("fg_threshold", "seed_threshold", "min_size"):
        value = getattr(args, key)
        if value is not None:
            base[key] = value
    try:
        return PostprocessConfig(**base)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def _read(path: Path, args, in_channels: int = 1) -> tuple[np.ndarray, str]:
    """An image file and its axes: ``--axes``, else what the file declares, else guessed from the shape.

    Raises
    ------
    InputError
        If the axes do not fit the image, or it has a channel axis, the model takes one
        channel and no ``--channel`` was given.
    """
    data = read_image(path)
    axes = (args.axes or file_axes(path) or guess_axes(data.shape)).upper()
    if len(axes) != data.ndim:
        raise InputError(f"axes {axes!r} name {len(axes)} axes but the image has {data.ndim} (shape {data.shape})")
    needs_choice = in_channels == 1 and getattr(args, "channel", None) is None
    chan = "C" if "C" in axes else "S" if "S" in axes else None
    n = data.shape[axes.index(chan)] if chan else 1
    if needs_choice and n > 1 and not (chan == "S" and n in (2, 3, 4)):  # grey + alpha, RGB(A): known
        raise InputError(f"the image has {n} channels (axes {axes}): choose the one to segment with --channel")
    return data, axes


def _segment_array(data: np.ndarray, axes: str, model, args, device, pp) -> tuple[np.ndarray, str, str | None]:
    """Segment an array of any supported layout, with its axes (the shared plane loop of core).

    Returns
    -------
    tuple
        Labels of shape (stacked axes..., Y, X), their axes (e.g. ``"YX"``, ``"ZYX"``) and the
        imaging modality the planes were treated as (``None``: grey as it is).
    """
    stack, stack_shape = to_stack(data, axes)
    settings = SegmentSettings(
        device=device,
        tile=args.tile,
        precision=args.precision,
        tta=args.tta,
        block=args.block,
        postprocess=pp,
        channel=args.channel,
        modality=getattr(args, "modality", None),
    )
    gen = iter_segment_planes(model, lambda i: stack[i[0]], [(k,) for k in range(len(stack))], settings)
    planes: dict[tuple[int, ...], np.ndarray] = {}
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            summary = stop.value
            break
        if isinstance(item, PlaneDone):
            planes[item.index] = item.labels
    note = summary.note()
    if note:
        _log(f"note: {note}")
    labels = np.stack([planes[(k,)] for k in range(len(stack))])
    out_axes = "".join(a for a in axes if a in "TZ") + "YX"
    kind = ", ".join(sorted({k for k in summary.modalities.values() if k})) or None
    labels = labels.reshape((*stack_shape, *labels.shape[-2:])) if stack_shape else labels[0]
    stitch = getattr(args, "stitch_z", None)
    if stitch is not None:
        if "Z" not in out_axes:
            _log("note: --stitch-z joins the planes of a Z stack; this image has none")
        else:
            labels = _stitch_z(labels, out_axes, stitch)
    return labels, out_axes, kind


def _stitch_z(labels: np.ndarray, axes: str, threshold: float) -> np.ndarray:
    """Join per-plane objects along Z into 3D objects (each time point on its own)."""
    from .core.stitch import stitch_planes

    if axes == "ZYX":
        return stitch_planes(labels, threshold)
    t = axes.index("T")
    moved = np.moveaxis(labels, t, 0)  # T first, then Z
    return np.moveaxis(np.stack([stitch_planes(v, threshold) for v in moved]), 0, t)


def _formats(values: list[str] | None, default: str = "tif") -> list[str]:
    """Formats from repeated or comma-separated ``--format`` options (the exporter's parser)."""
    try:
        return parse_formats(values, default)
    except ExportError as exc:
        raise CLIError(str(exc)) from None


def _provenance(model, pp: PostprocessConfig, args) -> dict:
    return {
        "model_name": model.name,
        "model_path": str(model.path),
        "model_card": model_files.card_summary(model.card),
        "thresholds": pp.to_dict(),
        "tile_size": args.tile or "auto",
        "precision": args.precision,
        "command": " ".join(["napari-unet-loop", *sys.argv[1:]]),
    }


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
            labels, axes, kind = _segment_array(image, image_axes, model, args, device, pp)
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
                    provenance={**prov, "input": str(f), "modality": kind or "none"},
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
            f"{f.name}: {count_objects(labels)} objects{f' (as {kind})' if kind else ''}, "
            f"{time.perf_counter() - t0:.1f} s -> {', '.join(written)}"
        )
    if failed:
        _log(f"error: {failed} of {len(files)} image(s) could not be segmented or written; the others were")
        return 1
    return 0


def count_objects(labels: np.ndarray) -> int:
    """Number of objects (distinct non-zero ids; in a stack, per plane, summed)."""
    planes = labels.reshape(-1, *labels.shape[-2:])
    return int(sum(np.count_nonzero(np.bincount(p[p > 0].ravel())) for p in planes))


def _intensity_image(image: np.ndarray, axes: str, args) -> np.ndarray | None:
    """The image as a grey array of the labels' shape, for measurements and OME-Zarr."""
    stack, stack_shape = to_stack(image, axes)
    if stack.ndim == 4:  # channels last: reduced as for segmenting (channel, mean of RGB, grey of grey + alpha)
        try:
            stack = np.stack([to_grey(p, channel=args.channel) for p in stack])
        except InputError:  # several channels and none chosen (a multichannel model): their mean
            stack = stack.astype(np.float32).mean(-1)
    return stack.reshape((*stack_shape, *stack.shape[-2:])) if stack_shape else stack[0]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Segment every image that has a label file and report pooled metrics."""
    pairs = pair_files(args.images, args.labels)  # cheap checks first
    device = resolve_device(args.device)
    model = model_files.load(args.model)
    pp = _postprocess(args, model)
    results, per_image = [], []
    by_kind: dict[str, list] = {}
    t0 = time.perf_counter()
    for i, (img_path, lab_path) in enumerate(pairs, 1):
        truth = read_image(lab_path)
        image, axes = _read(img_path, args, model.card.architecture.in_channels)
        labels, _, _ = _segment_array(image, axes, model, args, device, pp)
        if labels.shape != truth.shape:
            raise CLIError(f"{img_path.name}: labels {truth.shape} and segmentation {labels.shape} differ in shape")
        counts, seg = matching_planes(truth, labels)  # a stack's objects are numbered per plane
        results.append((counts, seg))
        s = pool([(counts, seg)]).to_dict()
        entry = {"name": img_path.stem, **s}
        if args.by_kind:
            kind = detect(to_stack(image, axes)[0][0], channel=args.channel).modality
            by_kind.setdefault(kind, []).append((counts, seg))
            entry["kind"] = kind
        per_image.append(entry)
        if not args.json or args.verbose:
            _log(
                f"[{i}/{len(pairs)}] {img_path.stem}: AP50 {s['ap50']:.3f}  "
                f"objects {s['n_true']} true, {s['n_pred']} found"
            )
    summary = pool(results).to_dict()
    report = {
        **summary,
        "model": model.name,
        "device": str(device),
        "thresholds": pp.to_dict(),
        "seconds": round(time.perf_counter() - t0, 2),
        "per_image": per_image,
    }
    if args.by_kind:
        report["by_kind"] = {k: pool(by_kind[k]).to_dict() for k in MODALITIES if k in by_kind}
    if args.json:
        print(json.dumps(report, indent=None if args.compact else 2))
    else:
        print(
            f"{summary['n_images']} images: AP50 {summary['ap50']:.4f}  AP75 {summary['ap75']:.4f}  "
            f"F1@0.5 {summary['f1_50']:.4f}  PQ {summary['pq']:.4f}  SEG {summary['seg']:.4f}"
        )
        for kind, k in report.get("by_kind", {}).items():
            print(
                f"  {kind:<12} {k['n_images']:4d} images: AP50 {k['ap50']:.4f}  precision {k['precision_50']:.4f}  "
                f"recall {k['recall_50']:.4f}  SEG {k['seg']:.4f}"
            )
    return 0


def _read_list(path: str | None) -> set[str] | None:
    if path is None:
        return None
    names = {ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    return {Path(n).stem for n in names}


def _one_plane(data: np.ndarray, axes: str) -> np.ndarray:
    """The single 2D plane (channels last) of an annotated image, for training and tuning."""
    stack, stack_shape = to_stack(data, axes)
    if stack.shape[0] != 1:
        raise InputError(
            f"holds {stack.shape[0]} planes (stack shape {stack_shape}); training and tuning take 2D images: "
            "give --axes if one axis is channels (e.g. CYX), or save one file per plane"
        )
    return stack[0]


def _load_samples(pairs, card_norm, in_channels, args, modality: str | None = None) -> list[Sample]:
    """Annotated images prepared as the model reads them, each with its detected kind of imaging."""
    samples = []
    modality = getattr(args, "modality", None) or modality
    for img_path, lab_path in pairs:
        try:
            plane = _one_plane(*_read(img_path, args, in_channels))
            kind = detect(plane, channel=args.channel).modality
            use = None if in_channels != 1 or modality in (None, "none") else (kind if modality == "auto" else modality)
            x = prepare_input(plane, in_channels, card_norm, channel=args.channel, modality=use)
            samples.append(Sample(x, read_image(lab_path), name=img_path.stem, kind=kind))
        except (InputError, ValueError) as exc:
            raise CLIError(f"{img_path.name}: {exc}") from exc
    return samples


def cmd_train(args: argparse.Namespace) -> int:
    """Train from scratch or fine-tune on a folder of images and label files."""
    device = resolve_device(args.device)
    out = Path(args.out)
    if out.suffix != model_files.SUFFIX:
        out = out.with_name(out.name + model_files.SUFFIX)
    resume = getattr(args, "resume_state", None)
    if out.exists() and not args.overwrite and resume is None:
        raise CLIError(f"{out} exists; use --overwrite to replace it")
    ckpt_path = out.with_suffix(".ckpt")
    if resume is not None:
        model = model_files.Model(UNet(args.resume_card.architecture), args.resume_card)
        parent = model.card.parent
    elif args.start == "scratch":
        cfg = UNetConfig(depth=args.depth, base_width=args.width, in_channels=args.in_channels)
        model = model_files.new_model(cfg, name=out.stem, seed=args.seed)
        model.card.modality = args.modality or ("auto" if args.in_channels == 1 else "none")
        parent = None
    else:
        model = model_files.load(args.start)
        parent = model.name
        model.card.parent = parent
        model.card.name = out.stem
        if args.modality:
            model.card.modality = args.modality
    start_card = model.card.to_dict()
    include, exclude, val_names = (
        _read_list(args.include),
        _read_list(args.exclude),
        _read_list(args.val_list),
    )
    pairs = pair_files(args.images, args.labels)
    if include is not None:
        pairs = [p for p in pairs if p[0].stem in include]
    if exclude is not None:
        pairs = [p for p in pairs if p[0].stem not in exclude]
    if not pairs:
        raise CLIError("no image/label pairs left to train on after --include/--exclude")
    in_ch, norm, modality = model.card.architecture.in_channels, model.card.normalization, model.card.modality
    if not 0 <= args.val_fraction < 1:
        raise CLIError(f"--val-fraction must be at least 0 and below 1, got {args.val_fraction}")
    if val_names is not None and not any(p[0].stem in val_names for p in pairs):
        raise CLIError(f"no image matches the names in --val-list {args.val_list}: nothing to validate on")
    if val_names is not None:
        train_pairs = [p for p in pairs if p[0].stem not in val_names]
        val_pairs = [p for p in pairs if p[0].stem in val_names]
        train = _load_samples(train_pairs, norm, in_ch, args, modality)
        val = _load_samples(val_pairs, norm, in_ch, args, modality)
    else:
        samples = _load_samples(pairs, norm, in_ch, args, modality)
        train, val = split_validation(samples, args.val_fraction, args.seed)
    if not train:
        raise CLIError("no training images left after taking out the validation images")
    if not any(s.labels.any() for s in train):
        raise CLIError("the training label images hold no objects (all zero): nothing to learn from")
    if not val:
        _log(
            "WARNING: no validation data (--val-fraction 0, or images too small to hold a stripe out): "
            "nothing will check that the model gets better; the weights at the end are kept as they are"
        )
    kinds = {k: sum(s.kind == k for s in train) for k in MODALITIES}
    shares = None
    if args.balance_kinds:
        shares = balance_kinds(train, _parse_shares(args.balance_kinds))
        _log("patches per kind of image: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items()))
    fine_tune = args.start != "scratch"
    augment = dataclasses.replace(
        preset(fine_tune).augment,
        **{k: v for k, v in (("intensity", args.intensity), ("blur", args.blur)) if v is not None},
    )
    config = preset(
        fine_tune,
        minutes=args.minutes,
        patch_size=args.patch,
        batch_size=args.batch,
        learning_rate=args.lr,
        steps=args.steps,
        val_every_s=args.val_every,
        freeze_encoder=args.freeze_encoder,
        freeze_norm=False if args.update_norm else None,
        precision=args.precision,
        seed=args.seed,
        select_by=args.select_by,
        augment=augment,
    )
    _log(
        f"{'fine-tuning ' + parent if parent else 'training from scratch'} on {device}: "
        f"{len(train)} training and {len(val)} validation sample(s), budget "
        f"{str(args.minutes) + ' min' if args.minutes else ''}{' ' if args.minutes and args.steps else ''}"
        f"{str(args.steps) + ' steps' if args.steps else ''}"
    )
    started = getattr(args, "resume_started", None) or _dt.datetime.now().astimezone().isoformat(timespec="seconds")

    if args.description:
        model.card.description = args.description

    tuning: dict = {}

    def write(result_val: dict | None, final: bool, extra: dict) -> None:
        model.card.metrics = {"validation": result_val} if result_val else {}
        if final and tuning:
            model.card.metrics["threshold_tuning"] = tuning
        model.card.training = {
            "data": {
                "images": str(Path(args.images).resolve()),
                "labels": str(Path(args.labels).resolve()),
                "n_train": len(train),
                "n_val": len(val),
                "train_names": sorted(s.name for s in train),
                "val_names": sorted(s.name for s in val),
            },
            "include": args.include,
            "exclude": args.exclude,
            "val_list": args.val_list,
            "validated": bool(val),
            "kinds": kinds,
            "kind_shares": shares,
            "config": config.to_dict(),
            "device": str(device),
            "started": started,
            "final": final,
            "command": " ".join(["napari-unet-loop", *sys.argv[1:]]),
            **extra,
        }
        model_files.save(model, out, overwrite=True)

    gen = iter_train(
        model.net,
        train,
        val,
        config,
        device,
        model.card.postprocess,
        stop=threading.Event(),
        checkpoint_every_s=args.checkpoint_every * 60 if args.checkpoint else None,
        resume=resume,
    )
    last = 0.0
    best_snapshot = None
    ckpt_extra = {"argv": args.argv, "card": json.dumps(start_card), "started": started}
    try:
        while True:
            ev = next(gen)
            now = time.perf_counter()
            if ev.kind == "start":
                _log(ev.message + (f"; starting scores {_fmt(ev.val)}" if ev.val else ""))
            elif ev.kind == "step" and now - last > args.log_every:
                last = now
                _log(f"step {ev.step}  loss {ev.loss:.4f}  {100 * ev.fraction:.0f}%  eta {ev.eta / 60:.1f} min")
            elif ev.kind == "val":
                saved = False
                if ev.is_best and args.checkpoint and ev.best_state is not None:
                    # save the best weights as they are found, so an interrupted run keeps them
                    model.net.load_state_dict(ev.best_state)
                    write(ev.val, False, {"steps": ev.step, "seconds": round(ev.elapsed, 1)})
                    best_snapshot, saved = ev.step, True
                note = ("  (best so far, saved)" if saved else "  (best so far)") if ev.is_best else ""
                _log(f"validation at step {ev.step}: {_fmt(ev.val)}{note}")
            elif ev.kind == "checkpoint" and ev.checkpoint is not None:
                save_checkpoint(ev.checkpoint, ckpt_path, ckpt_extra)
                _log(f"checkpoint at step {ev.step} in {ckpt_path} (continue a cut run with --resume {ckpt_path})")
    except StopIteration as stop:
        result = stop.value
    except KeyboardInterrupt:
        _log(
            "interrupted"
            + (f"; the best model so far is in {out}" if best_snapshot is not None else "; no model written")
            + (f"; continue with: napari-unet-loop train --resume {ckpt_path}" if ckpt_path.exists() else "")
        )
        return 130
    if val and args.tune:
        from .core.train import tune_thresholds

        try:
            pp, ap_before, ap_after = tune_thresholds(model.net, val, device, model.card.postprocess, args.precision)
        except KeyboardInterrupt:
            where = f"the best weights so far are in {out}" if best_snapshot is not None else "no model written"
            _log(f"interrupted while tuning the thresholds; {where}")
            return 130
        _log(f"thresholds tuned on the validation data: AP50 {ap_before:.4f} -> {ap_after:.4f} with {pp.to_dict()}")
        model.card.postprocess = pp
        tuning.update(ap50_before=ap_before, ap50_after=ap_after, on="validation data")
    write(
        result.best,
        True,
        {
            "steps": result.steps,
            "patches": result.patches,
            "seconds": round(result.seconds, 1),
            "baseline": result.baseline,
            "history": _thin(result.history),
        },
    )
    ckpt_path.unlink(missing_ok=True)  # the run is complete: its model file holds everything
    if result.baseline is not None and parent is not None and not result.improved:
        _log(f"warning: fine-tuning did not beat {parent} on the validation data; {out} holds the starting weights")
    _log(
        f"wrote {out} ({result.steps} steps, {result.patches} patches, {result.seconds / 60:.1f} min)"
        + (f"; validation {_fmt(result.best)}" if result.best else "")
    )
    return 0


def _parse_shares(text: str) -> dict[str, float]:
    """``he=0.2,brightfield=0.15`` -> ``{"he": 0.2, "brightfield": 0.15}``."""
    shares = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or key not in MODALITIES or not 0 <= share < 1:
            raise CLIError(
                f"--balance-kinds {text!r}: give KIND=SHARE pairs, e.g. he=0.2,brightfield=0.15 "
                f"(kinds: {', '.join(MODALITIES)}; shares from 0 to below 1)"
            )
        shares[key] = share
    return shares


def _thin(history: list[dict], n: int = 400) -> list[dict]:
    """Keep every validation entry and about ``n`` loss entries of a training history."""
    losses = [h for h in history if "loss" in h]
    step = max(1, len(losses) // n)
    keep = {id(h) for h in losses[::step]}
    return [h for h in history if "val" in h or id(h) in keep]


def _fmt(v: dict | None) -> str:
    if not v:
        return "-"
    return f"AP50 {v['ap50']:.4f} AP75 {v['ap75']:.4f} SEG {v['seg']:.4f} loss {v['loss']:.4f}"


def cmd_export(args: argparse.Namespace) -> int:
    """Convert label files to other formats (with measurements and provenance)."""
    from .io.readers import read_labels

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
            data = np.asarray(data)
            if not np.issubdtype(data.dtype, np.integer):
                raise CLIError(f"{path}: labels must be integers, got {data.dtype}")
            meta = kwargs.get("metadata", {}) or {}
            axes = args.axes or meta.get("axes")
            scale = args.pixel_size or kwargs.get("scale")
            if args.pixel_size and len(args.pixel_size) == 1:  # Y and X; other axes keep the file's spacing
                file_scale = list(kwargs.get("scale") or [1.0] * data.ndim)
                scale = [*file_scale[: data.ndim - 2], args.pixel_size[0], args.pixel_size[0]]
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
                    units=args.unit or meta.get("units"),
                    axes=axes,
                    overwrite=args.overwrite,
                    provenance=meta.get("napari_unet_loop") or None,
                )
                for note in res.notes:
                    _log(f"note: {Path(path).name} ({fmt}): {note}")
                _log(f"{Path(path).name} -> {', '.join(str(p) for p in res.paths)}")
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    """Open napari with the dock widget, on the given images or a sample image."""
    try:
        import napari
    except ImportError as exc:  # pragma: no cover - napari is a dependency
        raise CLIError(f"napari is not installed ({exc}); pip install 'napari-unet-loop[all]'") from exc
    from .sample_data import SAMPLES

    viewer = napari.Viewer(title="napari-unet-loop")
    if args.images:
        for path in args.images:
            viewer.open(path)
    else:
        if args.sample not in SAMPLES:
            raise CLIError(f"no sample named {args.sample!r}; choose one of {', '.join(SAMPLES)}")
        viewer.open_sample("napari-unet-loop", args.sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-loop", "U-Net Loop")
    # napari's first window is small: the dock's Segment button would sit below the fold
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen().availableGeometry()
    viewer.window.resize(min(1500, screen.width()), min(950, screen.height()))
    if args.segment:
        widget.segment()
    napari.run()
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Choose a model's default thresholds on annotated images and store them in its card."""
    from .core.train import tune_thresholds

    device = resolve_device(args.device)
    model = model_files.load(args.model)
    if args.write and model.path is not None and model.path.resolve().parent == model_files.shipped_dir().resolve():
        raise CLIError(f"{model.name} is a shipped model and is not changed; give --model a copy of its file")
    pairs = pair_files(args.images, args.labels)
    include = _read_list(args.include)
    if include is not None:
        pairs = [p for p in pairs if p[0].stem in include]
    if not pairs:
        raise CLIError("no image/label pairs to tune on")
    samples = _load_samples(pairs, model.card.normalization, model.card.architecture.in_channels, args)
    best, before, ap = tune_thresholds(model.net, samples, device, model.card.postprocess, tile=args.tile, tta=args.tta)
    _log(f"{len(pairs)} images: AP50 {before:.4f} with {model.card.postprocess.to_dict()}")
    _log(f"best thresholds found: AP50 {ap:.4f} with {best.to_dict()}")
    print(json.dumps({"before": before, "after": ap, "thresholds": best.to_dict()}))
    if args.write:
        model.card.postprocess = best
        model.card.metrics = {
            **{k: v for k, v in model.card.metrics.items() if k != "test"},  # test scores were for the old thresholds
            "threshold_tuning": {
                "images": len(pairs),
                "ap50_before": before,
                "ap50_after": ap,
                "include": args.include,
            },
        }
        model_files.save(model, model.path, overwrite=True)
        _log(f"wrote the thresholds into {model.path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List shipped and user models."""
    for name, path in model_files.list_models().items():
        print(f"{name}\t{path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="napari-unet-loop", description="U-Net instance segmentation: segment, evaluate, train, tune, export."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment images into label TIFFs")
    p.add_argument("inputs", nargs="+", help="PNG/TIFF files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (one <name>.tif per input)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--format",
        action="append",
        metavar="FMT",
        help=f"output format(s): {', '.join(FORMATS)}; repeat or comma-separate (default tif)",
    )
    p.add_argument(
        "--include-labels",
        action="store_true",
        help="also segment label files found in folders beside their images (x_labels.png beside x.png)",
    )
    _add_model_args(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="segment images and score them against label files")
    p.add_argument("images", help="folder of images")
    p.add_argument("labels", help="folder of label images (matched to images by name or frame number)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--compact", action="store_true", help="JSON on one line")
    p.add_argument("--verbose", action="store_true", help="per-image lines on stderr with --json")
    p.add_argument(
        "--by-kind",
        action="store_true",
        help="also score fluorescence, brightfield and H&E images apart (the kind is detected from the image)",
    )
    _add_model_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="train or fine-tune on images and label files")
    p.add_argument("images", nargs="?", help="folder of images")
    p.add_argument("labels", nargs="?", help="folder of label images (matched to images by name or frame number)")
    p.add_argument("--out", help="model file to write (.safetensors)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="continue a cut run from its checkpoint (<out>.ckpt), with that run's data and settings",
    )
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=5.0,
        metavar="MIN",
        help="minutes between training checkpoints for --resume (default 5)",
    )
    p.add_argument(
        "--from",
        dest="start",
        default="default",
        help="start from: default, a model name or path, or 'scratch'",
    )
    p.add_argument("--minutes", type=float, default=None, help="time budget in minutes (default 5 unless --steps)")
    p.add_argument("--steps", type=_positive_int, default=None, help="number of training steps")
    p.add_argument("--device", default="auto", help=f"compute device: {', '.join(DEVICE_CHOICES)} or cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--patch", type=_positive_int, default=None, help="patch size (default 128)")
    p.add_argument(
        "--batch",
        type=_positive_int,
        default=None,
        help="patches per step (default 8 fine-tuning, as the dock; 16 from scratch)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default 5e-4 fine-tuning, as the dock; 2e-3 from scratch)",
    )
    p.add_argument("--freeze-encoder", action="store_true", help="train only the expanding path (fast CPU fine-tunes)")
    p.add_argument(
        "--update-norm",
        action="store_true",
        help="when fine-tuning, re-estimate the batch-norm statistics (default: keep the starting model's; "
        "re-estimating helps only with many training images)",
    )
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of each image held out for validation")
    p.add_argument("--val-list", default=None, help="file of image names to validate on instead (never trained on)")
    p.add_argument("--include", default=None, help="file of image names to use (others skipped)")
    p.add_argument("--exclude", default=None, help="file of image names to leave out (e.g. a test split)")
    p.add_argument(
        "--val-every", type=float, default=None, help="seconds between validations (default: ten per run, as the dock)"
    )
    p.add_argument("--channel", type=int, default=None, help="channel to train on in multichannel images")
    p.add_argument("--axes", default=None, help="axes of the images, e.g. YX, YXS, CYX (default: guessed)")
    _add_modality_arg(p)
    p.add_argument(
        "--balance-kinds",
        default=None,
        metavar="KIND=SHARE,...",
        help="smallest share of training patches per kind of image, e.g. he=0.2,brightfield=0.15",
    )
    p.add_argument("--intensity", type=float, default=None, help="intensity augmentation strength, 0-1 (default 0.5)")
    p.add_argument(
        "--blur", type=float, default=None, help="largest random blur in pixels (default 1 from scratch, 0 fine-tuning)"
    )
    p.add_argument("--depth", type=_positive_int, default=4, help="U-Net depth, from scratch (default 4)")
    p.add_argument("--width", type=_positive_int, default=16, help="U-Net base width, from scratch (default 16)")
    p.add_argument("--in-channels", type=_positive_int, default=1, help="input channels, from scratch (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--description", default=None, help="what the model is for (stored in its card)")
    p.add_argument(
        "--no-tune",
        dest="tune",
        action="store_false",
        help="keep the starting thresholds (default: tune them on the validation data after training)",
    )
    p.add_argument(
        "--select-by",
        choices=["ap50", "loss"],
        default="ap50",
        help="validation score that picks the best weights (default ap50 at the model's thresholds)",
    )
    p.add_argument("--log-every", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--no-checkpoint", dest="checkpoint", action="store_false", help="write the model only at the end")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="convert label files to TIFF, PNG, OME-Zarr, CSV measurements or ImageJ ROIs")
    p.add_argument("labels", nargs="+", help="label files (TIFF, PNG, OME-Zarr, ImageJ ROI zip)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--format", action="append", metavar="FMT", help=f"{', '.join(FORMATS)} (repeat or comma-separate)")
    p.add_argument("--image", default=None, help="the paired image (intensity columns in CSV, image in OME-Zarr)")
    p.add_argument("--axes", default=None, help="axes of the labels: YX, ZYX, TYX or TZYX (default: from the file)")
    p.add_argument("--pixel-size", type=float, nargs="+", default=None, help="pixel size (one value, or per axis)")
    p.add_argument("--unit", default=None, help="unit of the pixel size, e.g. um (default um when a size is given)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("gui", help="open napari with the plugin docked (on a sample image by default)")
    p.add_argument("images", nargs="*", help="images to open (default: a sample image)")
    p.add_argument("--sample", default="nuclei_fluorescence", help="sample to open when no image is given")
    p.add_argument("--segment", action="store_true", help="segment the image right away")
    p.set_defaults(func=cmd_gui)

    p = sub.add_parser("tune", help="choose a model's default thresholds on annotated images")
    p.add_argument("images", help="folder of images")
    p.add_argument("labels", help="folder of label images (matched to images by name or frame number)")
    p.add_argument("--model", default="default", help="model name or path")
    p.add_argument("--include", default=None, help="file of image names to use (e.g. a validation split)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tile", type=_tile, default=None)
    p.add_argument("--write", action="store_true", help="store the best thresholds in the model file")
    p.add_argument("--tta", action="store_true", help="tune for test-time augmentation (average 4 flips)")
    p.add_argument("--channel", type=int, default=None, help="channel to use in multichannel images")
    p.add_argument("--axes", default=None, help="axes of the images, e.g. YX, YXS, CYX (default: guessed)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("models", help="list shipped and user models")
    p.set_defaults(func=cmd_models)
    return parser


def _train_args(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """Fill in the ``train`` defaults; with ``--resume``, the arguments of the run being continued."""
    if args.resume:
        state, extra = load_checkpoint(args.resume)
        try:
            old = parser.parse_args(extra["argv"])
            card = model_files.ModelCard.from_dict(json.loads(extra["card"]))
        except (KeyError, ValueError, TypeError, SystemExit) as exc:
            raise CLIError(f"{args.resume}: the checkpoint does not say which run it belongs to ({exc})") from None
        _log(f"resuming at step {state['step']}: napari-unet-loop {' '.join(extra['argv'])}")
        old.resume, old.resume_state, old.resume_card = args.resume, state, card
        old.resume_started = extra.get("started")
        if args.device != "auto":
            old.device = args.device
        args, argv = old, list(extra["argv"])
    elif args.images is None or args.labels is None or args.out is None:
        raise CLIError("train needs IMAGES, LABELS and --out (or --resume CHECKPOINT)")
    if args.minutes is None and args.steps is None:
        args.minutes = 5.0
    args.argv = argv
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "command", None) == "train":
            args = _train_args(parser, args, argv)
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C while starting, reading or writing: one line, no traceback
        _log("interrupted")
        return 130
    except TargetExistsError as exc:  # the io message is neutral: name this front end's way
        _log(f"error: {exc} Use --overwrite to replace.")
        return 2
    except (
        CLIError,
        InputError,
        ModelError,
        DeviceError,
        ReadError,
        TrainingError,
        ExportError,
        OSError,  # missing list files, folders that are files, full disks, ...
        MemoryError,
        ValueError,
    ) as exc:
        _log(f"error: {_oserror(exc) if isinstance(exc, OSError) and not isinstance(exc, FileExistsError) else exc}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
