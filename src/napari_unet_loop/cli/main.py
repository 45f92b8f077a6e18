"""The parser and ``main``: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..core import __version__, kind_weights, model_files
from ..core.checkpoint import load_checkpoint
from ..core.device import DEVICE_CHOICES, DeviceError, cpu_bf16_native, resolve_device
from ..core.errors import ModelError
from ..core.finetune import LAYERS
from ..core.image import InputError
from ..core.modality import MODALITIES
from ..core.model_card import ModelCard
from ..core.train import TrainingError
from ..io.export import (
    FORMATS,
    ExportError,
    TargetExistsError,
)
from ..io.images import ReadError
from ._common import (
    CLIError,
    _add_labels_coverage_args,
    _add_modality_arg,
    _add_model_args,
    _log,
    _oserror,
    _positive_int,
    _strength,
    _tile,
)
from .evaluate import cmd_evaluate
from .export import cmd_export
from .gui import cmd_gui
from .segment import cmd_segment
from .train import cmd_train
from .tune import cmd_tune


def cmd_models(args: argparse.Namespace) -> int:
    """List shipped and user models, or give a model its own weights for one imaging kind."""
    if args.add_kind is None:
        if args.out or args.model:
            raise CLIError("--model and --out go with --add-kind KIND=FILE")
        for name, path in model_files.list_models().items():
            line = f"{name}\t{path}"
            if args.verbose:
                try:
                    card = model_files.read_card(path)
                    colour = {k for k in card.weights_by_kind if card.architecture_for(k).in_channels == 3}
                    kinds = ", ".join(k + (" (colour)" if k in colour else "") for k in card.weights_by_kind)
                    line += f"\town weights for: {kinds}" if kinds else ""
                except ModelError as exc:
                    line += f"\tcannot be read: {exc}"
            print(line)
        return 0
    kind, sep, file = args.add_kind.partition("=")
    if not sep or kind not in MODALITIES or not file:
        raise CLIError(f"--add-kind takes KIND=FILE with KIND one of {', '.join(MODALITIES)}, got {args.add_kind!r}")
    if not args.out:
        raise CLIError("--add-kind needs --out FILE for the combined model")
    base = model_files.load(args.model or "default")
    specialist = model_files.load(file)
    model = kind_weights.with_kind_weights(base, kind, specialist, Path(args.out).stem)
    out = model_files.save(model, args.out, overwrite=args.overwrite)
    _log(f"wrote {out}: {model.name} with its own weights and thresholds for {kind} images (from {specialist.name})")
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
    p.add_argument(
        "--cluster",
        default=None,
        metavar="none|local|local:N|ADDRESS",
        help="segment TIFF and OME-Zarr images block by block into an OME-Zarr, holding one block in memory: none "
        "(this process), local (a dask LocalCluster sized to the machine), local:N (N worker processes) or the "
        "address of a running dask scheduler (tcp://host:8786); OME-Zarr inputs always go block by block",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted run: images with all their outputs are kept, those with some get the missing "
        "ones, a block-wise run goes on from its <name>.zarr.partial folder without redoing what it wrote",
    )
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
    p.add_argument(
        "--errors",
        action="store_true",
        help="also count the errors by kind: true objects missed, merged, split or badly outlined; "
        "predictions invented or extra pieces",
    )
    p.add_argument(
        "--partial-labels",
        action="store_true",
        help="the label files mark only some of the objects: score only near the marked ones (objects found "
        "farther away are neither right nor invented); off by default, also for man_segNNN files",
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
    p.add_argument(
        "--device",
        default=None,
        help=f"compute device: {', '.join(DEVICE_CHOICES)} or cuda:N (default auto; with --resume, the run's own)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision (auto: bf16 on CUDA and on CPUs with bf16 hardware, fp32 elsewhere)",
    )
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
        help="learning rate (default 2e-3, fine-tuning as the dock does and from scratch)",
    )
    p.add_argument(
        "--anchor",
        type=float,
        default=None,
        help="when fine-tuning, pull the weights back toward the starting model's after each step by learning "
        "rate x ANCHOR x the starting model's validation AP@0.5 of their distance (default 30, as the dock; 0: off)",
    )
    p.add_argument("--freeze-encoder", action="store_true", help="train only the expanding path (fast CPU fine-tunes)")
    p.add_argument(
        "--layers",
        choices=tuple(LAYERS),
        default=None,
        help="which layers train: all, only the last one (recalibrates what the model makes of images it already "
        "reads well), or auto (default): the last one when the run starts from the model's own weights for "
        "the images' kind (the shipped model's H&E weights), else all",
    )
    p.add_argument("--head-only", action="store_true", help="the same as --layers last")
    p.add_argument(
        "--update-norm",
        action="store_true",
        help="when fine-tuning, re-estimate the batch-norm statistics (default: keep the starting model's; "
        "re-estimating helps only with many training images)",
    )
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of each image held out for validation")
    _add_labels_coverage_args(p, "train and validate")
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
    p.add_argument(
        "--diameter",
        type=float,
        default=None,
        metavar="PX",
        help="object diameter in the training images, in pixels (default: measured on the labels); images are "
        "rescaled to the starting model's diameter and the new model segments images like them by default",
    )
    p.add_argument(
        "--only-kind",
        default=None,
        choices=MODALITIES,
        help="the new weights answer for images of this kind only: --out is the --from model with weights of "
        "its own for them (as the dock's 'Only for images of this kind'; trained at that model's object size)",
    )
    p.add_argument("--intensity", type=float, default=None, help="intensity augmentation strength, 0-1 (default 0.5)")
    p.add_argument(
        "--blur", type=float, default=None, help="largest random blur in pixels (default 1 from scratch, 0 fine-tuning)"
    )
    p.add_argument(
        "--stain",
        type=_strength,
        default=None,
        help="strength of the random stain mix on colour (H&E) training patches, 0-1 (default 0: none)",
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
    p.add_argument(
        "--pixel-size",
        type=float,
        nargs="+",
        default=None,
        help="pixel size: one value for Y and X, or one per axis of the last axes (Y X, Z Y X); others keep the file's",
    )
    p.add_argument("--unit", default=None, help="unit of the pixel size, e.g. um (default: the file's, else um)")
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
    p.add_argument("--device", default="auto", help=f"compute device: {', '.join(DEVICE_CHOICES)} or cuda:N")
    p.add_argument(
        "--tile", type=_tile, default=None, help="core tile size in pixels (default: chosen from free memory)"
    )
    p.add_argument("--write", action="store_true", help="store the best thresholds in the model file")
    p.add_argument("--tta", action="store_true", help="tune for test-time augmentation (average 4 flips)")
    p.add_argument(
        "--kind",
        default=None,
        choices=MODALITIES,
        help="tune the thresholds for images of one imaging kind only (detected per image; the others are "
        "skipped): segment uses them for images of that kind",
    )
    _add_labels_coverage_args(p, "score the thresholds")
    _add_modality_arg(p)
    p.add_argument("--channel", type=int, default=None, help="channel to use in multichannel images")
    p.add_argument("--axes", default=None, help="axes of the images, e.g. YX, YXS, CYX (default: guessed)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "models",
        help="list shipped and user models, or give a model its own weights for one imaging kind",
        description="List shipped and user models. With --add-kind KIND=FILE: write a copy of --model (default: "
        "the shipped one) whose images of that kind go to FILE's network, with FILE's thresholds (FILE: a model "
        "of the same network trained on such images only, e.g. with train --include).",
    )
    p.add_argument(
        "--add-kind", default=None, metavar="KIND=FILE", help="imaging kind and the model that answers for it"
    )
    p.add_argument("--model", default=None, help="the model to extend (default: the shipped one)")
    p.add_argument("--out", default=None, help="the combined model file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("-v", "--verbose", action="store_true", help="also say which kinds have their own weights")
    p.set_defaults(func=cmd_models)
    return parser


def _train_args(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """Fill in the ``train`` defaults; with ``--resume``, the arguments of the run being continued.

    A resumed run reads its data and writes its model where it began, whichever folder it is
    resumed from: its relative paths are taken from the folder it was started in.
    """
    if args.resume:
        given = _given_options(args, argv, ("--resume", "--device", "--log-every"))
        if given:
            raise CLIError(
                f"--resume goes on with the data and settings the run began with: leave out {', '.join(given)} "
                "(only --device and --log-every may change)"
            )
        state, extra = load_checkpoint(args.resume)
        old_argv, cwd = extra.get("argv"), extra.get("cwd")
        try:
            if not (
                isinstance(old_argv, list) and old_argv[:1] == ["train"] and all(isinstance(a, str) for a in old_argv)
            ):
                raise ValueError("no train command line in it")
            old = parser.parse_args(old_argv)
            card = ModelCard.from_dict(json.loads(extra["card"]))
        except (KeyError, ValueError, TypeError, SystemExit) as exc:
            raise CLIError(f"{args.resume}: the checkpoint does not say which run it belongs to ({exc})") from None
        if cwd:  # relative paths as the run read them (checkpoints of earlier releases: from here)
            _anchor_paths(old, Path(cwd))
        _log(
            f"resuming at step {state['step']}: napari-unet-loop {' '.join(old_argv)}" + (f" (in {cwd})" if cwd else "")
        )
        old.resume, old.resume_state, old.resume_card = args.resume, state, card
        old.resume_started = extra.get("started")
        old.resume_start_weights = extra.get("start_weights")
        old.device = args.device or old.device or "auto"  # given (auto too), else the run's own
        old.log_every = args.log_every
        old.run_cwd = cwd or os.getcwd()
        args, argv = old, list(old_argv)
    elif args.images is None or args.labels is None or args.out is None:
        raise CLIError("train needs IMAGES, LABELS and --out (or --resume CHECKPOINT)")
    else:
        args.run_cwd = os.getcwd()
        args.device = args.device or "auto"
    if args.minutes is None and args.steps is None:
        args.minutes = 5.0
    args.argv = argv
    return args


_TRAIN_PATHS = ("images", "labels", "out", "include", "exclude", "val_list")


def _anchor_paths(args: argparse.Namespace, cwd: Path) -> None:
    """Make ``train``'s relative paths (and a ``--from`` path) relative to ``cwd``, the run's starting folder."""
    for name in _TRAIN_PATHS:
        value = getattr(args, name, None)
        if value is not None and not Path(value).is_absolute():
            setattr(args, name, str(cwd / value))
    start = args.start
    if start not in ("default", "scratch") and not Path(start).is_absolute() and (cwd / start).exists():
        args.start = str(cwd / start)


def _given_options(args: argparse.Namespace, argv: list[str], allowed: tuple[str, ...]) -> list[str]:
    """The ``train`` options and positional arguments written on the command line, but for ``allowed`` ones."""
    given = ["IMAGES"] * (args.images is not None) + ["LABELS"] * (args.labels is not None)
    for token in argv[1:]:
        flag = token.split("=", 1)[0]
        short = flag.startswith("--") and any(a.startswith(flag) for a in allowed)  # argparse's abbreviations
        if re.match(r"^--?[A-Za-z]", flag) and flag not in allowed and not short and flag not in given:
            given.append(flag)
    return given


def _note_emulated_bf16(args: argparse.Namespace) -> None:
    """Say so when ``--precision bf16`` asks a CPU without bf16 hardware: it runs emulated, slower than fp32."""
    if getattr(args, "precision", None) != "bf16" or str(getattr(args, "device", "auto")) not in ("auto", "cpu"):
        return
    if resolve_device(args.device).type == "cpu" and not cpu_bf16_native():
        _log("note: this CPU has no bf16 hardware; --precision bf16 runs emulated, slower than fp32 (auto)")


def _error_text(exc: BaseException) -> str:
    """One line for an error the command line reports: never empty (a bare ``MemoryError`` has no message)."""
    if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
        return _oserror(exc)
    text = str(exc)
    if isinstance(exc, MemoryError) and not text:
        return "out of memory: the image (or its labels' ids) needs more memory than this machine has free"
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    # tifffile logs what it finds wrong in a damaged file, line by line; the file's one error line says it
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command as given, for the records outputs keep (a resumed train run: the one it began with)
    try:
        if getattr(args, "command", None) == "train":
            args = _train_args(parser, args, argv)
        _note_emulated_bf16(args)
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
        _log(f"error: {_error_text(exc)}")
        return 2
