"""Re-tuning after a fine-tune: thresholds proposed on all the annotations, verified on the stripe.

The shipped re-tune (``core.retune.retune``) searches the thresholds on the validation stripe
alone: a handful of objects on small frames, so the search follows their noise. The alternative
measured here: the search runs on all the annotated pixels (the trained region, which the network
has seen, and the stripe), where there are 2-5 times more objects, and the stripe, which the
network has not seen, only verifies what it found with the shipped keep rule
(``core.retune.judge``); when that fails, the shipped stripe search decides as before.
Rules scored, each on the same trained network:

* ``stripe``: the shipped rule, search and verdict on the stripe;
* ``all``: search and verdict on all the annotations (the naive pooling);
* ``all, verified``: the search on all the annotations, verdict on the stripe, else ``stripe``;
* ``all + reach, verified``: as above, with the foreground threshold (how far the masks reach) then
  re-chosen on the stripe for its best SEG at the same stripe AP@0.5: the trained pixels' maps are
  sharper than new images', so the reach is chosen on pixels the network has not seen;
* ``stripe, user's scale``: the shipped search on the stripe scored as ``segment`` scores a new image:
  the network's maps resized back to the stripe's own grid, the annotations at their own resolution
  (not shrunk to the network's scale by nearest neighbours, where thin gaps between cells vanish),
  the post-processing sizes scaled (``core.scale.postprocess_at``).

Each case (``SET:K:SEED``, ``bench_cells``' sets) is one fine-tune on ``K`` images on the path of
``train --from default`` (a step budget; keep-best on the stripe, as shipped). The script saves per
case the trained network's outputs on the trained and the validation samples and on the held-out
images (``--out DIR``, one ``.npz`` each; a cut run goes on where it stopped), then re-tunes offline
by each rule and scores what each keeps on the held-out images. ``--report`` only re-reads the
saved cases.

Measured 2026-12-04 on the 15 default cases (docs/model.md, *Thresholds proposed on all the
annotations*): the rules on all the annotations gained about 0.017 AP@0.5 and no SEG, the user's
scale lost both; not adopted.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

import bench_cells
from _common import (
    DATA_CANDIDATES,
    case_benchmark,
    heldout_scorer,
    objects_scored,
    save_heldout,
    save_maps,
    saved_maps,
    stripe_band,
    watched_finetune,
)
from napari_unet_loop.core.postprocess import (
    DIST_SIGMAS,
    FG_THRESHOLDS,
    MIN_SIZES,
    PostprocessConfig,
    SettingScores,
    Tuned,
    paired_gain_se,
    tune,
)
from napari_unet_loop.core.retune import Retuned, judge
from napari_unet_loop.core.scale import postprocess_at, resize

CASES = [f"{s}:{k}:0" for s in ("dic-frames", "isbi", "phc-isbi") for k in (1, 2, 5)]
CASES += [f"{s}:{k}:1" for s in ("dic-frames", "isbi") for k in (1, 2, 5)]
RULES = ("stripe", "all", "all, verified", "all + reach, verified", "stripe, user's scale")


def run_case(case: str, start, steps: int, path: Path, layers: str = "auto") -> None:
    """Fine-tune for one case; save the network's outputs on the trained and validation samples and held out."""
    child, run, seen, heldout = watched_finetune(case, start, steps, layers=layers)
    n_cls, arrays = child.card.architecture.n_classes, {}
    save_maps(seen["net"], seen["train"], "train", n_cls, arrays)
    save_maps(seen["net"], seen["val"], "val", n_cls, arrays)
    meta = {"case": case, "steps": run["steps"], "trust": seen["trust"], "n_train": len(seen["train"]),
            "n_val": len(seen["val"]), "start_pp": run["start_postprocess"].to_dict()}  # fmt: skip
    meta["head_only"] = run["head_only"]
    meta["held"] = save_heldout(child, heldout, n_cls, arrays)
    np.savez_compressed(path, meta=json.dumps(meta), **arrays)


def verify(candidate: PostprocessConfig, scores: SettingScores, start: PostprocessConfig) -> Tuned:
    """``candidate`` against ``start`` on ``scores``' maps, as a search result for :func:`judge`."""
    (a0, s0, o0), (a1, s1, o1) = scores(start), scores(candidate)
    return Tuned(candidate, a1, s1, a0, s0, paired_gain_se(o1, o0), int(o0.size), candidate, scores.evaluated)


def user_scale(meta: dict, stripe: tuple, trained: tuple, start: PostprocessConfig, trust: float) -> Retuned:
    """The shipped search and keep rule on the stripes at the user's scale; thresholds back at the network's.

    The case's annotated images are made again (``bench_cells.load_set``); each stripe is found on its
    image as the trained sample's ignored band and cut from the original labels, and the saved maps
    are resized to it (bilinear, as ``segment`` resizes probabilities).
    """
    name, k, seed = meta["case"].split(":")
    root = next(d for d in DATA_CANDIDATES if d and d.is_dir())
    items = bench_cells.load_set(name, root, int(k), 0, int(seed))[0]
    maps, truths, factors = [], [], []
    for (f, d), band, (_, _, labels) in zip(stripe[0], trained[2], items):
        axis, a0, a1 = stripe_band(band)
        n, big = labels.shape[axis], band.shape[axis]
        b0, b1 = round(a0 * n / big), round(a1 * n / big)
        truth = labels[b0:b1] if axis == 0 else labels[:, b0:b1]
        grown = resize(np.stack([f, d]), truth.shape)
        maps.append((grown[0], grown[1]))
        truths.append(truth)
        factors.append(big / n)
    factor = float(np.mean(factors))
    at = postprocess_at(start, factor)
    found = tune(
        maps,
        truths,
        start=at,
        min_sizes=tuple(round(m / factor**2) for m in MIN_SIZES),  # tune's, on the user's grid
        dist_sigmas=tuple(s / factor for s in DIST_SIGMAS),
    )
    r = judge(found, objects_scored(truths), at, trust)
    back = PostprocessConfig(**{**r.postprocess.to_dict(), "min_size": round(r.postprocess.min_size * factor**2),
                                "dist_sigma": round(r.postprocess.dist_sigma * factor, 3)})  # fmt: skip
    return dataclasses.replace(r, postprocess=back if r.kept else start)


def report(path: Path) -> dict:
    """Re-tune by each rule on the saved maps; held-out AP@0.5 / SEG of what each keeps."""
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    start, trust = PostprocessConfig.from_dict(meta["start_pp"]), meta["trust"]
    held = heldout_scorer(z, meta["held"])

    trained, stripe = saved_maps(z, "train", meta["n_train"]), saved_maps(z, "val", meta["n_val"])
    both = tuple(a + b for a, b in zip(trained, stripe))
    n_stripe, n_all = objects_scored(*stripe[1:]), objects_scored(*both[1:])
    shipped = judge(tune(*stripe[:2], start=start, ignores=stripe[2]), n_stripe, start, trust)
    on_all = tune(*both[:2], start=start, ignores=both[2])
    pooled = judge(on_all, n_all, start, trust)
    on_stripe = SettingScores(*stripe)
    verified = judge(verify(on_all.config, on_stripe, start), n_stripe, start, trust)
    ap_all = on_stripe(on_all.config)[0]
    reaches = [on_all.config, *(dataclasses.replace(on_all.config, fg_threshold=v) for v in FG_THRESHOLDS)]

    def reach_key(c: PostprocessConfig) -> tuple:
        a, s, _ = on_stripe(c)
        return a >= ap_all, s, c == on_all.config

    reached = judge(verify(max(reaches, key=reach_key), on_stripe, start), n_stripe, start, trust)
    user = user_scale(meta, stripe, trained, start, trust)
    row = {"case": meta["case"], "steps": meta["steps"], "objects": [n_stripe, n_all], "start": {"held": held(start)}}
    kept = (shipped, pooled, verified if verified.kept else shipped, reached if reached.kept else shipped, user)
    for rule, r in zip(RULES, kept):
        row[rule] = {"kept": r.kept, "thresholds": r.postprocess.to_dict(), "held": held(r.postprocess)}
    return row


def line(r: dict) -> str:
    """One case's report row, printed."""
    cells = "; ".join(f"{rule} {r[rule]['held'][0]:.3f} / {r[rule]['held'][1]:.3f}" for rule in ("start", *RULES))
    n = r["objects"]
    return f"{r['case']:<16} {r['steps']} steps, {n[0]} / {n[1]} objects (stripe / all); AP@0.5 / SEG: {cells}"


def main(argv: list[str] | None = None) -> int:
    return case_benchmark(__doc__, CASES, argv, run_case, report, line, {rule: rule for rule in RULES})


if __name__ == "__main__":
    raise SystemExit(main())
