"""``napari-unet-loop evaluate``: segment annotated images and score them."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ..core import model_files
from ..core.axes import to_stack
from ..core.device import resolve_device
from ..core.edits import labelled_region
from ..core.metrics import ErrorCounts, error_kinds, matching_planes, pool
from ..core.modality import MODALITIES, detect
from ..io.images import ReadError, fit_labels, read_label_file
from ._common import CLIError, _log, _pairs, _postprocess, _read, _segment_array, _thresholds_record


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Segment every image that has a label file and report pooled metrics."""
    pairs = _pairs(args.images, args.labels)  # cheap checks first
    device = resolve_device(args.device)
    model = model_files.load(args.model)
    pp = _postprocess(args, model)
    results, per_image = [], []
    by_kind: dict[str, list] = {}
    errors: dict[str, ErrorCounts] = {}  # by kind of image, "" for all
    t0 = time.perf_counter()
    for i, (img_path, lab_path) in enumerate(pairs, 1):
        try:
            notes: list[str] = []
            truth = read_label_file(lab_path, notes)
        except ReadError as exc:
            raise CLIError(str(exc)) from None
        for note in notes:
            _log(f"note: {note}")
        image, axes = _read(img_path, args, model.card.architecture.in_channels)
        labels, _, _ = _segment_array(image, axes, model, args, device, pp)
        truth = fit_labels(truth, labels.shape)  # a (Y, X, 1) mask for a (Y, X) image
        if labels.shape != truth.shape:
            raise CLIError(f"{img_path.name}: labels {truth.shape} and segmentation {labels.shape} differ in shape")
        away = _away_from_marked(truth) if args.partial_labels else None
        counts, seg = matching_planes(truth, labels, ignore=away)  # a stack's objects are numbered per plane
        results.append((counts, seg))
        s = pool([(counts, seg)]).to_dict()
        entry = {"name": img_path.stem, **s}
        kind = ""
        if args.by_kind:
            kind = detect(to_stack(image, axes)[0][0], channel=args.channel).read_as(model.card.kind_in_doubt)
            by_kind.setdefault(kind, []).append((counts, seg))
            entry["kind"] = kind
        if args.errors:
            e = error_kinds(truth, labels, away)
            entry["errors"] = e.to_dict()
            for key in dict.fromkeys(["", kind]):
                errors[key] = errors.get(key, ErrorCounts()) + e
        per_image.append(entry)
        if not args.json or args.verbose:
            _log(
                f"[{i}/{len(pairs)}] {img_path.stem}: AP50 {s['ap50']:.3f}  "
                f"objects {s['n_true']} true, {s['n_pred']} found"
            )
    summary = pool(results).to_dict()
    report = {
        **summary,
        **({"partial_labels": True} if args.partial_labels else {}),
        "model": model.name,
        "device": str(device),
        **_thresholds_record(model, pp),
        "seconds": round(time.perf_counter() - t0, 2),
        "per_image": per_image,
    }
    if args.errors:
        report["errors"] = errors.get("", ErrorCounts()).to_dict()
    if args.by_kind:
        report["by_kind"] = {k: pool(by_kind[k]).to_dict() for k in MODALITIES if k in by_kind}
        for k in report["by_kind"] if args.errors else ():
            report["by_kind"][k]["errors"] = errors[k].to_dict()
    if args.json:
        print(json.dumps(report, indent=None if args.compact else 2))
    else:
        print(
            f"{summary['n_images']} images: AP50 {summary['ap50']:.4f}  AP75 {summary['ap75']:.4f}  "
            f"F1@0.5 {summary['f1_50']:.4f}  PQ {summary['pq']:.4f}  SEG {summary['seg']:.4f}"
        )
        if args.errors:
            print(f"  errors: {errors.get('', ErrorCounts()).summary()}")
        for kind, k in report.get("by_kind", {}).items():
            print(
                f"  {kind:<12} {k['n_images']:4d} images: AP50 {k['ap50']:.4f}  precision {k['precision_50']:.4f}  "
                f"recall {k['recall_50']:.4f}  SEG {k['seg']:.4f}"
            )
            if args.errors:
                print(f"  {'':<12} errors: {errors[kind].summary()}")
    return 0


def _away_from_marked(truth: np.ndarray) -> np.ndarray:
    """``--partial-labels``: per plane, the pixels away from the marked objects (``core.edits.labelled_region``)."""
    planes = truth.reshape(-1, *truth.shape[-2:])
    return np.stack([~labelled_region(p) for p in planes]).reshape(truth.shape)
