"""Pieces the commands share: errors, argument types and groups, reading images, the plane loop, samples."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..core import model_files
from ..core.axes import guess_axes, to_stack
from ..core.device import DEVICE_CHOICES
from ..core.image import InputError, prepare_input, to_grey
from ..core.modality import CHOICES as MODALITY_CHOICES
from ..core.modality import detect
from ..core.postprocess import PostprocessConfig
from ..core.predict import run
from ..core.sampling import Sample
from ..core.segment import PlaneDone, PlanesSummary, SegmentSettings, input_modality, iter_segment_planes
from ..core.stitch import stitch_stack
from ..io.export import (
    ExportError,
    parse_formats,
)
from ..io.images import file_axes, read_image


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
        "--diameter",
        type=_diameter,
        default=None,
        metavar="PX|auto",
        help="object diameter in the images, in pixels: they are rescaled so objects reach the network at the "
        "size it was trained at; auto: measured per image from a first segmentation (default: the model's)",
    )
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


def _diameter(text: str) -> float | str:
    """``--diameter``: a positive number of pixels, or ``auto``."""
    from ..core.scale import check_diameter

    if text.strip().lower() == "auto":
        return "auto"
    try:
        return check_diameter(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or auto)") from None


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


def _segment_array(data: np.ndarray, axes: str, model, args, device, pp) -> tuple[np.ndarray, str, PlanesSummary]:
    """Segment an array of any supported layout, with its axes (the shared plane loop of core).

    Returns
    -------
    tuple
        Labels of shape (stacked axes..., Y, X), their axes (e.g. ``"YX"``, ``"ZYX"``) and the
        summary of the planes (imaging modality and object diameter each was segmented as).
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
        diameter=getattr(args, "diameter", None),
    )
    planes: dict[tuple[int, ...], np.ndarray] = {}

    def keep(item) -> None:
        if isinstance(item, PlaneDone):
            planes[item.index] = item.labels

    summary = run(iter_segment_planes(model, lambda i: stack[i[0]], [(k,) for k in range(len(stack))], settings), keep)
    note = summary.note()
    if note:
        _log(f"note: {note}")
    labels = np.stack([planes[(k,)] for k in range(len(stack))])
    out_axes = "".join(a for a in axes if a in "TZ") + "YX"
    labels = labels.reshape((*stack_shape, *labels.shape[-2:])) if stack_shape else labels[0]
    stitch = getattr(args, "stitch_z", None)
    if stitch is not None:
        if "Z" not in out_axes:
            _log("note: --stitch-z joins the planes of a Z stack; this image has none")
        else:
            labels = stitch_stack(labels, stitch)  # Z is the axis before Y and X (ZYX, TZYX)
    return labels, out_axes, summary


def _kind(summary: PlanesSummary) -> str | None:
    """The imaging modality (or modalities) the planes were seen as (``None``: grey as it is)."""
    return ", ".join(sorted({k for k in summary.modalities.values() if k})) or None


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
        "diameter_setting": getattr(args, "diameter", None) or "model",
        "precision": args.precision,
        "command": " ".join(["napari-unet-loop", *sys.argv[1:]]),
    }


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


def _load_samples(pairs, model: model_files.Model, args) -> list[Sample]:
    """Annotated images prepared as ``model`` reads them (``--modality`` or its card's), each with its detected kind."""
    samples = []
    setting = getattr(args, "modality", None) or model.card.modality
    in_channels, norm = model.card.architecture.in_channels, model.card.normalization
    for img_path, lab_path in pairs:
        try:
            plane = _one_plane(*_read(img_path, args, in_channels))
            kind = detect(plane, channel=args.channel).modality  # for balancing, and "auto" (detected once)
            use = input_modality(model, plane, kind if setting == "auto" else setting, channel=args.channel)
            x = prepare_input(plane, in_channels, norm, channel=args.channel, modality=use)
            samples.append(Sample(x, read_image(lab_path), name=img_path.stem, kind=kind))
        except (InputError, ValueError) as exc:
            raise CLIError(f"{img_path.name}: {exc}") from exc
    return samples


def _fmt(v: dict | None) -> str:
    if not v:
        return "-"
    return f"AP50 {v['ap50']:.4f} AP75 {v['ap75']:.4f} SEG {v['seg']:.4f} loss {v['loss']:.4f}"
