"""``napari-unet-loop tune``: choose a model's default thresholds on annotated images."""

from __future__ import annotations

import argparse
import json

from ..core import model_files
from ..core.device import resolve_device
from ..core.finetune import to_network_scale
from ..core.retune import tuning_noise, validation_objects
from ._common import CLIError, _listed, _load_samples, _log, _marked, _pairs, _partial_labels, _read_list


def cmd_tune(args: argparse.Namespace) -> int:
    """Choose a model's default thresholds on annotated images and store them in its card."""
    from ..core.retune import tune_thresholds

    device = resolve_device(args.device)
    model = model_files.load(args.model)
    if args.write and model.path is not None and model.path.resolve().parent == model_files.shipped_dir().resolve():
        raise CLIError(f"{model.name} is a shipped model and is not changed; give --model a copy of its file")
    pairs = _pairs(args.images, args.labels)
    include = _read_list(args.include)
    if include is not None:
        pairs = [p for p in pairs if _listed(p[0], include)]
    if not pairs:
        raise CLIError("no image/label pairs to tune on")
    # the images as the model reads them (its imaging modality, or --modality), as segment does; labels of
    # some cells scored near the marked ones, as train's re-tune scores them
    partial = _partial_labels(args, pairs, "scoring the thresholds")
    samples = _marked(_load_samples(pairs, model, args), args)
    kind = args.kind
    if kind is not None:  # the images of that kind only (the kind each image is detected as)
        samples = [s for s in samples if s.kind == kind]
        _log(f"{len(samples)} of {len(pairs)} images are {kind}")
        if not samples:
            raise CLIError(f"none of the images is detected as {kind}: nothing to tune on")
    else:  # the general thresholds: for images the general network reads
        own = set(model.card.weights_by_kind)
        left = [s for s in samples if s.kind in own]
        if left:
            samples = [s for s in samples if s.kind not in own]
            _log(
                f"{len(left)} image(s) left out: the model has its own weights and thresholds for "
                f"{', '.join(sorted({s.kind for s in left}))} images (tune those with --kind)"
            )
        if not samples:
            raise CLIError("no image left to tune the general thresholds on")
    # ... and at the size segment shows them to the network (the thresholds' sizes are the network's)
    samples = to_network_scale(samples, model.for_kind(kind).card, model.image_diameter).samples  # the kind's sizes
    start = model.card.thresholds(kind)
    found = tune_thresholds(model.net_for(kind), samples, device, start, tile=args.tile, tta=args.tta)
    best, before, ap = found.config, found.start_ap50, found.ap50
    what = f"{len(samples)} {kind} images" if kind else f"{len(samples)} images"
    _log(f"{what}: AP50 {before:.4f} SEG {found.start_seg:.4f} with {start.to_dict()}")
    _log(f"best thresholds found: AP50 {ap:.4f} SEG {found.seg:.4f} with {best.to_dict()}")
    n_objects = validation_objects(samples)
    noise = tuning_noise(before, n_objects)
    if ap - before <= noise:  # as train's re-tune judges it (docs/model.md)
        _log(
            f"note: the gain ({ap - before:+.4f}) is within the noise of {n_objects} objects (+-{noise:.3f}): "
            "it may not carry over to other images" + ("; --write stores it all the same" if args.write else "")
        )
    print(
        json.dumps(
            {
                "before": before,
                "after": ap,
                "seg_before": found.start_seg,
                "seg_after": found.seg,
                "thresholds": best.to_dict(),
                "kind": kind,
                "objects": n_objects,
                "noise": noise,
                **({"partial_labels": True} if partial else {}),
            }
        )
    )
    if args.write:
        record = {
            "images": len(samples),
            "ap50_before": before,
            "ap50_after": ap,
            "seg_before": round(found.start_seg, 4),
            "seg_after": round(found.seg, 4),
            "include": args.include,
            **({"partial_labels": True} if partial else {}),
        }
        metrics = {k: v for k, v in model.card.metrics.items() if k != "test"}  # test scores: the old thresholds
        if kind is None:
            model.card.postprocess = best
            metrics["threshold_tuning"] = record
        else:
            by_kind = {k: v for k, v in model.card.postprocess_by_kind.items() if k != kind}
            if best != model.card.postprocess or kind in model.card.weights_by_kind:  # own weights, own thresholds
                by_kind[kind] = best
            model.card.postprocess_by_kind = by_kind
            metrics["threshold_tuning_by_kind"] = {**metrics.get("threshold_tuning_by_kind", {}), kind: record}
        model.card.metrics = metrics
        model_files.save(model, model.path, overwrite=True)
        _log(f"wrote the thresholds into {model.path}")
    return 0
