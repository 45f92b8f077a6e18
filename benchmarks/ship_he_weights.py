"""Give the shipped model its colour network for H&E images, and record in its card what that changed.

The shipped network reads every image as one grey plane (an H&E image as its haematoxylin
plane). A colour copy of it, fine-tuned on the H&E images of the training split
(``colour_init.py``, then ``train --from``; docs/model.md, *Colour weights for H&E in the shipped
model*), reads them better; a model may hold such a network for H&E images beside its grey one
(card ``weights_by_kind.he.in_channels: 3``). This script joins the two into the shipped file,
keeping its name, training record and the other kinds' weights and thresholds, and records the
scores of ``evaluate`` before and after on the validation and test splits:

    napari-unet-loop evaluate val/images val/labels --model default --by-kind --json > val-before.json
    napari-unet-loop evaluate val/images val/labels --model joined.safetensors --by-kind --json > val.json
    napari-unet-loop evaluate test/images test/labels --model joined.safetensors --by-kind --errors --json > test.json
    python benchmarks/ship_he_weights.py --he he.safetensors --val-before val-before.json --val val.json \
        --test test.json

where ``joined.safetensors`` is ``napari-unet-loop models --add-kind he=he.safetensors --out joined.safetensors``
(the same networks and thresholds this script writes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_unet_loop.core.kind_weights import add_kind_weights
from napari_unet_loop.core.model_files import DEFAULT_MODEL, load, save, shipped_dir

KEYS = ("ap50", "seg")


def _scores(result: dict) -> dict:
    """AP@0.5 and SEG, overall and per imaging kind, of an ``evaluate --json`` result."""
    out = {k: round(float(result[k]), 4) for k in KEYS}
    for kind, sub in (result.get("by_kind") or {}).items():
        out[kind] = {k: round(float(sub[k]), 4) for k in KEYS}
    return out


def main(argv: list[str] | None = None) -> int:
    """Join, record, write."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--he", type=Path, required=True, help="the colour model for H&E images (3 input channels)")
    p.add_argument("--val-before", type=Path, required=True, help="evaluate --by-kind --json of the shipped model")
    p.add_argument("--val", type=Path, required=True, help="evaluate --by-kind --json of the joined model, validation")
    p.add_argument("--test", type=Path, required=True, help="evaluate --by-kind --json of the joined model, test")
    p.add_argument("--out", type=Path, default=shipped_dir() / f"{DEFAULT_MODEL}.safetensors")
    p.add_argument("--name", default=f"{DEFAULT_MODEL}-he-colour", help="the H&E weights' name in the card")
    p.add_argument("--earlier", type=Path, nargs="*", default=[], help="the fine-tunes --he continued, first to last")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace the shipped model's H&E weights (their record and scores are kept under he_weights.replaced)",
    )
    args = p.parse_args(argv)
    model, he = load(DEFAULT_MODEL), load(args.he)
    val_before, val, test = (json.loads(f.read_text()) for f in (args.val_before, args.val, args.test))
    before = model.card.metrics
    old_test = before.get("test", {})
    replaced = None
    if "he" in model.card.weights_by_kind:
        if not args.replace:
            raise SystemExit(f"{model.name} already has weights of its own for H&E images (--replace them)")
        old = model.card.weights_by_kind["he"]
        replaced = {"name": old.get("name"), "description": old.get("description"), **before.get("he_weights", {})}
        replaced.pop("rule", None)
        replaced.pop("replaced", None)
    he.card.name = args.name
    add_kind_weights(model, "he", he)
    record = model.card.weights_by_kind["he"]
    stages = [load(f).card.training for f in args.earlier] + [he.card.training]
    record["training"]["stages"] = [
        {k: t.get(k) for k in ("command", "steps", "patches", "seconds", "started")} for t in stages
    ]
    record["description"] = (
        f"the grey {model.name} network copied to read R, G and B (benchmarks/colour_init.py: its first "
        f"convolution reads a linear fit of the haematoxylin plane), then fine-tuned on the H&E images of the "
        f"training split in {len(stages)} stage(s) of {sum(int(t.get('steps') or 0) for t in stages)} steps"
    )
    test.update({"model": model.name, "errors": test.get("errors", old_test.get("errors"))})
    model.card.metrics = {
        **before,
        "test": test,
        "he_weights": {
            "rule": "images detected as H&E read R, G and B with a network of their own (weights_by_kind.he), "
            "the shipped network copied to read colour (benchmarks/colour_init.py) and fine-tuned on the 70 H&E "
            "images of the training split; the other images keep the grey network",
            "validation_before": _scores(val_before),
            "validation_after": _scores(val),
            "test_before": _scores(old_test),
            "test_after": _scores(test),
            **({"replaced": replaced} if replaced else {}),
        },
    }
    # the description stays the grey network's: fine-tuned children inherit it, and a child of one network
    # has no H&E weights (the Model section says which kinds have their own, from weights_by_kind)
    print("wrote", save(model, args.out))
    print(json.dumps(model.card.metrics["he_weights"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
