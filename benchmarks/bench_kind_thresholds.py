"""Thresholds for one kind of imaging: do they carry over to other images of that kind?

``tune --kind KIND`` chooses a model's thresholds on the images of one imaging kind. The shipped
model's brightfield thresholds were chosen on the 12 brightfield images of its training split (the
validation split holds one). This benchmark checks that such a choice is not fitted to the images it
was made on: the training-split images of the kind are split into ``--folds`` parts; thresholds are
tuned on all parts but one (``core.postprocess.tune``, from the model's general thresholds, as
``tune --kind`` does) and scored on the part left out, against the general thresholds.

The network runs once per image (at the size ``segment`` shows it to the network); only the
post-processing is repeated. Run ``python benchmarks/bench_kind_thresholds.py --help`` for the
options; ``--kind brightfield`` takes about 5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _common import SPLITS, find_dsb2018, read_list, write_json
from napari_unet_loop.core.finetune import to_network_scale
from napari_unet_loop.core.metrics import matching, pool
from napari_unet_loop.core.modality import MODALITIES, detect
from napari_unet_loop.core.model_files import load
from napari_unet_loop.core.postprocess import instances, tune
from napari_unet_loop.core.predict import predict
from napari_unet_loop.io.images import read_image
from napari_unet_loop.io.training import training_samples


def training_names(data: Path) -> list[str]:
    """The training split: every image in neither the test nor the validation list."""
    held = set(read_list(SPLITS / "dsb2018-test.txt")) | set(read_list(SPLITS / "dsb2018-val.txt"))
    return sorted(p.stem for p in (data / "images").iterdir() if p.stem not in held)


def network_maps(model, data: Path, names: list[str], kind: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(probabilities, labels)`` at the network's scale of the images detected as ``kind``.

    The images are read as ``tune --kind`` reads them (``io.training.training_samples``).
    """
    pairs = []
    for name in names:
        image_path = next((data / "images").glob(f"{name}.*"))
        if detect(read_image(image_path)).modality == kind:
            pairs.append((image_path, next((data / "labels").glob(f"{name}.*"))))
    samples = training_samples(pairs, model, "auto")
    samples = to_network_scale(samples, model.card, model.image_diameter).samples
    return [(predict(model.net_for(kind), s.image, device="cpu"), s.labels) for s in samples]


def score(items, pp, n_classes: int):
    """Pooled scores of ``items`` post-processed with ``pp``."""
    return pool([matching(t, instances(p, pp, n_classes)) for p, t in items])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="brightfield", choices=MODALITIES)
    ap.add_argument("--model", default="default", help="model name or path (default: the shipped one)")
    ap.add_argument("--folds", type=int, default=2, help="parts the images are split into (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split into parts")
    ap.add_argument("--data", type=Path, default=None, help="folder holding dsb2018/ (default ../shared/data)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)
    data = find_dsb2018(args.data)
    model = load(args.model)
    general = model.card.postprocess
    n_classes = model.card.architecture.n_classes
    t0 = time.perf_counter()
    items = network_maps(model, data, training_names(data), args.kind)
    if len(items) < args.folds:
        raise SystemExit(f"{len(items)} {args.kind} image(s) in the training split: too few for {args.folds} parts")
    print(f"{len(items)} {args.kind} training images, network maps in {time.perf_counter() - t0:.0f} s")
    order = np.random.default_rng(args.seed).permutation(len(items))
    rows = []
    for k in range(args.folds):
        held = [items[i] for i in order[k :: args.folds]]
        rest = [items[i] for i in order if i not in set(order[k :: args.folds])]
        best = tune([(1.0 - p[0], p[n_classes]) for p, _ in rest], [t for _, t in rest], start=general).config
        before, after = score(held, general, n_classes), score(held, best, n_classes)
        rows.append(
            {
                "fold": k,
                "tuned_on": len(rest),
                "scored_on": len(held),
                "objects": before.n_true,
                "thresholds": best.to_dict(),
                "ap50": [round(before.ap50, 4), round(after.ap50, 4)],
                "seg": [round(before.seg, 4), round(after.seg, 4)],
            }
        )
        print(
            f"part {k}: tuned on {len(rest)} images -> {best.to_dict()}; on the {len(held)} left out "
            f"({before.n_true} objects): AP50 {before.ap50:.4f} -> {after.ap50:.4f}, SEG {before.seg:.4f} -> "
            f"{after.seg:.4f}",
            flush=True,
        )
    gains = [r["ap50"][1] - r["ap50"][0] for r in rows]
    print(f"AP50 gain on the images left out: {', '.join(f'{g:+.3f}' for g in gains)} (general thresholds {general})")
    write_json(args.json, {"kind": args.kind, "model": model.name, "general": general.to_dict(), "folds": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
