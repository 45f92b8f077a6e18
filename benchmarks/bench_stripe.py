"""Re-tuning on the validation stripe cut out alone (shipped) or in its surroundings: held-out AP@0.5 / SEG.

A stripe cut out of a small frame cuts most of its objects at its edges, and the threshold
search after a fine-tune (``core.retune.retune``) then scores fragments that whole images do
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

import json
from pathlib import Path

import numpy as np

from _common import (
    case_benchmark,
    heldout_scorer,
    objects_scored,
    save_heldout,
    save_maps,
    saved_maps,
    stripe_band,
    watched_finetune,
)
from napari_unet_loop.core.postprocess import PostprocessConfig, tune
from napari_unet_loop.core.retune import judge
from napari_unet_loop.core.sampling import Sample

CONTEXT_PX = 16
CASES = [f"{s}:{k}:{seed}" for s in ("dic-frames", "isbi") for seed in (0,) for k in (1, 2, 5)]


def in_context(sample: Sample, trained: Sample, stripe: Sample) -> Sample:
    """The validation stripe of ``sample`` in its surroundings, the surroundings ignored.

    ``trained`` is the training sample (the stripe ignored), ``stripe`` the shipped validation
    sample (the stripe cut out alone); ``sample`` has no ignored pixels of its own.
    """
    axis, a0, a1 = stripe_band(trained.ignore)
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


def run_case(case: str, start, steps: int, path: Path, layers: str = "auto") -> None:
    """Fine-tune for one case; save the network's outputs on both validation samples and the held-out images."""

    def in_surroundings(samples, train, val):
        by_name, trained = {s.name: s for s in samples}, {t.name: t for t in train}
        original = [v.name.removesuffix("[validation]") for v in val]
        return train, [in_context(by_name[o], trained[o], v) for o, v in zip(original, val)]

    child, run, seen, heldout = watched_finetune(case, start, steps, in_surroundings, layers=layers)
    n_cls, arrays = child.card.architecture.n_classes, {}
    save_maps(seen["net"], seen["judged"], "context", n_cls, arrays)
    save_maps(seen["net"], seen["val"], "alone", n_cls, arrays)
    meta = {"case": case, "steps": run["steps"], "trust": seen["trust"], "n_val": len(seen["judged"]),
            "start_pp": run["start_postprocess"].to_dict()}  # fmt: skip
    meta["head_only"] = run["head_only"]
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
        maps, labs, igs = saved_maps(z, tag, meta["n_val"])
        n = objects_scored(labs, igs)
        r = judge(tune(maps, labs, start=start, ignores=igs), n, start, meta["trust"])  # retune's keep rule
        row[tag] = {"objects": n, "kept": r.kept, "thresholds": r.postprocess.to_dict(), "held": held(r.postprocess)}
    return row


def line(r: dict) -> str:
    """One case's report row, printed."""
    a, c = r["alone"], r["context"]
    return (f"{r['case']:<16} {r['steps']} steps  held-out AP@0.5 / SEG: start {r['start'][0]:.3f} / "
            f"{r['start'][1]:.3f}; stripe alone ({a['objects']} objects{', kept' if a['kept'] else ''}) "
            f"{a['held'][0]:.3f} / {a['held'][1]:.3f}; in its surroundings ({c['objects']} objects"
            f"{', kept' if c['kept'] else ''}) {c['held'][0]:.3f} / {c['held'][1]:.3f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    rules = {"alone": "stripe alone (shipped)", "context": "in its surroundings"}
    return case_benchmark(__doc__, CASES, argv, run_case, report, line, rules)


if __name__ == "__main__":
    raise SystemExit(main())
