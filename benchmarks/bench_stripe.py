"""Re-tuning on the validation stripe cut out alone (shipped) or in its surroundings: held-out AP@0.5 / SEG.

A stripe cut out of a small frame cuts most of its objects at its edges, and the threshold
search after a fine-tune (``core.finetune.retune``) then scores fragments that whole images do
not have. The alternative measured here: the validation sample is the stripe *in its
surroundings* (every object its pixels touch, whole, plus 16 px of image, at most twice the
stripe's width on each side), the surroundings ignored, so an object counts when it lies mostly in
the stripe and is then scored whole, and the rest not at all.

Each case (``SET:K:SEED``, ``bench_cells``' sets) is one fine-tune on ``K`` images on the path of
``train --from default`` (a step budget), keep-best on the stripes in their surroundings. The
script saves, per case, the trained network's outputs on both validation samples and on the
held-out images (``--out DIR``, one ``.npz`` each; a cut run goes on where it stopped), then
re-tunes offline on each validation sample with the shipped keep rule and scores what each
keeps on the held-out images. ``--report`` only re-reads the saved cases.

Measured 2026-12-04 (docs/model.md, *Cut objects in the stripe*): the surroundings lost held-out
SEG in every case; not adopted.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

import _common
import bench_cells
from _common import DATA_CANDIDATES, heldout_scorer, save_heldout
from napari_unet_loop.core.finetune import judge, validation_objects
from napari_unet_loop.core.model_files import load
from napari_unet_loop.core.postprocess import PostprocessConfig, tune
from napari_unet_loop.core.predict import predict
from napari_unet_loop.core.sampling import Sample

CONTEXT_PX = 16
CASES = [f"{s}:{k}:{seed}" for s in ("dic-frames", "isbi") for seed in (0,) for k in (1, 2, 5)]


def in_context(sample: Sample, trained: Sample, stripe: Sample) -> Sample:
    """The validation stripe of ``sample`` in its surroundings, the surroundings ignored.

    ``trained`` is the training sample (the stripe ignored), ``stripe`` the shipped validation
    sample (the stripe cut out alone); ``sample`` has no ignored pixels of its own.
    """
    held = trained.ignore
    axis = 0 if held.all(1).any() and not held.all(0).any() else 1  # a band of rows, or of columns
    along = np.flatnonzero(held.any(1 - axis))
    a0, a1 = int(along[0]), int(along[-1]) + 1
    band = (slice(a0, a1), slice(None)) if axis == 0 else (slice(None), slice(a0, a1))
    assert np.array_equal(sample.labels[band], stripe.labels)
    ids = np.unique(stripe.labels)
    ids = ids[ids > 0]
    c0, c1 = a0, a1
    if ids.size:
        span = np.flatnonzero(np.isin(sample.labels, ids).any(1 - axis))
        c0, c1 = min(c0, int(span[0])), max(c1, int(span[-1]) + 1)
    reach = max(2 * (a1 - a0), 64)
    c0 = max(c0 - CONTEXT_PX, a0 - reach, 0)
    c1 = min(c1 + CONTEXT_PX, a1 + reach, sample.labels.shape[axis])
    crop = (slice(c0, c1), slice(None)) if axis == 0 else (slice(None), slice(c0, c1))
    ignore = np.ones(sample.labels[crop].shape, bool)
    (ignore[a0 - c0 : a1 - c0] if axis == 0 else ignore[:, a0 - c0 : a1 - c0])[...] = False
    return Sample(sample.image[(slice(None), *crop)], sample.labels[crop], ignore, None, stripe.name)


def run_case(case: str, start, steps: int, path: Path) -> None:
    """Fine-tune for one case; save the network's outputs on both validation samples and the held-out images."""
    name, k, seed = case.split(":")
    k, seed = int(k), int(seed)
    root = next(d for d in DATA_CANDIDATES if d and d.is_dir())
    pool_items, heldout, _ = bench_cells.load_set(name, root, 5, 10 if name.startswith("isbi") else 8, seed)
    seen: dict = {}
    split, retune = _common.split_validation, _common.retune

    def split_in_context(samples, fraction, seed):
        train, val = split(samples, fraction, seed)
        by_name = {s.name: s for s in samples}
        trained = {t.name: t for t in train}
        seen["stripes"] = val
        context = []
        for v in val:
            original = v.name.removesuffix("[validation]")
            context.append(in_context(by_name[original], trained[original], v))
        return train, context

    def keep_net(net, val, device, pp, trust=0.0, **kwargs):
        seen.update(net=net, context=val, trust=trust)
        return retune(net, val, device, pp, trust=trust, **kwargs)

    _common.split_validation, _common.retune = split_in_context, keep_net
    try:
        child, run = _common.finetune(start, pool_items[:k], 5.0, True, seed, device="cpu", steps=steps)
    finally:
        _common.split_validation, _common.retune = split, retune
    net, n_cls = seen["net"], child.card.architecture.n_classes
    arrays = {}
    for tag, vals in (("context", seen["context"]), ("alone", seen["stripes"])):
        for i, v in enumerate(vals):
            p = predict(net, v.image, device="cpu")
            arrays[f"{tag}_fg_{i}"] = (1.0 - p[0]).astype(np.float16)
            arrays[f"{tag}_d_{i}"] = p[n_cls].astype(np.float16)
            arrays[f"{tag}_lab_{i}"] = v.labels.astype(np.int32)
            if v.ignore is not None:
                arrays[f"{tag}_ig_{i}"] = v.ignore
    meta = {"case": case, "steps": run["steps"], "trust": seen["trust"], "n_val": len(seen["context"]),
            "start_pp": run["start_postprocess"].to_dict()}  # fmt: skip
    meta["held"] = save_heldout(child, heldout, n_cls, arrays)
    np.savez_compressed(path, meta=json.dumps(meta), **arrays)


def report(path: Path) -> dict:
    """Re-tune on each saved validation sample (the shipped rule); held-out AP@0.5 / SEG of what each keeps."""
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    start = PostprocessConfig.from_dict(meta["start_pp"])
    held = heldout_scorer(z, meta["held"])
    row = {"case": meta["case"], "steps": meta["steps"], "start": held(start)}
    for tag in ("alone", "context"):
        maps, labs, igs = [], [], []
        for i in range(meta["n_val"]):
            maps.append((z[f"{tag}_fg_{i}"].astype(np.float32), z[f"{tag}_d_{i}"].astype(np.float32)))
            labs.append(z[f"{tag}_lab_{i}"])
            igs.append(z[f"{tag}_ig_{i}"] if f"{tag}_ig_{i}" in z else None)
        n = validation_objects([Sample(np.zeros((1, *lab.shape), np.float32), lab, ig) for lab, ig in zip(labs, igs)])
        r = judge(tune(maps, labs, start=start, ignores=igs), n, start, meta["trust"])  # retune's keep rule
        row[tag] = {"objects": n, "kept": r.kept, "thresholds": r.postprocess.to_dict(), "held": held(r.postprocess)}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated SET:K:SEED (bench_cells' sets)")
    p.add_argument("--steps", type=int, default=900, help="fine-tuning steps per case (900: about 5 CPU minutes)")
    p.add_argument("--out", type=Path, required=True, help="folder for the saved outputs, one .npz per case")
    p.add_argument("--report", action="store_true", help="only report the cases already saved")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    start = None
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        path = args.out / (case.replace(":", "_") + ".npz")
        if not path.exists():
            if args.report:
                continue
            start = start or load("default")
            run_case(case, start, args.steps, path)
        r = report(path)
        rows.append(r)
        a, c = r["alone"], r["context"]
        print(f"{r['case']:<16} {r['steps']} steps  held-out AP@0.5 / SEG: start {r['start'][0]:.3f} / "
              f"{r['start'][1]:.3f}; stripe alone ({a['objects']} objects{', kept' if a['kept'] else ''}) "
              f"{a['held'][0]:.3f} / {a['held'][1]:.3f}; in its surroundings ({c['objects']} objects"
              f"{', kept' if c['kept'] else ''}) {c['held'][0]:.3f} / {c['held'][1]:.3f}", flush=True)  # fmt: skip
    if rows:
        print(f"\nmean over {len(rows)} cases, held-out AP@0.5 / SEG:")
        for tag in ("alone", "context"):
            ap, seg = (float(np.mean([r[tag]["held"][i] for r in rows])) for i in (0, 1))
            print(f"  {'stripe alone (shipped)' if tag == 'alone' else 'in its surroundings':<24} {ap:.4f} / {seg:.4f}")
    _common.write_json(args.json, {"steps": args.steps, "cases": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
