"""Pieces the commands share: errors, argument types and groups, reading images, the plane loop, samples."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..core import model_files
from ..core.device import DEVICE_CHOICES
from ..core.edits import trust_near_labels
from ..core.image import InputError
from ..core.modality import CHOICES as MODALITY_CHOICES
from ..core.model_card import card_summary
from ..core.planes import PlanesSummary, SegmentSettings
from ..core.predict import TTA_AUTO_PIXELS
from ..core.sampling import Sample
from ..io.conventions import os_error_text
from ..io.export import (
    ExportError,
    parse_formats,
)
from ..io.images import base_name, is_ctc_gold_truth, pair_files, read_with_axes, unpaired_note
from ..io.training import mask_note, training_samples
from ..parallel.files import modality_of, segment_array


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


def _strength(text: str) -> float:
    """Parse an augmentation strength from 0 to 1 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 (none) to 1 (strong), got {value:g}")
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


_oserror = os_error_text


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
    p.add_argument(
        "--min-size",
        type=int,
        default=None,
        help="smallest object, in pixels at the model's object size: with --diameter it scales with the "
        "objects' area, (diameter / model's diameter)^2 (default: the model's)",
    )
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
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default="auto",
        help="test-time augmentation, the network averaged over 4 flips (4x its work), on every image (--no-tta: "
        f"on none); by default on images of at most {TTA_AUTO_PIXELS} pixels as the network sees them",
    )
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


def _add_labels_coverage_args(p: argparse.ArgumentParser, learn: str) -> None:
    """``--partial-labels`` / ``--complete-labels`` of the commands that learn from labels (train, tune)."""
    marks = p.add_mutually_exclusive_group()
    marks.add_argument(
        "--partial-labels",
        action="store_true",
        default=None,
        help=f"the label files mark only some of the objects: {learn} only on the marked objects and a ring of "
        "background around them, not on unmarked cells (the default for Cell Tracking Challenge man_segNNN files)",
    )
    marks.add_argument(
        "--complete-labels",
        dest="partial_labels",
        action="store_false",
        help="the label files mark every object (every pixel counts), also for man_segNNN files",
    )


def _partial_labels(args: argparse.Namespace, pairs, learning: str) -> bool:
    """Whether the label files mark only some objects: ``--partial-labels``, or unasked for gold truth.

    Cell Tracking Challenge gold truth (every label file ``man_segNNN``) may mark only some of a
    frame's cells, so it is read so unless ``--complete-labels`` says otherwise; the log says it.
    """
    if getattr(args, "partial_labels", None) is None:
        args.partial_labels = bool(pairs) and all(is_ctc_gold_truth(p[1]) for p in pairs)
        if args.partial_labels:
            _log(
                "the labels are Cell Tracking Challenge gold truth (man_segNNN), which may mark only some cells: "
                f"{learning} on the marked cells and the background around them (--complete-labels: on every pixel)"
            )
    return bool(args.partial_labels)


def _marked(samples: list[Sample], args: argparse.Namespace) -> list[Sample]:
    """``--partial-labels``: each sample trusted only around its marked objects (``core.edits.labelled_region``)."""
    return trust_near_labels(samples) if getattr(args, "partial_labels", False) else samples


def _postprocess(args: argparse.Namespace, model: model_files.Model) -> dict[str, float] | None:
    """The thresholds given on the command line, checked; ``None`` when none is.

    They replace those settings in the model's thresholds for each image's imaging kind
    (see :meth:`napari_unet_loop.core.model_card.ModelCard.thresholds`).
    """
    given = {k: getattr(args, k) for k in ("fg_threshold", "seed_threshold", "min_size")}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    try:
        for kind in (None, *model.card.postprocess_by_kind):
            model.card.thresholds(kind, given)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    return given


def _thresholds_record(model: model_files.Model, given: dict[str, float] | None) -> dict:
    """The thresholds (and networks) a run uses, for its report.

    ``thresholds``; ``thresholds_by_kind`` where they differ; ``weights_by_kind``: the imaging kinds
    the model has networks of their own for.
    """
    card = model.card
    record: dict = {"thresholds": card.thresholds(None, given).to_dict()}
    if card.postprocess_by_kind:
        record["thresholds_by_kind"] = {k: card.thresholds(k, given).to_dict() for k in card.postprocess_by_kind}
    if card.weights_by_kind:  # the kinds whose images went to a network of their own
        record["weights_by_kind"] = sorted(card.weights_by_kind)
    return record


def _read(path: Path, args, in_channels: int = 1) -> tuple[np.ndarray, str]:
    """An image file and its axes: ``--axes``, else what the file declares, else guessed from the shape.

    Raises
    ------
    InputError
        If the axes do not fit the image, or it has a channel axis, the model takes one
        channel and no ``--channel`` was given.
    """
    try:
        return read_with_axes(path, args.axes, in_channels, getattr(args, "channel", None))
    except InputError as exc:
        raise InputError(_flags(str(exc))) from None


# the settings headless messages name, and how this front end spells them
_FLAGS = (
    ("choose the one to segment", "choose the one to segment with --channel"),
    ("Z stitching joins", "--stitch-z joins"),
)


def _flags(text: str) -> str:
    """A message of core, io or parallel with the settings it names given as this command line's flags."""
    for plain, flag in _FLAGS:
        text = text.replace(plain, flag)
    return text


def _settings(args, device, pp: dict[str, float] | None) -> SegmentSettings:
    """The segment settings the command-line options ask for."""
    return SegmentSettings(
        device=device,
        tile=args.tile,
        precision=args.precision,
        tta=args.tta,  # True, False, or "auto" when neither --tta nor --no-tta is given
        block=args.block,
        postprocess=pp,
        channel=args.channel,
        modality=getattr(args, "modality", None),
        diameter=getattr(args, "diameter", None),
    )


def _segment_array(data: np.ndarray, axes: str, model, args, device, pp) -> tuple[np.ndarray, str, PlanesSummary]:
    """Segment an array of any supported layout with the command line's settings (see :func:`segment_array`)."""
    return segment_array(
        data, axes, model, _settings(args, device, pp), getattr(args, "stitch_z", None), lambda m: _log(_flags(m))
    )


_kind = modality_of


def _formats(values: list[str] | None, default: str = "tif") -> list[str]:
    """Formats from repeated or comma-separated ``--format`` options (the exporter's parser)."""
    try:
        return parse_formats(values, default)
    except ExportError as exc:
        raise CLIError(str(exc)) from None


def _provenance(model, pp: dict[str, float] | None, args) -> dict:
    return {
        "model_name": model.name,
        "model_path": str(model.path),
        "model_card": card_summary(model.card),
        **_thresholds_record(model, pp),
        "tile_size": args.tile or "auto",
        "diameter_setting": getattr(args, "diameter", None) or "model",
        "precision": args.precision,
        "tta": getattr(args, "tta", "auto"),
        "modality_setting": getattr(args, "modality", None) or "model",
        "channel": getattr(args, "channel", None),
        "command": " ".join(["napari-unet-loop", *getattr(args, "argv", sys.argv[1:])]),
    }


def _pairs(images: str, labels: str) -> list[tuple[Path, Path]]:
    """The image/label file pairs of two folders; images left without a label file are named in the log."""
    pairs = pair_files(images, labels)
    note = unpaired_note(images, labels, pairs)
    if note:
        _log(note)
    return pairs


def _listed(path: Path, names: set[str]) -> bool:
    """Whether an image is named in a list file: by its stem, or its base name (``cells`` for ``cells.ome.tif``)."""
    return path.stem in names or base_name(path) in names


def _read_list(path: str | None) -> set[str] | None:
    if path is None:
        return None
    names = {ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    return {Path(n).stem for n in names}


def _load_samples(pairs, model: model_files.Model, args) -> list[Sample]:
    """Annotated images prepared as ``model`` reads them (``--modality`` or its card's), each with its detected kind.

    A stack gives one sample per plane whose labels hold an object (see
    :func:`napari_unet_loop.io.training.training_samples`).
    """
    notes: list[str] = []
    try:
        samples = training_samples(pairs, model, getattr(args, "modality", None), args.channel, args.axes, notes)
    except InputError as exc:
        raise CLIError(_flags(str(exc))) from exc
    said = vars(args).setdefault("masks_noted", set())  # a run that reads its files twice says it once
    note = mask_note([n for n in notes if n not in said])
    said.update(notes)
    if note:
        _log(f"note: {note}")
    return samples


def _fmt(v: dict | None) -> str:
    if not v:
        return "-"
    return f"AP50 {v['ap50']:.4f} AP75 {v['ap75']:.4f} SEG {v['seg']:.4f} loss {v['loss']:.4f}"
